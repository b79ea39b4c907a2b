//! The xDS v3 transport shared by galley and pilot.
//!
//! Galley serves validated configuration to pilot and the mixers over it (MCP over
//! xDS, one type URL per collection); pilot serves Envoy and proxyless gRPC clients
//! (CDS, EDS, LDS, RDS). Both speak `envoy.service.discovery.v3`
//! AggregatedDiscoveryService in its state-of-the-world and delta forms.
//!
//! The pieces, from data to wire:
//! - [`Snapshot`]: an immutable set of resources per type URL, each resource and each
//!   set versioned by a content hash;
//! - [`SnapshotCache`]: the current snapshot per node group, watched by streams;
//! - [`sotw::SotwStream`] and [`delta::DeltaStream`]: the per-stream protocol state
//!   machines (nonces, ACK/NACK, subscriptions), pure and transport-free;
//! - [`server::AdsServer`]: the tonic service that runs one state machine per stream;
//! - [`status::SyncStatus`]: what every connected client was sent and ACKed, for
//!   `/debug/syncz`; [`metrics::XdsMetrics`]: the Prometheus side of it.

pub mod cache;
pub mod client;
pub mod delta;
pub mod encode;
pub mod inbound;
pub mod metrics;
pub mod names;
pub mod resource;
pub mod server;
pub mod sotw;
pub mod status;
pub mod type_map;

pub use cache::{NodeGrouper, Published, SingleGroup, SnapshotCache};
pub use metrics::XdsMetrics;
pub use resource::{Snapshot, TypedResources, XdsResource};
pub use server::{AdsServer, AdsService, AllowIdentities, NodeAuthorizer, ServerOptions};
pub use status::SyncStatus;
pub use type_map::TypeMap;

/// Envoy's discovery types, re-exported for users of this crate.
pub use mesh_api::envoy::envoy::service::discovery::v3 as discovery;
/// Envoy's `Any`.
pub use mesh_api::envoy::google::protobuf::Any;

/// Well-known Envoy type URLs, in the order pushes go out (make before break).
pub mod type_url {
    /// Clusters.
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// Endpoints.
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// Listeners.
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// Routes.
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// Secrets.
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

    /// Push order for the Envoy types: clusters, endpoints, listeners, routes, secrets.
    pub const ENVOY_ORDER: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET];
}
