//! galley's own Prometheus metrics (the xDS server's are in `mesh-xds`).

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

/// Labels naming a collection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CollectionLabels {
    /// The collection (type URL).
    pub collection: String,
}

/// Labels naming an analysis level.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LevelLabels {
    /// Info, Warning or Error.
    pub level: String,
}

/// galley's metrics.
#[derive(Debug)]
pub struct GalleyMetrics {
    /// Time from a source change to the snapshot being published.
    pub publish_seconds: Histogram,
    /// Resources served, by collection.
    pub resources: Family<CollectionLabels, Gauge>,
    /// Current refusals (invalid documents and duplicates).
    pub rejected: Gauge,
    /// Resources served at their last good version.
    pub kept: Gauge,
    /// Validation errors found, over time.
    pub validation_errors: Counter,
    /// Snapshots published.
    pub snapshots: Counter,
    /// Files in the source.
    pub files: Gauge,
    /// Current analysis messages, by level.
    pub analysis: Family<LevelLabels, Gauge>,
}

impl GalleyMetrics {
    /// Creates and registers the metrics under the `galley_` prefix.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self {
            publish_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            resources: Family::default(),
            rejected: Gauge::default(),
            kept: Gauge::default(),
            validation_errors: Counter::default(),
            snapshots: Counter::default(),
            files: Gauge::default(),
            analysis: Family::default(),
        });
        let r = registry.sub_registry_with_prefix("galley");
        r.register(
            "resources",
            "Resources served, by collection",
            m.resources.clone(),
        );
        r.register(
            "rejected_documents",
            "Documents currently refused",
            m.rejected.clone(),
        );
        r.register(
            "kept_resources",
            "Resources served at their last good version",
            m.kept.clone(),
        );
        r.register(
            "validation_errors",
            "Validation errors found",
            m.validation_errors.clone(),
        );
        r.register(
            "snapshots_published",
            "Configuration snapshots published",
            m.snapshots.clone(),
        );
        r.register(
            "config_files",
            "Configuration files in the source",
            m.files.clone(),
        );
        r.register(
            "analysis_messages",
            "Current analysis messages, by level",
            m.analysis.clone(),
        );
        m
    }
}
