//! What the agent holds: a certificate chain, its private key and the roots the
//! mesh trusts, checked to belong together, as PEM text ready for files and SDS.

use std::{
    fmt,
    path::Path,
    time::{Duration, SystemTime},
};

use mesh_api::ca::v1::IstioCertificateResponse;
use mesh_tls::{CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE, SpiffeId, TlsIdentity};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use zeroize::Zeroizing;

use super::AgentError;

/// An issued certificate with its key and the trusted roots.
///
/// Its `Debug` never prints the key.
pub struct CertBundle {
    /// Leaf first, then intermediates (no root), PEM.
    pub chain_pem: String,
    /// The private key, PKCS#8 PEM.
    key_pem: Zeroizing<String>,
    /// Every trusted root, PEM, concatenated (several during a root rotation).
    pub roots_pem: String,
    /// The leaf's SPIFFE identity.
    pub spiffe_id: Option<SpiffeId>,
    /// The leaf's serial number, lowercase hex.
    pub serial: String,
    /// Start of the leaf's validity.
    pub not_before: SystemTime,
    /// End of the leaf's validity.
    pub not_after: SystemTime,
    /// When the agent plans to renew it.
    pub renew_at: SystemTime,
}

impl fmt::Debug for CertBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertBundle")
            .field(
                "spiffe_id",
                &self.spiffe_id.as_ref().map(ToString::to_string),
            )
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("renew_at", &self.renew_at)
            .field("key", &format_args!("<redacted>"))
            .finish()
    }
}

impl CertBundle {
    /// A bundle from PEM text, checked with [`TlsIdentity`] (the key is the
    /// leaf's, the chain verifies against the roots now). `received` is when the
    /// certificate arrived; the renewal point is drawn from its lifetime.
    pub fn from_pem(
        chain_pem: String,
        key_pem: Zeroizing<String>,
        roots_pem: String,
        received: SystemTime,
    ) -> Result<Self, AgentError> {
        let identity = TlsIdentity::from_pem(
            chain_pem.as_bytes(),
            key_pem.as_bytes(),
            roots_pem.as_bytes(),
        )
        .map_err(|e| AgentError::BadCertificate(e.to_string()))?;
        let (serial, not_before, not_after) = leaf_facts(identity.leaf())?;
        let renew_at = super::schedule::renew_at(not_before, not_after, received);
        Ok(Self {
            chain_pem,
            key_pem,
            roots_pem,
            spiffe_id: identity.spiffe_id().cloned(),
            serial,
            not_before,
            not_after,
            renew_at,
        })
    }

    /// A bundle from citadel's answer and the key the CSR was made with.
    ///
    /// `cert_chain` runs from the leaf to the root; the root (and any other
    /// entry that is one of the trusted roots) is left out of the chain.
    /// `trusted_roots` gives every root to trust; when it is empty, the last
    /// entry of the chain is the root.
    pub fn from_response(
        response: &IstioCertificateResponse,
        key_pem: Zeroizing<String>,
        received: SystemTime,
    ) -> Result<Self, AgentError> {
        if response.cert_chain.is_empty() {
            return Err(AgentError::BadCertificate(
                "the CA answered with an empty certificate chain".into(),
            ));
        }
        let roots: Vec<&String> = if response.trusted_roots.is_empty() {
            response.cert_chain.last().into_iter().collect()
        } else {
            response.trusted_roots.iter().collect()
        };
        let root_ders: Vec<Vec<u8>> = roots.iter().flat_map(|p| ders(p)).collect();
        let mut chain_pem = String::new();
        for (i, pem) in response.cert_chain.iter().enumerate() {
            let is_root = ders(pem).iter().all(|d| root_ders.contains(d));
            if i > 0 && is_root {
                continue;
            }
            push_pem(&mut chain_pem, pem);
        }
        let mut roots_pem = String::new();
        for pem in roots {
            push_pem(&mut roots_pem, pem);
        }
        Self::from_pem(chain_pem, key_pem, roots_pem, received)
    }

    /// The bundle stored in `dir` (Istio's three files), if it is whole,
    /// consistent and not expired. Its renewal point counts from its `notBefore`.
    pub fn from_dir(dir: &Path) -> Result<Self, AgentError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| AgentError::Io { path, source })
        };
        let chain = read(CERT_CHAIN_FILE)?;
        let key = Zeroizing::new(read(KEY_FILE)?);
        let roots = read(ROOT_CERT_FILE)?;
        Self::from_pem(chain, key, roots, SystemTime::UNIX_EPOCH)
    }

    /// The private key, PEM: for the files and the SDS secret only.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The chain (leaf first) and every root, PEM.
    pub fn tls_identity(&self) -> Result<TlsIdentity, AgentError> {
        TlsIdentity::from_pem(
            self.chain_pem.as_bytes(),
            self.key_pem.as_bytes(),
            self.roots_pem.as_bytes(),
        )
        .map_err(|e| AgentError::BadCertificate(e.to_string()))
    }

    /// The trusted roots, DER.
    pub fn root_ders(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.roots_pem.as_bytes())
            .filter_map(Result::ok)
            .collect()
    }

    /// Whether the leaf has expired at `now`.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// The leaf's expiry as unix seconds.
    pub fn not_after_unix(&self) -> i64 {
        unix(self.not_after)
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Every certificate of a PEM text, DER.
fn ders(pem: &str) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .collect()
}

fn push_pem(out: &mut String, pem: &str) {
    out.push_str(pem.trim_end());
    out.push('\n');
}

/// Serial (hex), notBefore and notAfter of a leaf.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(String, SystemTime, SystemTime), AgentError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| AgentError::BadCertificate(format!("the leaf cannot be parsed: {e}")))?;
    let at = |ts: i64| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(ts.max(0)).unwrap_or(0))
    };
    let validity = cert.validity();
    Ok((
        hex::encode(cert.raw_serial()),
        at(validity.not_before.timestamp()),
        at(validity.not_after.timestamp()),
    ))
}
