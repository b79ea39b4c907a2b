//! galley's command line.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use mesh_runtime::LogArgs;

use mesh_kube::leader::{LeaseConfig, default_identity};

use crate::{
    GalleyConfig, KubeConnection, SourceConfig,
    source::dir::Debounce,
    status::writer::{DEFAULT_LEASE_NAME, StatusConfig},
};

/// galley: configuration ingestion, validation and distribution (MCP over xDS).
///
/// Exactly one source: `--config-dir` or `--kube`.
#[derive(Debug, Clone, Parser)]
#[command(name = "galley", version, about)]
#[command(group = clap::ArgGroup::new("source").required(true).multiple(false).args(["config_dir", "kube"]))]
pub struct Args {
    /// Directory of Istio resource YAML/JSON to serve (watched recursively).
    #[arg(long, env = "GALLEY_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// Serve the Istio custom resources of a Kubernetes API server (watched), instead
    /// of a directory.
    #[arg(long, env = "GALLEY_KUBE")]
    pub kube: bool,
    /// How to reach the API server (with `--kube`).
    #[command(flatten)]
    pub kube_args: mesh_kube::KubeArgs,
    /// Namespaces to watch, comma-separated (with `--kube`); every namespace when unset.
    #[arg(long, env = "GALLEY_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Write analysis messages into the status of the resources they are about
    /// (with `--kube`; `--write-status=false` turns it off). Only the replica holding
    /// the `galley-status` Lease writes.
    #[arg(
        long,
        env = "GALLEY_WRITE_STATUS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub write_status: bool,
    /// Namespace of the `galley-status` Lease electing the replica that writes
    /// status (with `--kube`); usually galley's own.
    #[arg(long, env = "GALLEY_LEASE_NAMESPACE", default_value = "istio-system")]
    pub lease_namespace: String,
    /// MCP (xDS gRPC) listen address.
    #[arg(long, env = "GALLEY_MCP_ADDR", default_value = "0.0.0.0:9901")]
    pub mcp_addr: SocketAddr,
    /// Monitoring HTTP listen address (/metrics, /healthz, /ready, /debug/*).
    #[arg(long, env = "GALLEY_MONITORING_ADDR", default_value = "0.0.0.0:15014")]
    pub monitoring_addr: SocketAddr,
    /// Namespace given to resources that name none.
    #[arg(long, env = "GALLEY_DEFAULT_NAMESPACE", default_value = "default")]
    pub default_namespace: String,
    /// Quiet period that ends a burst of file events.
    #[arg(long, env = "GALLEY_DEBOUNCE", default_value = "20ms", value_parser = humantime::parse_duration)]
    pub debounce: Duration,
    /// Longest a burst of file events is held before it is published.
    #[arg(long, env = "GALLEY_DEBOUNCE_MAX", default_value = "80ms", value_parser = humantime::parse_duration)]
    pub debounce_max: Duration,
    /// Directory with this galley's certificate (`cert-chain.pem`, `key.pem`,
    /// `root-cert.pem`, as citadel's agent writes them); enables the mTLS MCP port.
    #[arg(long, env = "GALLEY_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// mTLS MCP listen address (with `--tls-dir`).
    #[arg(long, env = "GALLEY_MCP_MTLS_ADDR", default_value = "0.0.0.0:9902")]
    pub mcp_mtls_addr: SocketAddr,
    /// Client identities allowed on the mTLS port, comma-separated SPIFFE IDs where
    /// a namespace or service account may be `*`.
    #[arg(
        long,
        env = "GALLEY_ALLOWED_CLIENTS",
        value_delimiter = ',',
        default_value = crate::DEFAULT_ALLOWED_CLIENTS
    )]
    pub allowed_clients: Vec<mesh_tls::IdentityPattern>,
    /// Directory with the validating webhook's serving certificate (`tls.crt` and
    /// `tls.key`, or `cert-chain.pem` and `key.pem`); enables `POST /validate` over
    /// HTTPS, reloaded when the files change.
    #[arg(long, env = "GALLEY_WEBHOOK_TLS_DIR")]
    pub webhook_tls_dir: Option<PathBuf>,
    /// Validating webhook listen address (with `--webhook-tls-dir`).
    #[arg(long, env = "GALLEY_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Args {
    /// The library configuration these flags describe.
    pub fn config(&self) -> GalleyConfig {
        let source = match &self.config_dir {
            Some(path) if !self.kube => SourceConfig::Directory {
                path: path.clone(),
                debounce: Debounce {
                    quiet: self.debounce,
                    max: self.debounce_max,
                },
            },
            _ => SourceConfig::Kubernetes {
                connection: KubeConnection::Args(self.kube_args.clone()),
                namespaces: self
                    .watch_namespaces
                    .iter()
                    .map(|ns| ns.trim().to_string())
                    .filter(|ns| !ns.is_empty())
                    .collect(),
                status: self.write_status.then(|| StatusConfig {
                    lease: LeaseConfig::new(
                        self.lease_namespace.clone(),
                        DEFAULT_LEASE_NAME,
                        default_identity(),
                    ),
                }),
            },
        };
        GalleyConfig {
            source,
            mcp_addr: self.mcp_addr,
            monitoring_addr: self.monitoring_addr,
            default_namespace: self.default_namespace.clone(),
            tls: self.tls_dir.as_ref().map(|dir| crate::GalleyTls {
                dir: dir.clone(),
                mcp_mtls_addr: self.mcp_mtls_addr,
                allowed: self.allowed_clients.clone(),
            }),
            webhook: self
                .webhook_tls_dir
                .as_ref()
                .map(|dir| crate::GalleyWebhook {
                    addr: self.webhook_addr,
                    tls_dir: dir.clone(),
                }),
        }
    }

    /// Parses the command line and runs galley until SIGTERM or Ctrl-C.
    pub fn parse_and_run() -> ExitCode {
        let args = Args::parse();
        let config = args.config();
        mesh_runtime::run_main(&args.log, "galley", |shutdown| crate::run(config, shutdown))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("galley").chain(args.iter().copied()))
    }

    #[test]
    fn takes_exactly_one_source() {
        let missing = parse(&[]).unwrap_err().to_string();
        assert!(
            missing.contains("--config-dir") && missing.contains("--kube"),
            "{missing}"
        );
        let both = parse(&["--config-dir", "/etc/mesh", "--kube"])
            .unwrap_err()
            .to_string();
        assert!(both.contains("cannot be used with"), "{both}");
        let dir = parse(&["--config-dir", "/etc/mesh"]).unwrap().config();
        assert!(matches!(dir.source, SourceConfig::Directory { .. }));
    }

    #[test]
    fn kube_source_takes_client_flags_and_namespaces() {
        let args = parse(&[
            "--kube",
            "--kubeconfig",
            "/tmp/kc",
            "--kube-context",
            "dev",
            "--watch-namespaces",
            "shop, bookinfo",
        ])
        .unwrap();
        let SourceConfig::Kubernetes {
            connection: KubeConnection::Args(kube),
            namespaces,
            status,
        } = args.config().source
        else {
            panic!("expected the Kubernetes source");
        };
        assert_eq!(
            kube.kubeconfig.as_deref(),
            Some(std::ffi::OsStr::new("/tmp/kc"))
        );
        assert_eq!(kube.kube_context.as_deref(), Some("dev"));
        assert_eq!(namespaces, vec!["shop", "bookinfo"]);
        // Status is written by default, elected through a Lease.
        let lease = status.unwrap().lease;
        assert_eq!(lease.lease_key(), "istio-system/galley-status");
        assert!(!lease.identity.is_empty());
    }

    #[test]
    fn status_writing_can_be_turned_off_and_its_lease_moved() {
        let status = |args: &[&str]| {
            let SourceConfig::Kubernetes { status, .. } = parse(args).unwrap().config().source
            else {
                panic!("expected the Kubernetes source");
            };
            status
        };
        assert!(status(&["--kube", "--write-status=false"]).is_none());
        assert!(status(&["--kube", "--write-status", "false"]).is_none());
        assert!(status(&["--kube", "--write-status"]).is_some());
        let moved = status(&["--kube", "--lease-namespace", "dromon"]).unwrap();
        assert_eq!(moved.lease.lease_key(), "dromon/galley-status");
    }
}
