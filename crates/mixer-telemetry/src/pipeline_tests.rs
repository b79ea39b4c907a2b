#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mesh_model::{ParseOptions, parse_document_set};
use mixer_core::wire::AttributeBag;

use super::*;
use crate::{defaults::standard_metrics, prom::Format};

fn resources(text: &str) -> Vec<Resource> {
    let set = parse_document_set("telemetry.yaml", text, &ParseOptions::default());
    assert!(set.rejected.is_empty(), "{:?}", set.rejected);
    set.accepted
}

fn logs() -> Sinks {
    Sinks {
        logs: LogStores::new(None, Default::default()),
        otel: OtelExporters::new(Default::default(), "test"),
    }
}

fn rec(p: &Pipeline, bag: &dyn Bag) -> Outcome {
    let mut outputs = Outputs::default();
    let out = p.record(bag, &mut outputs);
    assert!(outputs.logs.is_empty() && outputs.spans.is_empty());
    out
}

fn http_bag(code: i64, reporter: &str) -> AttributeBag {
    let mut b = AttributeBag::new();
    b.insert("context.protocol", Value::from("http"));
    b.insert("context.reporter.kind", Value::from(reporter));
    b.insert("source.workload.name", Value::from("productpage-v1"));
    b.insert("source.workload.namespace", Value::from("bookinfo"));
    b.insert("destination.workload.name", Value::from("reviews-v2"));
    b.insert("destination.workload.namespace", Value::from("bookinfo"));
    b.insert(
        "destination.service.host",
        Value::from("reviews.bookinfo.svc.cluster.local"),
    );
    b.insert(
        "destination.labels",
        Value::string_map([("app", "reviews")]),
    );
    b.insert("connection.mtls", Value::Bool(true));
    b.insert("response.code", Value::Int64(code));
    b.insert(
        "response.duration",
        Value::Duration(Duration::from_millis(30)),
    );
    b.insert("request.size", Value::Int64(120));
    b.insert("response.size", Value::Int64(4_000));
    b
}

#[test]
fn the_standard_metrics_need_no_configuration() {
    let defaults = standard_metrics();
    assert_eq!(defaults.len(), 9, "every default resource parses");
    let registry = Registry::new();
    let p = Pipeline::compile([], &defaults, &registry, &mut logs());
    assert!(p.issues().is_empty(), "{:?}", p.issues());
    let mut total = Outcome::default();
    for _ in 0..3 {
        total += rec(&p, &http_bag(200, "inbound"));
    }
    total += rec(&p, &http_bag(503, "outbound"));
    // Four HTTP metrics per request.
    assert_eq!(
        total,
        Outcome {
            recorded: 16,
            over_limit: 0,
            failed: 0
        }
    );
    let requests = registry.get("istio_requests_total").unwrap();
    assert_eq!(requests.len(), 2);
    let text = registry.encode(Format::Text);
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\""))
        .unwrap();
    for label in [
        "reporter=\"destination\"",
        "source_workload=\"productpage-v1\"",
        "destination_workload=\"reviews-v2\"",
        "destination_app=\"reviews\"",
        "destination_service=\"reviews.bookinfo.svc.cluster.local\"",
        "request_protocol=\"http\"",
        "connection_security_policy=\"mutual_tls\"",
        "source_principal=\"unknown\"",
    ] {
        assert!(line.contains(label), "{label} in {line}");
    }
    assert!(line.ends_with(" 3"), "{line}");
    // Durations in seconds, into the configured buckets.
    assert!(
        text.lines()
            .any(|l| l.starts_with("istio_request_duration_seconds_bucket{")
                && l.contains("le=\"0.05\"")
                && l.contains("response_code=\"200\"")
                && l.ends_with(" 3")),
        "{text}"
    );
    assert!(text.contains("# TYPE istio_response_bytes histogram"));
    // TCP reports feed the TCP metrics only.
    let mut tcp = AttributeBag::new();
    tcp.insert("context.protocol", Value::from("tcp"));
    tcp.insert("connection.sent.bytes", Value::Int64(10));
    tcp.insert("connection.received.bytes", Value::Int64(20));
    assert_eq!(rec(&p, &tcp).recorded, 2);
    let sent = registry.get("istio_tcp_sent_bytes_total").unwrap();
    assert_eq!(sent.len(), 1);
}

const CUSTOM: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: pathcount, namespace: bookinfo}
spec:
  compiledTemplate: metric
  params:
    value: "2"
    dimensions:
      path: request.path | "/"
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: bookinfo-prom, namespace: bookinfo}
spec:
  compiledAdapter: prometheus
  params:
    cardinalityLimit: 2
    metrics:
    - name: path_hits_total
      namespace: bookinfo
      instanceName: pathcount
      kind: COUNTER
      labelNames: [path]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: paths, namespace: bookinfo}
spec:
  actions: [{handler: bookinfo-prom, instances: [pathcount]}]
"#;

#[test]
fn configured_metrics_apply_in_their_namespace_within_their_limit() {
    let registry = Registry::new();
    let res = resources(CUSTOM);
    let p = Pipeline::compile(&res, &[], &registry, &mut logs());
    assert!(p.issues().is_empty(), "{:?}", p.issues());
    let bag = |path: &str, host: &str| {
        let mut b = AttributeBag::new();
        b.insert("request.path", Value::from(path));
        b.insert("destination.service.host", Value::from(host));
        b
    };
    assert_eq!(rec(&p, &bag("/a", "reviews.bookinfo.svc")).recorded, 1);
    assert_eq!(rec(&p, &bag("/a", "reviews.bookinfo.svc")).recorded, 1);
    // Another namespace's traffic is not this rule's.
    assert_eq!(rec(&p, &bag("/a", "web.shop.svc")).recorded, 0);
    assert_eq!(rec(&p, &bag("/b", "reviews.bookinfo.svc")).recorded, 1);
    // A third path is past the limit of 2 series: refused, counted.
    let o = rec(&p, &bag("/c", "reviews.bookinfo.svc"));
    assert_eq!((o.recorded, o.over_limit), (0, 1));
    let m = registry.get("bookinfo_path_hits_total").unwrap();
    assert_eq!(m.value(&["/a"]), Some(4.0));
    assert_eq!(m.refused(), 1);
}

#[test]
fn a_configured_resource_replaces_its_default() {
    let registry = Registry::new();
    let res = resources(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: promtcp, namespace: istio-system}
spec:
  match: "false"
  actions: [{handler: prometheus, instances: [tcpbytesent]}]
"#,
    );
    let p = Pipeline::compile(&res, &standard_metrics(), &registry, &mut logs());
    assert!(p.issues().is_empty(), "{:?}", p.issues());
    let mut tcp = AttributeBag::new();
    tcp.insert("context.protocol", Value::from("tcp"));
    assert_eq!(rec(&p, &tcp).recorded, 0);
}

#[test]
fn unusable_resources_are_reported_by_name() {
    let registry = Registry::new();
    let bad = CUSTOM
        .replace("kind: COUNTER", "kind: SUMMARY")
        .replace("value: \"2\"", "value: request.path ==");
    let p = Pipeline::compile(&resources(&bad), &[], &registry, &mut logs());
    let issues: Vec<&str> = p.issues().iter().map(|i| i.resource.as_str()).collect();
    assert_eq!(
        issues,
        [
            "handler/bookinfo/bookinfo-prom",
            "instance/bookinfo/pathcount",
            "rule/bookinfo/paths"
        ],
        "{:?}",
        p.issues()
    );
    assert!(
        p.issues()[0].message.contains("SUMMARY"),
        "{:?}",
        p.issues()
    );
}
