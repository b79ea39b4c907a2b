//! The authority: turns an authenticated caller and a checked CSR into a
//! certificate chain, under the CA's rules for lifetimes.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use mesh_tls::SpiffeId;
use parking_lot::{Mutex, RwLock};
use rcgen::{
    CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
    SubjectPublicKeyInfo, string::Ia5String,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{
    csr::{CsrError, CsrValidator},
    material::{
        CA_CERT, CA_KEY, CERT_CHAIN, CaMaterial, MaterialError, ROOT_CERT, ROOT_VALIDITY,
        random_serial, self_signed_root, write_file,
    },
};

/// Where the signing material comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// A self-signed root kept in this directory, generated on first start and
    /// renewed (same key) before it expires.
    SelfSigned(PathBuf),
    /// Istio-style `cacerts` files provided by the operator, reloaded when they change.
    Plugged(PathBuf),
}

impl CaSource {
    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        match self {
            Self::SelfSigned(d) | Self::Plugged(d) => d,
        }
    }
}

/// The CA's rules.
#[derive(Debug, Clone)]
pub struct CaPolicy {
    /// Trust domain of every identity issued, e.g. `cluster.local`.
    pub trust_domain: String,
    /// Lifetime given when a request asks for none (TTL <= 0).
    pub default_ttl: Duration,
    /// Longest lifetime a request may ask for.
    pub max_ttl: Duration,
    /// A self-signed root is renewed when less than this is left of it.
    pub root_renew_before: Duration,
}

impl Default for CaPolicy {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".into(),
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(90 * 24 * 3600),
            root_renew_before: Duration::from_secs(2 * 365 * 24 * 3600),
        }
    }
}

/// An issued certificate.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// PEM certificates: the leaf, then each issuer up to the root.
    pub chain_pem: Vec<String>,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// The identity it names.
    pub identity: SpiffeId,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// SHA-256 of the leaf's DER, lowercase hex.
    pub fingerprint: String,
    /// Fingerprint of the signing certificate.
    pub issuer_fingerprint: String,
}

/// Why a certificate was not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CSR is refused.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// The requested lifetime is above the maximum.
    #[error("requested lifetime {requested}s exceeds the maximum of {max}s")]
    TtlTooLong {
        /// Seconds asked for.
        requested: i64,
        /// The maximum, in seconds.
        max: u64,
    },
    /// The identity is outside the CA's trust domain.
    #[error("identity {0} is outside the trust domain")]
    ForeignIdentity(String),
    /// No usable issuer: missing, invalid, expired or not yet valid.
    #[error("the CA cannot issue: {0}")]
    IssuerUnavailable(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

impl IssueError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Csr(e) => e.reason(),
            Self::TtlTooLong { .. } => "ttl_too_long",
            Self::ForeignIdentity(_) => "foreign_identity",
            Self::IssuerUnavailable(_) => "issuer_unavailable",
            Self::Sign(_) => "sign_error",
        }
    }
}

/// What the DNS names of a serving certificate may hold beside the identity.
pub type DnsNames<'a> = &'a [String];

/// The certificate authority.
pub struct Authority {
    source: CaSource,
    policy: CaPolicy,
    state: RwLock<Result<Arc<CaMaterial>, String>>,
    stamp: Mutex<Option<Vec<Option<SystemTime>>>>,
    validator: CsrValidator,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("source", &self.source)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Opens the CA: for a self-signed source, creates the root on first start
    /// (and renews it when close to expiry); for a plugged source, loads the files.
    /// An unusable plugged CA is an error here: citadel does not start on it.
    pub fn open(
        source: CaSource,
        policy: CaPolicy,
        now: OffsetDateTime,
    ) -> Result<Self, MaterialError> {
        if let CaSource::SelfSigned(dir) = &source {
            ensure_self_signed(dir, &policy, now)?;
        }
        let material = CaMaterial::load(source.dir())?;
        let authority = Self {
            stamp: Mutex::new(Some(stamps(source.dir()))),
            source,
            policy,
            state: RwLock::new(Ok(Arc::new(material))),
            validator: CsrValidator,
        };
        Ok(authority)
    }

    /// The rules in force.
    pub fn policy(&self) -> &CaPolicy {
        &self.policy
    }

    /// Where the material lives.
    pub fn source(&self) -> &CaSource {
        &self.source
    }

    /// The current material, or why there is none.
    pub fn material(&self) -> Result<Arc<CaMaterial>, String> {
        self.state.read().clone()
    }

    /// Renews a self-signed root near expiry, and reloads the files if they
    /// changed. Returns whether the material changed. Unusable new files leave the
    /// CA unable to issue (`Unavailable`) until they are fixed.
    pub fn refresh(&self, now: OffsetDateTime) -> bool {
        if let CaSource::SelfSigned(dir) = &self.source {
            let due = match self.material() {
                Ok(m) => m.signing.not_after - now <= seconds(self.policy.root_renew_before),
                Err(_) => true,
            };
            if due && let Err(e) = ensure_self_signed(dir, &self.policy, now) {
                tracing::error!(error = %e, "cannot renew the self-signed root");
            }
        }
        let current = stamps(self.source.dir());
        {
            let mut stamp = self.stamp.lock();
            if stamp.as_ref() == Some(&current) {
                return false;
            }
            *stamp = Some(current);
        }
        let loaded = CaMaterial::load(self.source.dir());
        let mut state = self.state.write();
        match loaded {
            Ok(m) => {
                tracing::info!(
                    signing = %m.signing.subject,
                    not_after = %m.signing.not_after,
                    roots = m.roots.len(),
                    "CA material loaded"
                );
                *state = Ok(Arc::new(m));
            }
            Err(e) => {
                tracing::error!(error = %e, "CA material unusable; issuing stops until it is fixed");
                *state = Err(e.to_string());
            }
        }
        true
    }

    /// The trust bundle (every trusted root) as PEM.
    pub fn roots_pem(&self) -> Result<String, IssueError> {
        self.material()
            .map(|m| m.roots_pem())
            .map_err(IssueError::IssuerUnavailable)
    }

    /// Issues a certificate for an authenticated `caller` from a PEM CSR. A TTL of
    /// zero or less gets the default; one above the maximum is refused; the
    /// certificate never outlives its issuer.
    pub fn issue(
        &self,
        caller: &SpiffeId,
        csr_pem: &str,
        ttl_secs: i64,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, IssueError> {
        let material = self.usable(now)?;
        let ttl = self.ttl(ttl_secs)?;
        if caller.trust_domain() != self.policy.trust_domain {
            return Err(IssueError::ForeignIdentity(caller.to_string()));
        }
        let csr = self.validator.validate_pem(csr_pem, caller)?;
        self.sign(&material, caller, &[], &csr.public_key_spki, ttl, now)
    }

    /// Issues a certificate for `identity` (plus DNS names, for citadel's own
    /// serving certificate) over a public key citadel already trusts.
    pub fn issue_for_key(
        &self,
        identity: &SpiffeId,
        dns_names: DnsNames<'_>,
        public_key_spki: &[u8],
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, IssueError> {
        let material = self.usable(now)?;
        self.sign(&material, identity, dns_names, public_key_spki, ttl, now)
    }

    fn usable(&self, now: OffsetDateTime) -> Result<Arc<CaMaterial>, IssueError> {
        let material = self.material().map_err(IssueError::IssuerUnavailable)?;
        if let Some(c) = material.invalid_at(now) {
            return Err(IssueError::IssuerUnavailable(format!(
                "{} is not valid now (valid {} to {})",
                c.subject, c.not_before, c.not_after
            )));
        }
        Ok(material)
    }

    fn ttl(&self, ttl_secs: i64) -> Result<Duration, IssueError> {
        if ttl_secs <= 0 {
            return Ok(self.policy.default_ttl);
        }
        let ttl = Duration::from_secs(ttl_secs.unsigned_abs());
        if ttl > self.policy.max_ttl {
            return Err(IssueError::TtlTooLong {
                requested: ttl_secs,
                max: self.policy.max_ttl.as_secs(),
            });
        }
        Ok(ttl)
    }

    fn sign(
        &self,
        material: &CaMaterial,
        identity: &SpiffeId,
        dns_names: DnsNames<'_>,
        spki: &[u8],
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, IssueError> {
        let not_before = (now - time::Duration::minutes(1)).max(material.signing.not_before);
        let wanted = now + seconds(ttl);
        let not_after = wanted.min(material.chain_not_after());
        if not_after <= now {
            return Err(IssueError::IssuerUnavailable(
                "the issuer has expired".into(),
            ));
        }
        let mut params = CertificateParams::default();
        let uri =
            Ia5String::try_from(identity.uri()).map_err(|e| IssueError::Sign(e.to_string()))?;
        params.subject_alt_names.push(SanType::URI(uri));
        for name in dns_names {
            let dns =
                Ia5String::try_from(name.as_str()).map_err(|e| IssueError::Sign(e.to_string()))?;
            params.subject_alt_names.push(SanType::DnsName(dns));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let serial = random_serial();
        let serial_hex = hex::encode(serial.as_ref());
        params.serial_number = Some(serial);
        let public_key = SubjectPublicKeyInfo::from_der(spki)
            .map_err(|e| IssueError::Sign(format!("public key: {e}")))?;
        let cert = params
            .signed_by(&public_key, &material.issuer)
            .map_err(|e| IssueError::Sign(e.to_string()))?;
        let mut chain_pem = Vec::with_capacity(material.chain.len() + 1);
        chain_pem.push(cert.pem());
        chain_pem.extend(material.chain.iter().map(|c| c.pem.clone()));
        Ok(IssuedCert {
            fingerprint: hex::encode(Sha256::digest(cert.der().as_ref())),
            chain_pem,
            serial: serial_hex,
            identity: identity.clone(),
            not_before,
            not_after,
            issuer_fingerprint: material.signing.fingerprint.clone(),
        })
    }
}

/// A std duration as a `time` duration (saturating).
fn seconds(d: Duration) -> time::Duration {
    time::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4))
}

/// Modification times of the CA files, to notice changes.
fn stamps(dir: &Path) -> Vec<Option<SystemTime>> {
    [CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT]
        .iter()
        .map(|f| {
            std::fs::metadata(dir.join(f))
                .and_then(|m| m.modified())
                .ok()
        })
        .collect()
}

/// Creates a self-signed root in `dir` if there is none, and renews it with the
/// same key when less than `root_renew_before` is left: the renewed root has the
/// same subject and key, so certificates signed before and after verify under
/// either, and both stay in `root-cert.pem` until the old one expires.
fn ensure_self_signed(
    dir: &Path,
    policy: &CaPolicy,
    now: OffsetDateTime,
) -> Result<(), MaterialError> {
    std::fs::create_dir_all(dir).map_err(|source| MaterialError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    if !dir.join(CA_CERT).exists() && !dir.join(CA_KEY).exists() {
        let (cert, key) = self_signed_root(&policy.trust_domain, None, now, ROOT_VALIDITY)?;
        write_file(dir, CA_KEY, &key, 0o600)?;
        write_file(dir, CERT_CHAIN, &cert, 0o644)?;
        write_file(dir, ROOT_CERT, &cert, 0o644)?;
        write_file(dir, CA_CERT, &cert, 0o644)?;
        tracing::info!(dir = %dir.display(), "generated a self-signed root CA");
        return Ok(());
    }
    let material = CaMaterial::load(dir)?;
    if material.signing.not_after - now > seconds(policy.root_renew_before) {
        return Ok(());
    }
    let key_pem =
        zeroize::Zeroizing::new(std::fs::read_to_string(dir.join(CA_KEY)).map_err(|source| {
            MaterialError::Io {
                path: dir.join(CA_KEY),
                source,
            }
        })?);
    let key = rcgen::KeyPair::from_pem(&key_pem)
        .map_err(|e| MaterialError::Generate(format!("root key: {e}")))?;
    let (cert, _) = self_signed_root(&policy.trust_domain, Some(key), now, ROOT_VALIDITY)?;
    let mut bundle = cert.clone();
    for old in material.roots.iter().filter(|r| r.valid_at(now)) {
        bundle.push_str(&old.pem);
    }
    write_file(dir, ROOT_CERT, &bundle, 0o644)?;
    write_file(dir, CERT_CHAIN, &cert, 0o644)?;
    write_file(dir, CA_CERT, &cert, 0o644)?;
    tracing::warn!(
        old_not_after = %material.signing.not_after,
        "renewed the self-signed root with the same key; both roots stay trusted until the old one expires"
    );
    Ok(())
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
