//! Injection of one pod: a small pod and a 64 KB one (many containers, env
//! entries and annotations), each through the policy, the template, the merge and
//! the JSON patch, as the webhook does it. The baseline in the same run is the
//! JSON parse and serialization of the same review, which any webhook pays.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mesh_admission::{decode_review, encode_review};
use serde_json::{Value, json};
use sidecar_injector::{Injector, InjectorConfig, webhook};

/// A pod of about `bytes` of JSON.
fn pod(bytes: usize) -> Value {
    let mut containers = Vec::new();
    let mut annotations = serde_json::Map::new();
    let mut i = 0;
    while serde_json::to_vec(&json!({"c": containers, "a": annotations})).map_or(0, |v| v.len())
        < bytes
    {
        let env: Vec<Value> = (0..20)
            .map(|e| json!({"name": format!("SETTING_{i}_{e}"), "value": format!("value-{i}-{e}-with-some-length")}))
            .collect();
        containers.push(json!({
            "name": format!("app-{i}"),
            "image": format!("registry.example.com/team/app-{i}:1.2.3"),
            "ports": [{"name": "http", "containerPort": 8080 + i}],
            "env": env,
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        }));
        annotations.insert(format!("example.com/note-{i}"), json!("x".repeat(200)));
        i += 1;
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "app-", "namespace": "shop", "labels": {"app": "app"}, "annotations": annotations},
        "spec": {"containers": containers, "serviceAccountName": "app"},
    })
}

fn review_body(pod: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "b1f0c5a6-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "object": pod,
        }
    }))
    .unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let injector = match Injector::new(InjectorConfig::default()) {
        Ok(i) => i,
        Err(e) => panic!("default template: {e}"),
    };
    for (name, size) in [("small", 0usize), ("64KB", 64 * 1024)] {
        let body = review_body(pod(size));
        let mut group = c.benchmark_group(format!("inject/{name}"));
        group.bench_function("json_baseline", |b| {
            b.iter(|| {
                let (version, request) = decode_review(black_box(&body)).ok()?;
                let response = mesh_admission::AdmissionResponse::allow(&request.uid);
                Some(encode_review(version, &response).len())
            })
        });
        group.bench_function("review", |b| {
            b.iter(|| {
                let (version, request) = decode_review(black_box(&body)).ok()?;
                let (response, _) = webhook::review(&injector, &request);
                Some(encode_review(version, &response).len())
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
