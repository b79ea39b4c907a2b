//! The pilot binary with `--kube`: its log says why it is not ready (RBAC forbids a
//! list, the API server is unreachable, with its URL), it serves once the cause is
//! gone, and keeps serving what it has while the API server is away.

#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use dromon_e2e::{ChildGuard, ads::SotwClient, free_port, http_get, wait_http_ok};
use kube_testserver::{Fault, KubeTestServer};
use mesh_api::envoy::envoy::config::cluster::v3::Cluster;
use prost::Message;
use serde_json::json;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const WAIT: Duration = Duration::from_secs(15);
const WEB: &str = "outbound|80||web.shop.svc.cluster.local";

fn cluster_names(
    resp: &mesh_api::envoy::envoy::service::discovery::v3::DiscoveryResponse,
) -> Vec<String> {
    resp.resources
        .iter()
        .map(|a| Cluster::decode(a.value.as_slice()).unwrap().name)
        .filter(|n| n.starts_with("outbound|"))
        .collect()
}

#[tokio::test]
async fn pilot_binary_reports_rbac_and_unreachable_api_server_and_recovers() {
    let server = KubeTestServer::start().await.unwrap();
    for object in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"ports": [{"name": "http", "port": 80}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "web-1", "namespace": "shop",
                            "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4",
               "ports": [{"name": "http", "port": 8080}],
               "endpoints": [{"addresses": ["10.1.0.1"]}]}),
    ] {
        server.apply_object(object).unwrap();
    }
    server.inject_fault(Fault::new("endpointslices", 403).verb("list"));

    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir).unwrap();
    let kubeconfig = server.write_kubeconfig(dir.path()).unwrap();
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let monitoring = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let pilot = ChildGuard::spawn(
        "pilot",
        &[
            "--config-dir",
            config_dir.to_str().unwrap(),
            "--kube",
            "--xds-addr",
            &xds.to_string(),
            "--monitoring-addr",
            &monitoring.to_string(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    )
    .unwrap();

    pilot
        .await_log(
            "forbidden: cannot list endpointslices.discovery.k8s.io at the cluster scope",
            WAIT,
        )
        .await
        .unwrap();
    pilot.await_log(&server.url(), WAIT).await.unwrap();
    let (status, _) = http_get(monitoring, "/ready").await.unwrap();
    assert_ne!(status, 200, "ready while EndpointSlices cannot be listed");

    server.clear_faults();
    wait_http_ok(monitoring, "/ready", WAIT).await.unwrap();
    let mut ads = SotwClient::connect(format!("http://{xds}"), "client")
        .await
        .unwrap();
    ads.subscribe(CDS, &[]).await.unwrap();
    let cds = ads.recv(WAIT).await.unwrap();
    assert_eq!(cluster_names(&cds), [WEB]);
    ads.ack(&cds, &[]).await.unwrap();

    // The API server goes away: the log names it; pilot keeps serving.
    server.set_unreachable(true).await.unwrap();
    pilot
        .await_log(
            &format!("Kubernetes API server {}/ unreachable", server.url()),
            WAIT,
        )
        .await
        .unwrap();
    let (status, _) = http_get(monitoring, "/ready").await.unwrap();
    assert_eq!(status, 200, "what was synced stays served");
    server.set_unreachable(false).await.unwrap();

    // Back: the watches resume and a new Service is served.
    server
        .apply_object(json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "api", "namespace": "shop"},
               "spec": {"ports": [{"name": "grpc", "port": 9090}]}}))
        .unwrap();
    let start = Instant::now();
    loop {
        let resp = ads.recv(WAIT).await.unwrap();
        ads.ack(&resp, &[]).await.unwrap();
        if resp.type_url == CDS
            && cluster_names(&resp).contains(&"outbound|9090||api.shop.svc.cluster.local".into())
        {
            break;
        }
        assert!(start.elapsed() < WAIT * 2, "the new Service never arrived");
    }
}
