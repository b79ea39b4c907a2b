//! A real citadel for end-to-end tests: started on free loopback ports with its
//! own data directory, plus `citadel token` and OpenSSL helpers.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, bail};
use mesh_api::ca::v1::istio_certificate_service_client::IstioCertificateServiceClient;
use mesh_tls::{ClientCredentials, ServerIdentity};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use tonic::transport::Channel;

use crate::{ChildGuard, bin_path, free_port, wait_http_ok};

/// A running citadel (killed when dropped).
pub struct CitadelProcess {
    /// The process.
    pub child: ChildGuard,
    /// The CA port.
    pub grpc: SocketAddr,
    /// The monitoring port.
    pub monitoring: SocketAddr,
    /// The data directory.
    pub data: PathBuf,
}

impl CitadelProcess {
    /// Starts citadel with `data` as its data directory and `extra` flags, and
    /// waits for it to be ready.
    pub async fn start(data: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let monitoring: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        Self::start_at(data, grpc, monitoring, extra).await
    }

    /// As [`CitadelProcess::start`], on the given addresses (e.g. to restart one).
    pub async fn start_at(
        data: &Path,
        grpc: SocketAddr,
        monitoring: SocketAddr,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut args = vec![
            "--grpc-addr".to_string(),
            grpc.to_string(),
            "--monitoring-addr".into(),
            monitoring.to_string(),
            "--data-dir".into(),
            data.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = ChildGuard::spawn("citadel", &argv)?;
        wait_http_ok(monitoring, "/ready", Duration::from_secs(30)).await?;
        Ok(Self {
            child,
            grpc,
            monitoring,
            data: data.to_path_buf(),
        })
    }

    /// The CA address as clients dial it.
    pub fn ca_addr(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc.port())
    }

    /// The self-signed root's PEM file.
    pub fn root(&self) -> PathBuf {
        self.data.join("ca/root-cert.pem")
    }

    /// A local-issuer token for `ns`/`sa` (`citadel token`).
    pub fn token(&self, ns: &str, sa: &str) -> anyhow::Result<String> {
        local_token(&self.data, ns, sa)
    }

    /// The trusted roots.
    pub fn roots(&self) -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let pem = std::fs::read(self.root())?;
        Ok(CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>()?)
    }

    /// A CA client presenting `credentials`, accepting only citadel's identity.
    pub fn client(
        &self,
        credentials: ClientCredentials,
    ) -> anyhow::Result<IstioCertificateServiceClient<Channel>> {
        let channel = mesh_tls::channel_with(
            &self.ca_addr(),
            credentials,
            ServerIdentity::Exact(CITADEL_ID.parse()?),
        )?;
        Ok(IstioCertificateServiceClient::new(channel))
    }

    /// A CA client without a certificate (it authenticates with a token).
    pub fn anonymous(&self) -> anyhow::Result<IstioCertificateServiceClient<Channel>> {
        self.client(ClientCredentials::RootsOnly(self.roots()?))
    }
}

/// citadel's own identity, as its serving certificate names it by default.
pub const CITADEL_ID: &str = "spiffe://cluster.local/ns/istio-system/sa/citadel";

/// `citadel token` for `ns`/`sa`, with the local issuer whose key is under `data`
/// (created there if absent).
pub fn local_token(data: &Path, ns: &str, sa: &str) -> anyhow::Result<String> {
    let out = Command::new(bin_path("citadel")?)
        .args(["token", "--data-dir"])
        .arg(data)
        .args(["--namespace", ns, "--service-account", sa])
        .output()?;
    if !out.status.success() {
        bail!("citadel token: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// A self-signed P-256 CA root made by OpenSSL: its key at `key`, its
/// certificate at `cert`, valid for `days`, with subject `subject` (`/O=.../CN=...`).
pub fn openssl_root(key: &Path, cert: &Path, subject: &str, days: u32) -> anyhow::Result<()> {
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key.display().to_string(),
        "-out",
        &cert.display().to_string(),
        "-days",
        &days.to_string(),
        "-subj",
        subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ])
    .map(drop)
}

/// Runs `openssl` with `args`; its stdout, or an error with its output.
pub fn openssl(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .context("openssl")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of the first sample of `metric` (its name and labels exactly as
/// written, e.g. `citadel_agent_renewals_total{result="ok"}`) in a Prometheus
/// text exposition.
pub fn metric_value(exposition: &str, metric: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(metric)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Writes a certificate directory for the holder of `token` with
/// `citadel agent --once` against the CA at `ca_addr` (`https://host:port`).
pub fn agent_once(
    ca_addr: &str,
    ca_root: &Path,
    token: &str,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let token_file = dir.with_extension("token");
    std::fs::write(&token_file, token)?;
    let out = Command::new(bin_path("citadel")?)
        .args(["agent", "--once", "--ca-addr", ca_addr, "--ca-root"])
        .arg(ca_root)
        .arg("--token-file")
        .arg(&token_file)
        .arg("--output-dir")
        .arg(dir)
        .output()?;
    if !out.status.success() {
        bail!(
            "citadel agent --once: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(dir.to_path_buf())
}
