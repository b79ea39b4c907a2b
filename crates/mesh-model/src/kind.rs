//! The configuration kinds galley accepts, their API groups and versions, and the
//! collection (type URL) each is distributed under.

use std::fmt;

/// A configuration kind galley understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `networking.istio.io` VirtualService.
    VirtualService,
    /// `networking.istio.io` DestinationRule.
    DestinationRule,
    /// `networking.istio.io` Gateway.
    Gateway,
    /// `networking.istio.io` ServiceEntry.
    ServiceEntry,
    /// `networking.istio.io` Sidecar.
    Sidecar,
    /// `security.istio.io` PeerAuthentication.
    PeerAuthentication,
    /// `security.istio.io` AuthorizationPolicy.
    AuthorizationPolicy,
    /// `security.istio.io` RequestAuthentication.
    RequestAuthentication,
    /// `config.istio.io` handler (mixer adapter configuration).
    Handler,
    /// `config.istio.io` instance (mixer template instance).
    Instance,
    /// `config.istio.io` rule (mixer rule).
    Rule,
    /// `config.istio.io` attributemanifest (mixer attribute vocabulary).
    AttributeManifest,
}

const NETWORKING: &str = "networking.istio.io";
const SECURITY: &str = "security.istio.io";
const POLICY: &str = "config.istio.io";
const NETWORKING_VERSIONS: &[&str] = &["v1alpha3", "v1beta1", "v1"];
const SECURITY_VERSIONS: &[&str] = &["v1beta1", "v1"];
const POLICY_VERSIONS: &[&str] = &["v1alpha2"];

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 12] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::Handler,
        Kind::Instance,
        Kind::Rule,
        Kind::AttributeManifest,
    ];

    /// The kind's name as written in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::Handler => "handler",
            Kind::Instance => "instance",
            Kind::Rule => "rule",
            Kind::AttributeManifest => "attributemanifest",
        }
    }

    /// The API group the kind belongs to.
    pub fn group(self) -> &'static str {
        match self {
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Gateway
            | Kind::ServiceEntry
            | Kind::Sidecar => NETWORKING,
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                SECURITY
            }
            Kind::Handler | Kind::Instance | Kind::Rule | Kind::AttributeManifest => POLICY,
        }
    }

    /// The API versions accepted for the kind.
    pub fn versions(self) -> &'static [&'static str] {
        match self.group() {
            NETWORKING => NETWORKING_VERSIONS,
            SECURITY => SECURITY_VERSIONS,
            _ => POLICY_VERSIONS,
        }
    }

    /// The version the kind's collection is named with.
    pub fn canonical_version(self) -> &'static str {
        self.versions()[0]
    }

    /// The collection the kind is distributed under; also its xDS type URL on galley's
    /// MCP stream, e.g. `networking.istio.io/v1alpha3/VirtualService`.
    pub fn collection(self) -> &'static str {
        match self {
            Kind::VirtualService => "networking.istio.io/v1alpha3/VirtualService",
            Kind::DestinationRule => "networking.istio.io/v1alpha3/DestinationRule",
            Kind::Gateway => "networking.istio.io/v1alpha3/Gateway",
            Kind::ServiceEntry => "networking.istio.io/v1alpha3/ServiceEntry",
            Kind::Sidecar => "networking.istio.io/v1alpha3/Sidecar",
            Kind::PeerAuthentication => "security.istio.io/v1beta1/PeerAuthentication",
            Kind::AuthorizationPolicy => "security.istio.io/v1beta1/AuthorizationPolicy",
            Kind::RequestAuthentication => "security.istio.io/v1beta1/RequestAuthentication",
            Kind::Handler => "config.istio.io/v1alpha2/handler",
            Kind::Instance => "config.istio.io/v1alpha2/instance",
            Kind::Rule => "config.istio.io/v1alpha2/rule",
            Kind::AttributeManifest => "config.istio.io/v1alpha2/attributemanifest",
        }
    }

    /// The kind distributed under `collection`, if any.
    pub fn from_collection(collection: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.collection() == collection)
    }

    /// Resolves `apiVersion` + `kind` as written in a document.
    pub fn resolve(api_version: &str, kind: &str) -> Result<Kind, KindError> {
        let (group, version) = api_version
            .split_once('/')
            .ok_or_else(|| KindError::BadApiVersion(api_version.to_string()))?;
        let found = Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind && k.group() == group)
            .ok_or_else(|| KindError::UnknownKind {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            })?;
        if !found.versions().contains(&version) {
            return Err(KindError::UnsupportedVersion {
                kind: found,
                version: version.to_string(),
            });
        }
        Ok(found)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an `apiVersion`/`kind` pair names no known kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    /// `apiVersion` is not `group/version`.
    #[error("apiVersion {0:?} is not of the form group/version")]
    BadApiVersion(String),
    /// No kind of that name in that group.
    #[error("unknown kind {kind:?} in apiVersion {api_version:?}")]
    UnknownKind {
        /// The apiVersion as written.
        api_version: String,
        /// The kind as written.
        kind: String,
    },
    /// The kind is known but not at that version.
    #[error("{kind} is not served at version {version:?} (accepted: {})", kind.versions().join(", "))]
    UnsupportedVersion {
        /// The kind.
        kind: Kind,
        /// The version as written.
        version: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_accepted_version() {
        for kind in Kind::ALL {
            for v in kind.versions() {
                let api = format!("{}/{}", kind.group(), v);
                assert_eq!(Kind::resolve(&api, kind.as_str()), Ok(kind));
            }
            assert_eq!(Kind::from_collection(kind.collection()), Some(kind));
        }
    }

    #[test]
    fn rejects_unknown_kinds_and_versions() {
        assert!(matches!(
            Kind::resolve("networking.istio.io/v2", "VirtualService"),
            Err(KindError::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            Kind::resolve("networking.istio.io/v1", "Service"),
            Err(KindError::UnknownKind { .. })
        ));
        assert!(matches!(
            Kind::resolve("v1", "Pod"),
            Err(KindError::BadApiVersion(_))
        ));
    }
}
