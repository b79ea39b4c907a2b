//! The Istio CustomResourceDefinitions galley reads, generated from Rust types.
//!
//! Each of the twelve kinds of [`mesh_model::Kind`] has a custom resource type here
//! (kube's `CustomResource` derive). Its schema types the top-level fields of the
//! spec, so the API server and `kubectl explain` know the resource's shape, and leaves
//! nested details (routes, policies, adapter parameters) open with
//! `x-kubernetes-preserve-unknown-fields`: galley's validation in mesh-model stays the
//! source of truth for everything deeper. Every kind has a `status` subresource, open
//! too, for the analysis messages galley writes.
//!
//! The CRD of a kind serves every version mesh-model accepts for it, with the same
//! schema; the newest is the storage version (and the Rust type's `apiVersion`).
//! `cargo run -p mesh-kube --bin gen-crds` writes them to `charts/dromon/crds/`.

use std::{borrow::Cow, path::Path};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use mesh_model::Kind;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod networking;
pub mod policy;
pub mod security;

pub use networking::{
    DestinationRule, DestinationRuleSpec, Gateway, GatewaySpec, ServiceEntry, ServiceEntrySpec,
    Sidecar, SidecarSpec, VirtualService, VirtualServiceSpec,
};
pub use policy::{
    AttributeManifest, AttributeManifestSpec, Handler, HandlerSpec, Instance, InstanceSpec, Rule,
    RuleSpec,
};
pub use security::{
    AuthorizationPolicy, AuthorizationPolicySpec, PeerAuthentication, PeerAuthenticationSpec,
    RequestAuthentication, RequestAuthenticationSpec,
};

/// A JSON object whose fields the CRD schema leaves open.
pub type Object = serde_json::Map<String, Value>;

/// The `status` of every Istio resource: open, so galley can write its analysis
/// messages (and anything else) there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResourceStatus(pub Object);

impl JsonSchema for ResourceStatus {
    fn schema_name() -> Cow<'static, str> {
        "ResourceStatus".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Status written by the control plane, such as analysis messages.",
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// Schema of an object whose fields are left open (`schema_with` helper).
pub(crate) fn open_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Schema of a list of objects whose fields are left open (`schema_with` helper).
pub(crate) fn open_objects(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true
        }
    })
}

/// A custom resource of one of the Istio kinds, as read from YAML or the API server.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum IstioResource {
    VirtualService(VirtualService),
    DestinationRule(DestinationRule),
    Gateway(Gateway),
    ServiceEntry(ServiceEntry),
    Sidecar(Sidecar),
    PeerAuthentication(PeerAuthentication),
    AuthorizationPolicy(AuthorizationPolicy),
    RequestAuthentication(RequestAuthentication),
    Handler(Handler),
    Instance(Instance),
    Rule(Rule),
    AttributeManifest(AttributeManifest),
}

/// Why a document is not a custom resource of a known kind.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// `apiVersion` or `kind` is missing or names no known kind at that version.
    #[error(transparent)]
    Kind(#[from] mesh_model::kind::KindError),
    /// A field has the wrong type for the kind's schema.
    #[error("{kind}: {source}")]
    Decode {
        /// The kind the document claims to be.
        kind: Kind,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
}

/// Runs `$body` with `$cr` bound to the custom resource inside an `IstioResource`.
macro_rules! each_kind {
    ($resource:expr, $cr:ident => $body:expr) => {
        match $resource {
            IstioResource::VirtualService($cr) => $body,
            IstioResource::DestinationRule($cr) => $body,
            IstioResource::Gateway($cr) => $body,
            IstioResource::ServiceEntry($cr) => $body,
            IstioResource::Sidecar($cr) => $body,
            IstioResource::PeerAuthentication($cr) => $body,
            IstioResource::AuthorizationPolicy($cr) => $body,
            IstioResource::RequestAuthentication($cr) => $body,
            IstioResource::Handler($cr) => $body,
            IstioResource::Instance($cr) => $body,
            IstioResource::Rule($cr) => $body,
            IstioResource::AttributeManifest($cr) => $body,
        }
    };
}

impl IstioResource {
    /// Decodes a document (JSON, or YAML converted to JSON) by its `apiVersion` and
    /// `kind`, which must name a kind and version mesh-model accepts.
    pub fn from_value(document: Value) -> Result<Self, ResourceError> {
        let field = |name| document.get(name).and_then(Value::as_str).unwrap_or("");
        let kind = Kind::resolve(field("apiVersion"), field("kind"))?;
        let decode = |source| ResourceError::Decode { kind, source };
        Ok(match kind {
            Kind::VirtualService => {
                Self::VirtualService(serde_json::from_value(document).map_err(decode)?)
            }
            Kind::DestinationRule => {
                Self::DestinationRule(serde_json::from_value(document).map_err(decode)?)
            }
            Kind::Gateway => Self::Gateway(serde_json::from_value(document).map_err(decode)?),
            Kind::ServiceEntry => {
                Self::ServiceEntry(serde_json::from_value(document).map_err(decode)?)
            }
            Kind::Sidecar => Self::Sidecar(serde_json::from_value(document).map_err(decode)?),
            Kind::PeerAuthentication => {
                Self::PeerAuthentication(serde_json::from_value(document).map_err(decode)?)
            }
            Kind::AuthorizationPolicy => {
                Self::AuthorizationPolicy(serde_json::from_value(document).map_err(decode)?)
            }
            Kind::RequestAuthentication => {
                Self::RequestAuthentication(serde_json::from_value(document).map_err(decode)?)
            }
            Kind::Handler => Self::Handler(serde_json::from_value(document).map_err(decode)?),
            Kind::Instance => Self::Instance(serde_json::from_value(document).map_err(decode)?),
            Kind::Rule => Self::Rule(serde_json::from_value(document).map_err(decode)?),
            Kind::AttributeManifest => {
                Self::AttributeManifest(serde_json::from_value(document).map_err(decode)?)
            }
        })
    }

    /// The resource's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Self::VirtualService(_) => Kind::VirtualService,
            Self::DestinationRule(_) => Kind::DestinationRule,
            Self::Gateway(_) => Kind::Gateway,
            Self::ServiceEntry(_) => Kind::ServiceEntry,
            Self::Sidecar(_) => Kind::Sidecar,
            Self::PeerAuthentication(_) => Kind::PeerAuthentication,
            Self::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Self::RequestAuthentication(_) => Kind::RequestAuthentication,
            Self::Handler(_) => Kind::Handler,
            Self::Instance(_) => Kind::Instance,
            Self::Rule(_) => Kind::Rule,
            Self::AttributeManifest(_) => Kind::AttributeManifest,
        }
    }

    /// The resource as JSON, with the storage version as its `apiVersion`.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        each_kind!(self, cr => serde_json::to_value(cr))
    }
}

/// The version a kind's objects are stored at: the newest mesh-model accepts.
pub fn storage_version(kind: Kind) -> &'static str {
    kind.versions().last().copied().unwrap_or("v1")
}

/// The CRD of `kind`, serving every version mesh-model accepts.
pub fn crd(kind: Kind) -> CustomResourceDefinition {
    let single = match kind {
        Kind::VirtualService => VirtualService::crd(),
        Kind::DestinationRule => DestinationRule::crd(),
        Kind::Gateway => Gateway::crd(),
        Kind::ServiceEntry => ServiceEntry::crd(),
        Kind::Sidecar => Sidecar::crd(),
        Kind::PeerAuthentication => PeerAuthentication::crd(),
        Kind::AuthorizationPolicy => AuthorizationPolicy::crd(),
        Kind::RequestAuthentication => RequestAuthentication::crd(),
        Kind::Handler => Handler::crd(),
        Kind::Instance => Instance::crd(),
        Kind::Rule => Rule::crd(),
        Kind::AttributeManifest => AttributeManifest::crd(),
    };
    with_served_versions(single, kind)
}

/// Every kind's CRD, in mesh-model's order.
pub fn all() -> Vec<CustomResourceDefinition> {
    Kind::ALL.into_iter().map(crd).collect()
}

/// The derive makes one version (the storage one); the others mesh-model accepts
/// are served with the same schema, listed in mesh-model's (oldest first) order.
fn with_served_versions(mut crd: CustomResourceDefinition, kind: Kind) -> CustomResourceDefinition {
    let storage = storage_version(kind);
    let Some(template) = crd.spec.versions.first().cloned() else {
        return crd;
    };
    crd.spec.versions = kind
        .versions()
        .iter()
        .map(|version| {
            let mut v = template.clone();
            v.name = (*version).to_string();
            v.served = true;
            v.storage = *version == storage;
            v
        })
        .collect();
    crd
}

/// The file a CRD is written to: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.{}.yaml", crd.spec.names.plural, crd.spec.group)
}

/// The command that regenerates the CRD files.
pub const REGENERATE: &str = "cargo run -p mesh-kube --bin gen-crds";

/// A CRD as the YAML file committed under `charts/dromon/crds/`.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_norway::Error> {
    let body = serde_norway::to_string(crd)?;
    Ok(format!(
        "# Generated from the Rust types in crates/mesh-kube; do not edit.\n\
         # Regenerate with: {REGENERATE}\n{body}"
    ))
}

/// Every CRD file's name and content.
pub fn rendered() -> Result<Vec<(String, String)>, serde_norway::Error> {
    all()
        .iter()
        .map(|crd| Ok((file_name(crd), to_yaml(crd)?)))
        .collect()
}

/// Writes every CRD file into `dir`, removing generated files of kinds no longer
/// there; returns the names written.
pub fn write_all(dir: &Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let files = rendered().map_err(std::io::Error::other)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let stale = path.extension().is_some_and(|e| e == "yaml")
            && !files
                .iter()
                .any(|(name, _)| path.file_name().is_some_and(|f| f == name.as_str()));
        if stale {
            std::fs::remove_file(&path)?;
        }
    }
    for (name, text) in &files {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(files.into_iter().map(|(name, _)| name).collect())
}

#[cfg(test)]
mod tests;
