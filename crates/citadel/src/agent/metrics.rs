//! The agent's Prometheus metrics (`citadel_agent_` prefix).

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// The outcome of a renewal.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: String,
}

/// How a certificate was obtained.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViaLabels {
    /// `token` (first issuance, or fallback) or `mtls` (renewal with the current one).
    pub via: String,
}

/// The agent's metrics.
#[derive(Debug)]
pub struct AgentMetrics {
    /// Attempts to obtain a certificate, by result.
    pub renewals: Family<ResultLabels, Counter>,
    /// Certificates obtained, by credential used.
    pub issued: Family<ViaLabels, Counter>,
    /// When the certificate held now expires (unix seconds).
    pub cert_expiry: Gauge,
    /// 1 while the certificate held has expired (renewal keeps failing).
    pub cert_expired: Gauge,
    /// Open SDS streams.
    pub sds_streams: Gauge,
}

impl AgentMetrics {
    /// Creates and registers the metrics; `sds_streams` is the SDS server's own
    /// stream gauge, registered under the agent's name.
    pub fn register(registry: &mut Registry, sds_streams: Gauge) -> Arc<Self> {
        let m = Arc::new(Self {
            renewals: Family::default(),
            issued: Family::default(),
            cert_expiry: Gauge::default(),
            cert_expired: Gauge::default(),
            sds_streams,
        });
        let r = registry.sub_registry_with_prefix("citadel_agent");
        r.register(
            "renewals",
            "Attempts to obtain a certificate from the CA, by result",
            m.renewals.clone(),
        );
        r.register(
            "certificates",
            "Certificates obtained, by the credential presented (token or mtls)",
            m.issued.clone(),
        );
        r.register(
            "cert_expiry_timestamp_seconds",
            "When the certificate the agent holds expires",
            m.cert_expiry.clone(),
        );
        r.register(
            "cert_expired",
            "1 while the certificate the agent holds has expired",
            m.cert_expired.clone(),
        );
        r.register("sds_streams", "Open SDS streams", m.sds_streams.clone());
        m
    }

    /// Counts a renewal attempt.
    pub fn renewal(&self, ok: bool) {
        self.renewals
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
    }
}
