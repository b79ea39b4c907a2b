//! Prometheus metrics of an mTLS port.

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Labels of a handshake outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `ok`, `failed`, `timeout` or `no_identity`.
    pub result: &'static str,
}

/// How a handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeResult {
    /// The connection was handed to the server.
    Ok,
    /// TLS failed (bad or missing client certificate, protocol error, I/O).
    Failed,
    /// The client did not finish within the handshake timeout.
    Timeout,
    /// The server had no identity to present.
    NoIdentity,
}

impl HandshakeResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeResult::Ok => "ok",
            HandshakeResult::Failed => "failed",
            HandshakeResult::Timeout => "timeout",
            HandshakeResult::NoIdentity => "no_identity",
        }
    }
}

/// Handshake counters of an mTLS port.
#[derive(Debug, Default)]
pub struct TlsMetrics {
    /// Handshakes by outcome.
    pub handshakes: Family<HandshakeLabels, Counter>,
}

impl TlsMetrics {
    /// Creates the metrics and registers them under the `tls_` prefix.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self::default());
        registry.sub_registry_with_prefix("tls").register(
            "handshakes",
            "TLS handshakes on mTLS ports, by result (ok, failed, timeout, no_identity)",
            m.handshakes.clone(),
        );
        m
    }

    /// Metrics that are not exported anywhere.
    pub fn unregistered() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts one handshake.
    pub fn record(&self, result: HandshakeResult) {
        self.handshakes
            .get_or_create(&HandshakeLabels {
                result: result.as_str(),
            })
            .inc();
    }

    /// Handshakes that ended with `result` so far.
    pub fn count(&self, result: HandshakeResult) -> u64 {
        self.handshakes
            .get_or_create(&HandshakeLabels {
                result: result.as_str(),
            })
            .get()
    }
}
