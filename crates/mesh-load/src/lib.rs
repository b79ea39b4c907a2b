//! mesh-load: a load generator for Dromon's xDS servers.
//!
//! `mesh-load galley` starts a galley binary on a generated configuration directory,
//! connects many ADS subscribers, then rewrites a file round after round and times
//! how long it takes until the last subscriber has received and ACKed the change.
//! It reports latency percentiles and the server's memory and CPU.
//!
//! `mesh-load pilot` starts a pilot binary on a generated mesh and connects thousands
//! of simulated Envoy sidecars (or proxyless gRPC clients), each on its own HTTP/2
//! connection ([`proxy_sim`]); it times their initial sync, endpoint changes and full
//! configuration changes ([`pilot`]).
//!
//! `mesh-load citadel` drives CreateCertificate over gRPC + TLS against a real
//! citadel and measures certificates per second and latency at a fixed rate,
//! beside the raw signing rate of the crypto it uses ([`citadel`]).
//!
//! `mesh-load mixer` drives Mixer Checks with 20-attribute bags against real galley
//! and mixer-policy processes ([`mixer`]).
//!
//! `mesh-load telemetry` drives Mixer Reports (batches of attribute bags) against
//! real galley and mixer-telemetry processes with the standard metrics on
//! ([`telemetry`]).
//!
//! `mesh-load injector` posts pod-creation AdmissionReviews to a real
//! sidecar-injector over HTTPS ([`injector`]).

pub mod citadel;
pub mod configgen;
pub mod drive;
pub mod galley;
pub mod injector;
pub mod mixer;
pub mod pilot;
pub mod pilotgen;
pub mod prepared;
pub mod proc;
pub mod proxy_sim;
pub mod stats;
pub mod telemetry;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mesh-load: load generator for Dromon's xDS servers.
#[derive(Debug, Parser)]
#[command(name = "mesh-load", version, about)]
pub struct Cli {
    /// Scenario.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// Load scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Fan a configuration change out from galley to many MCP subscribers.
    Galley(galley::GalleyArgs),
    /// Run a real pilot and connect thousands of simulated ADS proxies to it.
    Pilot(pilot::PilotArgs),
    /// CreateCertificate load against a real citadel, beside the raw sign rate.
    Citadel(citadel::CitadelArgs),
    /// Mixer Check load against real galley and mixer-policy processes.
    Mixer(mixer::MixerArgs),
    /// Mixer Report load against real galley and mixer-telemetry processes.
    Telemetry(telemetry::TelemetryArgs),
    /// AdmissionReview load against a real sidecar-injector over HTTPS.
    Injector(injector::InjectorArgs),
    /// Write a generated configuration directory.
    Gen(configgen::GenArgs),
}

impl Cli {
    /// Parses the command line and runs the scenario.
    pub fn parse_and_run() -> ExitCode {
        let cli = Cli::parse();
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("mesh-load: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result = runtime.block_on(async move {
            match cli.scenario {
                Scenario::Galley(args) => galley::run(args).await,
                Scenario::Pilot(args) => pilot::run(args).await,
                Scenario::Gen(args) => configgen::run(&args),
                Scenario::Citadel(args) => citadel::run(args).await,
                Scenario::Mixer(args) => mixer::run(args).await,
                Scenario::Telemetry(args) => telemetry::run(args).await,
                Scenario::Injector(args) => injector::run(args).await,
            }
        });
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mesh-load: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}
