//! Kubernetes sources shared by Dromon's components: how every component connects to
//! the API server ([`client`]: flags, `kube::Client`, clear errors) and the Istio
//! CustomResourceDefinitions galley reads, generated from Rust types ([`crds`]), and
//! leader election between replicas through a Lease ([`leader`]).
//! It owns no port; it speaks HTTPS to the Kubernetes API server.

pub mod client;
pub mod crds;
pub mod leader;

pub use client::{ConfigSource, KubeArgs, KubeEnv, KubeError, request_error};
