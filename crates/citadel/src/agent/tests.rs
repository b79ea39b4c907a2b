//! The agent against an in-process citadel: renewal over mTLS, SDS streams (SotW
//! and delta) following renewals, fallback to the token when mTLS renewal fails,
//! and an expired certificate reported rather than served silently.

#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use mesh_api::envoy::envoy::{
    extensions::transport_sockets::tls::v3::{Secret as EnvoySecret, secret},
    service::{
        discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest},
        secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient,
    },
};
use mesh_tls::IdentitySource;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::{
    authn::LocalIssuer,
    ca::CaPolicy,
    server::{CitadelConfig, Running, TokenReviewConfig},
};

struct TestCitadel {
    running: Running,
    shutdown: CancellationToken,
    data: PathBuf,
}

impl TestCitadel {
    async fn start(data: &Path, grpc_addr: SocketAddr) -> Self {
        Self::start_with(data, grpc_addr, None).await
    }

    async fn start_with(
        data: &Path,
        grpc_addr: SocketAddr,
        token_review: Option<TokenReviewConfig>,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let config = CitadelConfig {
            grpc_addr,
            monitoring_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: data.to_path_buf(),
            cacerts: None,
            policy: CaPolicy::default(),
            ledger_url: None,
            local_issuer: true,
            jwt_issuers: Vec::new(),
            token_review,
            serving_dns_names: vec!["localhost".into()],
            identity: ("istio-system".into(), "citadel".into()),
            controllers: None,
        };
        let running = crate::server::start(config, shutdown.clone())
            .await
            .unwrap();
        Self {
            running,
            shutdown,
            data: data.to_path_buf(),
        }
    }

    fn addr(&self) -> String {
        format!("https://127.0.0.1:{}", self.running.grpc_addr.port())
    }

    fn root(&self) -> PathBuf {
        self.data.join("ca/root-cert.pem")
    }

    fn token(&self, ns: &str, sa: &str) -> String {
        LocalIssuer::load_or_create(&self.data.join("tokens"))
            .unwrap()
            .mint(ns, sa, Duration::from_secs(3600))
            .unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await.unwrap();
    }
}

fn mk_config(citadel: &TestCitadel, token: TokenSource, ttl: Duration) -> AgentConfig {
    let mut config = AgentConfig::new(citadel.addr(), "cluster.local");
    config.ca_root = Some(citadel.root());
    config.token = Some(token);
    config.ttl = ttl;
    config
}

async fn within<T>(what: &str, secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {secs}s"))
}

/// The secrets of a response, by name.
fn secrets(resources: &[mesh_xds::Any]) -> Vec<EnvoySecret> {
    resources
        .iter()
        .map(|a| {
            assert_eq!(a.type_url, mesh_xds::type_url::SECRET);
            EnvoySecret::decode(a.value.as_slice()).unwrap()
        })
        .collect()
}

fn chain_of(secret: &EnvoySecret) -> String {
    match &secret.r#type {
        Some(secret::Type::TlsCertificate(c)) => {
            match &c.certificate_chain.as_ref().unwrap().specifier {
                Some(
                    mesh_api::envoy::envoy::config::core::v3::data_source::Specifier::InlineBytes(
                        b,
                    ),
                ) => String::from_utf8(b.clone()).unwrap(),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("not a TLS certificate: {:?}", other.is_some()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_go_over_mtls_and_reach_sds_streams_and_in_process_users() {
    let tmp = tempfile::tempdir().unwrap();
    let citadel = TestCitadel::start(&tmp.path().join("c"), "127.0.0.1:0".parse().unwrap()).await;
    let token = TokenSource::from_string(citadel.token("mesh", "pilot"));
    let mut config = mk_config(&citadel, token, Duration::from_secs(3));
    config.sds_addr = Some("127.0.0.1:0".parse().unwrap());
    config.output_dir = Some(tmp.path().join("certs"));
    let shutdown = CancellationToken::new();
    let agent = start(config, shutdown.clone()).await.unwrap();
    within("first certificate", 10, agent.ready()).await;

    let first = agent.certificate().unwrap();
    let debug = format!("{first:?} {agent:?} {:?}", agent.identity());
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
    assert_eq!(
        first.spiffe_id.as_ref().unwrap().to_string(),
        "spiffe://cluster.local/ns/mesh/sa/pilot"
    );
    let in_process = agent.identity().current().unwrap();
    assert_eq!(in_process.spiffe_id(), first.spiffe_id.as_ref());
    // The files are a whole set FileIdentity accepts.
    let files = mesh_tls::FileIdentity::open_with_interval(
        tmp.path().join("certs"),
        Duration::from_millis(20),
    )
    .unwrap();

    // SotW: ask for `default`, get the current certificate; ACK; the renewal
    // arrives on the same stream with a new version.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", agent.sds_addr.unwrap()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut client = SecretDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    let request = |version: &str, nonce: &str| DiscoveryRequest {
        type_url: mesh_xds::type_url::SECRET.into(),
        resource_names: vec![DEFAULT_SECRET.into()],
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    };
    tx.send(request("", "")).await.unwrap();
    let mut stream = client
        .stream_secrets(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let r1 = within("first SDS response", 10, stream.message())
        .await
        .unwrap()
        .unwrap();
    let s1 = secrets(&r1.resources);
    assert_eq!(s1.len(), 1, "only the secret asked for");
    assert_eq!(s1[0].name, DEFAULT_SECRET);
    let chain1 = chain_of(&s1[0]);
    tx.send(request(&r1.version_info, &r1.nonce)).await.unwrap();
    let r2 = within("renewal over SDS", 15, stream.message())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(r2.version_info, r1.version_info);
    let chain2 = chain_of(&secrets(&r2.resources)[0]);
    assert_ne!(chain1, chain2, "a renewed certificate");
    assert_eq!(agent.metrics().sds_streams.get(), 1);

    // Delta: subscribe to ROOTCA only.
    let (dtx, drx) = mpsc::channel(4);
    dtx.send(DeltaDiscoveryRequest {
        type_url: mesh_xds::type_url::SECRET.into(),
        resource_names_subscribe: vec![ROOT_SECRET.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut delta = client
        .delta_secrets(ReceiverStream::new(drx))
        .await
        .unwrap()
        .into_inner();
    let d1 = within("delta response", 10, delta.message())
        .await
        .unwrap()
        .unwrap();
    let names: Vec<&str> = d1.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [ROOT_SECRET]);
    let roots =
        EnvoySecret::decode(d1.resources[0].resource.as_ref().unwrap().value.as_slice()).unwrap();
    assert!(matches!(
        roots.r#type,
        Some(secret::Type::ValidationContext(_))
    ));

    // Renewals after the first went over mTLS; FileIdentity follows them.
    let m = agent.metrics();
    within("an mTLS renewal", 15, async {
        loop {
            let mtls = m
                .issued
                .get_or_create(&metrics::ViaLabels { via: "mtls".into() })
                .get();
            if mtls >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    within("FileIdentity sees a renewal", 15, async {
        loop {
            let held = agent.certificate().unwrap();
            let seen = files.current().unwrap();
            if seen.not_after() == Some(held.not_after) && held.serial != first.serial {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    drop(stream);
    drop(delta);
    shutdown.cancel();
    agent.wait().await.unwrap();
    citadel.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_mtls_renewal_fails_the_token_file_and_ca_root_file_are_read_again() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let old = TestCitadel::start(&tmp.path().join("old"), port).await;
    let token_file = tmp.path().join("token");
    let root_file = tmp.path().join("ca-root.pem");
    std::fs::write(&token_file, old.token("mesh", "galley")).unwrap();
    std::fs::copy(old.root(), &root_file).unwrap();
    let mut config = mk_config(
        &old,
        TokenSource::File(token_file.clone()),
        Duration::from_secs(4),
    );
    config.ca_root = Some(root_file.clone());
    let shutdown = CancellationToken::new();
    let agent = start(config, shutdown.clone()).await.unwrap();
    within("first certificate", 10, agent.ready()).await;
    let first = agent.certificate().unwrap();
    old.stop().await;

    // A new CA with a new root on the same address: the held certificate means
    // nothing to it, so mTLS fails; the token and root files now name the new CA.
    let new = TestCitadel::start(&tmp.path().join("new"), port).await;
    std::fs::write(&token_file, format!("{}\n", new.token("mesh", "galley"))).unwrap();
    std::fs::copy(new.root(), &root_file).unwrap();
    let mut rx = agent.subscribe();
    let renewed = within("renewal from the new CA", 20, async {
        loop {
            rx.changed().await.unwrap();
            let held = rx.borrow_and_update().clone().unwrap();
            if held.serial != first.serial {
                return held;
            }
        }
    })
    .await;
    let new_root = std::fs::read_to_string(new.root()).unwrap();
    assert_eq!(renewed.roots_pem.trim(), new_root.trim());
    // First issuance and the fallback (counted just after delivery).
    let m = agent.metrics();
    within("two token issuances counted", 5, async {
        let via_token = metrics::ViaLabels {
            via: "token".into(),
        };
        while m.issued.get_or_create(&via_token).get() != 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    shutdown.cancel();
    agent.wait().await.unwrap();
    new.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_reported_and_the_agent_turns_unready() {
    let tmp = tempfile::tempdir().unwrap();
    let citadel = TestCitadel::start(&tmp.path().join("c"), "127.0.0.1:0".parse().unwrap()).await;
    let token = TokenSource::from_string(citadel.token("mesh", "web"));
    let config = mk_config(&citadel, token, Duration::from_secs(2));
    let shutdown = CancellationToken::new();
    let agent = start(config, shutdown.clone()).await.unwrap();
    within("first certificate", 10, agent.ready()).await;
    citadel.stop().await;
    let m = agent.metrics();
    within("expiry reported", 20, async {
        while agent.is_ready() || m.cert_expired.get() != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let errors = m
        .renewals
        .get_or_create(&metrics::ResultLabels {
            result: "error".into(),
        })
        .get();
    assert!(errors >= 1);
    shutdown.cancel();
    agent.wait().await.unwrap();
}

#[test]
fn configurations_that_cannot_work_are_refused_up_front() {
    let mut c = AgentConfig::new("https://127.0.0.1:8060", "cluster.local");
    c.ca_root = Some("/dev/null".into());
    c.token = Some(TokenSource::from_string("t"));
    assert!(c.validate().is_ok());
    let mut bad = c.clone();
    bad.ca_addr = "http://127.0.0.1:8060".into();
    assert!(bad.validate().unwrap_err().to_string().contains("https"));
    let mut bad = c.clone();
    bad.sds_addr = Some("10.0.0.1:1".parse().unwrap());
    assert!(bad.validate().unwrap_err().to_string().contains("loopback"));
    let mut bad = c.clone();
    bad.ca_root = None;
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("--ca-root")
    );
    let mut bad = c.clone();
    bad.token = None;
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("--token-file")
    );
    assert_eq!(
        format!("{:?}", c.token),
        "Some(Static([redacted]))",
        "a static token is never printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_service_account_token_gets_a_certificate_over_the_ca_port() {
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};
    let tmp = tempfile::tempdir().unwrap();
    let kube = kube_testserver::KubeTestServer::start().await.unwrap();
    kube.set_token_reviewer(|spec| {
        let known = spec.token.as_deref() == Some("projected-sa-token")
            && spec.audiences.as_deref() == Some(&["istio-ca".to_string()][..]);
        TokenReviewStatus {
            authenticated: Some(known),
            audiences: known.then(|| vec!["istio-ca".to_string()]),
            user: known.then(|| UserInfo {
                username: Some("system:serviceaccount:bookinfo:ratings".into()),
                ..UserInfo::default()
            }),
            error: None,
        }
    });
    // citadel reaches the API server through a kubeconfig, as with --kubeconfig.
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters: [{{name: test, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: test, user: {{}}}}]\n\
             contexts: [{{name: test, context: {{cluster: test, user: test}}}}]\n",
            kube.url()
        ),
    )
    .unwrap();
    let review = TokenReviewConfig {
        kube: mesh_kube::KubeArgs {
            kubeconfig: Some(kubeconfig.into_os_string()),
            ..mesh_kube::KubeArgs::default()
        },
        audiences: vec!["istio-ca".into()],
    };
    let citadel = TestCitadel::start_with(
        &tmp.path().join("c"),
        "127.0.0.1:0".parse().unwrap(),
        Some(review),
    )
    .await;
    let mut config = mk_config(
        &citadel,
        TokenSource::from_string("projected-sa-token".to_string()),
        Duration::from_secs(3600),
    );
    config.output_dir = Some(tmp.path().join("certs"));
    let bundle = within("a certificate", 10, fetch_once(&config))
        .await
        .unwrap();
    assert_eq!(
        bundle.spiffe_id.as_ref().unwrap().to_string(),
        "spiffe://cluster.local/ns/bookinfo/sa/ratings"
    );
    // An unknown token is refused.
    let mut config = mk_config(
        &citadel,
        TokenSource::from_string("someone-elses".to_string()),
        Duration::from_secs(3600),
    );
    config.output_dir = Some(tmp.path().join("other"));
    assert!(within("a refusal", 10, fetch_once(&config)).await.is_err());
    citadel.stop().await;
}
