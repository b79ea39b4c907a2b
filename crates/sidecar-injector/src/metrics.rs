//! The injector's metrics.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

use crate::webhook::Outcome;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Counters of reviews by outcome, and their handling time.
#[derive(Debug)]
pub struct Metrics {
    requests: Counter,
    injected: Counter,
    skipped: Family<ReasonLabels, Counter>,
    ignored: Counter,
    failed: Family<ReasonLabels, Counter>,
    duration: Histogram,
    config_reloads: Family<ReasonLabels, Counter>,
}

impl Metrics {
    /// Registers the metrics.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            requests: Counter::default(),
            injected: Counter::default(),
            skipped: Family::default(),
            ignored: Counter::default(),
            failed: Family::default(),
            duration: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
            ]),
            config_reloads: Family::default(),
        };
        registry.register(
            "sidecar_injection_requests",
            "Admission reviews received",
            metrics.requests.clone(),
        );
        registry.register(
            "sidecar_injection_success",
            "Pods injected",
            metrics.injected.clone(),
        );
        registry.register(
            "sidecar_injection_skip",
            "Pods left alone, by reason",
            metrics.skipped.clone(),
        );
        registry.register(
            "sidecar_injection_ignored",
            "Reviews that were not pod creations, allowed unchanged",
            metrics.ignored.clone(),
        );
        registry.register(
            "sidecar_injection_failure",
            "Reviews refused, by reason",
            metrics.failed.clone(),
        );
        registry.register(
            "sidecar_injection_duration_seconds",
            "Time to answer a review",
            metrics.duration.clone(),
        );
        registry.register(
            "sidecar_injector_config_reloads",
            "Configuration file reloads, by result",
            metrics.config_reloads.clone(),
        );
        Arc::new(metrics)
    }

    /// A set not registered anywhere (tests, offline injection).
    pub fn unregistered() -> Arc<Self> {
        Self::register(&mut Registry::default())
    }

    /// Counts one review.
    pub fn record(&self, outcome: &Outcome, elapsed: Duration) {
        self.requests.inc();
        match outcome {
            Outcome::Injected => {
                self.injected.inc();
            }
            Outcome::Skipped(reason) => {
                self.skipped
                    .get_or_create(&ReasonLabels {
                        reason: reason.as_str(),
                    })
                    .inc();
            }
            Outcome::Ignored => {
                self.ignored.inc();
            }
            Outcome::Failed(reason) => {
                self.failed.get_or_create(&ReasonLabels { reason }).inc();
            }
        }
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a configuration reload (`ok` or `error`).
    pub fn config_reload(&self, reason: &'static str) {
        self.config_reloads
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}
