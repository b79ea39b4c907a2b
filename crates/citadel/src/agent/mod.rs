//! The certificate agent (`citadel agent`): keeps a workload's certificate from
//! citadel current and hands it over as files and over SDS.
//!
//! - obtains a certificate with a fresh P-256 key per renewal: the first with a
//!   bearer token (`--token-file`, re-read each time), the next ones over mTLS
//!   with the current certificate (the token again if that fails);
//! - renews at a random point between 50 % and 80 % of each certificate's
//!   lifetime; retries failures after 1 s, doubling to 60 s, with jitter, while
//!   the current certificate stays in use; an expired one is logged as an error
//!   and shown by `citadel_agent_cert_expired`, and the agent turns not ready;
//! - files: `cert-chain.pem`, `key.pem` (0600) and `root-cert.pem` in
//!   `--output-dir`, replaced atomically ([`files`]);
//! - SDS: secrets `default` and `ROOTCA` on a Unix socket and/or a loopback TCP
//!   port ([`sds`]);
//! - monitoring: `/metrics`, `/healthz`, `/ready` (ready once a valid
//!   certificate is held), default `127.0.0.1:15020`.
//!
//! [`start`] runs it inside another program (e.g. `meshctl up` for galley and
//! pilot), [`run`] until shutdown, [`fetch_once`] for `--once`.

pub mod bundle;
pub mod client;
pub mod files;
pub mod metrics;
pub mod runtime;
pub mod schedule;
pub mod sds;

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use mesh_tls::ROOT_CERT_FILE;

pub use bundle::CertBundle;
pub use client::{CaClient, Via};
pub use files::CertDir;
pub use metrics::AgentMetrics;
pub use runtime::{RunningAgent, fetch_once, run, start};
pub use sds::{DEFAULT_SECRET, ROOT_SECRET, SDS_SERVICE, SdsService, SecretCache};

use crate::authn::Secret;

/// Where the token for first issuance comes from.
#[derive(Clone)]
pub enum TokenSource {
    /// A file, read again at each use (tokens are rotated).
    File(PathBuf),
    /// A token given by the embedding program.
    Static(Secret),
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::File(path) => f.debug_tuple("File").field(path).finish(),
            TokenSource::Static(_) => f.write_str("Static([redacted])"),
        }
    }
}

impl TokenSource {
    /// A token given as a string by the embedding program.
    pub fn from_string(token: impl Into<String>) -> Self {
        TokenSource::Static(Secret::new(token))
    }

    /// The token now.
    pub fn read(&self) -> Result<Secret, AgentError> {
        let token = match self {
            TokenSource::Static(s) => s.clone(),
            TokenSource::File(path) => {
                let text =
                    zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
                        AgentError::Io {
                            path: path.clone(),
                            source,
                        }
                    })?);
                Secret::new(text.trim())
            }
        };
        if token.expose().is_empty() {
            return Err(AgentError::BadToken("the token is empty".into()));
        }
        Ok(token)
    }
}

/// The agent's configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// citadel's CA port, `https://host:port`.
    pub ca_addr: String,
    /// Roots to trust for citadel before the first certificate (PEM file); when
    /// `None`, `root-cert.pem` in `output_dir` if there is one.
    pub ca_root: Option<PathBuf>,
    /// Trust domain (citadel's serving certificate must belong to it).
    pub trust_domain: String,
    /// The token for first issuance (and fallback when mTLS renewal fails).
    pub token: Option<TokenSource>,
    /// Requested certificate lifetime.
    pub ttl: Duration,
    /// Directory for `cert-chain.pem`, `key.pem` and `root-cert.pem`.
    pub output_dir: Option<PathBuf>,
    /// Unix socket to serve SDS on.
    pub sds_socket: Option<PathBuf>,
    /// Loopback TCP address to serve SDS on.
    pub sds_addr: Option<SocketAddr>,
    /// Monitoring address (`/metrics`, `/healthz`, `/ready`); none when `None`.
    pub monitoring_addr: Option<SocketAddr>,
}

impl AgentConfig {
    /// A configuration for `ca_addr` and `trust_domain` delivering nowhere yet,
    /// with a 24 h lifetime and no monitoring port.
    pub fn new(ca_addr: impl Into<String>, trust_domain: impl Into<String>) -> Self {
        Self {
            ca_addr: ca_addr.into(),
            ca_root: None,
            trust_domain: trust_domain.into(),
            token: None,
            ttl: Duration::from_secs(24 * 3600),
            output_dir: None,
            sds_socket: None,
            sds_addr: None,
            monitoring_addr: None,
        }
    }

    /// Checks what can be checked before starting.
    pub fn validate(&self) -> Result<(), AgentError> {
        mesh_tls::client::tls_endpoint(&self.ca_addr)
            .map_err(|e| AgentError::Config(format!("--ca-addr: {e}")))?;
        if self.trust_domain.is_empty() {
            return Err(AgentError::Config("--trust-domain is empty".into()));
        }
        if self.ttl < Duration::from_secs(1) {
            return Err(AgentError::Config("--ttl must be at least 1s".into()));
        }
        if let Some(addr) = self.sds_addr
            && !addr.ip().is_loopback()
        {
            return Err(AgentError::Config(format!(
                "--sds-addr {addr} is not a loopback address: SDS serves the private key \
                 in clear, so it listens on loopback only (or use --sds-socket)"
            )));
        }
        if self.ca_root_file().is_none() {
            let hint = match &self.output_dir {
                Some(dir) => format!(", and {} has none", dir.join(ROOT_CERT_FILE).display()),
                None => String::new(),
            };
            return Err(AgentError::Config(format!(
                "no root to trust citadel with: give --ca-root{hint}"
            )));
        }
        if self.token.is_none() && self.output_dir.is_none() {
            return Err(AgentError::Config(
                "no credential for the first certificate: give --token-file".into(),
            ));
        }
        Ok(())
    }

    /// The roots file for the first connection to citadel.
    fn ca_root_file(&self) -> Option<PathBuf> {
        self.ca_root.clone().or_else(|| {
            let p = self.output_dir.as_ref()?.join(ROOT_CERT_FILE);
            p.is_file().then_some(p)
        })
    }

    pub(crate) fn client(&self) -> CaClient {
        CaClient {
            addr: self.ca_addr.clone(),
            trust_domain: self.trust_domain.clone(),
            ca_root: self.ca_root_file(),
            token: self.token.clone(),
            ttl: self.ttl,
        }
    }
}

/// Why the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A flag or setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token cannot be used.
    #[error("token: {0}")]
    BadToken(String),
    /// Neither a valid certificate to renew with nor a token.
    #[error("no valid certificate to renew with and no token (--token-file)")]
    NoCredentials,
    /// The key or CSR cannot be made.
    #[error("cannot make a key and CSR: {0}")]
    Key(String),
    /// citadel refused or the call failed.
    #[error("CreateCertificate ({via}) failed: {code:?}: {message}")]
    Refused {
        /// `token` or `mtls`.
        via: &'static str,
        /// The gRPC code.
        code: tonic::Code,
        /// The message.
        message: String,
    },
    /// citadel did not answer in time.
    #[error("CreateCertificate timed out after {0:?}")]
    Timeout(Duration),
    /// What citadel returned (or what is on disk) is not a usable certificate.
    #[error("unusable certificate: {0}")]
    BadCertificate(String),
    /// A port cannot be bound.
    #[error(transparent)]
    Bind(#[from] mesh_runtime::BindError),
    /// The SDS socket cannot be set up.
    #[error("SDS socket {}: {reason}", path.display())]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A server failed.
    #[error("{what}: {reason}")]
    Serve {
        /// Which server.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A task failed.
    #[error("task: {0}")]
    Task(String),
}

#[cfg(test)]
mod tests;
