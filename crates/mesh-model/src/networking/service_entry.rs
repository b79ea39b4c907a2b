//! ServiceEntry: services added to the mesh's registry, inside or outside the mesh.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Labels, Port, WorkloadSelector};

/// ServiceEntry spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    /// Hosts of the service; at least one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDRs of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Ports of the service; names and numbers unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// Inside or outside the mesh; MESH_EXTERNAL when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// How endpoints are found; NONE when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Endpoints of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntry>,
    /// Select workload entries and pods as endpoints instead of listing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Namespaces the entry is visible to (`.`, `*`, `~` or names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Accepted server identities for mutual TLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

impl ServiceEntry {
    /// The resolution in force: the one given, or NONE.
    pub fn effective_resolution(&self) -> Resolution {
        self.resolution.unwrap_or(Resolution::None)
    }
}

/// Whether a service is part of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh: no mutual TLS, no sidecars.
    MeshExternal,
    /// Inside the mesh.
    MeshInternal,
}

/// How a service's endpoints are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the connection's original destination.
    None,
    /// The listed endpoint IPs.
    Static,
    /// Resolve the hosts (or endpoint names) by DNS, all addresses used.
    Dns,
    /// Resolve by DNS, one address at a time.
    DnsRoundRobin,
}

/// One endpoint of a ServiceEntry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// IP, host name (DNS resolution) or `unix://` path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Port overrides, by service port name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    /// Labels of the endpoint.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Network the endpoint is on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// Locality (`region/zone/subzone`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locality: String,
    /// Load balancing weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Service account of the workload.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
}
