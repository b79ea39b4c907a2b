//! Report ingestion in-process, per Report of 100 requests (20 attributes each)
//! with the standard metrics: the gRPC message decoded from its bytes by prost
//! and its bags decoded and checked against the attribute vocabulary, or the
//! bags read from the bytes in place (what the server does), and each bag
//! recorded into the metrics and the service graph, as a worker does. The
//! allocator is the binary's (jemalloc).
//!
//! `cargo bench -p mixer-telemetry --bench ingest`

#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_api::mixer::v1::ReportRequest;
use mixer_core::wire::{decode_report, raw};
use mixer_telemetry::{
    defaults::standard_metrics,
    graph::ServiceGraph,
    otel::OtelExporters,
    pipeline::{Outputs, Pipeline, Sinks},
    prom::Registry,
    samples,
    sqlstore::LogStores,
};
use prost::Message;

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const BATCH: usize = 100;

fn ingest(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let registry = Registry::new();
    let mut sinks = Sinks {
        logs: LogStores::new(None, Default::default()),
        otel: OtelExporters::new(Default::default(), "bench"),
    };
    let pipeline = Pipeline::compile([], &standard_metrics(), &registry, &mut sinks);
    assert!(pipeline.issues().is_empty());
    let graph = ServiceGraph::new();
    let bytes: Vec<Vec<u8>> = (0..16)
        .map(|i| samples::report(i, BATCH).encode_to_vec())
        .collect();
    let decoded: Vec<ReportRequest> = bytes
        .iter()
        .map(|b| ReportRequest::decode(b.as_slice()).unwrap())
        .collect();
    let bags: Vec<_> = decoded
        .iter()
        .map(|r| decode_report(r, pipeline.manifest()).unwrap())
        .collect();

    let mut group = c.benchmark_group("report");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % bytes.len();
        i
    };
    group.bench_function("protobuf decode", |b| {
        b.iter(|| ReportRequest::decode(black_box(bytes[next()].as_slice())).unwrap())
    });
    group.bench_function("bag decode", |b| {
        b.iter(|| decode_report(black_box(&decoded[next()]), pipeline.manifest()).unwrap())
    });
    group.bench_function("record", |b| {
        b.iter(|| {
            let mut outputs = Outputs::default();
            for bag in &bags[next()] {
                black_box(pipeline.record(bag, &mut outputs));
                graph.record(bag);
            }
        })
    });
    group.bench_function("read in place", |b| {
        b.iter(|| raw::decode_report(black_box(&bytes[next()]), pipeline.manifest()).unwrap())
    });
    group.bench_function("all, read in place", |b| {
        b.iter(|| {
            let bags = raw::decode_report(black_box(&bytes[next()]), pipeline.manifest()).unwrap();
            let mut outputs = Outputs::default();
            for bag in &bags {
                black_box(pipeline.record(bag, &mut outputs));
                graph.record(bag);
            }
        })
    });
    group.bench_function("all", |b| {
        b.iter(|| {
            let req = ReportRequest::decode(black_box(bytes[next()].as_slice())).unwrap();
            let bags = decode_report(&req, pipeline.manifest()).unwrap();
            drop(req);
            let mut outputs = Outputs::default();
            for bag in &bags {
                black_box(pipeline.record(bag, &mut outputs));
                graph.record(bag);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
