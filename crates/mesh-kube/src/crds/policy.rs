//! `config.istio.io` (the mixers' configuration): handler, instance, rule and
//! attributemanifest; served and stored at v1alpha2.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Object, ResourceStatus, open_object, open_objects};

/// An adapter configured for the mixers (denier, listchecker, memquota, prometheus, ...).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "config.istio.io",
    version = "v1alpha2",
    kind = "handler",
    doc = "A mixer adapter and its parameters.",
    root = "Handler",
    plural = "handlers",
    singular = "handler",
    category = "istio-io",
    category = "policy-istio-io",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct HandlerSpec {
    /// A name (legacy; the resource's name is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An adapter compiled into the mixers, such as `denier` or `prometheus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiled_adapter: Option<String>,
    /// An out-of-process adapter, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    /// The adapter's parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub params: Option<Object>,
    /// How to reach an out-of-process adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub connection: Option<Object>,
}

/// Attributes mapped onto a template's fields, the data a handler receives.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "config.istio.io",
    version = "v1alpha2",
    kind = "instance",
    doc = "Attributes mapped onto a mixer template.",
    root = "Instance",
    plural = "instances",
    singular = "instance",
    category = "istio-io",
    category = "policy-istio-io",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    /// A name (legacy; the resource's name is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A template compiled into the mixers, such as `metric` or `checknothing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiled_template: Option<String>,
    /// An out-of-process template, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The template's fields as attribute expressions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub params: Option<Object>,
    /// Output attributes of attribute-producing templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_bindings: Option<BTreeMap<String, String>>,
}

/// When to send which instances to which handlers.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "config.istio.io",
    version = "v1alpha2",
    kind = "rule",
    doc = "When the mixers send which instances to which handlers.",
    root = "Rule",
    plural = "rules",
    singular = "rule",
    category = "istio-io",
    category = "policy-istio-io",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct RuleSpec {
    /// An attribute expression selecting requests; empty matches every request.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub match_expr: Option<String>,
    /// Handlers invoked, each with the instances it receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_objects")]
    pub actions: Option<Vec<Object>>,
    /// Changes to request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_objects")]
    pub request_header_operations: Option<Vec<Object>>,
    /// Changes to response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_objects")]
    pub response_header_operations: Option<Vec<Object>>,
    /// Sampling of the reports the rule produces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub sampling: Option<Object>,
}

/// The attributes a component produces, and their types.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "config.istio.io",
    version = "v1alpha2",
    kind = "attributemanifest",
    doc = "The attributes a component produces.",
    root = "AttributeManifest",
    plural = "attributemanifests",
    singular = "attributemanifest",
    category = "istio-io",
    category = "policy-istio-io",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct AttributeManifestSpec {
    /// The manifest's revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The name of the component producing the attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The attributes, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, AttributeInfo>>,
}

/// One attribute of a manifest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributeInfo {
    /// What the attribute means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its type: STRING, INT64, DOUBLE, BOOL, TIMESTAMP, IP_ADDRESS, EMAIL_ADDRESS,
    /// URI, DNS_NAME, DURATION or STRING_MAP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
}
