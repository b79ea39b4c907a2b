//! `config.istio.io/v1alpha2` resource specs used by the mixers: handlers (adapter
//! configuration), instances (template instances), rules (which instances go to which
//! handler, when) and attribute manifests (the attribute vocabulary).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

fn is_false(b: &bool) -> bool {
    !*b
}

/// handler spec: one configured adapter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Handler {
    /// Name (legacy; the resource name is used).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// An adapter compiled into the mixer, e.g. `prometheus`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub compiled_adapter: String,
    /// An out-of-process adapter, by its `adapter` resource name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub adapter: String,
    /// Adapter parameters, free-form.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub params: serde_json::Value,
    /// How to reach an out-of-process adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
}

impl Handler {
    /// The adapter it runs: `compiledAdapter`, else `adapter`.
    pub fn adapter_name(&self) -> &str {
        if self.compiled_adapter.is_empty() {
            &self.adapter
        } else {
            &self.compiled_adapter
        }
    }
}

/// Connection to an out-of-process adapter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Connection {
    /// `host:port` of the adapter.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Call timeout (duration string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// TLS or mutual TLS settings, free-form.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub authentication: serde_json::Value,
}

/// instance spec: how request attributes fill a template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Instance {
    /// Name (legacy; the resource name is used).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// A template compiled into the mixer, e.g. `metric`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub compiled_template: String,
    /// An out-of-process template, by its `template` resource name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub template: String,
    /// Template fields as attribute expressions, free-form.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub params: serde_json::Value,
    /// Output attributes of APA templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attribute_bindings: BTreeMap<String, String>,
}

impl Instance {
    /// The template it fills: `compiledTemplate`, else `template`.
    pub fn template_name(&self) -> &str {
        if self.compiled_template.is_empty() {
            &self.template
        } else {
            &self.compiled_template
        }
    }
}

/// rule spec: when `match` holds, send the instances to the handlers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Attribute expression selecting requests; empty matches all.
    #[serde(rename = "match", default, skip_serializing_if = "String::is_empty")]
    pub match_expr: String,
    /// Handler invocations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<RuleAction>,
    /// Request header changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_header_operations: Vec<HeaderOperationTemplate>,
    /// Response header changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_header_operations: Vec<HeaderOperationTemplate>,
    /// Sampling of reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,
}

/// One handler invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleAction {
    /// The handler, as `name` or `name.namespace`.
    #[serde(default)]
    pub handler: String,
    /// The instances, each as `name` or `name.namespace`; at least one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<String>,
    /// Name of the action, for referring to its output.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// A header change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperationTemplate {
    /// Header name expression; required.
    #[serde(default)]
    pub name: String,
    /// Value expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Operation; REPLACE when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<HeaderOperation>,
}

/// Header operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HeaderOperation {
    /// Replace the header.
    Replace,
    /// Remove the header.
    Remove,
    /// Append to the header.
    Append,
}

/// Sampling of reports: random or rate-limited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sampling {
    /// Random sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<RandomSampling>,
    /// Rate-limited sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSampling>,
}

/// Random sampling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RandomSampling {
    /// Attribute expression that must hold for sampling.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub attribute_expression: String,
    /// Share sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent_sampled: Option<FractionalPercent>,
    /// Decide independently of the trace's sampling.
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_independent_randomness: bool,
}

/// A fraction: numerator over 100 or 10 000.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FractionalPercent {
    /// Numerator.
    #[serde(default)]
    pub numerator: u32,
    /// Denominator; HUNDRED when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<Denominator>,
}

/// Denominators of a fractional percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Denominator {
    /// 100.
    Hundred,
    /// 10 000.
    TenThousand,
}

/// Rate-limited sampling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitSampling {
    /// Window (duration string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_duration: Option<String>,
    /// Entries allowed unsampled per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unsampled_entries: Option<u64>,
    /// One in this many entries is sampled beyond that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_rate: Option<u64>,
}

/// attributemanifest spec: the attributes a component produces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttributeManifest {
    /// Revision of the manifest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// Name of the producing component.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Attributes by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, AttributeInfo>,
}

/// One attribute's type and description.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttributeInfo {
    /// Description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Value type; required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<ValueType>,
}

/// Attribute value types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValueType {
    /// Not set (refused by validation).
    ValueTypeUnspecified,
    /// String.
    String,
    /// 64-bit integer.
    Int64,
    /// Double.
    Double,
    /// Boolean.
    Bool,
    /// Timestamp.
    Timestamp,
    /// IP address.
    IpAddress,
    /// E-mail address.
    EmailAddress,
    /// URI.
    Uri,
    /// DNS name.
    DnsName,
    /// Duration.
    Duration,
    /// Map of strings.
    StringMap,
    /// Raw bytes.
    Bytes,
}
