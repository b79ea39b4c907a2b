//! The attribute vocabulary: every attribute name the mesh knows and its type.
//!
//! [`Manifest::standard`] is the vocabulary Envoy and the mesh produce (Istio's
//! attribute vocabulary: `source.*`, `destination.*`, `request.*`, `response.*`,
//! `connection.*`, `context.*`, `api.*`, ...). `attributemanifest` resources extend
//! it ([`Manifest::extend`]); a name may not change type.

use std::{collections::HashMap, fmt};

use mesh_model::policy::{AttributeManifest, ValueType as ModelType};

use crate::{AttributeTypes, ValueType};

/// Attribute names and their types.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Looked up for every attribute of every request: a fast hasher, randomly
    /// seeded per map.
    types: HashMap<String, ValueType, foldhash::fast::RandomState>,
    /// The types of the global dictionary's words, by slot ([`crate::AttrName`]),
    /// so that decoding finds a name's type without hashing it.
    by_slot: Vec<Option<ValueType>>,
}

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Sorted<'a>(&'a Manifest);
        impl fmt::Debug for Sorted<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map().entries(self.0.iter()).finish()
            }
        }
        f.debug_struct("Manifest")
            .field("types", &Sorted(self))
            .finish()
    }
}

/// Why a manifest cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// A name is already known with another type.
    #[error("attribute {name} is {existing} and cannot be redefined as {new}")]
    Conflict {
        /// The attribute.
        name: String,
        /// Its type so far.
        existing: ValueType,
        /// The type asked for.
        new: ValueType,
    },
    /// An attribute has no type.
    #[error("attribute {name} has no valueType")]
    Untyped {
        /// The attribute.
        name: String,
    },
    /// An attribute name is empty or has characters names cannot hold.
    #[error("invalid attribute name {name:?}: names are letters, digits, '.', '_' and '-'")]
    InvalidName {
        /// The name.
        name: String,
    },
}

use ValueType::{
    Bool, Bytes, DnsName, Double, Duration, EmailAddress, Int64, IpAddress, String as Str,
    StringMap, Timestamp, Uri,
};

/// The standard vocabulary.
const STANDARD: &[(&str, ValueType)] = &[
    // The workload sending a request.
    ("source.uid", Str),
    ("source.ip", IpAddress),
    ("source.port", Int64),
    ("source.labels", StringMap),
    ("source.name", Str),
    ("source.namespace", Str),
    ("source.principal", Str),
    ("source.owner", Str),
    ("source.user", Str),
    ("source.service", Str),
    ("source.workload.uid", Str),
    ("source.workload.name", Str),
    ("source.workload.namespace", Str),
    ("source.cluster.id", Str),
    // The workload receiving it.
    ("destination.uid", Str),
    ("destination.ip", IpAddress),
    ("destination.port", Int64),
    ("destination.labels", StringMap),
    ("destination.metadata", StringMap),
    ("destination.name", Str),
    ("destination.namespace", Str),
    ("destination.principal", Str),
    ("destination.owner", Str),
    ("destination.user", Str),
    ("destination.workload.uid", Str),
    ("destination.workload.name", Str),
    ("destination.workload.namespace", Str),
    ("destination.container.name", Str),
    ("destination.container.image", Str),
    ("destination.service", DnsName),
    ("destination.service.host", Str),
    ("destination.service.uid", Str),
    ("destination.service.name", Str),
    ("destination.service.namespace", Str),
    ("destination.cluster.id", Str),
    ("origin.ip", IpAddress),
    ("origin.uid", Str),
    ("origin.user", Str),
    // The request.
    ("request.headers", StringMap),
    ("request.id", Str),
    ("request.path", Str),
    ("request.url_path", Str),
    ("request.query_params", StringMap),
    ("request.host", Str),
    ("request.method", Str),
    ("request.reason", Str),
    ("request.referer", Str),
    ("request.scheme", Str),
    ("request.size", Int64),
    ("request.total_size", Int64),
    ("request.time", Timestamp),
    ("request.useragent", Str),
    ("request.api_key", Str),
    ("request.auth.principal", Str),
    ("request.auth.audiences", Str),
    ("request.auth.presenter", Str),
    ("request.auth.claims", StringMap),
    ("request.auth.raw_claims", Str),
    // The response.
    ("response.headers", StringMap),
    ("response.size", Int64),
    ("response.total_size", Int64),
    ("response.time", Timestamp),
    ("response.duration", Duration),
    ("response.code", Int64),
    ("response.grpc_status", Str),
    ("response.grpc_message", Str),
    ("response.flags", Str),
    // Connections.
    ("connection.id", Str),
    ("connection.event", Str),
    ("connection.received.bytes", Int64),
    ("connection.received.bytes_total", Int64),
    ("connection.sent.bytes", Int64),
    ("connection.sent.bytes_total", Int64),
    ("connection.duration", Duration),
    ("connection.mtls", Bool),
    ("connection.requested_server_name", Str),
    // Context.
    ("context.protocol", Str),
    ("context.time", Timestamp),
    ("context.timestamp", Timestamp),
    ("context.reporter.kind", Str),
    ("context.reporter.uid", Str),
    ("context.reporter.local", Bool),
    ("context.proxy_error_code", Str),
    ("context.proxy_version", Str),
    // The API a request belongs to.
    ("api.service", Str),
    ("api.version", Str),
    ("api.operation", Str),
    ("api.protocol", Str),
    // Results Envoy reports about mixer calls themselves.
    ("check.error_code", Int64),
    ("check.error_message", Str),
    ("check.cache_hit", Bool),
    ("quota.cache_hit", Bool),
    ("rbac.permissive.response_code", Str),
    ("rbac.permissive.effective_policy_id", Str),
    // Envoy rate limit requests (mixer-policy's RateLimitService): the domain and
    // the descriptor's entries, key to value.
    ("ratelimit.domain", Str),
    ("ratelimit.descriptor", StringMap),
];

impl Manifest {
    /// An empty vocabulary.
    pub fn new() -> Self {
        Self::default()
    }

    /// The standard vocabulary.
    pub fn standard() -> Self {
        let mut m = Self::default();
        for (name, t) in STANDARD {
            m.set(name, *t);
        }
        m
    }

    fn set(&mut self, name: &str, t: ValueType) {
        self.types.insert(name.to_string(), t);
        if let Some(slot) =
            crate::dictionary::global_index(name).and_then(|i| usize::try_from(i).ok())
        {
            if self.by_slot.len() <= slot {
                self.by_slot.resize(slot + 1, None);
            }
            self.by_slot[slot] = Some(t);
        }
    }

    /// Adds `name` with type `t`; the same name with the same type is fine.
    pub fn insert(&mut self, name: &str, t: ValueType) -> Result<(), ManifestError> {
        if !valid_name(name) {
            return Err(ManifestError::InvalidName {
                name: name.to_string(),
            });
        }
        match self.types.get(name) {
            Some(existing) if *existing != t => Err(ManifestError::Conflict {
                name: name.to_string(),
                existing: *existing,
                new: t,
            }),
            Some(_) => Ok(()),
            None => {
                self.set(name, t);
                Ok(())
            }
        }
    }

    /// Adds the attributes of an `attributemanifest` resource; on error nothing is
    /// added.
    pub fn extend(&mut self, manifest: &AttributeManifest) -> Result<(), ManifestError> {
        let mut next = self.clone();
        for (name, info) in &manifest.attributes {
            let t = info
                .value_type
                .and_then(from_model)
                .ok_or_else(|| ManifestError::Untyped { name: name.clone() })?;
            next.insert(name, t)?;
        }
        *self = next;
        Ok(())
    }

    /// Every name and type, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, ValueType)> {
        let mut all: Vec<(&str, ValueType)> =
            self.types.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
    }

    /// How many attributes.
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }
}

impl AttributeTypes for Manifest {
    fn type_of(&self, name: &str) -> Option<ValueType> {
        self.types.get(name).copied()
    }

    fn type_of_slot(&self, slot: u8, _name: &str) -> Option<ValueType> {
        self.by_slot.get(usize::from(slot)).copied().flatten()
    }
}

/// The mixer type of a manifest's declared type (`None` for unspecified).
pub fn from_model(t: ModelType) -> Option<ValueType> {
    Some(match t {
        ModelType::ValueTypeUnspecified => return None,
        ModelType::String => Str,
        ModelType::Int64 => Int64,
        ModelType::Double => Double,
        ModelType::Bool => Bool,
        ModelType::Timestamp => Timestamp,
        ModelType::IpAddress => IpAddress,
        ModelType::EmailAddress => EmailAddress,
        ModelType::Uri => Uri,
        ModelType::DnsName => DnsName,
        ModelType::Duration => Duration,
        ModelType::StringMap => StringMap,
        ModelType::Bytes => Bytes,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use mesh_model::policy::AttributeInfo;

    use super::*;

    fn manifest(attrs: &[(&str, Option<ModelType>)]) -> AttributeManifest {
        AttributeManifest {
            attributes: attrs
                .iter()
                .map(|(n, t)| {
                    (
                        n.to_string(),
                        AttributeInfo {
                            value_type: *t,
                            ..AttributeInfo::default()
                        },
                    )
                })
                .collect(),
            ..AttributeManifest::default()
        }
    }

    #[test]
    fn the_standard_vocabulary_covers_every_family_once() {
        let m = Manifest::standard();
        assert_eq!(m.len(), STANDARD.len(), "a name is listed twice");
        for family in [
            "source.",
            "destination.",
            "request.",
            "response.",
            "connection.",
            "context.",
            "api.",
        ] {
            assert!(m.iter().any(|(n, _)| n.starts_with(family)), "{family}");
        }
        assert_eq!(m.type_of("request.headers"), Some(StringMap));
        assert_eq!(m.type_of("source.ip"), Some(IpAddress));
        assert_eq!(m.type_of("response.duration"), Some(Duration));
        assert_eq!(m.type_of("no.such"), None);
        // The names Istio's clients send by index are in the vocabulary with the
        // type their wire slot implies.
        assert_eq!(crate::dictionary::GLOBAL_WORDS[0], "source.ip");
        assert_eq!(
            m.type_of(crate::dictionary::GLOBAL_WORDS[0]),
            Some(IpAddress)
        );
    }

    #[test]
    fn manifests_extend_but_never_retype() {
        let mut m = Manifest::standard();
        m.extend(&manifest(&[
            ("myapp.tenant", Some(ModelType::String)),
            ("request.size", Some(ModelType::Int64)),
        ]))
        .unwrap();
        assert_eq!(m.type_of("myapp.tenant"), Some(Str));
        let before = m.clone();
        let e = m
            .extend(&manifest(&[
                ("myapp.other", Some(ModelType::Bool)),
                ("request.size", Some(ModelType::String)),
            ]))
            .unwrap_err();
        assert!(matches!(e, ManifestError::Conflict { .. }), "{e}");
        assert_eq!(m, before, "a refused manifest adds nothing");
        let e = m.extend(&manifest(&[("myapp.untyped", None)])).unwrap_err();
        assert_eq!(
            e,
            ManifestError::Untyped {
                name: "myapp.untyped".into()
            }
        );
        let e = m
            .extend(&manifest(&[("bad name", Some(ModelType::Bool))]))
            .unwrap_err();
        assert!(matches!(e, ManifestError::InvalidName { .. }));
    }
}
