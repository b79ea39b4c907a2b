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
//! counted as refused and retried by the next request.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Args;
use mesh_api::mixer::v1::{
    ReportRequest, mixer_client::MixerClient, report_request::RepeatedAttributesSemantics,
};
use mixer_core::{
    Value,
    dictionary::GLOBAL_WORDS,
    wire::{AttributeBag, encode},
};
use tonic::transport::Channel;

use crate::drive::{Outcome, Unit, closed_loop, open_loop};

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

/// Report `i`'s bag `j`.
pub fn bag(i: usize, j: usize) -> AttributeBag {
    let n = i.wrapping_mul(31).wrapping_add(j);
    let mut b = AttributeBag::new();
    let src = n % 10;
    let dst = (n / 10) % 20;
    b.insert("context.protocol", Value::from("http"));
    b.insert("context.reporter.kind", Value::from("inbound"));
    b.insert(
        "source.workload.name",
        Value::from(format!("client-{src}").as_str()),
    );
    b.insert("source.workload.namespace", Value::from("load"));
    b.insert(
        "source.principal",
        Value::from(format!("cluster.local/ns/load/sa/client-{src}").as_str()),
    );
    b.insert(
        "source.labels",
        Value::string_map([("app", "client"), ("version", "v1")]),
    );
    b.insert(
        "destination.workload.name",
        Value::from(format!("svc-{dst}-v1").as_str()),
    );
    b.insert("destination.workload.namespace", Value::from("load"));
    b.insert(
        "destination.service.host",
        Value::from(format!("svc-{dst}.load.svc.cluster.local").as_str()),
    );
    b.insert(
        "destination.service.name",
        Value::from(format!("svc-{dst}").as_str()),
    );
    b.insert("destination.service.namespace", Value::from("load"));
    b.insert(
        "destination.labels",
        Value::string_map([("app", "svc"), ("version", "v1")]),
    );
    b.insert("request.path", Value::from("/api/items"));
    b.insert("request.method", Value::from("GET"));
    b.insert(
        "response.code",
        Value::Int64([200, 200, 200, 200, 200, 200, 200, 404, 200, 503][n % 10]),
    );
    b.insert(
        "response.duration",
        Value::Duration(Duration::from_micros(500 + (n % 97) as u64 * 300)),
    );
    b.insert("request.size", Value::Int64((n % 13) as i64 * 100));
    b.insert("response.size", Value::Int64((n % 17) as i64 * 1_000));
    b.insert("connection.mtls", Value::Bool(true));
    b.insert("api.protocol", Value::from("http"));
    b
}

struct Reports {
    clients: Vec<MixerClient<Channel>>,
    requests: Vec<ReportRequest>,
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
        client.clone().report(req.clone()).await.map(|_| ())
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

    let words = u32::try_from(GLOBAL_WORDS.len())?;
    let requests: Vec<ReportRequest> = (0..200)
        .map(|i| ReportRequest {
            attributes: (0..args.batch).map(|j| encode(&bag(i, j), words)).collect(),
            repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding as i32,
            global_word_count: words,
            ..ReportRequest::default()
        })
        .collect();
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        let channel = Channel::from_shared(format!("http://{grpc}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        clients.push(MixerClient::new(channel));
    }
    let work = Arc::new(Reports { clients, requests });
    work.report(0).await.context("first Report")?;
    drained(monitoring).await?;
    let batch = args.batch as f64;
    println!(
        "reports of {} records, {} attributes each ({} bytes per record on the wire)",
        args.batch,
        bag(0, 0).len(),
        work.requests
            .first()
            .map_or(0, |r| prost::Message::encoded_len(r) / args.batch.max(1))
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
