//! `mesh-load telemetry`: Mixer Report load against real galley and
//! mixer-telemetry processes, with the standard metrics (the prometheus
//! handler) on.
//!
//! Each Report carries `--batch` attribute bags (20 attributes each, over 10
//! source workloads, 20 destination services and 3 response codes, so 600
//! series per metric). Two phases: a closed loop of `--concurrency` Reports in
//! flight for throughput, counted as records *processed* (the run waits until
//! the queue is empty and divides by the time from start to then); then a fixed
//! rate for latency. A refused Report (ResourceExhausted: the queue is full) is
//! counted as refused and retried by the next request. The Reports are encoded
//! once up front and sent as bytes ([`crate::prepared`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use mixer_telemetry::samples;
use prost::Message;

use crate::{
    drive::{Outcome, Unit, closed_loop, open_loop},
    prepared,
};

/// Flags of `mesh-load telemetry`.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Records (attribute bags) per Report.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// HTTP/2 connections to mixer-telemetry.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Reports in flight in the throughput phase.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Length of the throughput phase.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Records per second in the latency phase (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    /// Length of the latency phase.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub rate_duration: Duration,
}

/// Mixer's Report method.
const PATH: &str = "/istio.mixer.v1.Mixer/Report";

/// `ReportResponse`: nothing is read of it.
#[derive(Clone, PartialEq, prost::Message)]
struct ReportAnswer {}

struct Reports {
    clients: Vec<(prepared::GrpcConnection, hyper::Uri)>,
    /// Encoded `ReportRequest`s.
    requests: Vec<Bytes>,
}

impl Reports {
    async fn report(&self, i: usize) -> Result<(), tonic::Status> {
        let pick = |n: usize| i.checked_rem(n).unwrap_or(0);
        let (Some(client), Some(req)) = (
            self.clients.get(pick(self.clients.len())),
            self.requests.get(pick(self.requests.len())),
        ) else {
            return Err(tonic::Status::internal("no client"));
        };
        let (connection, uri) = client;
        connection
            .call::<ReportAnswer>(uri.clone(), req.clone())
            .await
            .map(|_| ())
    }
}

impl Unit for Reports {
    async fn one(&self, i: usize) -> bool {
        self.report(i).await.is_ok()
    }
}

async fn counter(monitoring: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let (_, body) = dromon_e2e::http_get(monitoring, "/metrics").await?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Waits until the queue is empty.
async fn drained(monitoring: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..6000 {
        if counter(monitoring, "mixer_telemetry_queue_records ").await? == 0.0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::bail!("the queue did not drain in 30 s")
}

/// Runs the scenario and prints the figures.
pub async fn run(args: TelemetryArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let config = tmp.path().join("config");
    std::fs::create_dir_all(&config)?;
    let galley = dromon_e2e::start_galley(&config).await?;
    let (grpc, prom, monitoring) = (
        dromon_e2e::local_addr(),
        dromon_e2e::local_addr(),
        dromon_e2e::local_addr(),
    );
    let telemetry = dromon_e2e::ChildGuard::spawn(
        "mixer-telemetry",
        &[
            "--galley",
            &format!("http://{}", galley.mcp),
            "--grpc-addr",
            &grpc.to_string(),
            "--prometheus-addr",
            &prom.to_string(),
            "--monitoring-addr",
            &monitoring.to_string(),
            "--log-level",
            "warn",
        ],
    )?;
    dromon_e2e::wait_http_ok(monitoring, "/ready", Duration::from_secs(30)).await?;
    let pid = telemetry.id();

    let requests: Vec<Bytes> = (0..200)
        .map(|i| prepared::frame(&samples::report(i, args.batch).encode_to_vec()))
        .collect();
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        let connection = prepared::GrpcConnection::connect(grpc).await?;
        let uri = connection.uri(PATH)?;
        clients.push((connection, uri));
    }
    let work = Arc::new(Reports { clients, requests });
    work.report(0).await.context("first Report")?;
    drained(monitoring).await?;
    let batch = args.batch as f64;
    println!(
        "reports of {} records, {} attributes each ({} bytes per record on the wire)",
        args.batch,
        samples::request_bag(0, 0).len(),
        work.requests
            .first()
            .map_or(0, |r| r.len().saturating_sub(5) / args.batch.max(1))
    );

    let cpu = || crate::proc::cpu_seconds(pid).unwrap_or_default();
    let (cpu0, exported0) = (
        cpu(),
        counter(monitoring, "mixer_telemetry_metric_records_exported_total").await?,
    );
    let start = std::time::Instant::now();
    let Outcome {
        ok,
        errors,
        samples,
        ..
    } = closed_loop(&work, args.concurrency, args.duration).await;
    drained(monitoring).await?;
    let took = start.elapsed();
    let (cpu1, exported1) = (
        cpu(),
        counter(monitoring, "mixer_telemetry_metric_records_exported_total").await?,
    );
    let records = ok as f64 * batch;
    println!(
        "throughput: {records:.0} records processed in {:.2}s = {:.0} records/s ({ok} reports taken, {errors} refused and re-sent, {} in flight); \
         {:.0} metric records; report latency {}",
        took.as_secs_f64(),
        records / took.as_secs_f64(),
        args.concurrency,
        exported1 - exported0,
        crate::drive::latency(&samples)
    );
    println!(
        "mixer-telemetry CPU: {:.2}s = {:.2} µs per record",
        cpu1 - cpu0,
        (cpu1 - cpu0) / records.max(1.0) * 1e6
    );
    if args.rate > 0 {
        let reports_per_second = (args.rate as f64 / batch).max(1.0) as u64;
        let cpu0 = cpu();
        let out = open_loop(&work, reports_per_second, args.rate_duration).await;
        let cpu1 = cpu();
        println!(
            "fixed rate {} records/s ({reports_per_second} reports/s) for {:?}: {} reports ok, {} refused; report latency {}",
            args.rate,
            args.rate_duration,
            out.ok,
            out.errors,
            crate::drive::latency(&out.samples)
        );
        println!(
            "mixer-telemetry CPU: {:.2}s = {:.2} µs per record",
            cpu1 - cpu0,
            (cpu1 - cpu0) / (out.ok as f64 * batch).max(1.0) * 1e6
        );
    }
    if let Some((rss, hwm)) = crate::proc::memory_kib(pid) {
        println!(
            "mixer-telemetry memory: RSS {} MiB, peak {} MiB",
            rss / 1024,
            hwm / 1024
        );
    }
    drop(telemetry);
    drop(galley);
    Ok(())
}
