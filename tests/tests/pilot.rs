//! pilot end to end: the real galley and pilot binaries, and an ADS client asking
//! what a proxyless gRPC client asks (LDS for `host:port`, then RDS, CDS, EDS).

#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, path::Path, time::Duration};

use dromon_e2e::{ChildGuard, ads::SotwClient, free_port, http_json, wait_http_ok};
use mesh_api::envoy::envoy::{
    config::{
        endpoint::v3::ClusterLoadAssignment,
        listener::v3::Listener,
        route::v3::{RouteConfiguration, route::Action, route_action::ClusterSpecifier},
    },
    extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    },
    service::discovery::v3::DiscoveryResponse,
};
use prost::Message;

const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const WAIT: Duration = Duration::from_secs(10);
const LISTENER: &str = "reviews.bookinfo.svc.cluster.local:9080";
const V1: &str = "outbound|9080|v1|reviews.bookinfo.svc.cluster.local";
const V3: &str = "outbound|9080|v3|reviews.bookinfo.svc.cluster.local";

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo")
}

async fn recv_type(client: &mut SotwClient, type_url: &str) -> DiscoveryResponse {
    loop {
        let r = client.recv(WAIT).await.unwrap();
        if r.type_url == type_url {
            return r;
        }
    }
}

fn weights(routes: &DiscoveryResponse) -> Vec<(String, u32)> {
    let rc = RouteConfiguration::decode(routes.resources[0].value.as_slice()).unwrap();
    let vh = rc
        .virtual_hosts
        .iter()
        .find(|vh| vh.domains.iter().any(|d| d == LISTENER))
        .unwrap();
    // The last route is the default (unmatched) one: the weighted split.
    let Some(Action::Route(action)) = &vh.routes.last().unwrap().action else {
        panic!("not a route action")
    };
    let Some(ClusterSpecifier::WeightedClusters(w)) = &action.cluster_specifier else {
        panic!("not weighted")
    };
    w.clusters
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.weight.map(|w| w.value).unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn proxyless_client_gets_listener_routes_clusters_endpoints_and_changes() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["services.yaml", "traffic.yaml"] {
        std::fs::copy(examples().join(f), dir.path().join(f)).unwrap();
    }
    let mcp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gmon: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let xds: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let pmon: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _galley = ChildGuard::spawn(
        "galley",
        &[
            "--config-dir",
            dir.path().to_str().unwrap(),
            "--mcp-addr",
            &mcp.to_string(),
            "--monitoring-addr",
            &gmon.to_string(),
        ],
    )
    .unwrap();
    let mut pilot = ChildGuard::spawn(
        "pilot",
        &[
            "--galley",
            &format!("http://{mcp}"),
            "--xds-addr",
            &xds.to_string(),
            "--monitoring-addr",
            &pmon.to_string(),
            "--debounce",
            "20ms",
        ],
    )
    .unwrap();
    wait_http_ok(pmon, "/ready", Duration::from_secs(30))
        .await
        .unwrap();

    let mut client = SotwClient::connect(format!("http://{xds}"), "grpc-client")
        .await
        .unwrap();
    client.subscribe(LDS, &[LISTENER]).await.unwrap();
    let lds = recv_type(&mut client, LDS).await;
    assert_eq!(lds.resources.len(), 1);
    let listener = Listener::decode(lds.resources[0].value.as_slice()).unwrap();
    assert_eq!(listener.name, LISTENER);
    let hcm_any = listener.api_listener.unwrap().api_listener.unwrap();
    let hcm = HttpConnectionManager::decode(hcm_any.value.as_slice()).unwrap();
    let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
        panic!("the listener takes its routes from RDS")
    };
    client.ack(&lds, &[LISTENER]).await.unwrap();

    client
        .subscribe(RDS, &[&rds.route_config_name])
        .await
        .unwrap();
    let routes = recv_type(&mut client, RDS).await;
    assert_eq!(
        weights(&routes),
        [(V1.to_string(), 90), (V3.to_string(), 10)]
    );
    client
        .ack(&routes, &[&rds.route_config_name])
        .await
        .unwrap();

    client.subscribe(CDS, &[]).await.unwrap();
    let cds = recv_type(&mut client, CDS).await;
    assert_eq!(cds.resources.len(), 7);
    client.ack(&cds, &[]).await.unwrap();
    client.subscribe(EDS, &[V1]).await.unwrap();
    let eds = recv_type(&mut client, EDS).await;
    let cla = ClusterLoadAssignment::decode(eds.resources[0].value.as_slice()).unwrap();
    let lb = &cla.endpoints[0];
    assert!(
        lb.locality.is_some() && lb.load_balancing_weight.is_some(),
        "gRPC requires both"
    );
    assert_eq!(lb.lb_endpoints.len(), 1, "only the v1 endpoint");
    client.ack(&eds, &[V1]).await.unwrap();

    // Change the split in the file: galley publishes, pilot pushes new routes.
    let traffic = dir.path().join("traffic.yaml");
    let text = std::fs::read_to_string(&traffic)
        .unwrap()
        .replace("weight: 90", "weight: 40")
        .replace("weight: 10", "weight: 60");
    std::fs::write(&traffic, text).unwrap();
    let routes2 = recv_type(&mut client, RDS).await;
    assert_eq!(
        weights(&routes2),
        [(V1.to_string(), 40), (V3.to_string(), 60)]
    );
    client
        .ack(&routes2, &[&rds.route_config_name])
        .await
        .unwrap();

    // Move the v1 endpoint: an EDS update.
    let services = dir.path().join("services.yaml");
    let text = std::fs::read_to_string(&services).unwrap().replacen(
        "      http: 19081",
        "      http: 29081",
        1,
    );
    std::fs::write(&services, text).unwrap();
    let eds2 = recv_type(&mut client, EDS).await;
    let cla = ClusterLoadAssignment::decode(eds2.resources[0].value.as_slice()).unwrap();
    let port = cla.endpoints[0].lb_endpoints[0]
        .host_identifier
        .as_ref()
        .map(|h| format!("{h:?}"))
        .unwrap();
    assert!(port.contains("29081"), "{port}");

    let syncz = http_json(pmon, "/debug/syncz").await.unwrap();
    assert!(
        syncz["proxies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["node_id"] == "grpc-client")
    );
    assert!(pilot.terminate(Duration::from_secs(10)).unwrap().success());
}
