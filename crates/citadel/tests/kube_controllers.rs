//! citadel's Kubernetes controllers against kube-testserver: Secrets per
//! ServiceAccount (created, recreated, renewed in place, deleted with the account,
//! renewed on a root rotation), webhook configurations' caBundle (filled, restored
//! after someone overwrites it), and one writer among several replicas.

#![allow(clippy::unwrap_used)]

use std::{path::Path, sync::Arc, time::Duration};

use base64::Engine;
use citadel::{
    ca::{Authority, CaPolicy, CaSource},
    controllers::{
        ControllerContext, ControllerMetrics, Controllers, ControllersConfig, SecretsConfig,
        secret::{self, CERT_CHAIN_KEY, KEY_KEY, ROOT_CERT_KEY, SECRET_TYPE},
    },
    ledger::Ledger,
    server::LedgerRecorder,
};
use kube_testserver::KubeTestServer;
use mesh_kube::leader::{LeaseConfig, default_identity};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use x509_parser::{
    extensions::GeneralName,
    pem::{Pem, parse_x509_pem},
};

const WAIT: Duration = Duration::from_secs(20);

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn unb64(v: &Value) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// One replica's controllers, with their own CA view, ledger and counters.
struct Replica {
    controllers: Controllers,
    metrics: Arc<ControllerMetrics>,
    ledger: Ledger,
    authority: Arc<Authority>,
    shutdown: CancellationToken,
}

impl Replica {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.controllers.stopped())
            .await
            .unwrap();
    }

    fn writes(&self, op: &str) -> u64 {
        self.metrics.writes("secrets", op)
    }

    /// The count of `op` writes of Secrets once it has reached `n`: a write is
    /// counted after its call returns, so a test may see the Secret first.
    async fn writes_reaching(&self, op: &str, n: u64) -> u64 {
        eventually(&format!("{n} {op} writes counted"), || {
            let c = self.writes(op);
            (c >= n).then_some(c)
        })
        .await
    }
}

fn authority(ca_dir: &Path) -> Arc<Authority> {
    Arc::new(
        Authority::open(
            CaSource::SelfSigned(ca_dir.to_path_buf()),
            CaPolicy::default(),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap(),
    )
}

fn config(secrets: bool, webhooks: &[&str]) -> ControllersConfig {
    ControllersConfig {
        kube: mesh_kube::KubeArgs::default(),
        secrets: secrets.then(|| SecretsConfig {
            namespaces: Vec::new(),
            ttl: Duration::from_secs(3600),
            resync: Duration::from_secs(30),
            ..SecretsConfig::default()
        }),
        webhooks: webhooks.iter().map(|w| w.to_string()).collect(),
        lease: LeaseConfig::new("istio-system", "citadel-controllers", default_identity())
            .with_timings(
                Duration::from_secs(3),
                Duration::from_secs(2),
                Duration::from_millis(300),
            ),
    }
}

/// Starts controllers over `server`; the CA lives in `dir/ca` (shared by replicas
/// given the same `dir`), the ledger in `dir/<ledger>.db`.
async fn replica(
    server: &KubeTestServer,
    dir: &Path,
    ledger: &str,
    config: ControllersConfig,
) -> Replica {
    replica_of(server, authority(&dir.join("ca")), dir, ledger, config).await
}

/// As [`replica`], issuing from `authority`.
async fn replica_of(
    server: &KubeTestServer,
    authority: Arc<Authority>,
    dir: &Path,
    ledger: &str,
    config: ControllersConfig,
) -> Replica {
    let ledger = Ledger::open(&format!(
        "sqlite://{}",
        dir.join(format!("{ledger}.db")).display()
    ))
    .await
    .unwrap();
    let metrics =
        ControllerMetrics::register(&mut prometheus_client::registry::Registry::default());
    let shutdown = CancellationToken::new();
    let controllers = Controllers::spawn(
        server.client(),
        ControllerContext {
            authority: authority.clone(),
            recorder: Arc::new(LedgerRecorder::new(ledger.clone())),
            metrics: metrics.clone(),
        },
        config,
        None,
        shutdown.clone(),
    )
    .unwrap();
    Replica {
        controllers,
        metrics,
        ledger,
        authority,
        shutdown,
    }
}

async fn test_server() -> KubeTestServer {
    let server = KubeTestServer::start().await.unwrap();
    server
        .apply_object(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
        )
        .unwrap();
    server
}

fn add_account(server: &KubeTestServer, ns: &str, name: &str) {
    server
        .apply_object(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                             "metadata": {"name": name, "namespace": ns}}))
        .unwrap();
}

fn get_secret(server: &KubeTestServer, ns: &str, sa: &str) -> Option<Value> {
    server.get_object("v1", "Secret", ns, &format!("istio.{sa}"))
}

/// Polls `f` until it returns `Some`, or fails after [`WAIT`] naming `what`.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A certificate's DNS SANs.
fn leaf_dns_names(chain_pem: &str) -> Vec<String> {
    let (_, pem) = parse_x509_pem(chain_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    citadel::controllers::secret::leaf_dns_names(&cert)
}

/// A certificate's serial (hex) and SPIFFE URI SANs.
fn leaf_facts(chain_pem: &str) -> (String, Vec<String>) {
    let (_, pem) = parse_x509_pem(chain_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let uris = cert
        .subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    (hex::encode(cert.raw_serial()), uris)
}

/// The Secret's leaf names `identity` and verifies against its root-cert.pem;
/// returns the serial.
fn check_secret(secret: &Value, identity: &str) -> String {
    assert_eq!(secret["type"], SECRET_TYPE);
    let chain = unb64(&secret["data"][CERT_CHAIN_KEY]);
    let roots = unb64(&secret["data"][ROOT_CERT_KEY]);
    let key = unb64(&secret["data"][KEY_KEY]);
    assert!(key.contains("PRIVATE KEY"));
    let (serial, uris) = leaf_facts(&chain);
    assert_eq!(uris, [identity]);
    // Each certificate of the chain is signed by the next, the last by a root.
    let chain_pems: Vec<Pem> = Pem::iter_from_buffer(chain.as_bytes())
        .map(Result::unwrap)
        .collect();
    let root_pems: Vec<Pem> = Pem::iter_from_buffer(roots.as_bytes())
        .map(Result::unwrap)
        .collect();
    let certs: Vec<_> = chain_pems.iter().map(|p| p.parse_x509().unwrap()).collect();
    let root_certs: Vec<_> = root_pems.iter().map(|p| p.parse_x509().unwrap()).collect();
    for pair in certs.windows(2) {
        pair[0]
            .verify_signature(Some(pair[1].public_key()))
            .unwrap();
    }
    let last = certs.last().unwrap();
    let verified = root_certs
        .iter()
        .any(|root| last.verify_signature(Some(root.public_key())).is_ok());
    assert!(verified, "the chain verifies against root-cert.pem");
    // The key is the leaf's.
    mesh_tls::TlsIdentity::from_pem(chain.as_bytes(), key.as_bytes(), roots.as_bytes()).unwrap();
    serial
}

fn rv(v: &Value) -> String {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn service_accounts_get_secrets_kept_current_and_removed_with_them() {
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let r = replica(&server, dir.path(), "ledger", config(true, &[])).await;
    add_account(&server, "shop", "cart");

    // A new account gets its Secret, recorded in the ledger and owned by the account.
    let secret = eventually("istio.cart created", || get_secret(&server, "shop", "cart")).await;
    let serial = check_secret(&secret, "spiffe://cluster.local/ns/shop/sa/cart");
    assert!(r.ledger.get(&serial).await.unwrap().is_some(), "recorded");
    let sa = server
        .get_object("v1", "ServiceAccount", "shop", "cart")
        .unwrap();
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "ServiceAccount");
    assert_eq!(owner["uid"], sa["metadata"]["uid"]);
    assert!(r.controllers.is_leader());
    assert_eq!(r.writes_reaching("create", 1).await, 1);

    // A deleted Secret is recreated, with a new certificate.
    server
        .delete_object("v1", "Secret", "shop", "istio.cart")
        .unwrap();
    let recreated = eventually("istio.cart recreated", || {
        get_secret(&server, "shop", "cart")
    })
    .await;
    let serial2 = check_secret(&recreated, "spiffe://cluster.local/ns/shop/sa/cart");
    assert_ne!(serial, serial2);

    // A Secret holding a certificate past its renewal point is renewed in place.
    let identity = mesh_tls::SpiffeId::new("cluster.local", "shop", "cart").unwrap();
    // The root is valid from five minutes ago: issued four minutes ago for four and
    // a half, the certificate is past 80 % of its life but still valid.
    let (_, old) = secret::issue(
        &r.authority,
        &identity,
        &[],
        Duration::from_secs(270),
        time::OffsetDateTime::now_utc() - time::Duration::minutes(4),
    )
    .unwrap();
    let mut expiring = recreated.clone();
    expiring["data"][CERT_CHAIN_KEY] = json!(b64(&old.chain_pem));
    expiring["data"][KEY_KEY] = json!(b64(old.key_pem()));
    let written = server.apply_object(expiring).unwrap();
    let uid = written["metadata"]["uid"].clone();
    let renewed = eventually("istio.cart renewed", || {
        get_secret(&server, "shop", "cart").filter(|s| rv(s) != rv(&written))
    })
    .await;
    let serial3 = check_secret(&renewed, "spiffe://cluster.local/ns/shop/sa/cart");
    assert_ne!(serial3, old.serial);
    assert_eq!(renewed["metadata"]["uid"], uid, "updated in place");
    r.writes_reaching("renew", 1).await;

    // Nothing is rewritten while the certificate is good.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rv(&get_secret(&server, "shop", "cart").unwrap()),
        rv(&renewed)
    );

    // The account's deletion removes its Secret.
    server
        .delete_object("v1", "ServiceAccount", "shop", "cart")
        .unwrap();
    eventually("istio.cart deleted", || {
        get_secret(&server, "shop", "cart").is_none().then_some(())
    })
    .await;
    assert_eq!(r.writes_reaching("delete", 1).await, 1);
    r.stop().await;
}

#[tokio::test]
async fn secrets_follow_only_the_namespaces_given_and_conflicts_are_retried() {
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(true, &[]);
    if let Some(s) = c.secrets.as_mut() {
        s.namespaces = vec!["shop".into()];
    }
    let r = replica(&server, dir.path(), "ledger", c).await;
    add_account(&server, "bank", "teller");
    add_account(&server, "shop", "web");
    let secret = eventually("istio.web", || get_secret(&server, "shop", "web")).await;
    check_secret(&secret, "spiffe://cluster.local/ns/shop/sa/web");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(get_secret(&server, "bank", "teller").is_none());

    // The repair's first update meets a conflict: read again, then write.
    server.inject_fault(
        kube_testserver::Fault::new("secrets", 409)
            .verb("update")
            .times(1),
    );
    let mut broken = secret.clone();
    broken["data"][KEY_KEY] = json!(b64("not a key"));
    let written = server.apply_object(broken).unwrap();
    let fixed = eventually("istio.web repaired after a conflict", || {
        get_secret(&server, "shop", "web").filter(|s| rv(s) != rv(&written))
    })
    .await;
    check_secret(&fixed, "spiffe://cluster.local/ns/shop/sa/web");
    r.stop().await;
}

#[tokio::test]
async fn a_root_rotation_renews_every_secret() {
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let r = replica(&server, dir.path(), "ledger", config(true, &[])).await;
    add_account(&server, "shop", "cart");
    let before = eventually("istio.cart", || get_secret(&server, "shop", "cart")).await;
    let roots_before = unb64(&before["data"][ROOT_CERT_KEY]);

    // Rotate: a renewed self-signed root (same key), as citadel's refresh loop does
    // when the old one nears its end; here forced through a second authority on the
    // same directory with a threshold beyond the root's lifetime.
    let rotating = Authority::open(
        CaSource::SelfSigned(dir.path().join("ca")),
        CaPolicy {
            root_renew_before: Duration::from_secs(20 * 365 * 24 * 3600),
            ..CaPolicy::default()
        },
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    drop(rotating);
    // The replica's authority picks up the new files (citadel does this every second).
    assert!(r.authority.refresh(time::OffsetDateTime::now_utc()));
    let after = eventually("istio.cart renewed for the new roots", || {
        get_secret(&server, "shop", "cart")
            .filter(|s| unb64(&s["data"][ROOT_CERT_KEY]) != roots_before)
    })
    .await;
    assert_eq!(
        unb64(&after["data"][ROOT_CERT_KEY]),
        r.authority.roots_pem().unwrap()
    );
    assert_eq!(
        unb64(&after["data"][ROOT_CERT_KEY])
            .matches("BEGIN CERTIFICATE")
            .count(),
        2,
        "both roots trusted during the rotation"
    );
    check_secret(&after, "spiffe://cluster.local/ns/shop/sa/cart");
    r.stop().await;
}

#[tokio::test]
async fn a_plugged_ca_rotated_to_a_new_root_renews_every_secret_through_the_overlap() {
    use mesh_tls::test_util::TestCa;
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let cacerts = dir.path().join("cacerts");
    let old_root = TestCa::new("Old Root");
    let old_issuer = old_root.intermediate("Old Intermediate");
    old_issuer.write_cacerts(&cacerts, &[&old_root]);
    let authority = Arc::new(
        Authority::open(
            CaSource::Plugged(cacerts.clone()),
            CaPolicy::default(),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap(),
    );
    let r = replica_of(&server, authority, dir.path(), "ledger", config(true, &[])).await;
    add_account(&server, "shop", "cart");
    let first = eventually("istio.cart", || get_secret(&server, "shop", "cart")).await;
    check_secret(&first, "spiffe://cluster.local/ns/shop/sa/cart");
    let chain = unb64(&first["data"][CERT_CHAIN_KEY]);
    assert!(
        chain.contains(old_issuer.cert_pem()),
        "signed by the old intermediate"
    );
    assert_eq!(unb64(&first["data"][ROOT_CERT_KEY]), old_root.cert_pem());

    // The operator plugs a new root and intermediate in, both roots trusted for the
    // overlap (Istio's way of rotating a plugged CA). citadel reloads the files
    // (every second; here at once) and renews every Secret.
    let new_root = TestCa::new("New Root");
    let new_issuer = new_root.intermediate("New Intermediate");
    std::thread::sleep(Duration::from_millis(20));
    new_issuer.write_cacerts(&cacerts, &[&old_root, &new_root]);
    assert!(r.authority.refresh(time::OffsetDateTime::now_utc()));
    let both = format!("{}{}", old_root.cert_pem(), new_root.cert_pem());
    let overlap = eventually("istio.cart renewed under both roots", || {
        get_secret(&server, "shop", "cart").filter(|s| unb64(&s["data"][ROOT_CERT_KEY]) == both)
    })
    .await;
    check_secret(&overlap, "spiffe://cluster.local/ns/shop/sa/cart");
    let chain = unb64(&overlap["data"][CERT_CHAIN_KEY]);
    assert!(
        chain.contains(new_issuer.cert_pem()),
        "signed by the new intermediate"
    );
    assert!(
        !chain.contains(new_root.cert_pem()),
        "the root is not repeated"
    );

    // The old root is retired: the Secrets follow again.
    std::thread::sleep(Duration::from_millis(20));
    new_issuer.write_cacerts(&cacerts, &[&new_root]);
    assert!(r.authority.refresh(time::OffsetDateTime::now_utc()));
    let after = eventually("istio.cart renewed under the new root alone", || {
        get_secret(&server, "shop", "cart")
            .filter(|s| unb64(&s["data"][ROOT_CERT_KEY]) == new_root.cert_pem())
    })
    .await;
    check_secret(&after, "spiffe://cluster.local/ns/shop/sa/cart");
    assert_eq!(
        after["metadata"]["uid"], first["metadata"]["uid"],
        "renewed in place"
    );
    r.writes_reaching("renew", 2).await;
    r.stop().await;
}

fn webhook_config(kind: &str, name: &str, bundle: Option<&str>) -> Value {
    let mut client =
        json!({"service": {"name": name, "namespace": "istio-system", "path": "/hook"}});
    if let Some(b) = bundle {
        client["caBundle"] = json!(b);
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": {"app": name}},
        "webhooks": [
            {"name": format!("a.{name}.dromon.io"), "clientConfig": client.clone(),
             "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": "Fail"},
            {"name": format!("b.{name}.dromon.io"), "clientConfig": client,
             "sideEffects": "None", "admissionReviewVersions": ["v1"]}
        ]
    })
}

fn bundles(server: &KubeTestServer, kind: &str, name: &str) -> Vec<Option<String>> {
    server
        .get_object("admissionregistration.k8s.io/v1", kind, "", name)
        .map(|c| {
            c["webhooks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["clientConfig"]["caBundle"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn webhook_accounts_get_dns_serving_certificates_and_older_secrets_gain_them() {
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    add_account(&server, "istio-system", "injector");
    add_account(&server, "istio-system", "plain");
    // A citadel without --dns-certs writes the account's Secret first.
    let first = replica(&server, dir.path(), "ledger", config(true, &[])).await;
    let plain = eventually("istio.injector written", || {
        get_secret(&server, "istio-system", "injector")
    })
    .await;
    assert!(leaf_dns_names(&unb64(&plain["data"][CERT_CHAIN_KEY])).is_empty());
    let plain_other = eventually("istio.plain written", || {
        get_secret(&server, "istio-system", "plain")
    })
    .await;
    first.stop().await;

    // One given DNS names for it renews that Secret in place, and only that one.
    let names = [
        "injector.istio-system.svc",
        "injector.istio-system.svc.cluster.local",
    ];
    let mut c = config(true, &[]);
    let certs = [format!("istio-system/injector={}", names.join(","))
        .parse::<citadel::controllers::DnsCert>()
        .unwrap()];
    c.secrets = c.secrets.map(|s| s.with_dns_certs(&certs).unwrap());
    let second = replica(&server, dir.path(), "ledger", c).await;
    let renewed = eventually("istio.injector renewed with DNS names", || {
        get_secret(&server, "istio-system", "injector").filter(|s| rv(s) != rv(&plain))
    })
    .await;
    check_secret(
        &renewed,
        "spiffe://cluster.local/ns/istio-system/sa/injector",
    );
    assert_eq!(renewed["metadata"]["uid"], plain["metadata"]["uid"]);
    assert_eq!(
        leaf_dns_names(&unb64(&renewed["data"][CERT_CHAIN_KEY])),
        names
    );
    assert_eq!(second.writes_reaching("renew", 1).await, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rv(&get_secret(&server, "istio-system", "plain").unwrap()),
        rv(&plain_other)
    );
    assert_eq!(second.writes("renew"), 1, "a current Secret is left alone");
    second.stop().await;
}

#[tokio::test]
async fn webhook_ca_bundles_are_filled_and_restored() {
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    const M: &str = "MutatingWebhookConfiguration";
    const V: &str = "ValidatingWebhookConfiguration";
    server
        .apply_object(webhook_config(M, "dromon-sidecar-injector", None))
        .unwrap();
    server
        .apply_object(webhook_config(V, "unrelated", Some("b3RoZXI=")))
        .unwrap();
    let r = replica(
        &server,
        dir.path(),
        "ledger",
        config(false, &["dromon-sidecar-injector", "dromon-galley"]),
    )
    .await;
    let want = Some(b64(&r.authority.roots_pem().unwrap()));
    let all_current = |kind: &str, name: &str| {
        let b = bundles(&server, kind, name);
        (!b.is_empty() && b.iter().all(|x| *x == want)).then_some(())
    };
    eventually("injector caBundle filled", || {
        all_current(M, "dromon-sidecar-injector")
    })
    .await;

    // A configuration created later is patched too; only the caBundle changes.
    server
        .apply_object(webhook_config(V, "dromon-galley", None))
        .unwrap();
    eventually("galley caBundle filled", || all_current(V, "dromon-galley")).await;
    let patched = server
        .get_object("admissionregistration.k8s.io/v1", V, "", "dromon-galley")
        .unwrap();
    let mut expected = webhook_config(V, "dromon-galley", want.as_deref());
    assert_eq!(patched["webhooks"], expected["webhooks"]);
    assert_eq!(
        patched["metadata"]["labels"],
        expected["metadata"]["labels"]
    );

    // Someone overwrites it with garbage: citadel puts its roots back.
    expected["webhooks"][1]["clientConfig"]["caBundle"] = json!(b64("garbage"));
    server.apply_object(expected).unwrap();
    eventually("galley caBundle restored", || {
        all_current(V, "dromon-galley")
    })
    .await;

    // Configurations not named are left alone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        bundles(&server, V, "unrelated"),
        [Some("b3RoZXI=".to_string()), Some("b3RoZXI=".to_string())]
    );
    assert!(r.metrics.writes("webhooks", "patch") >= 3);
    r.stop().await;
}

#[tokio::test]
async fn only_the_leader_writes_and_another_replica_takes_over() {
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    // Two replicas sharing the CA directory, each with its own ledger and counters.
    let first = replica(&server, dir.path(), "ledger-a", config(true, &[])).await;
    let second = replica(&server, dir.path(), "ledger-b", config(true, &[])).await;
    let leading = |r: &Replica| r.controllers.is_leader();
    eventually("a leader", || {
        (leading(&first) || leading(&second)).then_some(())
    })
    .await;
    let (leader, follower) = if leading(&first) {
        (first, second)
    } else {
        (second, first)
    };
    for sa in ["a", "b", "c"] {
        add_account(&server, "shop", sa);
    }
    for sa in ["a", "b", "c"] {
        eventually("secret", || get_secret(&server, "shop", sa)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(leader.writes("create"), 3);
    assert!(!follower.controllers.is_leader());
    assert_eq!(
        follower.writes("create") + follower.writes("renew") + follower.writes("delete"),
        0
    );
    let versions: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|sa| rv(&get_secret(&server, "shop", sa).unwrap()))
        .collect();

    // The leader stops (releasing the Lease): the other replica takes over, leaves
    // the good Secrets alone and serves new accounts.
    leader.stop().await;
    let mut follower_leading = follower.controllers.subscribe();
    tokio::time::timeout(WAIT, follower_leading.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    add_account(&server, "shop", "d");
    let d = eventually("secret of d", || get_secret(&server, "shop", "d")).await;
    let serial = check_secret(&d, "spiffe://cluster.local/ns/shop/sa/d");
    assert!(follower.ledger.get(&serial).await.unwrap().is_some());
    assert_eq!(follower.writes_reaching("create", 1).await, 1);
    assert_eq!(follower.writes("renew"), 0);
    let unchanged: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|sa| rv(&get_secret(&server, "shop", sa).unwrap()))
        .collect();
    assert_eq!(versions, unchanged);
    follower.stop().await;
}

/// A plain HTTP GET on the monitoring port; the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: citadel\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn citadel_runs_the_controllers_from_its_flags_and_shows_leadership() {
    use clap::Parser;
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.write_kubeconfig(dir.path()).unwrap();
    let data = dir.path().join("data");
    let args = citadel::args::Args::try_parse_from([
        "citadel",
        "--grpc-addr",
        "127.0.0.1:0",
        "--monitoring-addr",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--kube-secrets",
        "--patch-webhooks",
        "dromon-galley",
    ])
    .unwrap();
    let shutdown = CancellationToken::new();
    let running =
        citadel::server::start(args.serve.config().expect("valid flags"), shutdown.clone())
            .await
            .unwrap();
    add_account(&server, "shop", "cart");
    let secret = eventually("istio.cart", || get_secret(&server, "shop", "cart")).await;
    check_secret(&secret, "spiffe://cluster.local/ns/shop/sa/cart");
    let debug: Value =
        serde_json::from_str(&http_get(running.monitoring_addr, "/debug/ca").await).unwrap();
    assert_eq!(
        debug["controllers"]["lease"],
        "istio-system/citadel-controllers"
    );
    assert_eq!(debug["controllers"]["leading"], true);
    assert_eq!(debug["controllers"]["secrets"], true);
    assert_eq!(debug["controllers"]["webhooks"], json!(["dromon-galley"]));
    let metrics = http_get(running.monitoring_addr, "/metrics").await;
    assert!(
        metrics.contains("leader_election_leading{lease=\"istio-system/citadel-controllers\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("citadel_controller_writes_total{controller=\"secrets\",op=\"create\"} 1"),
        "{metrics}"
    );
    // Shutting down releases the Lease.
    shutdown.cancel();
    tokio::time::timeout(WAIT, running.wait())
        .await
        .unwrap()
        .unwrap();
    let lease = server
        .get_object(
            "coordination.k8s.io/v1",
            "Lease",
            "istio-system",
            "citadel-controllers",
        )
        .unwrap();
    assert!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
}
