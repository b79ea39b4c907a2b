//! Injection of one pod: a small pod and a 64 KB one (many containers, env
//! entries and annotations), each through the policy, the template, the merge and
//! the JSON patch, as the webhook does it. The baseline in the same run is the
//! JSON parse and serialization of the same review, which any webhook pays.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mesh_admission::{decode_review, encode_review};
use sidecar_injector::{Injector, InjectorConfig, samples, webhook};

fn bench(c: &mut Criterion) {
    let injector = match Injector::new(InjectorConfig::default()) {
        Ok(i) => i,
        Err(e) => panic!("default template: {e}"),
    };
    for (name, size) in [("small", 0usize), ("64KB", 64 * 1024)] {
        let body = serde_json::to_vec(&samples::review(
            &samples::pod_of_size(size),
            "b1f0c5a6-0000-4000-8000-000000000001",
        ))
        .unwrap_or_default();
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
