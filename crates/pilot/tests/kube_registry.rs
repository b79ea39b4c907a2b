//! pilot's Kubernetes registry against kube-testserver: pilot runs in-process
//! (`pilot::server::start`) with `--kube` pointing at the test server through a
//! kubeconfig file and an empty configuration directory; objects are written with
//! the real `kube` client and an ADS client watches what pilot serves.

#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, time::Duration};

use k8s_openapi::api::{
    core::v1::{Namespace, Service as KubeService},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use kube_testserver::{Fault, KubeTestServer};
use mesh_api::envoy::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy},
            },
            core::v3::{
                Node, address, socket_address::PortSpecifier, transport_socket::ConfigType,
            },
            endpoint::v3::{ClusterLoadAssignment, lb_endpoint::HostIdentifier},
        },
        extensions::transport_sockets::tls::v3::{
            UpstreamTlsContext, common_tls_context::ValidationContextType,
        },
        service::discovery::v3::{
            DiscoveryRequest, DiscoveryResponse,
            aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        },
        r#type::matcher::v3::string_matcher::MatchPattern,
    },
    google::protobuf::{Struct, Value, value::Kind},
};
use mesh_xds::type_url::{CLUSTER, ENDPOINT};
use prost::Message;
use serde_json::json;
use tokio::{io::AsyncReadExt, io::AsyncWriteExt, sync::mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
const WEB: &str = "outbound|80||web.shop.svc.cluster.local";

/// A state-of-the-world ADS stream.
struct Ads {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: tonic::Streaming<DiscoveryResponse>,
    node: Node,
}

impl Ads {
    async fn connect(addr: SocketAddr, namespace: &str) -> Self {
        Self::connect_as(addr, namespace, format!("client-{namespace}")).await
    }

    /// A workload's Envoy in `namespace`.
    async fn connect_sidecar(addr: SocketAddr, namespace: &str) -> Self {
        let id = format!("sidecar~10.1.9.9~client.{namespace}~{namespace}.svc.cluster.local");
        Self::connect_as(addr, namespace, id).await
    }

    async fn connect_as(addr: SocketAddr, namespace: &str, id: String) -> Self {
        let node = Node {
            id,
            metadata: Some(Struct {
                fields: [(
                    "NAMESPACE".to_string(),
                    Value {
                        kind: Some(Kind::StringValue(namespace.into())),
                    },
                )]
                .into(),
            }),
            ..Node::default()
        };
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { tx, rx, node }
    }

    async fn request(&self, type_url: &str, names: &[&str], ack: Option<&DiscoveryResponse>) {
        let req = DiscoveryRequest {
            node: Some(self.node.clone()),
            type_url: type_url.to_string(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: ack.map(|r| r.version_info.clone()).unwrap_or_default(),
            response_nonce: ack.map(|r| r.nonce.clone()).unwrap_or_default(),
            ..DiscoveryRequest::default()
        };
        self.tx.send(req).await.unwrap();
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("no response in time")
            .unwrap()
            .unwrap()
    }

    /// Receives and ACKs the next response, which must be of `type_url`.
    async fn next(&mut self, type_url: &str, names: &[&str]) -> DiscoveryResponse {
        let resp = self.recv().await;
        assert_eq!(resp.type_url, type_url, "unexpected response type");
        self.request(type_url, names, Some(&resp)).await;
        resp
    }

    async fn silent(&mut self, wait: Duration) {
        if let Ok(r) = tokio::time::timeout(wait, self.rx.message()).await {
            let r = r.unwrap().unwrap();
            panic!("unexpected {} response {}", r.type_url, r.version_info);
        }
    }
}

/// The cluster `name` of a CDS response.
fn cluster(resp: &DiscoveryResponse, name: &str) -> Cluster {
    resp.resources
        .iter()
        .map(|a| Cluster::decode(a.value.as_slice()).unwrap())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

/// The server identities a proxyless client's cluster checks (ISTIO_MUTUAL).
fn verified_sans(c: &Cluster) -> Vec<String> {
    let Some(ConfigType::TypedConfig(any)) = c
        .transport_socket
        .as_ref()
        .and_then(|t| t.config_type.as_ref())
    else {
        panic!("{}: no TLS", c.name);
    };
    let tls = UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
    let Some(ValidationContextType::ValidationContext(v)) =
        tls.common_tls_context.unwrap().validation_context_type
    else {
        panic!("{}: no validation context", c.name);
    };
    #[allow(deprecated)] // What gRPC reads.
    v.match_subject_alt_names
        .into_iter()
        .filter_map(|m| match m.match_pattern {
            Some(MatchPattern::Exact(s)) => Some(s),
            _ => None,
        })
        .collect()
}

fn cluster_names(resp: &DiscoveryResponse) -> Vec<String> {
    let mut names: Vec<String> = resp
        .resources
        .iter()
        .map(|a| Cluster::decode(a.value.as_slice()).unwrap().name)
        .filter(|n| n.starts_with("outbound|"))
        .collect();
    names.sort();
    names
}

/// `address:port` of every endpoint of `cluster` in an EDS response.
fn endpoints(resp: &DiscoveryResponse, cluster: &str) -> Vec<String> {
    let mut out = Vec::new();
    for any in &resp.resources {
        let cla = ClusterLoadAssignment::decode(any.value.as_slice()).unwrap();
        if cla.cluster_name != cluster {
            continue;
        }
        for lb in cla.endpoints.iter().flat_map(|l| &l.lb_endpoints) {
            let Some(HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
                continue;
            };
            let Some(address::Address::SocketAddress(sa)) =
                ep.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                continue;
            };
            let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
                continue;
            };
            out.push(format!("{}:{port}", sa.address));
        }
    }
    out.sort();
    out
}

/// Pilot in-process, following `server`.
struct Pilot {
    xds: SocketAddr,
    monitoring: SocketAddr,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Pilot {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_pilot(server: &KubeTestServer) -> Pilot {
    start_pilot_with(server, "").await
}

/// Pilot with `config` (YAML) in its configuration directory, ready.
async fn start_pilot_with(server: &KubeTestServer, config: &str) -> Pilot {
    let (pilot, mut ready) = start_pilot_unready_with(server, config).await;
    tokio::time::timeout(WAIT, ready.wait_for(|r| *r))
        .await
        .expect("pilot not ready in time")
        .unwrap();
    pilot
}

/// Pilot started, not waited for; with its readiness.
async fn start_pilot_unready(
    server: &KubeTestServer,
) -> (Pilot, tokio::sync::watch::Receiver<bool>) {
    start_pilot_unready_with(server, "").await
}

async fn start_pilot_unready_with(
    server: &KubeTestServer,
    config: &str,
) -> (Pilot, tokio::sync::watch::Receiver<bool>) {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir).unwrap();
    if !config.is_empty() {
        std::fs::write(config_dir.join("rules.yaml"), config).unwrap();
    }
    let kubeconfig = server.write_kubeconfig(dir.path()).unwrap();
    let shutdown = CancellationToken::new();
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let running = pilot::server::start(
        pilot::server::PilotConfig {
            from: pilot::server::ConfigFrom::Directory(config_dir),
            xds_addr: local,
            monitoring_addr: local,
            debounce: Duration::from_millis(20),
            debounce_max: Duration::from_secs(1),
            tls: None,
            kube: Some(pilot::kube::KubeRegistryConfig {
                args: mesh_kube::KubeArgs {
                    kubeconfig: Some(kubeconfig.into_os_string()),
                    ..Default::default()
                },
                cluster_domain: "cluster.local".into(),
            }),
            trust_domain: "cluster.local".into(),
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let ready = running.readiness.subscribe();
    let pilot = Pilot {
        xds: running.xds_addr,
        monitoring: running.monitoring_addr,
        shutdown,
        _dir: dir,
    };
    tokio::spawn(running.wait());
    (pilot, ready)
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

fn web_service(annotations: serde_json::Value, cluster_ip: Option<&str>) -> KubeService {
    let mut spec = json!({
        "selector": {"app": "web"},
        "ports": [{"name": "http-web", "port": 80, "targetPort": 8080}]
    });
    if let Some(ip) = cluster_ip {
        spec["clusterIP"] = json!(ip);
    }
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
        "spec": spec
    }))
    .unwrap()
}

/// A slice of `web` with `(address, ready)` endpoints on port 8080.
fn web_slice(endpoints: &[(&str, bool)]) -> EndpointSlice {
    let eps: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|(ip, ready)| {
            json!({"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": !ready}, "zone": "z1"})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": "web-abc", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http-web", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps
    }))
    .unwrap()
}

/// The body of `GET path` on pilot's monitoring port.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: pilot\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

async fn translations(addr: SocketAddr, kind: &str) -> u64 {
    let body = get(addr, "/metrics").await;
    let prefix = format!("pilot_translations_total{{kind=\"{kind}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

/// Subscribes to CDS and the EDS of `web`, returning the first EDS response.
async fn subscribe_web(ads: &mut Ads) -> (DiscoveryResponse, DiscoveryResponse) {
    ads.request(CLUSTER, &[], None).await;
    let cds = ads.next(CLUSTER, &[]).await;
    ads.request(ENDPOINT, &[WEB], None).await;
    let eds = ads.next(ENDPOINT, &[WEB]).await;
    (cds, eds)
}

/// Waits for an EDS response giving `web` exactly `want`.
async fn await_web_endpoints(ads: &mut Ads, want: &[&str]) -> DiscoveryResponse {
    loop {
        let eds = ads.next(ENDPOINT, &[WEB]).await;
        if endpoints(&eds, WEB) == want {
            return eds;
        }
    }
}

#[tokio::test]
async fn services_and_slices_become_clusters_and_endpoint_moves_push_eds_only() {
    let server = KubeTestServer::start().await.unwrap();
    let client = server.client();
    create_namespace(&client, "shop").await;
    let services: Api<KubeService> = Api::namespaced(client.clone(), "shop");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "shop");
    services
        .create(&PostParams::default(), &web_service(json!({}), None))
        .await
        .unwrap();
    slices
        .create(
            &PostParams::default(),
            &web_slice(&[("10.1.0.1", true), ("10.1.0.2", true)]),
        )
        .await
        .unwrap();

    let pilot = start_pilot(&server).await;
    let mut ads = Ads::connect(pilot.xds, "shop").await;
    let (cds, eds) = subscribe_web(&mut ads).await;
    assert_eq!(cluster_names(&cds), [WEB]);
    assert_eq!(
        endpoints(&eds, WEB),
        ["10.1.0.1:8080", "10.1.0.2:8080"],
        "the slice's port by name"
    );

    // An endpoint added, one turned not ready (terminating): EDS only.
    let full_before = translations(pilot.monitoring, "full").await;
    let mut slice = slices.get("web-abc").await.unwrap();
    slice.endpoints =
        web_slice(&[("10.1.0.1", true), ("10.1.0.2", false), ("10.1.0.3", true)]).endpoints;
    slices
        .replace("web-abc", &PostParams::default(), &slice)
        .await
        .unwrap();
    await_web_endpoints(&mut ads, &["10.1.0.1:8080", "10.1.0.3:8080"]).await;
    ads.silent(Duration::from_millis(300)).await;
    assert_eq!(
        translations(pilot.monitoring, "full").await,
        full_before,
        "an endpoint move is no full push"
    );
    assert!(translations(pilot.monitoring, "eds").await >= 1);

    // A compaction while watching: the watch re-lists and loses nothing.
    server.force_compaction();
    let mut slice = slices.get("web-abc").await.unwrap();
    slice.endpoints = web_slice(&[("10.1.0.4", true)]).endpoints;
    slices
        .replace("web-abc", &PostParams::default(), &slice)
        .await
        .unwrap();
    await_web_endpoints(&mut ads, &["10.1.0.4:8080"]).await;

    // A Service change is a full push: a new port adds a cluster.
    let mut svc = services.get("web").await.unwrap();
    let spec = svc.spec.as_mut().unwrap();
    spec.ports
        .as_mut()
        .unwrap()
        .push(serde_json::from_value(json!({"name": "grpc", "port": 9090})).unwrap());
    services
        .replace("web", &PostParams::default(), &svc)
        .await
        .unwrap();
    let cds = loop {
        let r = ads.recv().await;
        ads.request(
            &r.type_url.clone(),
            if r.type_url == CLUSTER { &[] } else { &[WEB] },
            Some(&r),
        )
        .await;
        if r.type_url == CLUSTER {
            break r;
        }
    };
    assert_eq!(
        cluster_names(&cds),
        [WEB, "outbound|9090||web.shop.svc.cluster.local"]
    );
    assert!(translations(pilot.monitoring, "full").await > full_before);

    // Deleting the Service removes its clusters.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let cds = loop {
        let r = ads.recv().await;
        ads.request(
            &r.type_url.clone(),
            if r.type_url == CLUSTER { &[] } else { &[WEB] },
            Some(&r),
        )
        .await;
        if r.type_url == CLUSTER {
            break r;
        }
    };
    assert!(cluster_names(&cds).is_empty(), "{:?}", cluster_names(&cds));
}

#[tokio::test]
async fn headless_services_and_export_to() {
    let server = KubeTestServer::start().await.unwrap();
    let client = server.client();
    create_namespace(&client, "shop").await;
    create_namespace(&client, "other").await;
    let services: Api<KubeService> = Api::namespaced(client.clone(), "shop");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "shop");
    services
        .create(
            &PostParams::default(),
            &web_service(json!({"networking.istio.io/exportTo": "."}), Some("None")),
        )
        .await
        .unwrap();
    slices
        .create(&PostParams::default(), &web_slice(&[("10.1.0.7", true)]))
        .await
        .unwrap();
    let pilot = start_pilot(&server).await;

    let mut own = Ads::connect(pilot.xds, "shop").await;
    let (cds, eds) = subscribe_web(&mut own).await;
    assert_eq!(cluster_names(&cds), [WEB]);
    assert_eq!(
        endpoints(&eds, WEB),
        ["10.1.0.7:8080"],
        "a proxyless client (no original destination clusters) gets EDS"
    );

    let mut sidecar = Ads::connect_sidecar(pilot.xds, "shop").await;
    sidecar.request(CLUSTER, &[], None).await;
    let cds = sidecar.next(CLUSTER, &[]).await;
    let web = cluster(&cds, WEB);
    assert_eq!(
        web.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32
        )),
        "a sidecar reaches a headless service at the address the app dialled"
    );
    assert_eq!(web.lb_policy, LbPolicy::ClusterProvided as i32);
    assert!(web.eds_cluster_config.is_none() && web.load_assignment.is_none());

    let mut other = Ads::connect(pilot.xds, "other").await;
    other.request(CLUSTER, &[], None).await;
    let cds = other.next(CLUSTER, &[]).await;
    assert!(
        cluster_names(&cds).is_empty(),
        "exportTo . hides the service from other namespaces: {:?}",
        cluster_names(&cds)
    );
}

#[tokio::test]
async fn pilot_waits_for_the_api_server_and_then_serves() {
    let server = KubeTestServer::start().await.unwrap();
    create_namespace(&server.client(), "shop").await;
    server.set_unreachable(true).await.unwrap();
    let reopen = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.set_unreachable(false).await.unwrap();
        Api::<KubeService>::namespaced(server.client(), "shop")
            .create(&PostParams::default(), &web_service(json!({}), None))
            .await
            .unwrap();
    };
    let (pilot, ()) = tokio::join!(start_pilot(&server), reopen);
    let mut ads = Ads::connect(pilot.xds, "shop").await;
    ads.request(CLUSTER, &[], None).await;
    loop {
        let cds = ads.next(CLUSTER, &[]).await;
        if cluster_names(&cds) == [WEB] {
            break;
        }
    }
}

#[tokio::test]
async fn pilot_is_not_ready_while_rbac_forbids_listing_and_serves_once_allowed() {
    let server = KubeTestServer::start().await.unwrap();
    create_namespace(&server.client(), "shop").await;
    Api::<KubeService>::namespaced(server.client(), "shop")
        .create(&PostParams::default(), &web_service(json!({}), None))
        .await
        .unwrap();
    server.inject_fault(Fault::new("endpointslices", 403).verb("list"));
    let (pilot, mut ready) = start_pilot_unready(&server).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !*ready.borrow(),
        "ready before the EndpointSlices were listed"
    );
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", pilot.xds))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(1);
    tx.send(DiscoveryRequest {
        type_url: CLUSTER.into(),
        ..DiscoveryRequest::default()
    })
    .await
    .unwrap();
    let refused = match client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
    {
        Err(status) => status,
        Ok(stream) => tokio::time::timeout(WAIT, stream.into_inner().message())
            .await
            .unwrap()
            .unwrap_err(),
    };
    assert_eq!(
        refused.code(),
        tonic::Code::Unavailable,
        "no configuration is served before sync"
    );

    server.clear_faults();
    tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r))
        .await
        .expect("pilot not ready after the fault cleared")
        .unwrap();
    let mut ads = Ads::connect(pilot.xds, "shop").await;
    ads.request(CLUSTER, &[], None).await;
    assert_eq!(cluster_names(&ads.next(CLUSTER, &[]).await), [WEB]);
}

const SUBSETS: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web.shop.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

#[tokio::test]
async fn pod_labels_choose_subset_endpoints_and_relabelling_is_eds_only() {
    let server = KubeTestServer::start().await.unwrap();
    let client = server.client();
    create_namespace(&client, "shop").await;
    for (pod, version, ip) in [("web-1", "v1", "10.1.0.1"), ("web-2", "v2", "10.1.0.2")] {
        server
            .apply_object(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": "shop",
                             "labels": {"app": "web", "version": version}},
                "spec": {"containers": [{"name": "app", "image": "web"}], "nodeName": "n1"},
                "status": {"podIP": ip, "phase": "Running"}}))
            .unwrap();
    }
    server
        .apply_object(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/region": "r1"}}}))
        .unwrap();
    Api::<KubeService>::namespaced(client.clone(), "shop")
        .create(&PostParams::default(), &web_service(json!({}), None))
        .await
        .unwrap();
    let mut slice = web_slice(&[("10.1.0.1", true), ("10.1.0.2", true)]);
    for (ep, pod) in slice.endpoints.iter_mut().zip(["web-1", "web-2"]) {
        ep.node_name = Some("n1".into());
        ep.target_ref = Some(
            serde_json::from_value(json!({"kind": "Pod", "name": pod, "namespace": "shop"}))
                .unwrap(),
        );
    }
    Api::<EndpointSlice>::namespaced(client.clone(), "shop")
        .create(&PostParams::default(), &slice)
        .await
        .unwrap();
    let pilot = start_pilot_with(&server, SUBSETS).await;

    const V1: &str = "outbound|80|v1|web.shop.svc.cluster.local";
    const V2: &str = "outbound|80|v2|web.shop.svc.cluster.local";
    let mut ads = Ads::connect(pilot.xds, "shop").await;
    ads.request(CLUSTER, &[], None).await;
    let cds = ads.next(CLUSTER, &[]).await;
    assert_eq!(cluster_names(&cds), [V1, V2, WEB]);
    ads.request(ENDPOINT, &[V1, V2], None).await;
    let eds = ads.next(ENDPOINT, &[V1, V2]).await;
    assert_eq!(endpoints(&eds, V1), ["10.1.0.1:8080"]);
    assert_eq!(endpoints(&eds, V2), ["10.1.0.2:8080"]);
    let locality = ClusterLoadAssignment::decode(eds.resources[0].value.as_slice())
        .unwrap()
        .endpoints[0]
        .locality
        .clone()
        .unwrap_or_default();
    assert_eq!(
        (locality.region.as_str(), locality.zone.as_str()),
        ("r1", "z1"),
        "the node's region, the slice's zone"
    );

    // web-2 relabelled v1: both in v1, an EDS-only push.
    let full_before = translations(pilot.monitoring, "full").await;
    server
        .apply_object(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-2", "namespace": "shop",
                         "labels": {"app": "web", "version": "v1"}}}))
        .unwrap();
    loop {
        let eds = ads.next(ENDPOINT, &[V1, V2]).await;
        if endpoints(&eds, V1) == ["10.1.0.1:8080", "10.1.0.2:8080"] {
            assert!(endpoints(&eds, V2).is_empty());
            break;
        }
    }
    assert_eq!(translations(pilot.monitoring, "full").await, full_before);
}

/// A running pod `name` of `web` at `ip`, running as `account` (none: `default`).
fn web_pod(name: &str, ip: &str, account: Option<&str>) -> serde_json::Value {
    let mut spec = json!({"containers": [{"name": "app", "image": "web"}]});
    if let Some(account) = account {
        spec["serviceAccountName"] = json!(account);
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": "web"}},
        "spec": spec,
        "status": {"podIP": ip, "phase": "Running"}})
}

/// A slice of `web` whose endpoints point at `(ip, pod)`.
fn web_slice_of_pods(pods: &[(&str, &str)]) -> EndpointSlice {
    let ips: Vec<(&str, bool)> = pods.iter().map(|(ip, _)| (*ip, true)).collect();
    let mut slice = web_slice(&ips);
    for (ep, (_, pod)) in slice.endpoints.iter_mut().zip(pods) {
        ep.target_ref = Some(
            serde_json::from_value(json!({"kind": "Pod", "name": pod, "namespace": "shop"}))
                .unwrap(),
        );
    }
    slice
}

const ISTIO_MUTUAL: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web.shop.svc.cluster.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
";

#[tokio::test]
async fn pod_service_accounts_become_verified_identities_and_a_new_account_is_a_full_push() {
    let server = KubeTestServer::start().await.unwrap();
    let client = server.client();
    create_namespace(&client, "shop").await;
    server
        .apply_object(web_pod("web-1", "10.1.0.1", Some("web")))
        .unwrap();
    server
        .apply_object(web_pod("web-2", "10.1.0.2", None))
        .unwrap();
    Api::<KubeService>::namespaced(client.clone(), "shop")
        .create(&PostParams::default(), &web_service(json!({}), None))
        .await
        .unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "shop");
    slices
        .create(
            &PostParams::default(),
            &web_slice_of_pods(&[("10.1.0.1", "web-1"), ("10.1.0.2", "web-2")]),
        )
        .await
        .unwrap();
    let pilot = start_pilot_with(&server, ISTIO_MUTUAL).await;

    let mut ads = Ads::connect(pilot.xds, "shop").await;
    ads.request(CLUSTER, &[], None).await;
    let cds = ads.next(CLUSTER, &[]).await;
    assert_eq!(
        verified_sans(&cluster(&cds, WEB)),
        [
            "spiffe://cluster.local/ns/shop/sa/default",
            "spiffe://cluster.local/ns/shop/sa/web"
        ],
        "each pod's service account, `default` when it names none"
    );
    let registry: serde_json::Value =
        serde_json::from_str(&get(pilot.monitoring, "/debug/registryz").await).unwrap();
    let web = &registry["services"][0];
    assert_eq!(web["host"], "web.shop.svc.cluster.local");
    assert_eq!(web["registry"], "kubernetes");
    assert_eq!(web["serviceAccounts"], json!(["default", "web"]));
    assert_eq!(
        web["identities"],
        json!([
            "spiffe://cluster.local/ns/shop/sa/default",
            "spiffe://cluster.local/ns/shop/sa/web"
        ])
    );

    // A pod running as a new account joins: the clusters change, a full push.
    let full_before = translations(pilot.monitoring, "full").await;
    server
        .apply_object(web_pod("web-3", "10.1.0.3", Some("web-canary")))
        .unwrap();
    let mut slice = slices.get("web-abc").await.unwrap();
    slice.endpoints = web_slice_of_pods(&[
        ("10.1.0.1", "web-1"),
        ("10.1.0.2", "web-2"),
        ("10.1.0.3", "web-3"),
    ])
    .endpoints;
    slices
        .replace("web-abc", &PostParams::default(), &slice)
        .await
        .unwrap();
    let cds = ads.next(CLUSTER, &[]).await;
    assert_eq!(
        verified_sans(&cluster(&cds, WEB)),
        [
            "spiffe://cluster.local/ns/shop/sa/default",
            "spiffe://cluster.local/ns/shop/sa/web",
            "spiffe://cluster.local/ns/shop/sa/web-canary"
        ]
    );
    assert!(translations(pilot.monitoring, "full").await > full_before);
}
