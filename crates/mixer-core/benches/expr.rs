//! Expression evaluation per request: typical policy conditions compiled once,
//! evaluated against a ~20-attribute bag (a `BTreeMap`, and a `HashMap` bag).

#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap, collections::HashMap, hint::black_box, sync::Arc, time::Duration,
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mixer_core::{Bag, Value, ValueType, expr::compile};

/// A bag over a `HashMap`.
struct HashBag(HashMap<String, Value>);

impl Bag for HashBag {
    fn get(&self, name: &str) -> Option<Value> {
        self.0.get(name).cloned()
    }
}

fn vocab() -> BTreeMap<String, ValueType> {
    attributes()
        .into_iter()
        .map(|(k, v)| (k, v.value_type()))
        .chain([("context.reporter.uid".to_string(), ValueType::String)])
        .collect()
}

fn attributes() -> Vec<(String, Value)> {
    let headers: BTreeMap<String, String> = [
        ("x-user", "jason"),
        (":authority", "reviews"),
        ("user-agent", "curl/8.0"),
        ("x-request-id", "5f1c2d3e"),
        ("accept", "*/*"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let labels: BTreeMap<String, String> = [("app", "productpage"), ("version", "v1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    [
        ("source.ip", Value::Ip("10.0.0.1".parse().unwrap())),
        (
            "source.uid",
            Value::from("kubernetes://productpage-v1.default"),
        ),
        ("source.namespace", Value::from("default")),
        (
            "source.principal",
            Value::from("cluster.local/ns/default/sa/productpage"),
        ),
        ("source.labels", Value::StringMap(Arc::new(labels))),
        ("destination.ip", Value::Ip("10.0.0.2".parse().unwrap())),
        ("destination.port", Value::Int64(9080)),
        (
            "destination.service.host",
            Value::from("reviews.default.svc.cluster.local"),
        ),
        ("destination.service.name", Value::from("reviews")),
        ("destination.service.namespace", Value::from("default")),
        (
            "destination.uid",
            Value::from("kubernetes://reviews-v2.default"),
        ),
        ("request.headers", Value::StringMap(Arc::new(headers))),
        ("request.path", Value::from("/api/v1/reviews/0")),
        ("request.method", Value::from("GET")),
        ("request.host", Value::from("reviews:9080")),
        ("request.scheme", Value::from("http")),
        ("request.size", Value::Int64(0)),
        (
            "request.time",
            Value::Timestamp(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        ),
        ("connection.mtls", Value::Bool(true)),
        ("context.protocol", Value::from("http")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

const CONDITIONS: [(&str, &str); 6] = [
    (
        "host_eq",
        r#"destination.service.host == "reviews.default.svc.cluster.local""#,
    ),
    (
        "host_and_header",
        r#"destination.service.host == "reviews.default.svc.cluster.local" && request.headers["x-user"] | "" == "jason""#,
    ),
    ("match_path", r#"match(request.path, "/api/*")"#),
    ("ip_eq", r#"source.ip == ip("10.0.0.1")"#),
    (
        "conditional",
        r#"conditional(connection.mtls, source.principal, "unknown") == "cluster.local/ns/default/sa/productpage""#,
    ),
    (
        "absent_default",
        r#"context.reporter.uid | "none" == "none" && request.method != "POST" && source.labels["version"] | "v0" == "v1""#,
    ),
];

fn bench(c: &mut Criterion) {
    let vocab = vocab();
    let tree: BTreeMap<String, Value> = attributes().into_iter().collect();
    let hash = HashBag(attributes().into_iter().collect());
    let mut group = c.benchmark_group("evaluate_bool");
    group.throughput(Throughput::Elements(1));
    for (name, text) in CONDITIONS {
        let compiled = compile(text, &vocab).unwrap();
        assert!(compiled.evaluate_bool(&tree).unwrap(), "{name}");
        assert!(compiled.evaluate_bool(&hash).unwrap(), "{name}");
        group.bench_function(format!("btree/{name}"), |b| {
            b.iter(|| compiled.evaluate_bool(black_box(&tree)).unwrap())
        });
        group.bench_function(format!("hash/{name}"), |b| {
            b.iter(|| compiled.evaluate_bool(black_box(&hash)).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("compile");
    let (_, text) = CONDITIONS[1];
    group.bench_function("host_and_header", |b| {
        b.iter(|| compile(black_box(text), &vocab).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
