//! Prometheus metrics of an xDS server.

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Labels naming a type URL.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    /// The type URL.
    pub type_url: String,
}

/// Labels naming a type URL and how a request was classified.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The type URL.
    pub type_url: String,
    /// initial, ack, nack or stale.
    pub kind: String,
}

/// The metrics of one xDS server.
#[derive(Debug)]
pub struct XdsMetrics {
    /// Streams connected now.
    pub connected: Gauge,
    /// Responses sent, by type.
    pub pushes: Family<TypeLabels, Counter>,
    /// Requests received, by type and kind.
    pub requests: Family<RequestLabels, Counter>,
    /// NACKs received, by type.
    pub nacks: Family<TypeLabels, Counter>,
    /// Streams refused because the server was not ready.
    pub refused_not_ready: Counter,
    /// Streams refused because the client's identity may not ask for its node.
    pub refused_unauthorized: Counter,
    /// Time to compute and queue one stream's responses to a snapshot change or a
    /// request, waiting for a push slot included.
    pub push_seconds: Histogram,
    /// Time from a snapshot's publication until the stream's client ACKed every
    /// type it was sent.
    pub convergence_seconds: Histogram,
}

impl Default for XdsMetrics {
    fn default() -> Self {
        Self {
            connected: Gauge::default(),
            pushes: Family::default(),
            requests: Family::default(),
            nacks: Family::default(),
            refused_not_ready: Counter::default(),
            refused_unauthorized: Counter::default(),
            push_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            convergence_seconds: Histogram::new(exponential_buckets(0.000_5, 2.0, 16)),
        }
    }
}

impl XdsMetrics {
    /// Creates the metrics and registers them under the `xds_` prefix.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self::default());
        let r = registry.sub_registry_with_prefix("xds");
        r.register(
            "connected_clients",
            "xDS streams connected now",
            m.connected.clone(),
        );
        r.register("pushes", "xDS responses sent, by type", m.pushes.clone());
        r.register(
            "requests",
            "xDS requests received, by type and kind",
            m.requests.clone(),
        );
        r.register(
            "nacks",
            "xDS responses rejected by clients, by type",
            m.nacks.clone(),
        );
        r.register(
            "refused_not_ready",
            "xDS streams refused before the server's sources were loaded",
            m.refused_not_ready.clone(),
        );
        r.register(
            "refused_unauthorized",
            "xDS streams refused because the client's identity does not match the node it claims",
            m.refused_unauthorized.clone(),
        );
        r.register(
            "push_duration_seconds",
            "Time to compute and queue one stream's push, waiting for a push slot included",
            m.push_seconds.clone(),
        );
        r.register(
            "convergence_duration_seconds",
            "Time from a snapshot's publication until a client ACKed all of it",
            m.convergence_seconds.clone(),
        );
        m
    }

    /// Metrics that are not exported anywhere (for tests and tools).
    pub fn unregistered() -> Arc<Self> {
        Arc::new(Self::default())
    }
}
