#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mesh_model::{ParseOptions, parse_document_set};
use mixer_core::wire::AttributeBag;

use super::*;
use crate::{
    defaults::standard_metrics,
    prom::{Format, SeriesValue},
};

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

/// The one series of `metric` whose labels include every pair of `want`, with
/// all its labels by name.
fn series_with(
    registry: &Registry,
    metric: &str,
    want: &[(&str, &str)],
) -> (BTreeMap<String, String>, SeriesValue) {
    let m = registry.get(metric).unwrap();
    let names = m.spec().labels.clone();
    let mut found: Vec<_> = m
        .series()
        .into_iter()
        .map(|(values, v)| {
            let labels: BTreeMap<String, String> =
                names.iter().cloned().zip(values.iter().cloned()).collect();
            (labels, v)
        })
        .filter(|(labels, _)| {
            want.iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{metric} {want:?}: {found:?}");
    found.pop().unwrap()
}

fn labels_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Counts per finite bucket of the standard byte histograms (bounds 1, 10, ...,
/// 10^8) holding `values`.
fn byte_buckets(values: &[f64]) -> Vec<u64> {
    let mut counts = vec![0; 9];
    for v in values {
        let i = (0..9).position(|e| *v <= 10f64.powi(e)).unwrap();
        counts[i] += 1;
    }
    counts
}

#[test]
fn the_standard_byte_metrics_record_each_records_sizes_under_its_labels() {
    let registry = Registry::new();
    let p = Pipeline::compile([], &standard_metrics(), &registry, &mut logs());
    assert!(p.issues().is_empty(), "{:?}", p.issues());
    // Two requests reported by the server side (120 B in, 4,000 B out each) and
    // one by the client side (7 B in, 25,000 B out), with other labels.
    let inbound = http_bag(200, "inbound");
    let mut outbound = http_bag(503, "outbound");
    outbound.insert("source.workload.name", Value::from("ratings-v1"));
    outbound.insert("request.size", Value::Int64(7));
    outbound.insert("response.size", Value::Int64(25_000));
    for bag in [&inbound, &inbound, &outbound] {
        assert_eq!(rec(&p, bag).recorded, 4);
    }
    let server_side = labels_of(&[
        ("reporter", "destination"),
        ("source_workload", "productpage-v1"),
        ("source_workload_namespace", "bookinfo"),
        ("source_principal", "unknown"),
        ("source_app", "unknown"),
        ("destination_workload", "reviews-v2"),
        ("destination_workload_namespace", "bookinfo"),
        ("destination_principal", "unknown"),
        ("destination_app", "reviews"),
        ("destination_service", "reviews.bookinfo.svc.cluster.local"),
        ("destination_service_name", "unknown"),
        ("destination_service_namespace", "unknown"),
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("connection_security_policy", "mutual_tls"),
    ]);
    let mut client_side = server_side.clone();
    for (k, v) in [
        ("reporter", "source"),
        ("source_workload", "ratings-v1"),
        ("response_code", "503"),
        ("connection_security_policy", "unknown"),
    ] {
        client_side.insert(k.into(), v.into());
    }
    for (metric, server_values, client_values) in [
        ("istio_request_bytes", [120.0, 120.0], 7.0),
        ("istio_response_bytes", [4_000.0, 4_000.0], 25_000.0),
    ] {
        assert_eq!(registry.get(metric).unwrap().len(), 2, "{metric}");
        let (labels, v) = series_with(&registry, metric, &[("reporter", "destination")]);
        assert_eq!(labels, server_side, "{metric}");
        assert_eq!(
            v,
            SeriesValue::Histogram {
                counts: byte_buckets(&server_values),
                sum: server_values.iter().sum(),
                count: 2,
            },
            "{metric}"
        );
        let (labels, v) = series_with(&registry, metric, &[("reporter", "source")]);
        assert_eq!(labels, client_side, "{metric}");
        assert_eq!(
            v,
            SeriesValue::Histogram {
                counts: byte_buckets(&[client_values]),
                sum: client_values,
                count: 1,
            },
            "{metric}"
        );
    }
    // As exposed: cumulative buckets, the sum in bytes.
    let text = registry.encode(Format::Text);
    let line = |prefix: &str, code: &str, le: Option<&str>| {
        text.lines()
            .find(|l| {
                l.starts_with(prefix)
                    && l.contains(&format!("response_code=\"{code}\""))
                    && le.is_none_or(|le| l.contains(&format!("le=\"{le}\"")))
            })
            .unwrap_or_else(|| panic!("{prefix} {code} {le:?} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(line("istio_request_bytes_bucket{", "200", Some("100")), "0");
    assert_eq!(
        line("istio_request_bytes_bucket{", "200", Some("1000")),
        "2"
    );
    assert_eq!(line("istio_request_bytes_sum{", "200", None), "240");
    assert_eq!(line("istio_request_bytes_bucket{", "503", Some("10")), "1");
    assert_eq!(
        line("istio_response_bytes_bucket{", "200", Some("1000")),
        "0"
    );
    assert_eq!(
        line("istio_response_bytes_bucket{", "200", Some("10000")),
        "2"
    );
    assert_eq!(line("istio_response_bytes_sum{", "200", None), "8000");
    assert_eq!(line("istio_response_bytes_sum{", "503", None), "25000");

    // TCP: bytes sent and received are added per connection's labels.
    let tcp = |source: &str, sent: i64, received: i64| {
        let mut b = AttributeBag::new();
        b.insert("context.protocol", Value::from("tcp"));
        b.insert("context.reporter.kind", Value::from("inbound"));
        b.insert("source.workload.name", Value::from(source));
        b.insert("source.workload.namespace", Value::from("bookinfo"));
        b.insert("destination.workload.name", Value::from("mysqldb-v1"));
        b.insert("destination.workload.namespace", Value::from("db"));
        b.insert(
            "destination.service.host",
            Value::from("mysqldb.db.svc.cluster.local"),
        );
        b.insert("connection.mtls", Value::Bool(true));
        b.insert("connection.sent.bytes", Value::Int64(sent));
        b.insert("connection.received.bytes", Value::Int64(received));
        b
    };
    for bag in [
        tcp("ratings-v2", 10, 20),
        tcp("ratings-v2", 15, 25),
        tcp("reviews-v3", 1_000, 5),
    ] {
        assert_eq!(rec(&p, &bag).recorded, 2);
    }
    let ratings = labels_of(&[
        ("reporter", "destination"),
        ("source_workload", "ratings-v2"),
        ("source_workload_namespace", "bookinfo"),
        ("source_principal", "unknown"),
        ("destination_workload", "mysqldb-v1"),
        ("destination_workload_namespace", "db"),
        ("destination_principal", "unknown"),
        ("destination_service", "mysqldb.db.svc.cluster.local"),
        ("destination_service_name", "unknown"),
        ("destination_service_namespace", "unknown"),
        ("connection_security_policy", "mutual_tls"),
    ]);
    for (metric, from_ratings, from_reviews) in [
        ("istio_tcp_sent_bytes_total", 25.0, 1_000.0),
        ("istio_tcp_received_bytes_total", 45.0, 5.0),
    ] {
        assert_eq!(registry.get(metric).unwrap().len(), 2, "{metric}");
        let (labels, v) = series_with(&registry, metric, &[("source_workload", "ratings-v2")]);
        assert_eq!(labels, ratings, "{metric}");
        assert_eq!(v, SeriesValue::Number(from_ratings), "{metric}");
        let (_, v) = series_with(&registry, metric, &[("source_workload", "reviews-v3")]);
        assert_eq!(v, SeriesValue::Number(from_reviews), "{metric}");
    }
    let text = registry.encode(Format::Text);
    assert!(
        text.lines()
            .any(|l| l.starts_with("istio_tcp_sent_bytes_total{")
                && l.contains("source_workload=\"reviews-v3\"")
                && l.ends_with(" 1000")),
        "{text}"
    );
}

const SIZES: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestsize, namespace: istio-system}
spec:
  compiledTemplate: metric
  params:
    value: request.size | 0
    dimensions:
      service: destination.service.name | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: sizes, namespace: istio-system}
spec:
  compiledAdapter: prometheus
  params:
    metrics:
    - name: last_request_bytes
      namespace: dromon
      instanceName: requestsize.instance.istio-system
      kind: VALUE
      labelNames: [service]
    - name: request_bytes_linear
      namespace: dromon
      instanceName: requestsize.instance.istio-system
      kind: DISTRIBUTION
      description: Request sizes, 100 B apart
      labelNames: [service]
      buckets: {linearBuckets: {numFiniteBuckets: 3, width: 100, offset: 50}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: sizes, namespace: istio-system}
spec:
  actions: [{handler: sizes, instances: [requestsize]}]
"#;

#[test]
fn a_configured_value_and_linear_distribution_expose_what_was_recorded() {
    let registry = Registry::new();
    let p = Pipeline::compile(&resources(SIZES), &[], &registry, &mut logs());
    assert!(p.issues().is_empty(), "{:?}", p.issues());
    let bag = |service: &str, size: i64| {
        let mut b = AttributeBag::new();
        b.insert("destination.service.name", Value::from(service));
        b.insert("request.size", Value::Int64(size));
        b
    };
    for (service, size) in [
        ("reviews", 20),
        ("reviews", 100),
        ("ratings", 75),
        ("reviews", 150),
        ("reviews", 300),
        ("reviews", 1_000),
    ] {
        assert_eq!(rec(&p, &bag(service, size)).recorded, 2);
    }
    // The value holds each series' last record; the distribution's bounds are
    // offset + i x width for i in 0..=3, and +Inf.
    let expected = "\
# HELP dromon_last_request_bytes last_request_bytes (requestsize.instance.istio-system)
# TYPE dromon_last_request_bytes gauge
dromon_last_request_bytes{service=\"ratings\"} 75
dromon_last_request_bytes{service=\"reviews\"} 1000
# HELP dromon_request_bytes_linear Request sizes, 100 B apart
# TYPE dromon_request_bytes_linear histogram
dromon_request_bytes_linear_bucket{service=\"ratings\",le=\"50\"} 0
dromon_request_bytes_linear_bucket{service=\"ratings\",le=\"150\"} 1
dromon_request_bytes_linear_bucket{service=\"ratings\",le=\"250\"} 1
dromon_request_bytes_linear_bucket{service=\"ratings\",le=\"350\"} 1
dromon_request_bytes_linear_bucket{service=\"ratings\",le=\"+Inf\"} 1
dromon_request_bytes_linear_sum{service=\"ratings\"} 75
dromon_request_bytes_linear_count{service=\"ratings\"} 1
dromon_request_bytes_linear_bucket{service=\"reviews\",le=\"50\"} 1
dromon_request_bytes_linear_bucket{service=\"reviews\",le=\"150\"} 3
dromon_request_bytes_linear_bucket{service=\"reviews\",le=\"250\"} 3
dromon_request_bytes_linear_bucket{service=\"reviews\",le=\"350\"} 4
dromon_request_bytes_linear_bucket{service=\"reviews\",le=\"+Inf\"} 5
dromon_request_bytes_linear_sum{service=\"reviews\"} 1570
dromon_request_bytes_linear_count{service=\"reviews\"} 5
";
    assert_eq!(registry.encode(Format::Text), expected);
    // OpenMetrics names gauges and histograms alike, and ends with # EOF.
    assert_eq!(
        registry.encode(Format::OpenMetrics),
        format!("{expected}# EOF\n")
    );
}
