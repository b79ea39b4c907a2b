//! mixer-telemetry's command line.

use std::{net::SocketAddr, process::ExitCode};

use clap::Parser;
use mesh_runtime::LogArgs;

use crate::server::MixerTelemetryConfig;

/// mixer-telemetry: reports (Mixer Report API, Envoy access logs) turned into
/// metrics.
#[derive(Debug, Clone, Parser)]
#[command(name = "mixer-telemetry", version, about)]
pub struct Args {
    /// galley's MCP endpoint to follow.
    #[arg(
        long,
        env = "MIXER_TELEMETRY_GALLEY",
        default_value = "http://127.0.0.1:9901"
    )]
    pub galley: String,
    /// Report API listen address (Mixer Report and Envoy's access log service).
    #[arg(
        long,
        env = "MIXER_TELEMETRY_GRPC_ADDR",
        default_value = "0.0.0.0:9091"
    )]
    pub grpc_addr: SocketAddr,
    /// Where the prometheus handlers' metrics are served (/metrics).
    #[arg(
        long,
        env = "MIXER_TELEMETRY_PROMETHEUS_ADDR",
        default_value = "0.0.0.0:42422"
    )]
    pub prometheus_addr: SocketAddr,
    /// Monitoring HTTP listen address (/metrics, /healthz, /ready,
    /// /debug/telemetryz).
    #[arg(
        long,
        env = "MIXER_TELEMETRY_MONITORING_ADDR",
        default_value = "0.0.0.0:15014"
    )]
    pub monitoring_addr: SocketAddr,
    /// Records queued at most; past it reports are refused with
    /// ResourceExhausted for the reporter to retry.
    #[arg(long, env = "MIXER_TELEMETRY_QUEUE_RECORDS", default_value_t = 100_000)]
    pub queue_records: usize,
    /// How long a report waits for room in a full queue before it is refused
    /// (0 refuses at once).
    #[arg(long, env = "MIXER_TELEMETRY_QUEUE_WAIT", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub queue_wait: std::time::Duration,
    /// Workers turning queued records into metrics (default: one per CPU).
    #[arg(long, env = "MIXER_TELEMETRY_WORKERS")]
    pub workers: Option<usize>,
    /// Leave out the standard mesh metrics (requests, durations, sizes, TCP
    /// bytes).
    #[arg(long, env = "MIXER_TELEMETRY_NO_STANDARD_METRICS")]
    pub no_standard_metrics: bool,
    /// State directory: the default log database (`logs.db`).
    #[arg(
        long,
        env = "MIXER_TELEMETRY_DATA_DIR",
        default_value = "/var/lib/dromon/mixer-telemetry"
    )]
    pub data_dir: std::path::PathBuf,
    /// Database sqlstore handlers write to unless their params name one:
    /// `postgres://...` (default: SQLite `<data-dir>/logs.db`, created on first
    /// use).
    #[arg(long, env = "MIXER_TELEMETRY_LOG_DATABASE")]
    pub log_database: Option<String>,
    /// Directory with mixer-telemetry's certificate (`cert-chain.pem`,
    /// `key.pem`, `root-cert.pem`, as citadel's agent writes them): enables the
    /// mTLS report port and following galley over `https://`.
    #[arg(long, env = "MIXER_TELEMETRY_TLS_DIR")]
    pub tls_dir: Option<std::path::PathBuf>,
    /// mTLS report listen address (with `--tls-dir`).
    #[arg(
        long,
        env = "MIXER_TELEMETRY_MTLS_ADDR",
        default_value = "0.0.0.0:15004"
    )]
    pub mtls_addr: SocketAddr,
    /// SPIFFE identity galley's certificate must name (default: any identity of
    /// the trust domain).
    #[arg(long, env = "MIXER_TELEMETRY_GALLEY_IDENTITY")]
    pub galley_identity: Option<mesh_tls::SpiffeId>,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Args {
    /// The configuration these flags describe.
    pub fn config(&self) -> MixerTelemetryConfig {
        MixerTelemetryConfig {
            galley: self.galley.clone(),
            grpc_addr: self.grpc_addr,
            prometheus_addr: self.prometheus_addr,
            monitoring_addr: self.monitoring_addr,
            queue_records: self.queue_records,
            queue_wait: self.queue_wait,
            workers: self.workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
            }),
            standard_metrics: !self.no_standard_metrics,
            tls: self
                .tls_dir
                .as_ref()
                .map(|dir| crate::server::TelemetryTls {
                    dir: dir.clone(),
                    mtls_addr: self.mtls_addr,
                    galley_identity: self.galley_identity.clone(),
                }),
            log_database: Some(self.log_database.clone().unwrap_or_else(|| {
                format!("sqlite://{}", self.data_dir.join("logs.db").display())
            })),
        }
    }

    /// Parses the command line and runs until SIGTERM or Ctrl-C.
    pub fn parse_and_run() -> ExitCode {
        let args = Args::parse();
        let config = args.config();
        mesh_runtime::run_main(&args.log, "mixer-telemetry", |shutdown| {
            crate::server::run(config, shutdown)
        })
    }
}
