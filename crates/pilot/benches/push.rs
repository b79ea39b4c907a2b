//! Cost of a push: translating the mesh and building every watched group's snapshot.
//!
//! 1,000 services with 2 endpoints each in 20 namespaces, each with a DestinationRule
//! (two subsets) and a VirtualService. Cases:
//! - `translate_once`: the whole mesh translated once, as for a single group (the
//!   baseline: what one push costs without per-proxy views);
//! - `full_push/<groups>`: a rule change with that many proxy groups watched
//!   (sidecars spread over the 20 namespaces, several label sets each);
//! - `eds_push/<groups>`: an endpoint moves; only EDS is recomputed.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mesh_mcp::McpView;
use mesh_model::{ParseOptions, Resource, parse_document_set};
use mesh_xds::SnapshotCache;
use pilot::{
    proxy::{Proxy, ProxyKind},
    push::PushEngine,
};

const SERVICES: usize = 1000;
const NAMESPACES: usize = 20;

fn service(i: usize, timeout: u32, ip_base: u32) -> String {
    let ns = format!("ns{}", i % NAMESPACES);
    let host = format!("svc{i}.{ns}.svc.cluster.local");
    let (a, b) = (i / 250 + ip_base as usize, i % 250);
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 10.{a}.{b}.1, labels: {{version: v1}}}}
  - {{address: 10.{a}.{b}.2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  host: {host}
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  hosts: [{host}]
  http:
  - timeout: {timeout}s
    route:
    - {{destination: {{host: {host}, subset: v1}}, weight: 90}}
    - {{destination: {{host: {host}, subset: v2}}, weight: 10}}
---
"
    )
}

fn view(timeout: u32, ip_base: u32) -> Arc<McpView> {
    let yaml: String = (0..SERVICES)
        .map(|i| service(i, timeout, ip_base))
        .collect();
    let set = parse_document_set("bench.yaml", &yaml, &ParseOptions::default());
    Arc::new(McpView {
        resources: set
            .accepted
            .into_iter()
            .map(|r| (r.key(), Arc::new(r)))
            .collect(),
        generation: 1,
    })
}

fn groups(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            Proxy::new(
                ProxyKind::Sidecar,
                format!("ns{}", i % NAMESPACES),
                [("app".to_string(), format!("app{i}"))].into(),
            )
            .group_key()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let base = view(3, 0);
    let retimed = view(4, 0);
    let moved = view(3, 100);

    c.bench_function("translate_once", |b| {
        b.iter(|| {
            let refs: Vec<&Resource> = base.resources.values().map(|r| r.as_ref()).collect();
            pilot::translate(&refs)
        })
    });

    for n in [1, 100, 1000] {
        let cache = SnapshotCache::new();
        let watchers: Vec<_> = groups(n).iter().map(|g| cache.watch(g)).collect();
        let mut engine = PushEngine::new(cache.clone());
        engine.update(base.clone());
        let mut flip = false;
        c.bench_function(&format!("full_push/{n}"), |b| {
            b.iter(|| {
                flip = !flip;
                engine.update(if flip { retimed.clone() } else { base.clone() })
            })
        });
        engine.update(base.clone());
        c.bench_function(&format!("eds_push/{n}"), |b| {
            b.iter_batched(
                || (),
                |()| {
                    flip = !flip;
                    engine.update(if flip { moved.clone() } else { base.clone() })
                },
                BatchSize::SmallInput,
            )
        });
        drop(watchers);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
