//! sidecar-injector's command line.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::Parser;
use mesh_runtime::LogArgs;

use crate::server::InjectorServerConfig;

/// sidecar-injector: the mutating admission webhook adding the proxy to pods.
#[derive(Debug, Clone, Parser)]
#[command(name = "sidecar-injector", version, about)]
pub struct Args {
    /// HTTPS webhook listen address (`POST /inject`).
    #[arg(
        long,
        env = "SIDECAR_INJECTOR_WEBHOOK_ADDR",
        default_value = "0.0.0.0:9443"
    )]
    pub webhook_addr: SocketAddr,
    /// Directory with the webhook's certificate: `tls.crt` and `tls.key` (a
    /// kubernetes.io/tls Secret) or `cert-chain.pem` and `key.pem` (citadel's
    /// agent); reloaded when the files change.
    #[arg(
        long,
        env = "SIDECAR_INJECTOR_TLS_DIR",
        default_value = "/etc/dromon/injector-certs"
    )]
    pub tls_dir: PathBuf,
    /// The injector configuration (policy, selectors, values, template), YAML;
    /// reloaded when it changes. Without it the built-in defaults apply.
    #[arg(long, env = "SIDECAR_INJECTOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Monitoring HTTP listen address (/metrics, /healthz, /ready,
    /// /debug/injectorz).
    #[arg(
        long,
        env = "SIDECAR_INJECTOR_MONITORING_ADDR",
        default_value = "0.0.0.0:15014"
    )]
    pub monitoring_addr: SocketAddr,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Args {
    /// The configuration these flags describe.
    pub fn config(&self) -> InjectorServerConfig {
        InjectorServerConfig {
            webhook_addr: self.webhook_addr,
            tls_dir: self.tls_dir.clone(),
            config: self.config.clone(),
            monitoring_addr: self.monitoring_addr,
            reload_interval: mesh_admission::tls::DEFAULT_RELOAD_INTERVAL,
        }
    }

    /// Parses the command line and runs until SIGTERM or Ctrl-C.
    pub fn parse_and_run() -> ExitCode {
        let args = Args::parse();
        let config = args.config();
        mesh_runtime::run_main(&args.log, "sidecar-injector", |shutdown| {
            crate::server::run(config, shutdown)
        })
    }
}
