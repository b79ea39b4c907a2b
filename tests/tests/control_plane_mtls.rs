//! The control plane over mutual TLS with certificates citadel issues: the real
//! citadel, galley, pilot and mixer-policy binaries, certificates fetched by
//! `citadel agent`, galley's mTLS MCP port followed by pilot and mixer-policy over
//! `https://`, proxies on pilot's mTLS xDS port served only the namespace and
//! service account their certificate names, and mixer-policy's mTLS Check port
//! answering only clients with a certificate citadel issued.

#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::bail;
use dromon_e2e::{
    ChildGuard,
    ads::{SotwClient, node},
    citadel::{CitadelProcess, agent_once, metric_value},
    free_port, http_get, until, wait_http_ok,
};
use mesh_api::{
    envoy::envoy::config::core::v3::Node,
    mixer::v1::{CheckRequest, mixer_client::MixerClient},
};
use mesh_tls::{ClientCredentials, FileIdentity, IdentitySource, ServerIdentity, SpiffeId};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use tonic::Code;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const WAIT: Duration = Duration::from_secs(15);
const PILOT_ID: &str = "spiffe://cluster.local/ns/istio-system/sa/pilot";
const GALLEY_ID: &str = "spiffe://cluster.local/ns/istio-system/sa/galley";
const MIXER_POLICY_ID: &str = "spiffe://cluster.local/ns/istio-system/sa/mixer-policy";
/// A bookinfo sidecar's node id: namespace `bookinfo`.
const PRODUCTPAGE_NODE: &str =
    "sidecar~10.1.0.7~productpage-v1-7d4f.bookinfo~bookinfo.svc.cluster.local";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo")
}

fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

struct Plane {
    citadel: CitadelProcess,
    _children: Vec<ChildGuard>,
    galley_mtls: SocketAddr,
    galley_monitoring: SocketAddr,
    pilot_xds: SocketAddr,
    pilot_mtls: SocketAddr,
    pilot_monitoring: SocketAddr,
    tmp: PathBuf,
}

impl Plane {
    /// citadel, then galley and pilot with certificates from `citadel agent --once`;
    /// pilot follows galley over mTLS.
    async fn start(tmp: &Path) -> anyhow::Result<Self> {
        let mut plane = Self::start_galley(tmp).await?;
        plane.start_pilot().await?;
        Ok(plane)
    }

    /// citadel, then galley with a certificate from `citadel agent --once`.
    async fn start_galley(tmp: &Path) -> anyhow::Result<Self> {
        let mut plane = Self {
            citadel: CitadelProcess::start(&tmp.join("citadel"), &[]).await?,
            _children: Vec::new(),
            galley_mtls: addr(),
            galley_monitoring: addr(),
            pilot_xds: addr(),
            pilot_mtls: addr(),
            pilot_monitoring: addr(),
            tmp: tmp.to_path_buf(),
        };
        let galley_certs = plane.certificate("istio-system", "galley")?;
        let g = ChildGuard::spawn(
            "galley",
            &[
                "--config-dir",
                &examples().display().to_string(),
                "--mcp-addr",
                &addr().to_string(),
                "--monitoring-addr",
                &plane.galley_monitoring.to_string(),
                "--tls-dir",
                &galley_certs.display().to_string(),
                "--mcp-mtls-addr",
                &plane.galley_mtls.to_string(),
            ],
        )?;
        plane._children.push(g);
        wait_http_ok(plane.galley_monitoring, "/ready", WAIT).await?;
        Ok(plane)
    }

    /// pilot, following galley over mTLS.
    async fn start_pilot(&mut self) -> anyhow::Result<()> {
        let pilot_certs = self.certificate("istio-system", "pilot")?;
        let p = ChildGuard::spawn(
            "pilot",
            &[
                "--galley",
                &format!("https://{}", self.galley_mtls),
                "--galley-identity",
                GALLEY_ID,
                "--tls-dir",
                &pilot_certs.display().to_string(),
                "--xds-addr",
                &self.pilot_xds.to_string(),
                "--xds-mtls-addr",
                &self.pilot_mtls.to_string(),
                "--monitoring-addr",
                &self.pilot_monitoring.to_string(),
            ],
        )?;
        self._children.push(p);
        // Ready only once galley's configuration arrived, over mTLS.
        wait_http_ok(self.pilot_monitoring, "/ready", WAIT).await?;
        Ok(())
    }

    /// mixer-policy, following galley over mTLS, with its mTLS Check port on; that
    /// port's address and the monitoring address.
    async fn start_mixer_policy(&mut self) -> anyhow::Result<(SocketAddr, SocketAddr)> {
        let certs = self.certificate("istio-system", "mixer-policy")?;
        let (mtls, monitoring) = (addr(), addr());
        let p = ChildGuard::spawn(
            "mixer-policy",
            &[
                "--galley",
                &format!("https://{}", self.galley_mtls),
                "--galley-identity",
                GALLEY_ID,
                "--tls-dir",
                &certs.display().to_string(),
                "--mtls-addr",
                &mtls.to_string(),
                "--grpc-addr",
                &addr().to_string(),
                "--monitoring-addr",
                &monitoring.to_string(),
                "--data-dir",
                &self.tmp.join("mixer-policy").display().to_string(),
            ],
        )?;
        self._children.push(p);
        wait_http_ok(monitoring, "/ready", WAIT).await?;
        Ok((mtls, monitoring))
    }

    /// A certificate directory for `ns`/`sa`, as `citadel agent --once` writes it
    /// with a token from `citadel token`.
    fn certificate(&self, ns: &str, sa: &str) -> anyhow::Result<PathBuf> {
        agent_once(
            &self.citadel.ca_addr(),
            &self.citadel.root(),
            &self.citadel.token(ns, sa)?,
            &self.tmp.join(format!("certs-{ns}-{sa}")),
        )
    }

    /// A certificate directory for `ns`/`sa` from a CA citadel does not know. It
    /// trusts citadel's root too, so only the server's check can refuse it.
    fn foreign_certificate(&self, ns: &str, sa: &str) -> PathBuf {
        let foreign = mesh_tls::test_util::TestCa::new("foreign");
        let leaf = foreign.issue(&mesh_tls::test_util::spiffe(ns, sa));
        let dir = self.tmp.join(format!("foreign-{ns}-{sa}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert-chain.pem"), &leaf.chain_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &leaf.key_pem).unwrap();
        let mut roots = foreign.cert_pem().to_string();
        roots.push_str(&std::fs::read_to_string(self.citadel.root()).unwrap());
        std::fs::write(dir.join("root-cert.pem"), roots).unwrap();
        dir
    }

    fn roots(&self) -> Vec<CertificateDer<'static>> {
        let pem = std::fs::read(self.citadel.root()).unwrap();
        CertificateDer::pem_slice_iter(&pem)
            .map(|c| c.unwrap())
            .collect()
    }
}

fn identity(dir: &Path) -> Arc<dyn IdentitySource> {
    Arc::new(FileIdentity::open(dir).unwrap())
}

fn channel(
    at: SocketAddr,
    credentials: ClientCredentials,
    server: &str,
) -> tonic::transport::Channel {
    mesh_tls::channel_with(
        &format!("https://{at}"),
        credentials,
        ServerIdentity::Exact(server.parse::<SpiffeId>().unwrap()),
    )
    .unwrap()
}

fn sidecar(id: &str, service_account: Option<&str>) -> Node {
    let mut n = node(id);
    if let Some(sa) = service_account {
        let mut fields = std::collections::BTreeMap::new();
        fields.insert(
            "SERVICE_ACCOUNT".to_string(),
            mesh_api::envoy::google::protobuf::Value {
                kind: Some(mesh_api::envoy::google::protobuf::value::Kind::StringValue(
                    sa.to_string(),
                )),
            },
        );
        n.metadata = Some(mesh_api::envoy::google::protobuf::Struct {
            fields: fields.into_iter().collect(),
        });
    }
    n
}

/// Opens a stream, asks for clusters, and returns the first answer.
async fn first_cds(channel: tonic::transport::Channel, node: Node) -> anyhow::Result<usize> {
    let mut client = SotwClient::connect_channel(channel, node).await?;
    client.subscribe(CDS, &[]).await?;
    let resp = client.recv(WAIT).await?;
    if resp.type_url != CDS {
        bail!("expected clusters first, got {}", resp.type_url);
    }
    Ok(resp.resources.len())
}

fn code_of(e: &anyhow::Error) -> Option<Code> {
    e.downcast_ref::<tonic::Status>().map(|s| s.code())
}

async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics").await.unwrap();
    metric_value(&body, name).unwrap_or(0.0)
}

#[tokio::test]
async fn pilot_follows_galley_and_serves_proxies_over_mtls_with_citadel_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let plane = Plane::start(tmp.path()).await.unwrap();
    let productpage = plane
        .certificate("bookinfo", "bookinfo-productpage")
        .unwrap();

    // A bookinfo proxy with its own certificate gets its clusters on 15011.
    let creds = ClientCredentials::Identity(identity(&productpage));
    let clusters = first_cds(
        channel(plane.pilot_mtls, creds.clone(), PILOT_ID),
        sidecar(PRODUCTPAGE_NODE, Some("bookinfo-productpage")),
    )
    .await
    .unwrap();
    assert!(clusters > 0, "no clusters over mTLS");
    // Plaintext 15010 keeps serving.
    let plain = first_cds(
        tonic::transport::Endpoint::from_shared(format!("http://{}", plane.pilot_xds))
            .unwrap()
            .connect()
            .await
            .unwrap(),
        sidecar(PRODUCTPAGE_NODE, None),
    )
    .await
    .unwrap();
    assert_eq!(plain, clusters);

    // The same certificate claiming another namespace, or another service account,
    // is refused.
    let other_ns = "sidecar~10.1.0.8~ratings-v1-5f9c.default~default.svc.cluster.local";
    let e = first_cds(
        channel(plane.pilot_mtls, creds.clone(), PILOT_ID),
        sidecar(other_ns, None),
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&e), Some(Code::PermissionDenied), "{e:#}");
    let e = first_cds(
        channel(plane.pilot_mtls, creds.clone(), PILOT_ID),
        sidecar(PRODUCTPAGE_NODE, Some("bookinfo-reviews")),
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&e), Some(Code::PermissionDenied), "{e:#}");
    assert!(metric(plane.pilot_monitoring, "xds_refused_unauthorized_total").await >= 2.0);

    // No client certificate: the handshake fails, nothing is served.
    let e = first_cds(
        channel(
            plane.pilot_mtls,
            ClientCredentials::RootsOnly(plane.roots()),
            PILOT_ID,
        ),
        sidecar(PRODUCTPAGE_NODE, None),
    )
    .await
    .unwrap_err();
    assert_ne!(code_of(&e), Some(Code::Ok), "{e:#}");
    failed_handshakes(plane.pilot_monitoring, 1.0).await;

    // A certificate from another CA, naming the right identity, is not trusted.
    let e = first_cds(
        channel(
            plane.pilot_mtls,
            ClientCredentials::Identity(identity(
                &plane.foreign_certificate("bookinfo", "bookinfo-productpage"),
            )),
            PILOT_ID,
        ),
        sidecar(PRODUCTPAGE_NODE, None),
    )
    .await
    .unwrap_err();
    assert_ne!(code_of(&e), Some(Code::Ok), "{e:#}");
    failed_handshakes(plane.pilot_monitoring, 2.0).await;

    // galley's mTLS port serves the control plane's namespace only.
    let e = first_cds(
        channel(plane.galley_mtls, creds, GALLEY_ID),
        node("intruder"),
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&e), Some(Code::PermissionDenied), "{e:#}");
    assert!(metric(plane.galley_monitoring, "xds_refused_unauthorized_total").await >= 1.0);
    assert!(
        metric(
            plane.galley_monitoring,
            "tls_handshakes_total{result=\"ok\"}"
        )
        .await
            >= 1.0
    );
}

/// A Mixer Check of a call from reviews `version` to ratings in bookinfo: the
/// precondition's status code (the sample's rule refuses reviews v3 with 7).
async fn check_reviews_to_ratings(
    channel: tonic::transport::Channel,
    version: &str,
) -> Result<i32, tonic::Status> {
    let labels = |pairs: &[(&str, &str)]| mixer_core::Value::string_map(pairs.iter().copied());
    let mut bag = mixer_core::wire::AttributeBag::new();
    bag.insert("destination.namespace", mixer_core::Value::from("bookinfo"));
    bag.insert("destination.labels", labels(&[("app", "ratings")]));
    bag.insert(
        "source.labels",
        labels(&[("app", "reviews"), ("version", version)]),
    );
    let resp = MixerClient::new(channel)
        .check(CheckRequest {
            attributes: Some(mixer_core::wire::encode(&bag, 0)),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(resp
        .precondition
        .and_then(|p| p.status)
        .map(|s| s.code)
        .unwrap_or_default())
}

/// Checks mixer-policy answered so far, over every API and result.
async fn checks_answered(monitoring: SocketAddr) -> f64 {
    let (_, body) = http_get(monitoring, "/metrics").await.unwrap();
    body.lines()
        .filter(|l| l.starts_with("mixer_policy_checks_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Waits until `monitoring` counts `n` failed handshakes on its mTLS port.
async fn failed_handshakes(monitoring: SocketAddr, n: f64) {
    until("failed handshakes on an mTLS port", WAIT, || async move {
        metric(monitoring, "tls_handshakes_total{result=\"failed\"}").await == n
    })
    .await;
}

#[tokio::test]
async fn mixer_policy_checks_over_mtls_only_for_clients_with_citadel_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let mut plane = Plane::start_galley(tmp.path()).await.unwrap();
    let (policy_mtls, policy_monitoring) = plane.start_mixer_policy().await.unwrap();

    // A sidecar with citadel's certificate gets decisions by the sample's rule.
    let reviews = plane.certificate("bookinfo", "bookinfo-reviews").unwrap();
    let creds = ClientCredentials::Identity(identity(&reviews));
    for (version, expected) in [("v3", 7), ("v2", 0)] {
        let code = check_reviews_to_ratings(
            channel(policy_mtls, creds.clone(), MIXER_POLICY_ID),
            version,
        )
        .await
        .unwrap();
        assert_eq!(code, expected, "reviews {version}");
    }
    assert!(metric(policy_monitoring, "tls_handshakes_total{result=\"ok\"}").await >= 1.0);
    failed_handshakes(policy_monitoring, 0.0).await;
    assert_eq!(checks_answered(policy_monitoring).await, 2.0);

    // No client certificate: the handshake fails, nothing is decided.
    let e = check_reviews_to_ratings(
        channel(
            policy_mtls,
            ClientCredentials::RootsOnly(plane.roots()),
            MIXER_POLICY_ID,
        ),
        "v2",
    )
    .await
    .unwrap_err();
    failed_handshakes(policy_monitoring, 1.0).await;
    assert_eq!(checks_answered(policy_monitoring).await, 2.0, "{e:?}");

    // A certificate from another CA, naming the same identity, is not trusted.
    let foreign = plane.foreign_certificate("bookinfo", "bookinfo-reviews");
    let e = check_reviews_to_ratings(
        channel(
            policy_mtls,
            ClientCredentials::Identity(identity(&foreign)),
            MIXER_POLICY_ID,
        ),
        "v2",
    )
    .await
    .unwrap_err();
    failed_handshakes(policy_monitoring, 2.0).await;
    assert_eq!(checks_answered(policy_monitoring).await, 2.0, "{e:?}");
}
