//! mixer-policy's command line.

use std::{net::SocketAddr, process::ExitCode};

use clap::Parser;
use mesh_runtime::{LogArgs, RuntimeArgs};

use crate::server::{FailurePolicy, MixerPolicyConfig};

/// mixer-policy: attribute-based policy checks and quotas (Mixer Check API and
/// Envoy ext_authz on one port).
#[derive(Debug, Clone, Parser)]
#[command(name = "mixer-policy", version, about)]
pub struct Args {
    /// galley's MCP endpoint to follow.
    #[arg(
        long,
        env = "MIXER_POLICY_GALLEY",
        default_value = "http://127.0.0.1:9901"
    )]
    pub galley: String,
    /// Check API listen address (Mixer Check and Envoy ext_authz).
    #[arg(long, env = "MIXER_POLICY_GRPC_ADDR", default_value = "0.0.0.0:9091")]
    pub grpc_addr: SocketAddr,
    /// Monitoring HTTP listen address (/metrics, /healthz, /ready, /debug/policyz).
    #[arg(
        long,
        env = "MIXER_POLICY_MONITORING_ADDR",
        default_value = "0.0.0.0:15014"
    )]
    pub monitoring_addr: SocketAddr,
    /// ext_authz answer while no configuration is loaded: open (allow) or closed
    /// (refuse with 503).
    #[arg(
        long,
        env = "MIXER_POLICY_FAILURE_POLICY",
        value_enum,
        default_value = "closed"
    )]
    pub failure_policy: FailurePolicy,
    /// Directory with mixer-policy's certificate (`cert-chain.pem`, `key.pem`,
    /// `root-cert.pem`, as citadel's agent writes them): enables the mTLS Check
    /// port and following galley over `https://`.
    #[arg(long, env = "MIXER_POLICY_TLS_DIR")]
    pub tls_dir: Option<std::path::PathBuf>,
    /// mTLS Check listen address (with `--tls-dir`).
    #[arg(long, env = "MIXER_POLICY_MTLS_ADDR", default_value = "0.0.0.0:15004")]
    pub mtls_addr: SocketAddr,
    /// SPIFFE identity galley's certificate must name (default: any identity of the
    /// trust domain).
    #[arg(long, env = "MIXER_POLICY_GALLEY_IDENTITY")]
    pub galley_identity: Option<mesh_tls::SpiffeId>,
    /// State directory: the default SQL quota database (`quota.db`).
    #[arg(
        long,
        env = "MIXER_POLICY_DATA_DIR",
        default_value = "/var/lib/dromon/mixer-policy"
    )]
    pub data_dir: std::path::PathBuf,
    /// Database SQL quota handlers count in unless their params name one:
    /// `postgres://...` for replicas sharing counts (default: SQLite
    /// `<data-dir>/quota.db`, created on first use).
    #[arg(long, env = "MIXER_POLICY_QUOTA_DATABASE")]
    pub quota_database: Option<String>,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
    /// Async runtime.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl Args {
    /// The configuration these flags describe.
    pub fn config(&self) -> MixerPolicyConfig {
        MixerPolicyConfig {
            galley: self.galley.clone(),
            grpc_addr: self.grpc_addr,
            monitoring_addr: self.monitoring_addr,
            failure_policy: self.failure_policy,
            tls: self.tls_dir.as_ref().map(|dir| crate::server::MixerTls {
                dir: dir.clone(),
                mtls_addr: self.mtls_addr,
                galley_identity: self.galley_identity.clone(),
            }),
            quota_database: Some(self.quota_database.clone().unwrap_or_else(|| {
                format!("sqlite://{}", self.data_dir.join("quota.db").display())
            })),
        }
    }

    /// Parses the command line and runs until SIGTERM or Ctrl-C.
    pub fn parse_and_run() -> ExitCode {
        let args = Args::parse();
        let config = args.config();
        mesh_runtime::run_main_with(&args.log, &args.runtime, "mixer-policy", |shutdown| {
            crate::server::run(config, shutdown)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn worker_threads_default_to_the_runtime_and_zero_is_refused() {
        let args = Args::try_parse_from(["mixer-policy"]).unwrap();
        assert_eq!(args.runtime.worker_threads, None);
        let args = Args::try_parse_from(["mixer-policy", "--worker-threads", "1"]).unwrap();
        assert_eq!(args.runtime.worker_threads.map(|n| n.get()), Some(1));
        let err = Args::try_parse_from(["mixer-policy", "--worker-threads", "0"]).unwrap_err();
        assert!(err.to_string().contains("--worker-threads"), "{err}");
    }
}
