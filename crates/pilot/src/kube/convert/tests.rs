#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

use super::*;

fn mk<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).unwrap())
}

fn mk_service(name: &str, spec: Value, annotations: Value) -> Arc<KubeService> {
    mk(json!({
        "metadata": {"name": name, "namespace": "shop", "annotations": annotations},
        "spec": spec
    }))
}

fn mk_slice(name: &str, service: &str, address_type: &str, endpoints: Value) -> Arc<EndpointSlice> {
    mk(json!({
        "metadata": {"name": name, "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": address_type,
        "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9091}],
        "endpoints": endpoints
    }))
}

fn mk_port(name: &str, app_protocol: Option<&str>, protocol: &str) -> KubeServicePort {
    serde_json::from_value(json!({
        "name": name, "port": 80, "appProtocol": app_protocol, "protocol": protocol
    }))
    .unwrap()
}

fn web_spec() -> Value {
    json!({
        "clusterIP": "10.96.0.10",
        "clusterIPs": ["10.96.0.10"],
        "selector": {"app": "web"},
        "ports": [
            {"name": "grpc", "port": 9090, "targetPort": "grpc"},
            {"name": "http", "port": 80, "targetPort": 8080}
        ]
    })
}

#[test]
fn port_protocols_follow_app_protocol_then_name_then_transport() {
    let cases = [
        (mk_port("http", None, "TCP"), Some(Protocol::Http)),
        (mk_port("http-web", None, "TCP"), Some(Protocol::Http)),
        (mk_port("HTTP2-x", None, "TCP"), Some(Protocol::Http2)),
        (mk_port("grpc-web", None, "TCP"), Some(Protocol::GrpcWeb)),
        (mk_port("grpc-web-ui", None, "TCP"), Some(Protocol::GrpcWeb)),
        (mk_port("grpc-api", None, "TCP"), Some(Protocol::Grpc)),
        (mk_port("tcp-db", None, "TCP"), Some(Protocol::Tcp)),
        (mk_port("mongo", None, "TCP"), Some(Protocol::Mongo)),
        (mk_port("web", None, "TCP"), None),
        (mk_port("httpx", None, "TCP"), None),
        (mk_port("web", Some("grpc"), "TCP"), Some(Protocol::Grpc)),
        (
            mk_port("http", Some("kubernetes.io/h2c"), "TCP"),
            Some(Protocol::Http2),
        ),
        (mk_port("tcp", Some("HTTPS"), "TCP"), Some(Protocol::Https)),
        (
            mk_port("http", Some("custom.example/x"), "TCP"),
            Some(Protocol::Http),
        ),
        (mk_port("dns", None, "UDP"), Some(Protocol::Udp)),
        (mk_port("udp", None, "TCP"), None),
    ];
    for (port, want) in cases {
        assert_eq!(port_protocol(&port), want, "{port:?}");
    }
}

#[test]
fn cluster_ip_service_with_ready_endpoints_of_its_slices() {
    let objects = ClusterObjects {
        services: vec![mk_service("web", web_spec(), json!({}))],
        slices: vec![
            mk_slice(
                "web-b",
                "web",
                "IPv4",
                json!([
                    {"addresses": ["10.1.0.2"]},
                    {"addresses": ["10.1.0.1"], "conditions": {"ready": true}}
                ]),
            ),
            mk_slice(
                "web-a",
                "web",
                "IPv4",
                json!([
                    {"addresses": ["10.1.0.1"], "conditions": {"ready": true}},
                    {"addresses": ["10.1.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                    {"addresses": [], "conditions": {"ready": true}}
                ]),
            ),
            mk_slice(
                "web-fqdn",
                "web",
                "FQDN",
                json!([{"addresses": ["a.example"]}]),
            ),
            mk_slice(
                "other",
                "other",
                "IPv4",
                json!([{"addresses": ["10.9.9.9"]}]),
            ),
        ],
        ..ClusterObjects::default()
    };
    let services = services(&objects, "cluster.local");
    assert_eq!(services.len(), 1);
    let s = &services[0];
    assert_eq!(s.host, "web.shop.svc.cluster.local");
    assert_eq!(s.namespace, "shop");
    assert_eq!(s.resolution, Resolution::Static);
    assert_eq!(s.location, Location::MeshInternal);
    assert_eq!(s.addresses, ["10.96.0.10"]);
    assert_eq!(
        s.workload_selector,
        Some([("app".to_string(), "web".to_string())].into())
    );
    let ports: Vec<(u32, &str, Option<Protocol>, Option<u32>)> = s
        .ports
        .iter()
        .map(|p| (p.number, p.name.as_str(), p.protocol, p.target_port))
        .collect();
    assert_eq!(
        ports,
        [
            (80, "http", Some(Protocol::Http), Some(8080)),
            (9090, "grpc", Some(Protocol::Grpc), None)
        ]
    );
    let addrs: Vec<&str> = s.endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(
        addrs,
        ["10.1.0.1", "10.1.0.2"],
        "slices by name, ready only, each address once"
    );
    assert_eq!(s.endpoints[0].port_for(&s.ports[1]), 9091, "ports by name");
    assert!(s.export_to.is_empty());
}

#[test]
fn headless_external_name_and_export_to() {
    let objects = ClusterObjects {
        services: vec![
            mk_service(
                "db",
                json!({"clusterIP": "None", "ports": [{"name": "tcp", "port": 5432}]}),
                json!({"networking.istio.io/exportTo": ". , other"}),
            ),
            mk_service(
                "ext",
                json!({"type": "ExternalName", "externalName": "api.example.com",
                       "ports": [{"name": "https", "port": 443}]}),
                json!({}),
            ),
        ],
        slices: vec![mk_slice(
            "db-1",
            "db",
            "IPv4",
            json!([{"addresses": ["10.1.0.5"]}]),
        )],
        ..ClusterObjects::default()
    };
    let services = services(&objects, "corp.internal");
    let hosts: Vec<&str> = services.iter().map(|s| s.host.as_str()).collect();
    assert_eq!(
        hosts,
        ["db.shop.svc.corp.internal", "ext.shop.svc.corp.internal"]
    );
    let db = &services[0];
    assert_eq!(
        db.resolution,
        Resolution::None,
        "headless: sidecars reach the endpoints through an original destination cluster"
    );
    assert_eq!(db.registry, RegistryKind::Kubernetes);
    assert!(db.addresses.is_empty());
    assert_eq!(db.export_to, [".", "other"]);
    assert_eq!(db.endpoints.len(), 1);
    let ext = &services[1];
    assert_eq!(ext.resolution, Resolution::Dns);
    assert_eq!(ext.endpoints[0].address, "api.example.com");
}

#[test]
fn pod_labels_and_locality_from_nodes_or_the_pod_label() {
    let objects = ClusterObjects {
        services: vec![mk_service("web", web_spec(), json!({}))],
        slices: vec![mk_slice(
            "web-a",
            "web",
            "IPv4",
            json!([
                {"addresses": ["10.1.0.1"], "zone": "z1", "nodeName": "n1",
                 "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"}},
                {"addresses": ["10.1.0.2"],
                 "targetRef": {"kind": "Pod", "name": "web-2", "namespace": "shop"}},
                {"addresses": ["10.1.0.3"]}
            ]),
        )],
        pods: vec![
            mk(json!({"metadata": {"name": "web-1", "namespace": "shop",
                                   "labels": {"app": "web", "version": "v1"}},
                      "spec": {"containers": [], "serviceAccountName": "web"}})),
            mk(json!({"metadata": {"name": "web-2", "namespace": "shop",
                                   "labels": {"app": "web", "istio-locality": "r2.z2.s2"}},
                      "spec": {"containers": [], "nodeName": "n1"}})),
        ],
        nodes: vec![mk(json!({"metadata": {"name": "n1", "labels": {
            "topology.kubernetes.io/region": "r1",
            "topology.kubernetes.io/zone": "z9",
            "topology.istio.io/subzone": "s1"
        }}}))],
    };
    let services = services(&objects, "cluster.local");
    let eps = &services[0].endpoints;
    assert_eq!(eps[0].labels.get("version").map(String::as_str), Some("v1"));
    assert_eq!(
        eps[0].locality, "r1/z1/s1",
        "the slice's zone, the node's region and subzone"
    );
    assert_eq!(eps[1].locality, "r2/z2/s2", "istio-locality wins");
    assert!(eps[2].labels.is_empty());
    assert_eq!(eps[2].locality, "");
    let accounts: Vec<&str> = eps.iter().map(|e| e.service_account.as_str()).collect();
    assert_eq!(
        accounts,
        ["web", "default", ""],
        "the pod's service account, `default` when it names none, none without a pod"
    );
    assert_eq!(
        services[0].identities("cluster.local"),
        [
            "spiffe://cluster.local/ns/shop/sa/default",
            "spiffe://cluster.local/ns/shop/sa/web"
        ]
    );
}

#[test]
fn pods_are_cached_with_labels_and_service_account_only() {
    let mut pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1",
                     "resourceVersion": "7", "labels": {"app": "web"},
                     "annotations": {"big": "x"},
                     "managedFields": [{"manager": "kubectl"}]},
        "spec": {"serviceAccountName": "web", "nodeName": "n1",
                 "containers": [{"name": "app", "image": "web:1"}]},
        "status": {"podIP": "10.1.0.1", "phase": "Running"}
    }))
    .unwrap();
    strip_pod(&mut pod);
    assert_eq!(
        serde_json::to_value(&pod).unwrap(),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1",
                         "resourceVersion": "7", "labels": {"app": "web"}},
            "spec": {"serviceAccountName": "web", "containers": []}
        })
    );
    let mut bare: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
    strip_pod(&mut bare);
    assert_eq!(service_account(&bare), "default");
}
