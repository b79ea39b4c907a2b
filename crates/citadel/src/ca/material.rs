//! The CA's signing material: the signing certificate and key, the chain from it
//! to a root, and the trusted roots, as Istio's `cacerts` layout names them:
//!
//! | file | what |
//! | --- | --- |
//! | `ca-cert.pem` | the signing certificate (the root itself when self-signed) |
//! | `ca-key.pem` | its private key, PKCS#8, mode 0600 |
//! | `cert-chain.pem` | the signing certificate, then each issuer up to the root |
//! | `root-cert.pem` | every trusted root (two during a root rotation) |

use std::{
    fmt,
    io::Write,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SerialNumber,
};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

/// File names inside a CA directory.
pub const CA_CERT: &str = "ca-cert.pem";
/// The signing key file.
pub const CA_KEY: &str = "ca-key.pem";
/// The chain file.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// The trust bundle file.
pub const ROOT_CERT: &str = "root-cert.pem";

/// Validity of a self-signed root.
pub const ROOT_VALIDITY: time::Duration = time::Duration::days(3650);

/// Why CA material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// A file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is unusable.
    #[error("{file}: {reason}")]
    Invalid {
        /// The file, by name.
        file: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A certificate could not be generated.
    #[error("cannot generate the CA: {0}")]
    Generate(String),
}

fn invalid(file: &'static str, reason: impl Into<String>) -> MaterialError {
    MaterialError::Invalid {
        file,
        reason: reason.into(),
    }
}

/// A parsed certificate with what the CA needs of it.
#[derive(Clone)]
pub struct CertInfo {
    /// DER bytes.
    pub der: CertificateDer<'static>,
    /// PEM text.
    pub pem: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    /// The subject, as text.
    pub subject: String,
}

impl fmt::Debug for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertInfo")
            .field("subject", &self.subject)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn from_der(
        der: CertificateDer<'static>,
        file: &'static str,
    ) -> Result<Self, MaterialError> {
        let (_, cert) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| invalid(file, format!("not an X.509 certificate: {e}")))?;
        let validity = cert.validity();
        let pem = pem_encode("CERTIFICATE", der.as_ref());
        Ok(Self {
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
            fingerprint: hex::encode(Sha256::digest(der.as_ref())),
            subject: cert.subject().to_string(),
            pem,
            der,
        })
    }

    /// Whether `now` is inside the validity period.
    pub fn valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// PEM-encodes DER bytes with the given label (64-column lines).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Every certificate in a PEM text, in order.
pub fn parse_certs(pem: &str, file: &'static str) -> Result<Vec<CertInfo>, MaterialError> {
    let mut out = Vec::new();
    for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let der = der.map_err(|e| invalid(file, format!("bad PEM: {e}")))?;
        out.push(CertInfo::from_der(der, file)?);
    }
    if out.is_empty() {
        return Err(invalid(file, "no certificate in the file"));
    }
    Ok(out)
}

/// The signing certificate, its key and chain, and the trusted roots: checked to
/// fit together (the key matches the certificate, the certificate may sign, the
/// chain leads to a trusted root).
pub struct CaMaterial {
    /// Signs leaves.
    pub issuer: Issuer<'static, KeyPair>,
    /// The signing certificate.
    pub signing: CertInfo,
    /// From the signing certificate up to and including its root.
    pub chain: Vec<CertInfo>,
    /// Every trusted root (the chain's root among them).
    pub roots: Vec<CertInfo>,
}

impl fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaMaterial")
            .field("signing", &self.signing)
            .field("chain", &self.chain.len())
            .field("roots", &self.roots)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl CaMaterial {
    /// Builds and checks material from PEM texts. `chain_pem` may be empty (the
    /// signing certificate is then its own chain, as for a self-signed root).
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &Zeroizing<String>,
        chain_pem: &str,
        roots_pem: &str,
    ) -> Result<Self, MaterialError> {
        let signing = parse_certs(cert_pem, CA_CERT)?
            .into_iter()
            .next()
            .ok_or_else(|| invalid(CA_CERT, "empty"))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| {
            invalid(
                CA_KEY,
                format!("unusable private key ({e}); it must be unencrypted PKCS#8 (`openssl pkcs8 -topk8 -nocrypt`)"),
            )
        })?;
        let roots = parse_certs(roots_pem, ROOT_CERT)?;
        let mut chain = if chain_pem.trim().is_empty() {
            vec![signing.clone()]
        } else {
            parse_certs(chain_pem, CERT_CHAIN)?
        };
        if chain[0].fingerprint != signing.fingerprint {
            chain.insert(0, signing.clone());
        }
        let (_, parsed) = X509Certificate::from_der(signing.der.as_ref())
            .map_err(|e| invalid(CA_CERT, e.to_string()))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(invalid(CA_KEY, "the key does not match ca-cert.pem"));
        }
        let is_ca = parsed
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(invalid(
                CA_CERT,
                "not a CA certificate (basicConstraints CA:FALSE)",
            ));
        }
        if let Ok(Some(ku)) = parsed.key_usage()
            && !ku.value.key_cert_sign()
        {
            return Err(invalid(
                CA_CERT,
                "key usage does not allow signing certificates",
            ));
        }
        // Each link is signed by the next; the last is a trusted root.
        for pair in chain.windows(2) {
            verify_signed_by(&pair[0], &pair[1])?;
        }
        let top = chain
            .last()
            .cloned()
            .ok_or_else(|| invalid(CERT_CHAIN, "empty"))?;
        let anchored = roots.iter().any(|r| r.fingerprint == top.fingerprint)
            || roots.iter().any(|r| verify_signed_by(&top, r).is_ok());
        if !anchored {
            return Err(invalid(
                ROOT_CERT,
                "the signing certificate's chain does not lead to any root in root-cert.pem",
            ));
        }
        if roots.iter().all(|r| r.fingerprint != top.fingerprint)
            && let Some(root) = roots.iter().find(|r| verify_signed_by(&top, r).is_ok())
        {
            chain.push(root.clone());
        }
        let issuer = Issuer::from_ca_cert_der(&signing.der, key)
            .map_err(|e| invalid(CA_CERT, format!("cannot sign with it: {e}")))?;
        Ok(Self {
            issuer,
            signing,
            chain,
            roots,
        })
    }

    /// Loads and checks the four files of `dir`.
    pub fn load(dir: &Path) -> Result<Self, MaterialError> {
        let cert = read(dir, CA_CERT)?;
        let key = Zeroizing::new(read(dir, CA_KEY)?);
        let chain = match std::fs::read_to_string(dir.join(CERT_CHAIN)) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(MaterialError::Io {
                    path: dir.join(CERT_CHAIN),
                    source,
                });
            }
        };
        let roots = read(dir, ROOT_CERT)?;
        Self::from_pem(&cert, &key, &chain, &roots)
    }

    /// The first certificate of the signing chain not valid at `now` (expired or
    /// not yet valid): while there is one, the CA cannot issue.
    pub fn invalid_at(&self, now: OffsetDateTime) -> Option<&CertInfo> {
        self.chain.iter().find(|c| !c.valid_at(now))
    }

    /// The earliest end of validity along the chain: no leaf may outlive it.
    pub fn chain_not_after(&self) -> OffsetDateTime {
        self.chain
            .iter()
            .map(|c| c.not_after)
            .min()
            .unwrap_or(self.signing.not_after)
    }

    /// The trust bundle as one PEM text.
    pub fn roots_pem(&self) -> String {
        self.roots.iter().map(|r| r.pem.as_str()).collect()
    }
}

fn read(dir: &Path, name: &'static str) -> Result<String, MaterialError> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).map_err(|source| MaterialError::Io { path, source })
}

/// Checks that `child` carries a valid signature by `parent`'s key.
pub fn verify_signed_by(child: &CertInfo, parent: &CertInfo) -> Result<(), MaterialError> {
    let (_, c) = X509Certificate::from_der(child.der.as_ref())
        .map_err(|e| invalid(CERT_CHAIN, e.to_string()))?;
    let (_, p) = X509Certificate::from_der(parent.der.as_ref())
        .map_err(|e| invalid(CERT_CHAIN, e.to_string()))?;
    c.verify_signature(Some(p.public_key())).map_err(|_| {
        invalid(
            CERT_CHAIN,
            format!("{} is not signed by {}", child.subject, parent.subject),
        )
    })
}

/// A fresh self-signed root for `trust_domain`, valid from `now` for `validity`,
/// signed with `key` (a new P-256 key when `None`; the old key when a root is
/// renewed, so certificates it signed stay valid under the new root).
pub fn self_signed_root(
    trust_domain: &str,
    key: Option<KeyPair>,
    now: OffsetDateTime,
    validity: time::Duration,
) -> Result<(String, Zeroizing<String>), MaterialError> {
    let key = match key {
        Some(k) => k,
        None => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| MaterialError::Generate(e.to_string()))?,
    };
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, "Dromon root CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + validity;
    params.serial_number = Some(random_serial());
    let cert = params
        .self_signed(&key)
        .map_err(|e| MaterialError::Generate(e.to_string()))?;
    Ok((cert.pem(), Zeroizing::new(key.serialize_pem())))
}

/// A random positive 128-bit serial number.
pub fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // The OS generator; a failure leaves fastrand's bytes, still unique enough
    // for a serial (uniqueness is enforced by the ledger).
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        for b in &mut bytes {
            *b = fastrand::u8(..);
        }
    }
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Writes `contents` to `dir/name` atomically (temporary file then rename), with
/// `mode` permission bits.
pub fn write_file(dir: &Path, name: &str, contents: &str, mode: u32) -> Result<(), MaterialError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let io = |source| MaterialError::Io {
        path: path.clone(),
        source,
    };
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}
