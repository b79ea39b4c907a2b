//! The pure part of the Secret controller: what a ServiceAccount's Secret is
//! called and holds, how its key and certificate are issued, and whether a Secret
//! found in the cluster is still good or must be renewed.
//!
//! No I/O here (besides signing with the authority), so every rule is unit-tested.

use std::{
    collections::BTreeMap,
    fmt,
    time::{Duration, SystemTime},
};

use k8s_openapi::{
    ByteString,
    api::core::v1::{Secret, ServiceAccount},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use mesh_tls::{SpiffeId, TlsIdentity};
use rcgen::{KeyPair, PublicKeyData};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use zeroize::Zeroizing;

use crate::{
    agent::schedule::{RENEW_FROM, RENEW_UNTIL, renew_at_fraction},
    ca::{Authority, IssueError, IssuedCert},
};

/// The Secret type citadel writes (Istio's).
pub const SECRET_TYPE: &str = "istio.io/key-and-cert";
/// Prefix of a Secret's name: `istio.<service-account>`.
pub const SECRET_PREFIX: &str = "istio.";
/// Data key of the chain: the leaf, then intermediates (the root is not repeated).
pub const CERT_CHAIN_KEY: &str = "cert-chain.pem";
/// Data key of the private key (PKCS#8 PEM).
pub const KEY_KEY: &str = "key.pem";
/// Data key of every trusted root.
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// Label on every Secret citadel manages; its watch selects on it.
pub const MANAGED_BY_LABEL: &str = "security.dromon.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "citadel";
/// Annotation naming the service account (as Istio's Secrets carry it).
pub const SERVICE_ACCOUNT_ANNOTATION: &str = "istio.io/service-account.name";

/// The Secret's name for a service account.
pub fn secret_name(service_account: &str) -> String {
    format!("{SECRET_PREFIX}{service_account}")
}

/// The service account a Secret name belongs to, if it is one of ours by name.
pub fn service_account_of(secret_name: &str) -> Option<&str> {
    secret_name
        .strip_prefix(SECRET_PREFIX)
        .filter(|sa| !sa.is_empty())
}

/// A freshly issued key and certificate for one Secret. `Debug` never shows the key.
pub struct SecretMaterial {
    /// Leaf, then intermediates (no root), PEM.
    pub chain_pem: String,
    key_pem: Zeroizing<String>,
    /// Every trusted root, PEM.
    pub roots_pem: String,
    /// The leaf's serial, lowercase hex.
    pub serial: String,
    /// End of the leaf's validity.
    pub not_after: OffsetDateTime,
}

impl fmt::Debug for SecretMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretMaterial")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("key", &format_args!("<redacted>"))
            .finish_non_exhaustive()
    }
}

impl SecretMaterial {
    /// Material from PEM text (tests and tools; [`issue`] is the normal way).
    pub fn from_parts(
        chain_pem: String,
        key_pem: Zeroizing<String>,
        roots_pem: String,
        serial: String,
        not_after: OffsetDateTime,
    ) -> Self {
        Self {
            chain_pem,
            key_pem,
            roots_pem,
            serial,
            not_after,
        }
    }

    /// The private key, PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

/// Issues a key and certificate for `identity` (and `dns_names`, for a webhook's
/// serving certificate) from `authority`, valid `ttl` (never beyond the issuer). The key is generated here (ECDSA P-256) and goes nowhere
/// but into the returned material. The caller records the [`IssuedCert`] in the
/// ledger before using the material.
pub fn issue(
    authority: &Authority,
    identity: &SpiffeId,
    dns_names: &[String],
    ttl: Duration,
    now: OffsetDateTime,
) -> Result<(IssuedCert, SecretMaterial), IssueError> {
    let material = authority
        .material()
        .map_err(IssueError::IssuerUnavailable)?;
    let key = KeyPair::generate().map_err(|e| IssueError::Sign(format!("key: {e}")))?;
    let issued = authority.issue_for_key(
        identity,
        dns_names,
        &key.subject_public_key_info(),
        ttl,
        now,
    )?;
    let root_ders: Vec<&[u8]> = material.roots.iter().map(|r| r.der.as_ref()).collect();
    let mut chain_pem = String::new();
    for (i, pem) in issued.chain_pem.iter().enumerate() {
        let is_root = CertificateDer::from_pem_slice(pem.as_bytes())
            .map(|d| root_ders.contains(&d.as_ref()))
            .unwrap_or(false);
        if i > 0 && is_root {
            continue;
        }
        chain_pem.push_str(pem);
        if !pem.ends_with('\n') {
            chain_pem.push('\n');
        }
    }
    let out = SecretMaterial {
        chain_pem,
        key_pem: Zeroizing::new(key.serialize_pem()),
        roots_pem: material.roots_pem(),
        serial: issued.serial.clone(),
        not_after: issued.not_after,
    };
    Ok((issued, out))
}

/// The Secret for `service_account` holding `material`, owned by the service
/// account (so the API server's garbage collector removes it with the account).
/// `base` is the Secret found in the cluster, when renewing: its other labels,
/// annotations and its `resourceVersion` are kept, so the update is conditional.
pub fn build_secret(
    service_account: &ServiceAccount,
    material: &SecretMaterial,
    base: Option<&Secret>,
) -> Secret {
    let sa_name = service_account.metadata.name.clone().unwrap_or_default();
    let mut metadata = base.map(|b| b.metadata.clone()).unwrap_or_default();
    metadata.name = Some(secret_name(&sa_name));
    metadata.namespace = service_account.metadata.namespace.clone();
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SERVICE_ACCOUNT_ANNOTATION.into(), sa_name.clone());
    if let Some(uid) = &service_account.metadata.uid {
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "ServiceAccount".into(),
            name: sa_name,
            uid: uid.clone(),
            ..OwnerReference::default()
        };
        let owners = metadata.owner_references.get_or_insert_with(Vec::new);
        owners.retain(|o| !(o.kind == "ServiceAccount" && o.api_version == "v1"));
        owners.push(owner);
    }
    // Fields the API server owns are not sent back.
    metadata.managed_fields = None;
    let data = BTreeMap::from([
        (
            CERT_CHAIN_KEY.to_string(),
            ByteString(material.chain_pem.clone().into_bytes()),
        ),
        (
            KEY_KEY.to_string(),
            ByteString(material.key_pem.as_bytes().to_vec()),
        ),
        (
            ROOT_CERT_KEY.to_string(),
            ByteString(material.roots_pem.clone().into_bytes()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta { ..metadata },
        type_: Some(SECRET_TYPE.into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Why a Secret must be (re)written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewReason {
    /// Missing data, unparseable, key not matching, chain not verifying (or expired).
    Unusable(String),
    /// The certificate names another identity.
    WrongIdentity(String),
    /// The certificate's DNS names are not the ones configured (these).
    DnsNamesChanged(Vec<String>),
    /// `root-cert.pem` is not the CA's current trust bundle (a root rotation).
    RootChanged,
    /// Past its renewal point.
    Due,
}

impl fmt::Display for RenewReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unusable(why) => write!(f, "unusable: {why}"),
            Self::WrongIdentity(id) => write!(f, "names {id}"),
            Self::DnsNamesChanged(found) => write!(f, "DNS names [{}] changed", found.join(", ")),
            Self::RootChanged => f.write_str("root changed"),
            Self::Due => f.write_str("due for renewal"),
        }
    }
}

/// What to do with a Secret found in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Good until `renew_at`.
    Current {
        /// When it becomes due.
        renew_at: SystemTime,
        /// The leaf's serial.
        serial: String,
    },
    /// Rewrite it in place.
    Renew(RenewReason),
    /// Not a Secret citadel may write (another type: the type cannot be changed).
    Foreign(String),
}

/// The fraction of its lifetime after which a certificate is renewed: between
/// 50 % and 80 %, as for the agent, drawn from the serial so that it is the same
/// at every look (a fresh draw each time would pull renewals towards 50 %) and
/// spread between certificates.
pub fn renewal_fraction(serial: &str) -> f64 {
    let digest = Sha256::digest(serial.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let r = u64::from_be_bytes(first) as f64 / u64::MAX as f64;
    RENEW_FROM + r * (RENEW_UNTIL - RENEW_FROM)
}

/// When a certificate valid from `not_before` to `not_after` with `serial` is due.
pub fn renew_point(not_before: SystemTime, not_after: SystemTime, serial: &str) -> SystemTime {
    renew_at_fraction(not_before, not_after, not_before, renewal_fraction(serial))
}

/// Decides whether `secret` still holds a good certificate for `identity`, with
/// exactly `dns_names` (sorted) besides it, under the current `roots_pem` at `now`.
pub fn assess(
    secret: &Secret,
    identity: &SpiffeId,
    dns_names: &[String],
    roots_pem: &str,
    now: SystemTime,
) -> Verdict {
    let kind = secret.type_.as_deref().unwrap_or("Opaque");
    if kind != SECRET_TYPE {
        return Verdict::Foreign(format!("type {kind}, not {SECRET_TYPE}"));
    }
    let get = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| b.0.as_slice())
            .filter(|b| !b.is_empty())
    };
    let (Some(chain), Some(key), Some(roots)) =
        (get(CERT_CHAIN_KEY), get(KEY_KEY), get(ROOT_CERT_KEY))
    else {
        return Verdict::Renew(RenewReason::Unusable("missing data".into()));
    };
    let tls = match TlsIdentity::from_pem(chain, key, roots) {
        Ok(t) => t,
        Err(e) => return Verdict::Renew(RenewReason::Unusable(e.to_string())),
    };
    match tls.spiffe_id() {
        Some(id) if id == identity => {}
        other => {
            return Verdict::Renew(RenewReason::WrongIdentity(
                other.map_or_else(|| "no SPIFFE identity".into(), ToString::to_string),
            ));
        }
    }
    if roots != roots_pem.as_bytes() {
        return Verdict::Renew(RenewReason::RootChanged);
    }
    let Ok((_, leaf)) = X509Certificate::from_der(tls.leaf().as_ref()) else {
        return Verdict::Renew(RenewReason::Unusable("unparseable leaf".into()));
    };
    let mut found = leaf_dns_names(&leaf);
    found.sort();
    if found != dns_names {
        return Verdict::Renew(RenewReason::DnsNamesChanged(found));
    }
    let validity = leaf.validity();
    let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0).unsigned_abs());
    let serial = hex::encode(leaf.raw_serial());
    let renew_at = renew_point(
        at(validity.not_before.timestamp()),
        at(validity.not_after.timestamp()),
        &serial,
    );
    if now >= renew_at {
        Verdict::Renew(RenewReason::Due)
    } else {
        Verdict::Current { renew_at, serial }
    }
}

/// The DNS names among a certificate's subject alternative names.
pub fn leaf_dns_names(leaf: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = leaf.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
#[path = "secret_tests.rs"]
mod tests;
