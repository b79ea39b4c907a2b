//! galley end to end: the real binary on a temp directory, an ADS client on its MCP
//! port, files added, changed, broken and deleted.

#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, path::Path, time::Duration};

use dromon_e2e::{
    ChildGuard,
    ads::{DeltaClient, SotwClient, mcp_resources, spec},
    http_get, http_json,
};
use mesh_api::envoy::envoy::service::discovery::v3::DeltaDiscoveryRequest;

const SE: &str = "networking.istio.io/v1alpha3/ServiceEntry";
const VS: &str = "networking.istio.io/v1alpha3/VirtualService";
const WAIT: Duration = Duration::from_secs(5);

fn service_entry(name: &str, host: &str, port: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: {name}
  namespace: shop
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: {port}
    name: http
    protocol: HTTP
  endpoints:
  - address: 127.0.0.1
"
    )
}

fn virtual_service(name: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
  namespace: shop
spec:
  hosts: [{host}]
  http:
  - route:
    - destination:
        host: {host}
"
    )
}

struct Galley {
    _child: ChildGuard,
    mcp: SocketAddr,
    monitoring: SocketAddr,
}

async fn start_galley(dir: &Path) -> (ChildGuard, SocketAddr, SocketAddr) {
    let g = dromon_e2e::start_galley(dir).await.unwrap();
    (g.child, g.mcp, g.monitoring)
}

impl Galley {
    async fn start(dir: &Path) -> Self {
        let (child, mcp, monitoring) = start_galley(dir).await;
        Self {
            _child: child,
            mcp,
            monitoring,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.mcp)
    }
}

fn hosts(spec: &serde_json::Value) -> Vec<String> {
    spec["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn files_added_changed_broken_and_deleted_reach_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        service_entry("cart", "cart.shop.svc.cluster.local", 80),
    )
    .unwrap();
    let galley = Galley::start(dir.path()).await;

    let mut client = SotwClient::connect(galley.endpoint(), "pilot-e2e")
        .await
        .unwrap();
    client.subscribe(SE, &[]).await.unwrap();
    let se1 = client.recv(WAIT).await.unwrap();
    assert_eq!(se1.type_url, SE);
    let res = mcp_resources(&se1).unwrap();
    assert_eq!(res.len(), 1);
    assert_eq!(res[0].metadata.as_ref().unwrap().name, "shop/cart");
    assert_eq!(res[0].kind, "ServiceEntry");
    client.ack(&se1, &[]).await.unwrap();
    client.subscribe(VS, &[]).await.unwrap();
    let vs1 = client.recv(WAIT).await.unwrap();
    assert!(vs1.resources.is_empty(), "no VirtualService yet");
    client.ack(&vs1, &[]).await.unwrap();

    // Add a file: only the VirtualService collection changes.
    std::fs::write(
        dir.path().join("b.yaml"),
        virtual_service("cart", "cart.shop.svc.cluster.local"),
    )
    .unwrap();
    let vs2 = client.recv(WAIT).await.unwrap();
    assert_eq!(vs2.type_url, VS);
    assert_ne!(vs2.version_info, vs1.version_info);
    assert_eq!(
        mcp_resources(&vs2).unwrap()[0]
            .metadata
            .as_ref()
            .unwrap()
            .name,
        "shop/cart"
    );
    client.ack(&vs2, &[]).await.unwrap();

    // Change a file.
    std::fs::write(
        dir.path().join("a.yaml"),
        service_entry("cart", "basket.shop.svc.cluster.local", 80),
    )
    .unwrap();
    let se2 = client.recv(WAIT).await.unwrap();
    assert_eq!(se2.type_url, SE);
    assert_ne!(se2.version_info, se1.version_info);
    assert_eq!(
        hosts(&spec(&mcp_resources(&se2).unwrap()[0]).unwrap()),
        ["basket.shop.svc.cluster.local"]
    );
    client.ack(&se2, &[]).await.unwrap();

    // Break it: refused, reported with file, line, resource and field; last good stays.
    std::fs::write(
        dir.path().join("a.yaml"),
        service_entry("cart", "broken.shop.svc.cluster.local", 700000),
    )
    .unwrap();
    let mut reported = None;
    for _ in 0..200 {
        let errors = http_json(galley.monitoring, "/debug/errors").await.unwrap();
        if let Some(first) = errors["errors"].as_array().and_then(|a| a.first()) {
            reported = Some(first["message"].as_str().unwrap().to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reported = reported.expect("the refusal is reported on /debug/errors");
    assert!(
        reported.starts_with("a.yaml:1: ServiceEntry shop/cart: spec.ports[0].number"),
        "{reported}"
    );
    client
        .expect_silence(Duration::from_millis(400))
        .await
        .unwrap();
    let configz = http_json(galley.monitoring, "/debug/configz")
        .await
        .unwrap();
    let se_version = configz["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["collection"] == SE)
        .unwrap()["version"]
        .clone();
    assert_eq!(
        se_version,
        serde_json::json!(se2.version_info),
        "the last good version stays current"
    );
    let metrics = http_get(galley.monitoring, "/metrics").await.unwrap().1;
    assert!(metrics.contains("galley_rejected_documents 1"), "{metrics}");
    assert!(metrics.contains("galley_kept_resources 1"), "{metrics}");

    // Fix it: published again.
    std::fs::write(
        dir.path().join("a.yaml"),
        service_entry("cart", "fixed.shop.svc.cluster.local", 8080),
    )
    .unwrap();
    let se3 = client.recv(WAIT).await.unwrap();
    assert_eq!(
        hosts(&spec(&mcp_resources(&se3).unwrap()[0]).unwrap()),
        ["fixed.shop.svc.cluster.local"]
    );
    client.ack(&se3, &[]).await.unwrap();

    // Delete a file: its resources go.
    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    let vs3 = client.recv(WAIT).await.unwrap();
    assert_eq!(vs3.type_url, VS);
    assert!(vs3.resources.is_empty());
    client.ack(&vs3, &[]).await.unwrap();

    // The debug view knows the client and what it ACKed.
    let mut synced = false;
    for _ in 0..100 {
        let syncz = http_json(galley.monitoring, "/debug/syncz").await.unwrap();
        let clients = syncz["clients"].as_array().unwrap().clone();
        if let Some(c) = clients.iter().find(|c| c["node_id"] == "pilot-e2e") {
            let se = &c["types"][SE];
            if se["acked_version"] == serde_json::json!(se3.version_info) {
                synced = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(synced, "syncz shows the client's ACK");
}

#[tokio::test]
async fn nack_is_recorded_and_not_resent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        service_entry("cart", "cart.shop.svc.cluster.local", 80),
    )
    .unwrap();
    let galley = Galley::start(dir.path()).await;
    let mut client = SotwClient::connect(galley.endpoint(), "nacker")
        .await
        .unwrap();
    client.subscribe(SE, &[]).await.unwrap();
    let first = client.recv(WAIT).await.unwrap();
    client.nack(&first, "", "cannot use this").await.unwrap();
    client
        .expect_silence(Duration::from_millis(300))
        .await
        .unwrap();
    let metrics = http_get(galley.monitoring, "/metrics").await.unwrap().1;
    assert!(
        metrics
            .contains("xds_nacks_total{type_url=\"networking.istio.io/v1alpha3/ServiceEntry\"} 1"),
        "{metrics}"
    );
    let syncz = http_json(galley.monitoring, "/debug/syncz").await.unwrap();
    let c = syncz["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["node_id"] == "nacker")
        .unwrap()
        .clone();
    assert_eq!(c["types"][SE]["nack"]["error"], "cannot use this");
    // A real change is sent again.
    std::fs::write(
        dir.path().join("a.yaml"),
        service_entry("cart", "cart2.shop.svc.cluster.local", 80),
    )
    .unwrap();
    let next = client.recv(WAIT).await.unwrap();
    assert_ne!(next.version_info, first.version_info);
}

#[tokio::test]
async fn delta_stream_sends_only_changes_and_removals() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        service_entry("cart", "cart.shop.svc.cluster.local", 80),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        service_entry("pay", "pay.shop.svc.cluster.local", 80),
    )
    .unwrap();
    let galley = Galley::start(dir.path()).await;
    let mut client = DeltaClient::connect(galley.endpoint()).await.unwrap();
    client
        .send(DeltaDiscoveryRequest {
            type_url: SE.into(),
            node: Some(dromon_e2e::ads::node("delta")),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = client.recv(WAIT).await.unwrap();
    let mut names: Vec<_> = r.resources.iter().map(|r| r.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["shop/cart", "shop/pay"]);
    client
        .send(DeltaDiscoveryRequest {
            type_url: SE.into(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    std::fs::write(
        dir.path().join("a.yaml"),
        service_entry("cart", "basket.shop.svc.cluster.local", 80),
    )
    .unwrap();
    let r = client.recv(WAIT).await.unwrap();
    assert_eq!(
        r.resources
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["shop/cart"]
    );
    assert!(r.removed_resources.is_empty());
    client
        .send(DeltaDiscoveryRequest {
            type_url: SE.into(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    let r = client.recv(WAIT).await.unwrap();
    assert!(r.resources.is_empty());
    assert_eq!(r.removed_resources, ["shop/pay"]);
}

#[tokio::test]
async fn health_and_sigterm_drain() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        service_entry("cart", "cart.shop.svc.cluster.local", 80),
    )
    .unwrap();
    let (mut child, mcp, monitoring) = start_galley(dir.path()).await;
    assert_eq!(http_get(monitoring, "/healthz").await.unwrap().0, 200);

    // grpc.health.v1 on the MCP port reports SERVING once ready.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{mcp}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health_client(channel);
    let status = health
        .check(HealthCheckRequest {
            service: "envoy.service.discovery.v3.AggregatedDiscoveryService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status, 1, "SERVING");

    let mut client = SotwClient::connect(format!("http://{mcp}"), "drain")
        .await
        .unwrap();
    client.subscribe(SE, &[]).await.unwrap();
    client.recv(WAIT).await.unwrap();
    let status = child.terminate(Duration::from_secs(10)).unwrap();
    assert!(
        status.success(),
        "galley exits cleanly on SIGTERM: {status:?}"
    );
    let end = client.recv(WAIT).await;
    assert!(end.is_err(), "the stream ends when galley drains");
}

use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn tonic_health_client(
    channel: tonic::transport::Channel,
) -> HealthClient<tonic::transport::Channel> {
    HealthClient::new(channel)
}

/// Posts `object` to galley's validating webhook; the review's response.
fn post_review(url: &str, ca: &Path, object: &Path, operation: &str) -> serde_json::Value {
    let out = std::process::Command::new(dromon_e2e::python())
        .arg(dromon_e2e::repo().join("tests/injector/check_injection.py"))
        .args(["post", "--url", url, "--ca"])
        .arg(ca)
        .arg("--object")
        .arg(object)
        .args(["--operation", operation])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn the_validating_webhook_refuses_what_meshctl_validate_refuses_with_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(tls.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(tls.join("tls.key"), key.serialize_pem()).unwrap();
    let (mcp, monitoring, webhook) = (
        dromon_e2e::local_addr(),
        dromon_e2e::local_addr(),
        dromon_e2e::local_addr(),
    );
    let _galley = ChildGuard::spawn(
        "galley",
        &[
            "--config-dir",
            config.to_str().unwrap(),
            "--mcp-addr",
            &mcp.to_string(),
            "--monitoring-addr",
            &monitoring.to_string(),
            "--webhook-tls-dir",
            tls.to_str().unwrap(),
            "--webhook-addr",
            &webhook.to_string(),
        ],
    )
    .unwrap();
    dromon_e2e::wait_http_ok(monitoring, "/ready", Duration::from_secs(30))
        .await
        .unwrap();
    let url = format!("https://{webhook}/validate");
    let ca = tls.join("tls.crt");

    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        virtual_service("reviews", "reviews.shop.svc.cluster.local"),
    )
    .unwrap();
    let response = post_review(&url, &ca, &good, "CREATE");
    assert_eq!(response["allowed"], true, "{response}");

    // The same bad resource through meshctl validate and through the webhook.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        service_entry("payments", "payments.shop.svc.cluster.local", 700_000),
    )
    .unwrap();
    let response = post_review(&url, &ca, &bad, "UPDATE");
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap().to_string();
    let validate = std::process::Command::new(dromon_e2e::bin_path("meshctl").unwrap())
        .arg("validate")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!validate.status.success());
    let stdout = String::from_utf8_lossy(&validate.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Error: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    // `Error: <file>:<line>: <message>`: the webhook says the same without the file.
    let expected = line
        .split_once(".yaml:")
        .and_then(|(_, rest)| rest.split_once(": "))
        .map(|(_, m)| m)
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(message, expected);
    assert!(
        message.starts_with("ServiceEntry shop/payments: "),
        "{message}"
    );

    // Other groups and deletes are not galley's to judge.
    let deployment = dir.path().join("deployment.yaml");
    std::fs::write(
        &deployment,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec: {}\n",
    )
    .unwrap();
    assert_eq!(
        post_review(&url, &ca, &deployment, "CREATE")["allowed"],
        true
    );
    assert_eq!(post_review(&url, &ca, &bad, "DELETE")["allowed"], true);

    let (_, metrics) = http_get(monitoring, "/metrics").await.unwrap();
    for verdict in ["allowed", "denied", "ignored"] {
        assert!(
            metrics.contains(&format!(
                "galley_validation_reviews_total{{verdict=\"{verdict}\"}}"
            )),
            "{verdict}: {metrics}"
        );
    }
}
