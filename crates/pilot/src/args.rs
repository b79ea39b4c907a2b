//! pilot's command line.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use mesh_runtime::LogArgs;

use crate::server::{ConfigFrom, PilotConfig};

/// pilot: service discovery and Envoy configuration over xDS v3 (ADS).
#[derive(Debug, Clone, Parser)]
#[command(name = "pilot", version, about)]
pub struct Args {
    /// galley's MCP endpoint to follow, e.g. `http://galley:9901`.
    #[arg(
        long,
        env = "PILOT_GALLEY",
        conflicts_with = "config_dir",
        required_unless_present = "config_dir"
    )]
    pub galley: Option<String>,
    /// Read configuration YAML from this directory instead (pilot run alone).
    #[arg(long, env = "PILOT_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// xDS (ADS) plaintext listen address.
    #[arg(long, env = "PILOT_XDS_ADDR", default_value = "0.0.0.0:15010")]
    pub xds_addr: SocketAddr,
    /// Monitoring HTTP listen address (/metrics, /healthz, /ready, /debug/*).
    #[arg(long, env = "PILOT_MONITORING_ADDR", default_value = "0.0.0.0:15014")]
    pub monitoring_addr: SocketAddr,
    /// Quiet period that ends a burst of configuration changes before a push.
    #[arg(long, env = "PILOT_DEBOUNCE", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub debounce: Duration,
    /// Longest a burst of changes is held before a push.
    #[arg(long, env = "PILOT_DEBOUNCE_MAX", default_value = "10s", value_parser = humantime::parse_duration)]
    pub debounce_max: Duration,
    /// Directory with pilot's certificate (`cert-chain.pem`, `key.pem`,
    /// `root-cert.pem`, as citadel's agent writes them): enables the mTLS xDS port
    /// and following galley over `https://`.
    #[arg(long, env = "PILOT_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// mTLS xDS listen address (with `--tls-dir`).
    #[arg(long, env = "PILOT_XDS_MTLS_ADDR", default_value = "0.0.0.0:15011")]
    pub xds_mtls_addr: SocketAddr,
    /// SPIFFE identity galley's certificate must name (default: any identity of
    /// pilot's trust domain).
    #[arg(long, env = "PILOT_GALLEY_IDENTITY")]
    pub galley_identity: Option<mesh_tls::SpiffeId>,
    /// Follow a Kubernetes cluster's Services and EndpointSlices (merged before
    /// ServiceEntries); connects as `--kubeconfig`, `--kube-context` and
    /// `--in-cluster` say.
    #[arg(long, env = "PILOT_KUBE")]
    pub kube: bool,
    /// Service registries to merge, in order of precedence: `kubernetes`,
    /// `serviceentry` (ServiceEntries are always read; listing `kubernetes` is
    /// `--kube`).
    #[arg(long, env = "PILOT_REGISTRIES", value_delimiter = ',', value_parser = ["kubernetes", "serviceentry"])]
    pub registries: Vec<String>,
    /// Cluster domain of Kubernetes service hosts (`<svc>.<ns>.svc.<domain>`).
    #[arg(long, env = "PILOT_CLUSTER_DOMAIN", default_value = crate::kube::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Trust domain of workload identities: under `ISTIO_MUTUAL` a cluster checks
    /// the server's `spiffe://<trust domain>/ns/<ns>/sa/<account>`.
    #[arg(long, env = "PILOT_TRUST_DOMAIN", default_value = crate::model::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// How to reach the Kubernetes API server (with `--kube`).
    #[command(flatten)]
    pub kube_args: mesh_kube::KubeArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Args {
    /// The library configuration these flags describe.
    pub fn config(&self) -> PilotConfig {
        let from = match (&self.galley, &self.config_dir) {
            (_, Some(dir)) => ConfigFrom::Directory(dir.clone()),
            (Some(endpoint), None) => ConfigFrom::Galley(endpoint.clone()),
            (None, None) => ConfigFrom::Galley("http://127.0.0.1:9901".into()),
        };
        PilotConfig {
            from,
            xds_addr: self.xds_addr,
            monitoring_addr: self.monitoring_addr,
            debounce: self.debounce,
            debounce_max: self.debounce_max,
            tls: self.tls_dir.as_ref().map(|dir| crate::server::PilotTls {
                dir: dir.clone(),
                xds_mtls_addr: self.xds_mtls_addr,
                galley_identity: self.galley_identity.clone(),
            }),
            kube: (self.kube || self.registries.iter().any(|r| r == "kubernetes")).then(|| {
                crate::kube::KubeRegistryConfig {
                    args: self.kube_args.clone(),
                    cluster_domain: self.cluster_domain.clone(),
                }
            }),
            trust_domain: self.trust_domain.clone(),
        }
    }

    /// Parses the command line and runs pilot until SIGTERM or Ctrl-C.
    pub fn parse_and_run() -> ExitCode {
        let args = Args::parse();
        let config = args.config();
        mesh_runtime::run_main(&args.log, "pilot", |shutdown| {
            crate::server::run(config, shutdown)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        let mut all = vec!["pilot", "--config-dir", "/tmp/config"];
        all.extend_from_slice(args);
        match Args::try_parse_from(all) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn kubernetes_registry_flags() {
        assert!(parse(&[]).config().kube.is_none());
        assert!(
            parse(&["--registries", "serviceentry"])
                .config()
                .kube
                .is_none()
        );
        let kube = parse(&["--kube", "--kubeconfig", "/k", "--kube-context", "dev"])
            .config()
            .kube
            .unwrap_or_default();
        assert_eq!(kube.cluster_domain, "cluster.local");
        assert_eq!(kube.args.kubeconfig.as_deref(), Some("/k".as_ref()));
        assert_eq!(kube.args.kube_context.as_deref(), Some("dev"));
        let kube = parse(&[
            "--registries",
            "kubernetes,serviceentry",
            "--cluster-domain",
            "corp.internal",
        ])
        .config()
        .kube
        .unwrap_or_default();
        assert_eq!(kube.cluster_domain, "corp.internal");
        assert_eq!(parse(&[]).config().trust_domain, "cluster.local");
        assert_eq!(
            parse(&["--trust-domain", "corp.example"])
                .config()
                .trust_domain,
            "corp.example"
        );
        assert!(
            Args::try_parse_from(["pilot", "--config-dir", "x", "--registries", "consul"]).is_err()
        );
    }
}
