//! What the mesh reads from an X.509 certificate: its SPIFFE identity (the only
//! URI SAN) and its expiry.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

use crate::SpiffeId;

/// Why a certificate names no SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertIdentityError {
    /// The DER does not parse as an X.509 certificate.
    #[error("not an X.509 certificate: {0}")]
    Parse(String),
    /// The certificate has no URI SAN.
    #[error("the certificate has no URI SAN")]
    NoUri,
    /// The certificate has more than one URI SAN: its identity is ambiguous.
    #[error("the certificate has {0} URI SANs; exactly one is allowed")]
    ManyUris(usize),
    /// The URI SAN is not a mesh SPIFFE ID.
    #[error("URI SAN {uri:?}: {error}")]
    Invalid {
        /// The URI.
        uri: String,
        /// Why it is not a SPIFFE ID.
        error: crate::SpiffeIdError,
    },
}

/// The SPIFFE identity of a certificate: its one URI SAN, which must be a valid
/// `spiffe://<td>/ns/<ns>/sa/<sa>` (DNS and IP SANs beside it are ignored).
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Result<SpiffeId, CertIdentityError> {
    let (_, x509) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| CertIdentityError::Parse(e.to_string()))?;
    let san = x509
        .subject_alternative_name()
        .map_err(|e| CertIdentityError::Parse(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(CertIdentityError::NoUri),
        [uri] => uri.parse().map_err(|error| CertIdentityError::Invalid {
            uri: uri.to_string(),
            error,
        }),
        many => Err(CertIdentityError::ManyUris(many.len())),
    }
}

/// When a certificate stops being valid (`None` when it does not parse).
pub fn not_after(cert: &CertificateDer<'_>) -> Option<SystemTime> {
    let (_, x509) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let secs = x509.validity().not_after.timestamp();
    let secs = u64::try_from(secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// The crypto provider every configuration of this crate uses (ring).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
