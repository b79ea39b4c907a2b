//! pilot end to end, per proxy: what each proxy sees depends on its namespace
//! (exportTo) and its Sidecar; `/debug/config_dump?proxyID=` shows a proxy's
//! configuration as Envoy JSON; `meshctl proxy-status` reports SYNCED and NACKED;
//! convergence is measured.

#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, process::Command, time::Duration};

use dromon_e2e::{
    ChildGuard,
    ads::{SotwClient, node},
    bin_path, free_port, http_get, http_json, wait_http_ok,
};
use mesh_api::envoy::{
    envoy::{config::cluster::v3::Cluster, service::discovery::v3::DiscoveryResponse},
    google::protobuf::{Struct, Value, value::Kind},
};
use prost::Message;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const WAIT: Duration = Duration::from_secs(10);

const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shared, namespace: a}
spec:
  hosts: [shared.a.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: a}
spec:
  hosts: [private.a.svc.cluster.local]
  exportTo: ["."]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.2}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: other, namespace: c}
spec:
  hosts: [other.c.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.3}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: narrow, namespace: b}
spec:
  egress: [{hosts: ["c/*"]}]
"#;

fn sidecar_node(pod: &str, ns: &str) -> mesh_api::envoy::envoy::config::core::v3::Node {
    let mut n = node(&format!(
        "sidecar~10.1.0.1~{pod}.{ns}~{ns}.svc.cluster.local"
    ));
    n.user_agent_name = "envoy".into();
    n.metadata = Some(Struct {
        fields: [(
            "LABELS".to_string(),
            Value {
                kind: Some(Kind::StructValue(Struct {
                    fields: [(
                        "app".to_string(),
                        Value {
                            kind: Some(Kind::StringValue(pod.into())),
                        },
                    )]
                    .into(),
                })),
            },
        )]
        .into(),
    });
    n
}

fn cluster_names(r: &DiscoveryResponse) -> Vec<String> {
    let mut names: Vec<String> = r
        .resources
        .iter()
        .map(|a| Cluster::decode(a.value.as_slice()).unwrap().name)
        .filter(|n| n.starts_with("outbound|"))
        .collect();
    names.sort();
    names
}

async fn cds(client: &mut SotwClient) -> DiscoveryResponse {
    loop {
        let r = client.recv(WAIT).await.unwrap();
        if r.type_url == CDS {
            return r;
        }
    }
}

fn meshctl(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin_path("meshctl").unwrap())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn each_proxy_sees_its_namespace_and_sidecar_scope() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), CONFIG).unwrap();
    let xds: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mon: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut pilot = ChildGuard::spawn(
        "pilot",
        &[
            "--config-dir",
            dir.path().to_str().unwrap(),
            "--xds-addr",
            &xds.to_string(),
            "--monitoring-addr",
            &mon.to_string(),
            "--debounce",
            "20ms",
        ],
    )
    .unwrap();
    wait_http_ok(mon, "/ready", Duration::from_secs(30))
        .await
        .unwrap();
    let endpoint = format!("http://{xds}");

    let mut in_a = SotwClient::connect_node(endpoint.clone(), sidecar_node("app1", "a"))
        .await
        .unwrap();
    in_a.subscribe(CDS, &[]).await.unwrap();
    let a = cds(&mut in_a).await;
    assert_eq!(
        cluster_names(&a),
        [
            "outbound|80||other.c.svc.cluster.local",
            "outbound|80||private.a.svc.cluster.local",
            "outbound|80||shared.a.svc.cluster.local",
        ]
    );
    in_a.ack(&a, &[]).await.unwrap();

    let mut in_b = SotwClient::connect_node(endpoint.clone(), sidecar_node("app2", "b"))
        .await
        .unwrap();
    in_b.subscribe(CDS, &[]).await.unwrap();
    let b = cds(&mut in_b).await;
    assert_eq!(
        cluster_names(&b),
        ["outbound|80||other.c.svc.cluster.local"],
        "namespace b's Sidecar narrows egress to namespace c"
    );
    in_b.ack(&b, &[]).await.unwrap();

    let mut in_d = SotwClient::connect_node(endpoint.clone(), sidecar_node("app3", "d"))
        .await
        .unwrap();
    in_d.subscribe(CDS, &[]).await.unwrap();
    let d = cds(&mut in_d).await;
    assert_eq!(
        cluster_names(&d),
        [
            "outbound|80||other.c.svc.cluster.local",
            "outbound|80||shared.a.svc.cluster.local",
        ],
        "exportTo: [.] hides private from other namespaces"
    );
    in_d.nack(&d, "", "cluster rejected for the test")
        .await
        .unwrap();

    // The config dump of one proxy is its own configuration, as Envoy JSON.
    let dump = http_json(mon, "/debug/config_dump?proxyID=app2.b")
        .await
        .unwrap();
    let clusters = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["typeUrl"] == CDS)
        .unwrap();
    let names: Vec<&str> = clusters["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .filter(|n| n.starts_with("outbound|"))
        .collect();
    assert_eq!(names, ["outbound|80||other.c.svc.cluster.local"]);
    assert_eq!(clusters["resources"][0]["@type"], CDS);
    let (code, _) = http_get(mon, "/debug/config_dump?proxyID=nobody.nowhere")
        .await
        .unwrap();
    assert_eq!(code, 404);

    // proxy-status: a and b SYNCED on CDS, d NACKED; the exit code says so.
    let mon_s = mon.to_string();
    let (code, table) = meshctl(&["proxy-status", "--pilot", &mon_s]);
    assert_eq!(code, 1, "{table}");
    let row = |pod: &str| {
        table
            .lines()
            .find(|l| l.contains(&format!("~{pod}.")))
            .unwrap_or_default()
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(row("app1"), "SYNCED", "{table}");
    assert_eq!(row("app2"), "SYNCED", "{table}");
    assert_eq!(row("app3"), "NACKED", "{table}");
    assert!(table.contains("cluster rejected for the test"), "{table}");
    let (code, _) = meshctl(&["proxy-status", "--pilot", &mon_s, "app1.a"]);
    assert_eq!(code, 0);

    // a and b ACKed what they were sent (proxy-status saw it): two convergences.
    let (_, metrics) = http_get(mon, "/metrics").await.unwrap();
    let count = metrics
        .lines()
        .find(|l| l.starts_with("xds_convergence_duration_seconds_count"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(count >= 2.0, "{metrics}");
    assert!(metrics.contains("pilot_proxy_groups 3"), "{metrics}");
    assert!(pilot.terminate(Duration::from_secs(10)).unwrap().success());
}
