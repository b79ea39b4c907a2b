//! `networking.istio.io` resource specs: VirtualService, DestinationRule, Gateway,
//! ServiceEntry and Sidecar, with the field names of Istio's YAML.
//!
//! Every struct refuses unknown fields, so a misspelt field is an error naming its
//! path rather than a silently ignored setting. Durations are kept as written (see
//! [`crate::duration::parse_duration`]).

mod destination_rule;
mod gateway;
mod service_entry;
mod sidecar;
mod virtual_service;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use destination_rule::*;
pub use gateway::*;
pub use service_entry::*;
pub use sidecar::*;
pub use virtual_service::*;

/// Labels, as a sorted map.
pub type Labels = BTreeMap<String, String>;

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// A string matcher: exactly one of `exact`, `prefix` or `regex` (RE2 syntax).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    /// Exact match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Prefix match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Regular expression match (RE2 syntax, whole string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// A port chosen by number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// The port number (1..=65535).
    #[serde(default)]
    pub number: u32,
}

/// A percentage in `0.0..=100.0`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    /// The percentage.
    #[serde(default)]
    pub value: f64,
}

/// The service (and optionally subset and port) traffic is sent to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// The service host; short names are qualified with the rule's namespace.
    #[serde(default)]
    pub host: String,
    /// A subset defined by a DestinationRule for the host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subset: String,
    /// The port, when the service has more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// Selects workloads by their labels (networking's form, with `labels`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels a workload must all carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
}
