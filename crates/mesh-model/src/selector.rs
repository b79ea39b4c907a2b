//! Workload selection shared by security resources and DestinationRules
//! (Istio's `istio.type.v1beta1`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Selects workloads by labels (the `matchLabels` form).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels a workload must all carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// A reference to the resource a policy attaches to (e.g. a Kubernetes Gateway).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group of the target.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Kind of the target; required.
    #[serde(default)]
    pub kind: String,
    /// Name of the target; required.
    #[serde(default)]
    pub name: String,
    /// Namespace of the target; the policy's when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}
