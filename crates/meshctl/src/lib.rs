//! meshctl: the Dromon operator CLI.
//!
//! - `meshctl up`: the whole control plane on one host, in one process, components
//!   still talking to each other over loopback gRPC, configuration from a directory
//!   (by default the sample application in `examples/`), state under a data dir;
//! - `meshctl validate PATH...`: galley's validation, offline;
//! - `meshctl analyze PATH...`: validation plus galley's analysis (cross-resource
//!   checks and mixer expressions type-checked, `GAL0111`), offline;
//! - `meshctl proxy-status [PROXY]`: each connected proxy SYNCED / STALE / NACKED per
//!   xDS type, from pilot.

pub mod check;
pub mod inject;
pub mod ports;
pub mod sample;
pub mod status;
pub mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mesh_runtime::LogArgs;

/// meshctl: run and inspect a Dromon service mesh control plane.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// meshctl's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the whole control plane on this host.
    Up(up::UpArgs),
    /// Validate configuration files offline (exit 1 when any is refused).
    Validate(check::ValidateArgs),
    /// Validate and analyse configuration offline (exit 1 on errors or warnings).
    Analyze(check::AnalyzeArgs),
    /// Show each proxy connected to pilot: SYNCED, STALE or NACKED per xDS type.
    ProxyStatus(status::ProxyStatusArgs),
    /// Print a token naming a namespace and service account, for citadel's
    /// CreateCertificate (signed by the local issuer `meshctl up` runs).
    Token(TokenArgs),
    /// Add the sidecar to the workloads of multi-document YAML, as the injector's
    /// webhook would (Pods, Deployments, StatefulSets, DaemonSets, Jobs,
    /// CronJobs); everything else is copied unchanged.
    KubeInject(inject::KubeInjectArgs),
}

/// Flags of `meshctl token`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// Namespace the token names.
    #[arg(long)]
    pub namespace: String,
    /// Service account the token names.
    #[arg(long)]
    pub service_account: String,
    /// `meshctl up`'s data directory (the key is under `citadel/tokens/`).
    #[arg(long, default_value = ".dromon")]
    pub data: std::path::PathBuf,
    /// Token lifetime.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
}

impl Cli {
    /// Parses the command line and runs the command.
    pub fn parse_and_run() -> ExitCode {
        let cli = Cli::parse();
        match cli.command {
            Command::Validate(args) => check::validate(&args),
            Command::Analyze(args) => check::analyze(&args),
            Command::ProxyStatus(args) => status::proxy_status(&args),
            Command::KubeInject(args) => inject::kube_inject(&args),
            Command::Token(args) => match citadel::args::mint_token(
                &args.data.join("citadel"),
                &args.namespace,
                &args.service_account,
                args.ttl,
            ) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("meshctl token: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Up(args) => {
                mesh_runtime::run_main(&cli.log, "meshctl", |shutdown| up::up(args, shutdown))
            }
        }
    }
}
