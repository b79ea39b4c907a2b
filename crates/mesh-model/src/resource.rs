//! A typed configuration resource and its identity.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{
    kind::Kind,
    meta::{ObjectMeta, SourceLocation},
    networking, policy, security,
};

/// Identity of a resource: kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceKey {
    /// The kind.
    #[serde(serialize_with = "ser_kind", deserialize_with = "de_kind")]
    pub kind: Kind,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

fn ser_kind<S: serde::Serializer>(kind: &Kind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

fn de_kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
    let s = String::deserialize(d)?;
    Kind::ALL
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown kind {s:?}")))
}

impl ResourceKey {
    /// `namespace/name`, the name MCP uses for the resource.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A parsed configuration resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The apiVersion it was written in.
    pub api_version: String,
    /// Name, namespace, labels, annotations.
    pub meta: ObjectMeta,
    /// The typed spec.
    pub spec: Spec,
    /// Where it was read from.
    pub source: SourceLocation,
}

impl Resource {
    /// The resource's kind.
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    /// The resource's identity.
    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            kind: self.kind(),
            namespace: self.meta.namespace.clone(),
            name: self.meta.name.clone(),
        }
    }
}

macro_rules! specs {
    ($($variant:ident => $ty:ty),* $(,)?) => {
        /// The typed spec of a resource, one variant per kind.
        // Specs live behind `Arc<Resource>` everywhere, so variant sizes do not matter.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq)]
        pub enum Spec {
            $(
                #[doc = concat!("A ", stringify!($variant), " spec.")]
                $variant($ty),
            )*
        }

        impl Spec {
            /// The kind this spec belongs to.
            pub fn kind(&self) -> Kind {
                match self {
                    $(Spec::$variant(_) => Kind::$variant,)*
                }
            }

            /// Deserializes the spec of `kind`, tracking the path of any error.
            pub fn deserialize_for<'de, D>(
                kind: Kind,
                deserializer: D,
            ) -> Result<Spec, serde_path_to_error::Error<D::Error>>
            where
                D: serde::Deserializer<'de>,
            {
                Ok(match kind {
                    $(Kind::$variant => Spec::$variant(serde_path_to_error::deserialize(deserializer)?),)*
                })
            }

            /// Deserializes the spec of `kind` without path tracking (for deserializers
            /// whose errors carry the path themselves).
            pub(crate) fn deserialize_plain<'de, D>(kind: Kind, deserializer: D) -> Result<Spec, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                Ok(match kind {
                    $(Kind::$variant => Spec::$variant(serde::Deserialize::deserialize(deserializer)?),)*
                })
            }

            /// The spec as JSON with the YAML form's field names.
            pub fn to_json(&self) -> Vec<u8> {
                let encoded = match self {
                    $(Spec::$variant(s) => serde_json::to_vec(s),)*
                };
                // Serializing plain data structs with string keys cannot fail.
                encoded.unwrap_or_default()
            }

            /// The spec as a JSON value.
            pub fn to_value(&self) -> serde_json::Value {
                let value = match self {
                    $(Spec::$variant(s) => serde_json::to_value(s),)*
                };
                value.unwrap_or_default()
            }
        }
    };
}

specs! {
    VirtualService => networking::VirtualService,
    DestinationRule => networking::DestinationRule,
    Gateway => networking::Gateway,
    ServiceEntry => networking::ServiceEntry,
    Sidecar => networking::Sidecar,
    PeerAuthentication => security::PeerAuthentication,
    AuthorizationPolicy => security::AuthorizationPolicy,
    RequestAuthentication => security::RequestAuthentication,
    Handler => policy::Handler,
    Instance => policy::Instance,
    Rule => policy::Rule,
    AttributeManifest => policy::AttributeManifest,
}

impl Spec {
    /// Decodes a spec distributed as JSON (the inverse of [`Spec::to_json`]).
    pub fn from_json(kind: Kind, json: &[u8]) -> Result<Spec, String> {
        let mut de = serde_json::Deserializer::from_slice(json);
        Spec::deserialize_for(kind, &mut de).map_err(|e| {
            let path = e.path().to_string();
            format!("spec.{path}: {}", e.into_inner())
        })
    }
}
