//! Errors of this crate. None of them ever carries key material: PEM and key
//! failures are described in fixed words, never by quoting the input.

use std::path::PathBuf;

/// Why certificates could not be loaded, a TLS configuration built, or a
/// connection set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A PEM input is malformed or lacks what it must hold.
    #[error("{file}: {reason}")]
    Pem {
        /// Which input (`cert-chain.pem`, `key.pem`, `root-cert.pem`).
        file: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key is not one the TLS stack can use.
    #[error("{file}: unusable private key: {reason}")]
    Key {
        /// Which input.
        file: &'static str,
        /// Why (never quotes the key).
        reason: String,
    },
    /// The private key is not the one of the leaf certificate (typically a
    /// half-renewed directory: new certificate, old key, or the reverse).
    #[error("the private key in {key_file} does not match the certificate in {cert_file}")]
    KeyMismatch {
        /// The key input.
        key_file: &'static str,
        /// The certificate input.
        cert_file: &'static str,
    },
    /// A certificate could not be parsed or used as a trust anchor.
    #[error("{file}: certificate {index}: {reason}")]
    Certificate {
        /// Which input.
        file: &'static str,
        /// Position of the certificate in the input, from 0.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The own certificate chain does not verify against the own trusted roots.
    #[error("the chain in {cert_file} does not verify against {roots_file}: {reason}")]
    Untrusted {
        /// The chain input.
        cert_file: &'static str,
        /// The roots input.
        roots_file: &'static str,
        /// What webpki said.
        reason: String,
    },
    /// A gRPC endpoint is not `https://host:port` (or `http://host:port`).
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No identity is available yet (no valid files loaded).
    #[error("no TLS identity loaded")]
    NoIdentity,
    /// The TLS library refused a configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The settings do not fit together (an `https://` endpoint without a
    /// certificate, a certificate without a SPIFFE identity).
    #[error("{0}")]
    Settings(String),
    /// File watching needs a Tokio runtime to run on.
    #[error("a Tokio runtime is required to watch certificate files")]
    NoRuntime,
}
