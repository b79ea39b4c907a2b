//! SPIFFE workload identities as the mesh names them:
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::{fmt, str::FromStr};

/// A workload identity: the trust domain, namespace and service account a
/// certificate's only URI SAN names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not a mesh SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The scheme is not `spiffe://`.
    #[error("not a SPIFFE ID: it must start with spiffe://")]
    Scheme,
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error("SPIFFE ID path must be /ns/<namespace>/sa/<service-account>")]
    Path,
    /// A part is empty, too long, or holds characters a DNS label or SPIFFE path
    /// segment may not.
    #[error("invalid {part} {value:?} in SPIFFE ID")]
    Part {
        /// Which part.
        part: &'static str,
        /// The offending value.
        value: String,
    },
}

impl SpiffeId {
    /// An identity from its parts, each checked.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        check_trust_domain(trust_domain)?;
        check_segment("namespace", namespace)?;
        check_segment("service account", service_account)?;
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        })
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The URI form.
    pub fn uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeIdError::Scheme)?;
        let (trust_domain, path) = rest.split_once('/').ok_or(SpiffeIdError::Path)?;
        let mut parts = path.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Self::new(trust_domain, ns, sa),
            _ => Err(SpiffeIdError::Path),
        }
    }
}

/// Which identities a server lets in: a SPIFFE ID whose namespace or service
/// account may be `*` (any), e.g. `spiffe://cluster.local/ns/istio-system/sa/*`
/// for every control-plane workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityPattern {
    trust_domain: String,
    namespace: Option<String>,
    service_account: Option<String>,
}

impl IdentityPattern {
    /// Whether `id` matches.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        id.trust_domain == self.trust_domain
            && self.namespace.as_ref().is_none_or(|ns| *ns == id.namespace)
            && self
                .service_account
                .as_ref()
                .is_none_or(|sa| *sa == id.service_account)
    }
}

impl fmt::Display for IdentityPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain,
            self.namespace.as_deref().unwrap_or("*"),
            self.service_account.as_deref().unwrap_or("*")
        )
    }
}

impl FromStr for IdentityPattern {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Check the pattern as an ID whose wildcards are stood in for by a valid
        // segment, then put the wildcards back.
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeIdError::Scheme)?;
        let (trust_domain, path) = rest.split_once('/').ok_or(SpiffeIdError::Path)?;
        let mut parts = path.split('/');
        let (ns, sa) = match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => (ns, sa),
            _ => return Err(SpiffeIdError::Path),
        };
        let wild = |v: &str| (v != "*").then(|| v.to_string());
        let id = SpiffeId::new(
            trust_domain,
            if ns == "*" { "any" } else { ns },
            if sa == "*" { "any" } else { sa },
        )?;
        Ok(Self {
            trust_domain: id.trust_domain,
            namespace: wild(ns),
            service_account: wild(sa),
        })
    }
}

fn check_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SpiffeIdError::Part {
            part: "trust domain",
            value: td.to_string(),
        })
    }
}

fn check_segment(part: &'static str, value: &str) -> Result<(), SpiffeIdError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SpiffeIdError::Part {
            part,
            value: value.to_string(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_by_part() {
        let id = |s: &str| s.parse::<SpiffeId>().unwrap();
        let pat = |s: &str| s.parse::<IdentityPattern>().unwrap();
        let pilot = id("spiffe://cluster.local/ns/istio-system/sa/pilot");
        assert!(pat("spiffe://cluster.local/ns/istio-system/sa/*").matches(&pilot));
        assert!(pat("spiffe://cluster.local/ns/*/sa/pilot").matches(&pilot));
        assert!(pat("spiffe://cluster.local/ns/*/sa/*").matches(&pilot));
        assert!(pat("spiffe://cluster.local/ns/istio-system/sa/pilot").matches(&pilot));
        assert!(!pat("spiffe://cluster.local/ns/istio-system/sa/galley").matches(&pilot));
        assert!(!pat("spiffe://other.domain/ns/*/sa/*").matches(&pilot));
        assert!(!pat("spiffe://cluster.local/ns/default/sa/*").matches(&pilot));
        assert_eq!(
            pat("spiffe://cluster.local/ns/istio-system/sa/*").to_string(),
            "spiffe://cluster.local/ns/istio-system/sa/*"
        );
        for bad in [
            "cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a",
            "spiffe://*/ns/a/sa/b",
            "spiffe://cluster.local/ns/a*/sa/b",
            "spiffe://cluster.local/ns/a/sa/b/c",
        ] {
            assert!(bad.parse::<IdentityPattern>().is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trips() {
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
            .parse()
            .unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "bookinfo-productpage");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        );
    }

    #[test]
    fn refuses_other_shapes() {
        for bad in [
            "http://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/sa/b/ns/a",
            "spiffe:///ns/a/sa/b",
            "spiffe://Cluster.Local/ns/a/sa/b",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/ns/../sa/b",
            "spiffe://cluster.local/ns/a b/sa/b",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} accepted");
        }
    }
}
