//! meshctl end to end: the real binary's validate, analyze and up.

#![allow(clippy::unwrap_used)]

use std::{path::Path, process::Command, time::Duration};

use dromon_e2e::{
    ChildGuard,
    ads::{SotwClient, node},
    bin_path,
    citadel::agent_once,
    http_json, wait_http_ok,
};
use rustls_pki_types::pem::PemObject;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn meshctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin_path("meshctl").unwrap())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BAD_WEIGHTS: &str = "apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
spec:
  hosts: [reviews.shop.svc.cluster.local]
  http:
  - route:
    - destination: {host: reviews.shop.svc.cluster.local}
      weight: 70
    - destination: {host: reviews.shop.svc.cluster.local}
      weight: 20
";

const MISSING_GATEWAY: &str = "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: ratings
  namespace: shop
spec:
  hosts: [ratings.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: ratings
  namespace: shop
spec:
  hosts: [ratings.shop.svc.cluster.local]
  gateways: [edge]
  http:
  - route:
    - destination: {host: ratings.shop.svc.cluster.local}
";

#[test]
fn validate_accepts_the_sample_and_refuses_bad_files_with_location() {
    let (code, _, err) = meshctl(&["validate", examples().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 error(s)"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reviews.yaml");
    std::fs::write(&file, BAD_WEIGHTS).unwrap();
    let (code, out, _) = meshctl(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    let expected = format!(
        "Error: {}:1: VirtualService shop/reviews: spec.http[0].route:",
        file.display()
    );
    assert!(out.starts_with(&expected), "{out}");
    assert!(out.contains("90"), "names the sum: {out}");

    let (code, out, _) = meshctl(&["validate", "-o", "json", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["errors"][0]["detail"]["field"], "spec.http[0].route");
    assert_eq!(json["errors"][0]["detail"]["name"], "reviews");

    let (code, _, err) = meshctl(&["validate", "/nonexistent/path"]);
    assert_eq!(code, 2, "unreadable input is a usage error: {err}");
    assert!(err.contains("/nonexistent/path"), "{err}");
}

#[test]
fn analyze_reports_stable_codes_and_honours_the_threshold() {
    let (code, out, err) = meshctl(&["analyze", examples().to_str().unwrap()]);
    assert_eq!(code, 0, "the sample is clean: {out}{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ratings.yaml"), MISSING_GATEWAY).unwrap();
    let (code, out, _) = meshctl(&["analyze", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        out.contains("[GAL0103] (VirtualService shop/ratings"),
        "{out}"
    );
    assert!(out.contains("spec.gateways[0]"), "{out}");

    let (code, out, _) = meshctl(&["analyze", "-o", "json", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let codes: Vec<&str> = json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"GAL0103"), "{codes:?}");
}

/// Two rules whose conditions do not type-check.
const BAD_MATCHES: &str = r#"apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: by-name, namespace: istio-system}
spec:
  match: source.name == 3
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: by-size, namespace: istio-system}
spec:
  match: request.size == "x"
"#;

#[tokio::test]
async fn analyze_and_galley_report_mixer_expressions_that_do_not_type_check() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), BAD_MATCHES).unwrap();
    let (code, out, _) = meshctl(&["analyze", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    for name in ["by-name", "by-size"] {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("(rule istio-system/{name} ")))
            .unwrap_or_else(|| panic!("no message for {name}: {out}"));
        assert!(line.starts_with("Error [GAL0111]"), "{line}");
        assert!(line.contains(" spec.match: "), "{line}");
        assert!(line.contains("column "), "{line}");
    }

    let (_, out, _) = meshctl(&["analyze", "-o", "json", dir.path().to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let offline = summary(&json["messages"]);
    assert_eq!(offline.len(), 2, "{offline:?}");

    // galley's own analysis of the same directory lists the same messages.
    let galley = dromon_e2e::start_galley(dir.path()).await.unwrap();
    let monitoring = galley.monitoring;
    let mut served = Vec::new();
    for _ in 0..200 {
        let analysis = http_json(monitoring, "/debug/analyze").await.unwrap();
        served = summary(&analysis["messages"]);
        if !served.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(served, offline);
}

/// (code, resource, field, message) of each analysis message.
fn summary(messages: &serde_json::Value) -> Vec<[serde_json::Value; 4]> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ["code", "resource", "field", "message"].map(|k| m[k].clone()))
        .collect()
}

#[tokio::test]
async fn up_serves_the_sample_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let (mut up, host) = start_up(data.path()).await;
    let at = |port: u16| std::net::SocketAddr::new(host, port);
    let monitoring = at(15014);
    let configz = http_json(monitoring, "/debug/configz").await.unwrap();
    let names: Vec<String> = configz["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["kind"].as_str().unwrap(),
                r["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        names.contains(&"VirtualService/reviews".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"rule/denyreviewsv3".to_string()),
        "{names:?}"
    );
    assert!(
        data.path().join("config/bookinfo/traffic.yaml").is_file(),
        "sample copied under the data dir"
    );

    // An edit under the data dir is served.
    let traffic = data.path().join("config/bookinfo/traffic.yaml");
    let text = std::fs::read_to_string(&traffic)
        .unwrap()
        .replace("weight: 90", "weight: 50")
        .replace("weight: 10", "weight: 50");
    std::fs::write(&traffic, text).unwrap();
    let mut seen = false;
    for _ in 0..100 {
        let configz = http_json(monitoring, "/debug/configz").await.unwrap();
        let reviews = configz["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "VirtualService" && r["metadata"]["name"] == "reviews")
            .cloned()
            .unwrap();
        if reviews["spec"]["http"][1]["route"][0]["weight"] == 50 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "the edit reached galley");

    // citadel runs, galley and pilot hold its certificates, and pilot serves a
    // proxy on 15011 that got its certificate with a `meshctl token`.
    wait_http_ok(at(15016), "/ready", Duration::from_secs(10))
        .await
        .unwrap();
    for (component, dir) in [("galley", "certs/galley"), ("pilot", "certs/pilot")] {
        let chain = std::fs::read(data.path().join(dir).join("cert-chain.pem")).unwrap();
        let leaf = rustls_pki_types::CertificateDer::pem_slice_iter(&chain)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            mesh_tls::spiffe_id_of(&leaf).unwrap().to_string(),
            format!("spiffe://cluster.local/ns/istio-system/sa/{component}")
        );
    }
    let (code, token, err) = meshctl(&[
        "token",
        "--data",
        data.path().to_str().unwrap(),
        "--namespace",
        "bookinfo",
        "--service-account",
        "bookinfo-reviews",
    ]);
    assert_eq!(code, 0, "{err}");
    let certs = agent_once(
        &format!("https://{host}:8060"),
        &data.path().join("citadel/ca/root-cert.pem"),
        token.trim(),
        &data.path().join("reviews-certs"),
    )
    .unwrap();
    let channel = mesh_tls::channel(
        &format!("https://{host}:15011"),
        std::sync::Arc::new(mesh_tls::FileIdentity::open(&certs).unwrap()),
        mesh_tls::ServerIdentity::Exact(
            "spiffe://cluster.local/ns/istio-system/sa/pilot"
                .parse()
                .unwrap(),
        ),
    )
    .unwrap();
    let mut client = SotwClient::connect_channel(
        channel,
        node("sidecar~10.1.0.9~reviews-v1-x.bookinfo~bookinfo.svc.cluster.local"),
    )
    .await
    .unwrap();
    client
        .subscribe("type.googleapis.com/envoy.config.cluster.v3.Cluster", &[])
        .await
        .unwrap();
    let clusters = client.recv(Duration::from_secs(10)).await.unwrap();
    assert!(!clusters.resources.is_empty());

    // mixer-telemetry serves the standard mesh metrics for Prometheus.
    wait_http_ok(at(15018), "/ready", Duration::from_secs(10))
        .await
        .unwrap();
    let (status, _) = dromon_e2e::http_get(at(42422), "/metrics").await.unwrap();
    assert_eq!(status, 200);

    // mixer-policy on its mTLS port (15004) decides by the sample's rule: ratings
    // refuses reviews v3.
    let channel = mesh_tls::channel(
        &format!("https://{host}:15004"),
        std::sync::Arc::new(mesh_tls::FileIdentity::open(&certs).unwrap()),
        mesh_tls::ServerIdentity::Exact(
            "spiffe://cluster.local/ns/istio-system/sa/mixer-policy"
                .parse()
                .unwrap(),
        ),
    )
    .unwrap();
    let mut mixer = mesh_api::mixer::v1::mixer_client::MixerClient::new(channel);
    for (version, expected) in [("v3", 7), ("v2", 0)] {
        let mut bag = mixer_core::wire::AttributeBag::new();
        let labels = |pairs: &[(&str, &str)]| mixer_core::Value::string_map(pairs.iter().copied());
        bag.insert("destination.namespace", mixer_core::Value::from("bookinfo"));
        bag.insert("destination.labels", labels(&[("app", "ratings")]));
        bag.insert(
            "source.labels",
            labels(&[("app", "reviews"), ("version", version)]),
        );
        let resp = mixer
            .check(mesh_api::mixer::v1::CheckRequest {
                attributes: Some(mixer_core::wire::encode(&bag, 0)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            resp.precondition.unwrap().status.unwrap().code,
            expected,
            "reviews {version}"
        );
    }

    // mixer-telemetry takes reports over mTLS (15005) and counts them in the
    // standard metrics on 42422.
    let channel = mesh_tls::channel(
        &format!("https://{host}:15005"),
        std::sync::Arc::new(mesh_tls::FileIdentity::open(&certs).unwrap()),
        mesh_tls::ServerIdentity::Exact(
            "spiffe://cluster.local/ns/istio-system/sa/mixer-telemetry"
                .parse()
                .unwrap(),
        ),
    )
    .unwrap();
    let mut bag = mixer_core::wire::AttributeBag::new();
    bag.insert("context.protocol", mixer_core::Value::from("http"));
    bag.insert(
        "destination.service.host",
        mixer_core::Value::from("ratings.bookinfo.svc.cluster.local"),
    );
    mesh_api::mixer::v1::mixer_client::MixerClient::new(channel)
        .report(mesh_api::mixer::v1::ReportRequest {
            attributes: vec![mixer_core::wire::encode(&bag, 0)],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut counted = false;
    for _ in 0..100 {
        let (_, metrics) = dromon_e2e::http_get(at(42422), "/metrics").await.unwrap();
        if metrics.lines().any(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("destination_service=\"ratings.bookinfo.svc.cluster.local\"")
        }) {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(counted, "the report over mTLS was counted");

    // The injector answers on 9443 with the certificate written under the data
    // directory, and points proxies at this host's pilot and citadel.
    wait_http_ok(at(15019), "/ready", Duration::from_secs(10))
        .await
        .unwrap();
    let injectorz = http_json(at(15019), "/debug/injectorz").await.unwrap();
    assert_eq!(injectorz["values"]["pilotAddress"], format!("{host}:15011"));
    assert_eq!(
        injectorz["values"]["citadelAddress"],
        format!("{host}:8060")
    );
    let ca = data.path().join("sidecar-injector/tls/tls.crt");
    let out = std::process::Command::new(dromon_e2e::python())
        .arg(dromon_e2e::repo().join("tests/injector/check_injection.py"))
        .args([
            "malformed",
            "--url",
            &format!("https://{host}:9443/inject"),
            "--ca",
        ])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let status = up.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status:?}");
}

/// Starts `meshctl up` on a loopback address of its own (127.0.0.2 to 127.0.0.254),
/// so that its fixed ports cannot meet a process on 127.0.0.1's, and waits until
/// every component is ready; if a port is taken there too, on another address.
async fn start_up(data: &Path) -> (ChildGuard, std::net::IpAddr) {
    let data = data.to_str().unwrap();
    dromon_e2e::start_ready(
        Duration::from_secs(60),
        |attempt| {
            let seed = std::process::id()
                .wrapping_mul(31)
                .wrapping_add(u32::from(dromon_e2e::free_port()))
                .wrapping_add(attempt * 97);
            let host = std::net::IpAddr::from([127, 0, 0, 2 + (seed % 253) as u8]);
            let bind = host.to_string();
            let up = ChildGuard::spawn("meshctl", &["up", "--data", data, "--bind", &bind])?;
            Ok((up, host))
        },
        every_component_ready,
    )
    .await
}

/// Whether the monitoring port of every component (15014-15019) answers `/ready`.
async fn every_component_ready(host: std::net::IpAddr) -> bool {
    for port in 15014..=15019 {
        let monitoring = std::net::SocketAddr::new(host, port);
        if !matches!(
            dromon_e2e::http_get(monitoring, "/ready").await,
            Ok((200, _))
        ) {
            return false;
        }
    }
    true
}
