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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose, SanType,
    };

    use super::*;

    fn mk_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(p, key))
    }

    /// Root A -> intermediate -> leaf; root B only trusted (a rotation in progress).
    fn mk_response() -> (IstioCertificateResponse, Zeroizing<String>, String) {
        let (root_a, root_a_issuer) = mk_ca("root A");
        let (root_b, _) = mk_ca("root B");
        let int_key = KeyPair::generate().unwrap();
        let mut ip = CertificateParams::new(Vec::<String>::new()).unwrap();
        ip.distinguished_name
            .push(rcgen::DnType::CommonName, "intermediate");
        ip.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ip.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let int = ip.signed_by(&int_key, &root_a_issuer).unwrap();
        let int_issuer = Issuer::new(ip, int_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut lp = CertificateParams::new(Vec::<String>::new()).unwrap();
        lp.subject_alt_names.push(SanType::URI(
            "spiffe://cluster.local/ns/default/sa/web"
                .try_into()
                .unwrap(),
        ));
        lp.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let leaf = lp.signed_by(&leaf_key, &int_issuer).unwrap();
        let response = IstioCertificateResponse {
            cert_chain: vec![leaf.pem(), int.pem(), root_a.clone()],
            trusted_roots: vec![root_a, root_b],
        };
        (
            response,
            Zeroizing::new(leaf_key.serialize_pem()),
            leaf.pem(),
        )
    }

    #[test]
    fn the_chain_leaves_out_the_root_and_every_trusted_root_is_kept() {
        let (response, key, leaf) = mk_response();
        let now = SystemTime::now();
        let b = CertBundle::from_response(&response, key, now).unwrap();
        assert_eq!(b.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(b.chain_pem.starts_with(leaf.trim_end()));
        assert_eq!(b.roots_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(b.root_ders().len(), 2);
        assert_eq!(
            b.spiffe_id.as_ref().unwrap().to_string(),
            "spiffe://cluster.local/ns/default/sa/web"
        );
        assert!(!b.expired_at(now));
        assert!(b.renew_at > now && b.renew_at < b.not_after);
        let debug = format!("{b:?}");
        assert!(
            !debug.contains("PRIVATE KEY") && debug.contains("<redacted>"),
            "{debug}"
        );
        // Without trusted_roots, the chain's last entry is the root.
        let mut old_style = response.clone();
        old_style.trusted_roots.clear();
        let b2 =
            CertBundle::from_response(&old_style, Zeroizing::new(b.key_pem().into()), now).unwrap();
        assert_eq!(b2.roots_pem.matches("BEGIN CERTIFICATE").count(), 1);
        assert_eq!(b2.chain_pem, b.chain_pem);
    }

    #[test]
    fn a_key_that_is_not_the_leafs_or_an_empty_answer_is_refused() {
        let (response, _, _) = mk_response();
        let other = Zeroizing::new(KeyPair::generate().unwrap().serialize_pem());
        let err = CertBundle::from_response(&response, other, SystemTime::now()).unwrap_err();
        assert!(matches!(err, AgentError::BadCertificate(_)), "{err}");
        assert!(!err.to_string().contains("PRIVATE"), "{err}");
        let empty = IstioCertificateResponse::default();
        let key = Zeroizing::new(KeyPair::generate().unwrap().serialize_pem());
        assert!(CertBundle::from_response(&empty, key, SystemTime::now()).is_err());
    }
}
