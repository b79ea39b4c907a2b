//! Pilot: the mesh's service discovery and traffic configuration component.
//!
//! Pilot merges service registries (Kubernetes Services and EndpointSlices, ServiceEntry resources)
//! into one service model and translates it, together with VirtualServices and
//! DestinationRules, into Envoy v3 resources (CDS, EDS, RDS, LDS) for sidecars and
//! proxyless gRPC clients. It will serve them over xDS ADS on port 15010 (plaintext)
//! and 15011 (mutual TLS); this crate holds the transport-free part: the
//! [`model`] and the pure [`translate`] functions.

#![warn(missing_docs)]

pub mod args;
pub mod dump;
pub mod kube;
pub mod model;
pub mod proxy;
pub mod push;
pub mod scope;
pub mod server;
pub mod translate;

pub use model::{Endpoint, Service, ServiceEntryRegistry, ServicePort, ServiceRegistry};
pub use proxy::{Proxy, ProxyKind};
pub use translate::{EnvoyResources, NamedResource, translate, translate_registry};
