//! citadel's Prometheus metrics (`citadel_` prefix).

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

/// A refusal reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// e.g. `unauthenticated`, `forbidden_san`, `weak_key`, `ttl_too_long`.
    pub reason: String,
}

/// An authenticator.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthenticatorLabels {
    /// `mtls` or `jwt`.
    pub authenticator: String,
}

/// citadel's metrics.
#[derive(Debug)]
pub struct CaMetrics {
    /// Certificates issued, by the authenticator that vouched for the caller.
    pub issued: Family<AuthenticatorLabels, Counter>,
    /// Requests refused, by reason.
    pub refused: Family<ReasonLabels, Counter>,
    /// Time to answer a CreateCertificate that succeeded.
    pub issue_seconds: Histogram,
    /// When the latest-expiring trusted root expires (unix seconds).
    pub root_expiry: Gauge,
    /// When the signing certificate (or the earliest of its chain) expires.
    pub issuer_expiry: Gauge,
    /// Trusted roots.
    pub roots: Gauge,
    /// 1 while the CA can issue, 0 while its material is unusable, expired or not
    /// yet valid.
    pub issuer_usable: Gauge,
}

impl CaMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self {
            issued: Family::default(),
            refused: Family::default(),
            issue_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            root_expiry: Gauge::default(),
            issuer_expiry: Gauge::default(),
            roots: Gauge::default(),
            issuer_usable: Gauge::default(),
        });
        let r = registry.sub_registry_with_prefix("citadel");
        r.register(
            "certificates_issued",
            "Certificates issued, by authenticator",
            m.issued.clone(),
        );
        r.register(
            "csr_refused",
            "CreateCertificate requests refused, by reason",
            m.refused.clone(),
        );
        r.register(
            "issue_duration_seconds",
            "Time to issue and record a certificate",
            m.issue_seconds.clone(),
        );
        r.register(
            "root_cert_expiry_timestamp_seconds",
            "When the latest-expiring trusted root expires",
            m.root_expiry.clone(),
        );
        r.register(
            "issuer_cert_expiry_timestamp_seconds",
            "When the signing certificate chain expires",
            m.issuer_expiry.clone(),
        );
        r.register(
            "trusted_roots",
            "Roots in the trust bundle",
            m.roots.clone(),
        );
        r.register(
            "issuer_usable",
            "1 while the CA can issue, 0 while its signing material is unusable, expired or not yet valid",
            m.issuer_usable.clone(),
        );
        m
    }

    /// Counts a refusal.
    pub fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Publishes the expiry of the authority's material, and whether it can issue
    /// at `now` (every certificate of the signing chain valid then).
    pub fn observe_material(
        &self,
        material: Result<&crate::ca::CaMaterial, &str>,
        now: time::OffsetDateTime,
    ) {
        match material {
            Ok(m) => {
                let usable = m.invalid_at(now).is_none();
                let _ = self.issuer_usable.set(i64::from(usable));
                let _ = self.issuer_expiry.set(m.chain_not_after().unix_timestamp());
                let _ = self.root_expiry.set(
                    m.roots
                        .iter()
                        .map(|r| r.not_after.unix_timestamp())
                        .max()
                        .unwrap_or_default(),
                );
                let _ = self
                    .roots
                    .set(i64::try_from(m.roots.len()).unwrap_or(i64::MAX));
            }
            Err(_) => {
                let _ = self.issuer_usable.set(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ca::{Authority, CaPolicy, CaSource};

    #[test]
    fn the_issuer_is_usable_only_while_its_chain_is_valid() {
        let tmp = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::now_utc();
        let ca = Authority::open(
            CaSource::SelfSigned(tmp.path().to_path_buf()),
            CaPolicy::default(),
            now,
        )
        .unwrap();
        let m = ca.material().unwrap();
        let metrics = CaMetrics::register(&mut Registry::default());
        let end = m.signing.not_after;
        metrics.observe_material(Ok(&m), now);
        assert_eq!(metrics.issuer_usable.get(), 1);
        assert_eq!(metrics.issuer_expiry.get(), end.unix_timestamp());
        assert_eq!(metrics.root_expiry.get(), end.unix_timestamp());
        assert_eq!(metrics.roots.get(), 1);
        metrics.observe_material(Ok(&m), end + time::Duration::seconds(1));
        assert_eq!(metrics.issuer_usable.get(), 0);
        assert_eq!(metrics.issuer_expiry.get(), end.unix_timestamp());
        metrics.observe_material(Ok(&m), now);
        assert_eq!(metrics.issuer_usable.get(), 1);
        metrics.observe_material(Err("unreadable"), now);
        assert_eq!(metrics.issuer_usable.get(), 0);
    }
}
