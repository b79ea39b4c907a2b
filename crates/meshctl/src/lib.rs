//! meshctl: the Dromon operator CLI.
//!
//! - `meshctl up`: the whole control plane on one host, in one process, components
//!   still talking to each other over loopback gRPC, configuration from a directory
//!   (by default the sample application in `examples/`), state under a data dir;
//! - `meshctl validate PATH...`: galley's validation, offline;
//! - `meshctl analyze PATH...`: validation plus cross-resource analysis, offline;
//! - `meshctl proxy-status [PROXY]`: each connected proxy SYNCED / STALE / NACKED per
//!   xDS type, from pilot.

pub mod check;
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
}

impl Cli {
    /// Parses the command line and runs the command.
    pub fn parse_and_run() -> ExitCode {
        let cli = Cli::parse();
        match cli.command {
            Command::Validate(args) => check::validate(&args),
            Command::Analyze(args) => check::analyze(&args),
            Command::ProxyStatus(args) => status::proxy_status(&args),
            Command::Up(args) => {
                mesh_runtime::run_main(&cli.log, "meshctl", |shutdown| up::up(args, shutdown))
            }
        }
    }
}
