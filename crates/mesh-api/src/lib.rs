//! Wire contracts of the Dromon control plane.
//!
//! Our own protocols (MCP resources, the CA API; the Mixer APIs as they land) are
//! generated here from `proto/` at build time, and Envoy's xDS types are re-exported
//! from `envoy-types` so every crate names one copy of them.

/// Envoy's protobuf types (xDS v3 and friends), from the `envoy-types` crate.
pub use envoy_types::pb as envoy;

/// Descriptor set of Dromon's own protos, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/dromon_descriptor.bin"));

/// Descriptor set of the Envoy services Dromon serves (ADS and what it references),
/// for gRPC server reflection.
pub const ENVOY_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptor.bin"));

/// Descriptor set of the Envoy resources and extensions pilot sends (clusters,
/// endpoints, listeners, routes and the filters and transport sockets inside them),
/// for decoding them into JSON.
pub const ENVOY_CONFIG_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_config_descriptor.bin"));

/// Mesh Configuration Protocol: the resources galley distributes.
pub mod mcp {
    /// Version 1 of the MCP resource envelope.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("dromon.mcp.v1");

        /// The `Any` type URL of every MCP resource element.
        pub const RESOURCE_TYPE_URL: &str = "type.googleapis.com/dromon.mcp.v1.Resource";
    }
}

/// The Mixer API's messages: attribute bags, wire-compatible with Istio's
/// `istio.mixer.v1`.
pub mod mixer {
    /// Package `istio.mixer.v1`.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("istio.mixer.v1");

        /// Full gRPC name of the Mixer service.
        pub const SERVICE_NAME: &str = "istio.mixer.v1.Mixer";
    }
}

/// The CA API citadel serves: Istio's `IstioCertificateService`, wire-compatible.
pub mod ca {
    /// Package `istio.v1.auth`.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("istio.v1.auth");

        /// Full gRPC name of the certificate service.
        pub const SERVICE_NAME: &str = "istio.v1.auth.IstioCertificateService";
    }
}
