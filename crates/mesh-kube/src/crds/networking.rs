//! `networking.istio.io`: VirtualService, DestinationRule, Gateway, ServiceEntry and
//! Sidecar; stored at v1, served at v1alpha3 and v1beta1 too.

// Each `printcolumn(...)` repeats `type_ = "string"`, which the lint mistakes for a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Object, ResourceStatus, open_object, open_objects};

/// Routing of traffic to a set of hosts: HTTP, TLS and TCP routes, first match wins.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "VirtualService",
    doc = "Routing rules for traffic to a set of hosts.",
    plural = "virtualservices",
    singular = "virtualservice",
    shortname = "vs",
    category = "istio-io",
    category = "networking-istio-io",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq",
    printcolumn(name = "Gateways", type_ = "string", json_path = ".spec.gateways"),
    printcolumn(name = "Hosts", type_ = "string", json_path = ".spec.hosts"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    /// Hosts the routes apply to (DNS names, short names, or `*`-prefixed wildcards);
    /// empty only for a delegate VirtualService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Gateways the routes are bound to (`<namespace>/<name>`, or `mesh` for the
    /// sidecars); `mesh` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Option<Vec<String>>,
    /// HTTP routes: match conditions, destinations, rewrites, retries, faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_objects")]
    pub http: Option<Vec<Object>>,
    /// TLS routes for passthrough traffic, by SNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_objects")]
    pub tls: Option<Vec<Object>>,
    /// Routes for opaque TCP traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_objects")]
    pub tcp: Option<Vec<Object>>,
    /// Namespaces the VirtualService is visible to (`.` its own, `*` all, or names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_to: Option<Vec<String>>,
}

/// Policies for the traffic to one service after routing: load balancing,
/// connection pools, outlier detection, TLS, and named subsets of its endpoints.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "DestinationRule",
    doc = "Traffic policies and subsets of one service.",
    plural = "destinationrules",
    singular = "destinationrule",
    shortname = "dr",
    category = "istio-io",
    category = "networking-istio-io",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq",
    printcolumn(name = "Host", type_ = "string", json_path = ".spec.host"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    /// The service the rule applies to; short names are qualified with the rule's
    /// namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Policies for all of the host's traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub traffic_policy: Option<Object>,
    /// Named subsets of the host's endpoints, referred to by routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsets: Option<Vec<Subset>>,
    /// Namespaces the rule is visible to (`.` its own, `*` all, or names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_to: Option<Vec<String>>,
    /// The client workloads the rule applies to; all in the namespace when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<MatchLabels>,
}

/// A named subset of a service's endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    /// The subset's name, a DNS label, used as `destination.subset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels an endpoint must carry to belong to the subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Policies for the subset, overriding the rule's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub traffic_policy: Option<Object>,
}

/// Workloads chosen by labels, as `matchLabels`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchLabels {
    /// Labels a workload must all carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
}

/// Workloads chosen by labels, as `labels`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadLabels {
    /// Labels a workload must all carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Listeners of a load balancer at the edge of the mesh (ingress or egress gateway).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Gateway",
    doc = "Listeners of a load balancer at the edge of the mesh.",
    plural = "gateways",
    singular = "gateway",
    shortname = "gw",
    category = "istio-io",
    category = "networking-istio-io",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The listeners: port, hosts served and TLS settings of each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers: Option<Vec<GatewayServer>>,
    /// Labels of the gateway workloads the configuration applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
}

/// One listener of a Gateway.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayServer {
    /// Port, protocol and name of the listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<ServicePort>,
    /// Address to bind to: an IP or a `unix://` path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Hosts served, as `host` or `<namespace>/<host>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// TLS settings: mode, certificates or credential name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub tls: Option<Object>,
    /// Where traffic is forwarded (`127.0.0.1:<port>` or a `unix://` path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// The listener's name, for stats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A port of a service or listener.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// The port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    /// The protocol: HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The port's name, a DNS label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port on the endpoints, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// A service added to the mesh's registry: an external API, or workloads the
/// platform's registry does not know.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "ServiceEntry",
    doc = "A service added to the mesh's registry.",
    plural = "serviceentries",
    singular = "serviceentry",
    shortname = "se",
    category = "istio-io",
    category = "networking-istio-io",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq",
    printcolumn(name = "Hosts", type_ = "string", json_path = ".spec.hosts"),
    printcolumn(name = "Location", type_ = "string", json_path = ".spec.location"),
    printcolumn(name = "Resolution", type_ = "string", json_path = ".spec.resolution"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    /// Hosts of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Virtual IPs or CIDR blocks of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<String>>,
    /// Ports of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ServicePort>>,
    /// MESH_EXTERNAL (default) or MESH_INTERNAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// How endpoints are found: NONE (default), STATIC, DNS or DNS_ROUND_ROBIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// Endpoints of the service: address, ports, labels, network, locality, weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_objects")]
    pub endpoints: Option<Vec<Object>>,
    /// Workload entries and pods selected as endpoints instead of listing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadLabels>,
    /// Namespaces the entry is visible to (`.` its own, `*` all, or names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_to: Option<Vec<String>>,
    /// Server identities accepted for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alt_names: Option<Vec<String>>,
}

/// The listeners and reachable hosts of the sidecars of some workloads.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Sidecar",
    doc = "Listeners and reachable hosts of some workloads' sidecars.",
    plural = "sidecars",
    singular = "sidecar",
    category = "istio-io",
    category = "networking-istio-io",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Workloads the configuration applies to; all in the namespace when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadLabels>,
    /// Inbound listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_objects")]
    pub ingress: Option<Vec<Object>>,
    /// Outbound listeners and the hosts each reaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_objects")]
    pub egress: Option<Vec<Object>>,
    /// Connection pool for inbound traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub inbound_connection_pool: Option<Object>,
    /// What to do with traffic to destinations the mesh does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub outbound_traffic_policy: Option<Object>,
}
