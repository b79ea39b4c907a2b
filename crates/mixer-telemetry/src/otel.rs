//! The otel handler: spans (tracespan instances) and metrics (metric
//! instances) exported over OTLP/gRPC to a collector.
//!
//! Spans go out in batches as they come; when the collector fails, the exporter
//! keeps the batch and retries with backoff, and its bounded channel makes the
//! workers wait: backpressure, not loss. Metrics are aggregated here (as the
//! prometheus handler does) and exported whole, cumulatively, every export
//! interval.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{ExportMetricsServiceRequest, metrics_service_client::MetricsServiceClient},
        trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
    },
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric as OtlpMetric,
        NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
    },
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::prom::{Kind, Registry, SeriesValue};

/// Spans waiting for one exporter, at most.
const CHANNEL: usize = 10_000;
/// Spans per export request.
const BATCH: usize = 512;

/// What the exporters count.
#[derive(Debug, Clone, Default)]
pub struct OtelCounters {
    /// Spans the collector took.
    pub spans: Counter,
    /// Metric exports the collector took.
    pub metric_exports: Counter,
    /// Failed exports (retried).
    pub errors: Counter,
}

/// One collector: its span channel and the metrics aggregated for it.
#[derive(Debug)]
pub struct OtelExporter {
    endpoint: String,
    spans: mpsc::Sender<Span>,
    metrics: Arc<Registry>,
}

impl OtelExporter {
    /// The collector's endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The metrics aggregated for export.
    pub fn metrics(&self) -> &Arc<Registry> {
        &self.metrics
    }

    /// Hands a span to the exporter, waiting while it is behind.
    pub async fn send(&self, span: Span) -> Result<(), Span> {
        self.spans.send(span).await.map_err(|e| e.0)
    }
}

/// The exporters of every configuration version, by endpoint.
#[derive(Debug)]
pub struct OtelExporters {
    exporters: HashMap<String, Arc<OtelExporter>>,
    counters: OtelCounters,
    service: String,
}

impl OtelExporters {
    /// No exporters yet; `service` names the resource that reports.
    pub fn new(counters: OtelCounters, service: &str) -> Self {
        Self {
            exporters: HashMap::new(),
            counters,
            service: service.to_string(),
        }
    }

    /// The exporter for `endpoint` (`http://host:4317`), started on the current
    /// Tokio runtime when new. Its metrics go out every `interval`.
    pub fn get(&mut self, endpoint: &str, interval: Duration) -> Result<Arc<OtelExporter>, String> {
        if let Some(e) = self.exporters.get(endpoint) {
            return Ok(e.clone());
        }
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| format!("endpoint {endpoint:?}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "otel needs a Tokio runtime".to_string())?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        let metrics = Arc::new(Registry::new());
        let resource = resource(&self.service);
        runtime.spawn(export_spans(
            channel.clone(),
            rx,
            resource.clone(),
            self.counters.clone(),
        ));
        runtime.spawn(export_metrics(
            channel,
            Arc::downgrade(&metrics),
            interval.max(Duration::from_millis(100)),
            resource,
            self.counters.clone(),
        ));
        let exporter = Arc::new(OtelExporter {
            endpoint: endpoint.to_string(),
            spans: tx,
            metrics,
        });
        self.exporters
            .insert(endpoint.to_string(), exporter.clone());
        Ok(exporter)
    }

    /// Forgets the exporters no handler uses any more.
    pub fn keep(&mut self, used: &[Arc<OtelExporter>]) {
        self.exporters
            .retain(|_, e| used.iter().any(|u| Arc::ptr_eq(u, e)));
    }
}

fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![string_kv("service.name", service)],
        ..Resource::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "dromon.mixer-telemetry".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..InstrumentationScope::default()
    }
}

/// An attribute.
pub fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
        ..KeyValue::default()
    }
}

/// A string attribute.
pub fn string_kv(key: &str, value: &str) -> KeyValue {
    kv(
        key,
        AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        },
    )
}

async fn export_spans(
    channel: Channel,
    mut rx: mpsc::Receiver<Span>,
    resource: Resource,
    counters: OtelCounters,
) {
    let mut client = TraceServiceClient::new(channel);
    let mut batch: Vec<Span> = Vec::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(s) => batch.push(s),
                None => return,
            }
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans: batch.clone(),
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        };
        match client.export(req).await {
            Ok(_) => {
                counters.spans.inc_by(batch.len() as u64);
                batch.clear();
                backoff = Duration::from_millis(50);
            }
            Err(e) => {
                counters.errors.inc();
                tracing::warn!(error = %e, spans = batch.len(), retry_in = ?backoff, "spans not exported yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn attributes(names: &[String], values: &[String]) -> Vec<KeyValue> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| string_kv(n, v))
        .collect()
}

/// The OTLP form of every metric of `registry` (cumulative since `start`).
pub fn otlp_metrics(registry: &Registry, start: SystemTime, now: SystemTime) -> Vec<OtlpMetric> {
    let (start, now) = (unix_nanos(start), unix_nanos(now));
    let cumulative = AggregationTemporality::Cumulative as i32;
    registry
        .all()
        .iter()
        .map(|m| {
            let spec = m.spec();
            let series = m.series();
            let number = |labels: &[String], v: f64| NumberDataPoint {
                attributes: attributes(&spec.labels, labels),
                start_time_unix_nano: start,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsDouble(v)),
                ..NumberDataPoint::default()
            };
            let data = match spec.kind {
                Kind::Counter => metric::Data::Sum(Sum {
                    data_points: series
                        .iter()
                        .filter_map(|(l, v)| match v {
                            SeriesValue::Number(n) => Some(number(l, *n)),
                            SeriesValue::Histogram { .. } => None,
                        })
                        .collect(),
                    aggregation_temporality: cumulative,
                    is_monotonic: true,
                }),
                Kind::Value => metric::Data::Gauge(Gauge {
                    data_points: series
                        .iter()
                        .filter_map(|(l, v)| match v {
                            SeriesValue::Number(n) => Some(number(l, *n)),
                            SeriesValue::Histogram { .. } => None,
                        })
                        .collect(),
                }),
                Kind::Distribution => metric::Data::Histogram(Histogram {
                    data_points: series
                        .iter()
                        .filter_map(|(l, v)| match v {
                            SeriesValue::Histogram { counts, sum, count } => {
                                let finite: u64 = counts.iter().sum();
                                let mut bucket_counts = counts.clone();
                                bucket_counts.push(count.saturating_sub(finite));
                                Some(HistogramDataPoint {
                                    attributes: attributes(&spec.labels, l),
                                    start_time_unix_nano: start,
                                    time_unix_nano: now,
                                    count: *count,
                                    sum: Some(*sum),
                                    bucket_counts,
                                    explicit_bounds: spec.buckets.clone(),
                                    ..HistogramDataPoint::default()
                                })
                            }
                            SeriesValue::Number(_) => None,
                        })
                        .collect(),
                    aggregation_temporality: cumulative,
                }),
            };
            OtlpMetric {
                name: spec.name.clone(),
                description: spec.help.clone(),
                data: Some(data),
                ..OtlpMetric::default()
            }
        })
        .collect()
}

async fn export_metrics(
    channel: Channel,
    registry: std::sync::Weak<Registry>,
    interval: Duration,
    resource: Resource,
    counters: OtelCounters,
) {
    let mut client = MetricsServiceClient::new(channel);
    let start = SystemTime::now();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // The exporter is gone once no configuration uses it.
        let Some(r) = registry.upgrade() else { return };
        let metrics = otlp_metrics(&r, start, SystemTime::now());
        drop(r);
        if metrics.iter().all(|m| match &m.data {
            Some(metric::Data::Sum(s)) => s.data_points.is_empty(),
            Some(metric::Data::Gauge(g)) => g.data_points.is_empty(),
            Some(metric::Data::Histogram(h)) => h.data_points.is_empty(),
            _ => true,
        }) {
            continue;
        }
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        };
        match client.export(req).await {
            Ok(_) => {
                counters.metric_exports.inc();
            }
            Err(e) => {
                counters.errors.inc();
                tracing::warn!(error = %e, "metrics not exported; the next export carries them (cumulative)");
            }
        }
    }
}
