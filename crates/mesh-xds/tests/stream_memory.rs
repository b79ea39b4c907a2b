//! Resident memory per stream state machine, printed (not asserted): N delta and N
//! SotW streams over one pilot-sized snapshot (1,401 clusters and load assignments),
//! each subscribed like an Envoy sidecar and in sync. Run with
//! `cargo test -p mesh-xds --release --test stream_memory -- --ignored --nocapture`.

#![allow(clippy::unwrap_used)]

use mesh_xds::{
    Any, Snapshot, TypedResources, XdsResource,
    delta::DeltaStream,
    discovery::{DeltaDiscoveryRequest, DiscoveryRequest},
    sotw::SotwStream,
    type_url,
};

const STREAMS: usize = 2000;
const CLUSTERS: usize = 1401;

fn cluster_name(i: usize) -> String {
    format!("outbound|8080||svc-{i}.ns-{}.svc.cluster.local", i % 10)
}

fn mk_snapshot() -> Snapshot {
    let set = |t: &str, size: usize| {
        TypedResources::new((0..CLUSTERS).map(|i| {
            XdsResource::new(
                cluster_name(i),
                Any {
                    type_url: t.into(),
                    value: vec![i as u8; size],
                },
            )
        }))
    };
    Snapshot::new()
        .with(type_url::CLUSTER, set(type_url::CLUSTER, 100))
        .with(type_url::ENDPOINT, set(type_url::ENDPOINT, 150))
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn names() -> Vec<String> {
    (0..CLUSTERS).map(cluster_name).collect()
}

fn delta_stream(snap: &Snapshot) -> DeltaStream {
    let mut s = DeltaStream::new();
    for (t, subscribe) in [(type_url::CLUSTER, vec![]), (type_url::ENDPOINT, names())] {
        let out = s
            .on_request(
                &DeltaDiscoveryRequest {
                    type_url: t.into(),
                    resource_names_subscribe: subscribe,
                    ..Default::default()
                },
                Some(snap),
            )
            .unwrap();
        for r in out.responses {
            s.on_request(
                &DeltaDiscoveryRequest {
                    type_url: t.into(),
                    response_nonce: r.nonce.clone(),
                    ..Default::default()
                },
                Some(snap),
            )
            .unwrap();
        }
    }
    s
}

fn sotw_stream(snap: &Snapshot) -> SotwStream {
    let mut s = SotwStream::new();
    for (t, names) in [(type_url::CLUSTER, vec![]), (type_url::ENDPOINT, names())] {
        let req = DiscoveryRequest {
            type_url: t.into(),
            resource_names: names.clone(),
            ..Default::default()
        };
        let out = s.on_request(&req, Some(snap)).unwrap();
        for r in out.responses {
            let ack = DiscoveryRequest {
                version_info: r.version_info.clone(),
                response_nonce: r.nonce.clone(),
                ..req.clone()
            };
            s.on_request(&ack, Some(snap)).unwrap();
        }
    }
    s
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn resident_memory_per_stream() {
    let snap = mk_snapshot();
    // Warm up the shared encodings so they are not counted per stream.
    drop(delta_stream(&snap));
    drop(sotw_stream(&snap));

    let before = vm_rss_kib();
    let delta: Vec<DeltaStream> = (0..STREAMS).map(|_| delta_stream(&snap)).collect();
    let after_delta = vm_rss_kib();
    let sotw: Vec<SotwStream> = (0..STREAMS).map(|_| sotw_stream(&snap)).collect();
    let after_sotw = vm_rss_kib();
    println!(
        "{STREAMS} streams in sync, {CLUSTERS} explicit EDS names each: delta {:.1} KiB/stream, SotW {:.1} KiB/stream (VmRSS {before} -> {after_delta} -> {after_sotw} KiB)",
        (after_delta - before) as f64 / STREAMS as f64,
        (after_sotw - after_delta) as f64 / STREAMS as f64,
    );
    assert_eq!(delta.len() + sotw.len(), 2 * STREAMS);
}
