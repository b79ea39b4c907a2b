//! One configuration version of mixer-telemetry, compiled: metric instances'
//! expressions, rules' conditions, and prometheus handlers' metric definitions,
//! ready to turn each reported attribute bag into metric records.
//!
//! The standard mesh metrics ([`crate::defaults`]) are part of every version
//! unless turned off; a resource of the configuration with the same kind,
//! namespace and name replaces its default.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::UNIX_EPOCH,
};

use mesh_model::{Resource, Spec, security::ROOT_NAMESPACE};
use mixer_core::value::destination_namespace;
use mixer_core::{
    Bag, Value,
    expr::{Compiled, compile},
    manifest::Manifest,
};
use serde::Deserialize;

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::{Span, span, status},
};

use crate::{
    otel::{OtelExporter, OtelExporters, kv},
    prom::{Kind, LabelKey, Metric, MetricSpec, Recorded, Registry},
    sqlstore::{LogRecord, LogStore, LogStores, Target},
};

/// `metric`'s label names, shared with every earlier metric naming the same list.
fn shared_labels(
    lists: &mut HashMap<Vec<String>, Arc<[String]>>,
    metric: &Metric,
) -> Arc<[String]> {
    lists
        .entry(metric.spec().labels.clone())
        .or_insert_with(|| Arc::from(metric.spec().labels.as_slice()))
        .clone()
}

/// The dimension each of a metric's labels takes its value from (`None`: no
/// dimension of that name), one allocation per distinct pair of dimensions and
/// label list, so that consecutive metrics reading the same are told by pointer.
type Columns = Arc<[Option<Compiled>]>;

/// The [`Columns`] of `instance` for `metric`'s labels, shared.
fn shared_columns(
    columns: &mut HashMap<(usize, usize), Columns>,
    lists: &mut HashMap<Vec<String>, Arc<[String]>>,
    instance: &MetricInstance,
    metric: &Metric,
) -> Columns {
    let labels = shared_labels(lists, metric);
    // Both are kept alive by the maps they came from for the whole build.
    let key = (
        Arc::as_ptr(&instance.dimensions) as usize,
        Arc::as_ptr(&labels).cast::<String>() as usize,
    );
    columns
        .entry(key)
        .or_insert_with(|| {
            labels
                .iter()
                .map(|name| instance.dimensions.get(name).cloned())
                .collect()
        })
        .clone()
}

/// A configuration problem, naming the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// `kind/namespace/name`.
    pub resource: String,
    /// What is wrong.
    pub message: String,
}

/// Series kept at most per metric unless a handler says otherwise.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// Dimension expressions, shared by the instances that define the same ones
/// (the standard metrics all do), so a bag's label values are computed once for
/// consecutive metrics that read them alike.
type Dimensions = Arc<BTreeMap<String, Compiled>>;

struct MetricInstance {
    value: Compiled,
    dimensions: Dimensions,
}

struct LogInstance {
    name: Arc<str>,
    variables: BTreeMap<String, Compiled>,
    timestamp: Option<Compiled>,
    severity: Option<Compiled>,
}

/// What a rule feeds: a metric and the instance that builds its records, or a
/// log store and the logentry instance.
enum Feed {
    Metric {
        instance: Arc<MetricInstance>,
        /// Where the metric's label values come from.
        columns: Columns,
        metric: Arc<Metric>,
    },
    Log {
        instance: Arc<LogInstance>,
        store: Arc<LogStore>,
    },
    Span {
        instance: Arc<SpanInstance>,
        exporter: Arc<OtelExporter>,
    },
}

struct SpanInstance {
    trace_id: Compiled,
    span_id: Compiled,
    parent_span_id: Option<Compiled>,
    span_name: Compiled,
    start_time: Compiled,
    end_time: Compiled,
    client_span: Option<Compiled>,
    http_status_code: Option<Compiled>,
    span_tags: BTreeMap<String, Compiled>,
}

/// Where log entries, spans and exported metrics go, kept across versions.
#[derive(Debug)]
pub struct Sinks {
    /// sqlstore tables.
    pub logs: LogStores,
    /// OTLP collectors.
    pub otel: OtelExporters,
}

/// What a bag gave besides metrics, for the caller to hand to its sinks
/// (waiting while they are behind).
#[derive(Debug, Default)]
pub struct Outputs {
    /// Log entries, with their stores.
    pub logs: Vec<(Arc<LogStore>, LogRecord)>,
    /// Spans, with their exporters.
    pub spans: Vec<(Arc<OtelExporter>, Span)>,
}

/// A handler's outputs, by the instance that feeds each.
enum HandlerOut {
    /// Metric names.
    Prometheus(Vec<(String, String)>),
    /// One store for every logentry instance.
    SqlStore(Arc<LogStore>),
    /// A collector: metric names by instance, and tracespan instances.
    Otel(Arc<OtelExporter>, Vec<(String, String)>),
}

struct RuleImpl {
    namespace: String,
    condition: Option<Compiled>,
    feeds: Vec<Feed>,
}

/// What became of the records of one bag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Metric records counted.
    pub recorded: u64,
    /// Records refused: a new series past its metric's cardinality limit.
    pub over_limit: u64,
    /// Records that could not be built (a value or dimension that cannot be
    /// evaluated for this bag).
    pub failed: u64,
}

impl std::ops::AddAssign for Outcome {
    fn add_assign(&mut self, o: Outcome) {
        self.recorded += o.recorded;
        self.over_limit += o.over_limit;
        self.failed += o.failed;
    }
}

/// A compiled configuration.
pub struct Pipeline {
    manifest: Manifest,
    rules: Vec<RuleImpl>,
    issues: Vec<Issue>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("rules", &self.rules.len())
            .field("issues", &self.issues)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PrometheusParams {
    #[serde(default)]
    metrics: Vec<MetricParams>,
    /// Series kept at most per metric.
    #[serde(default, alias = "cardinality_limit")]
    cardinality_limit: Option<usize>,
    #[serde(default, alias = "metrics_expiration_policy")]
    metrics_expiration_policy: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetricParams {
    name: String,
    #[serde(default, alias = "instance_name")]
    instance_name: String,
    #[serde(default)]
    kind: String,
    #[serde(default, alias = "label_names")]
    label_names: Vec<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    buckets: Option<Buckets>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Buckets {
    #[serde(default, alias = "explicit_buckets")]
    explicit_buckets: Option<Explicit>,
    #[serde(default, alias = "linear_buckets")]
    linear_buckets: Option<Linear>,
    #[serde(default, alias = "exponential_buckets")]
    exponential_buckets: Option<Exponential>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Explicit {
    bounds: Vec<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Linear {
    #[serde(alias = "num_finite_buckets")]
    num_finite_buckets: u32,
    width: f64,
    #[serde(default)]
    offset: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Exponential {
    #[serde(alias = "num_finite_buckets")]
    num_finite_buckets: u32,
    scale: f64,
    #[serde(alias = "growth_factor")]
    growth_factor: f64,
}

/// Istio's default buckets for distributions without any.
const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn buckets(b: &Option<Buckets>) -> Result<Vec<f64>, String> {
    let Some(b) = b else {
        return Ok(DEFAULT_BUCKETS.to_vec());
    };
    let bounds: Vec<f64> =
        match (
            &b.explicit_buckets,
            &b.linear_buckets,
            &b.exponential_buckets,
        ) {
            (Some(e), None, None) => e.bounds.clone(),
            (None, Some(l), None) => {
                if l.width <= 0.0 {
                    return Err("linearBuckets.width must be positive".into());
                }
                (0..=l.num_finite_buckets)
                    .map(|i| l.offset + l.width * f64::from(i))
                    .collect()
            }
            (None, None, Some(e)) => {
                if e.scale <= 0.0 || e.growth_factor <= 1.0 {
                    return Err("exponentialBuckets needs scale > 0 and growthFactor > 1".into());
                }
                (0..=e.num_finite_buckets)
                    .map(|i| e.scale * e.growth_factor.powi(i32::try_from(i).unwrap_or(i32::MAX)))
                    .collect()
            }
            _ => return Err(
                "buckets: give exactly one of explicitBuckets, linearBuckets, exponentialBuckets"
                    .into(),
            ),
        };
    if bounds.is_empty()
        || bounds.windows(2).any(|w| w[0] >= w[1])
        || bounds.iter().any(|b| !b.is_finite())
    {
        return Err("bucket bounds must be finite and strictly increasing".into());
    }
    Ok(bounds)
}

fn metric_name(namespace: Option<&str>, name: &str) -> Result<String, String> {
    let full = match namespace.unwrap_or("istio") {
        "" => name.to_string(),
        ns => format!("{ns}_{name}"),
    };
    let valid = full.chars().enumerate().all(|(i, c)| {
        c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
    });
    if full.is_empty() || !valid {
        return Err(format!("{full:?} is not a Prometheus metric name"));
    }
    Ok(full)
}

fn label_name_ok(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with("__")
        && name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
}

/// `name`, `name.namespace` or Istio's `name.instance.namespace`, as
/// `name.namespace`.
fn instance_key(name: &str, namespace: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        [n] => format!("{n}.{namespace}"),
        [n, kind, ns] if *kind == "instance" || *kind == "metric" => format!("{n}.{ns}"),
        _ => name.to_string(),
    }
}

fn id(r: &Resource) -> String {
    format!("{}/{}/{}", r.kind().as_str(), r.meta.namespace, r.meta.name)
}

impl Pipeline {
    /// Compiles `resources` (telemetry kinds; others are passed over) over the
    /// `defaults`, keeping metrics in `registry` and log stores in `logs`.
    pub fn compile<'a>(
        resources: impl IntoIterator<Item = &'a Resource>,
        defaults: &[Resource],
        registry: &Registry,
        sinks: &mut Sinks,
    ) -> Pipeline {
        // The configuration's resources replace defaults of the same identity.
        let mut chosen: BTreeMap<String, &Resource> = BTreeMap::new();
        for r in defaults {
            chosen.insert(id(r), r);
        }
        for r in resources {
            if matches!(
                r.spec,
                Spec::Handler(_) | Spec::Instance(_) | Spec::Rule(_) | Spec::AttributeManifest(_)
            ) {
                chosen.insert(id(r), r);
            }
        }
        let resources: Vec<&Resource> = chosen.into_values().collect();
        let mut issues = Vec::new();
        let mut label_lists: HashMap<Vec<String>, Arc<[String]>> = HashMap::new();
        let mut label_columns: HashMap<(usize, usize), Columns> = HashMap::new();
        let mut manifest = Manifest::standard();
        for r in &resources {
            if let Spec::AttributeManifest(m) = &r.spec
                && let Err(e) = manifest.extend(m)
            {
                issues.push(Issue {
                    resource: id(r),
                    message: e.to_string(),
                });
            }
        }
        // Metric and logentry instances.
        let mut instances: HashMap<String, Arc<MetricInstance>> = HashMap::new();
        let mut log_instances: HashMap<String, Arc<LogInstance>> = HashMap::new();
        let mut span_instances: HashMap<String, Arc<SpanInstance>> = HashMap::new();
        let mut shared_dimensions: HashMap<String, Dimensions> = HashMap::new();
        for r in &resources {
            let Spec::Instance(i) = &r.spec else { continue };
            let template = i.template_name();
            let key = format!("{}.{}", r.meta.name, r.meta.namespace);
            if template == "logentry" {
                match log_instance(&key, &i.params, &manifest) {
                    Ok(l) => {
                        log_instances.insert(key, Arc::new(l));
                    }
                    Err(message) => issues.push(Issue {
                        resource: id(r),
                        message,
                    }),
                }
                continue;
            }
            if template == "tracespan" {
                match span_instance(&i.params, &manifest) {
                    Ok(s) => {
                        span_instances.insert(key, Arc::new(s));
                    }
                    Err(message) => issues.push(Issue {
                        resource: id(r),
                        message,
                    }),
                }
                continue;
            }
            if template != "metric" {
                continue;
            }
            match metric_instance(&i.params, &manifest, &mut shared_dimensions) {
                Ok(m) => {
                    instances.insert(key, Arc::new(m));
                }
                Err(message) => issues.push(Issue {
                    resource: id(r),
                    message,
                }),
            }
        }
        // Prometheus handlers: their metrics, by instance.
        let mut specs = Vec::new();
        let mut handlers: HashMap<String, HandlerOut> = HashMap::new();
        let mut otel_specs: BTreeMap<String, (Arc<OtelExporter>, Vec<MetricSpec>)> =
            BTreeMap::new();
        for r in &resources {
            let Spec::Handler(h) = &r.spec else { continue };
            let adapter = h.adapter_name();
            let key = format!("{}.{}", r.meta.name, r.meta.namespace);
            if adapter == "otel" {
                match otel_handler(&h.params, &r.meta.namespace, &mut sinks.otel) {
                    Ok((exporter, metric_specs, feeds)) => {
                        otel_specs
                            .entry(exporter.endpoint().to_string())
                            .or_insert_with(|| (exporter.clone(), Vec::new()))
                            .1
                            .extend(metric_specs);
                        handlers.insert(key, HandlerOut::Otel(exporter, feeds));
                    }
                    Err(message) => issues.push(Issue {
                        resource: id(r),
                        message,
                    }),
                }
                continue;
            }
            if adapter == "sqlstore" {
                match sqlstore_handler(&h.params, &mut sinks.logs) {
                    Ok(store) => {
                        handlers.insert(key, HandlerOut::SqlStore(store));
                    }
                    Err(message) => issues.push(Issue {
                        resource: id(r),
                        message,
                    }),
                }
                continue;
            }
            if adapter != "prometheus" {
                issues.push(Issue {
                    resource: id(r),
                    message: format!("unknown adapter {adapter:?} (prometheus, sqlstore, otel)"),
                });
                continue;
            }
            match prometheus_handler(&h.params, &r.meta.namespace) {
                Ok((metric_specs, feeds)) => {
                    specs.extend(metric_specs);
                    handlers.insert(key, HandlerOut::Prometheus(feeds));
                }
                Err(message) => issues.push(Issue {
                    resource: id(r),
                    message,
                }),
            }
        }
        // Two handlers defining one metric name: the first (by resource) wins.
        let mut seen = HashMap::new();
        specs.retain(|s: &MetricSpec| seen.insert(s.name.clone(), ()).is_none());
        let metrics = registry.replace(specs);
        let otel_metrics: HashMap<String, BTreeMap<String, Arc<Metric>>> = otel_specs
            .into_iter()
            .map(|(endpoint, (exporter, specs))| (endpoint, exporter.metrics().replace(specs)))
            .collect();
        let mut rules = Vec::new();
        for r in &resources {
            let Spec::Rule(rule) = &r.spec else { continue };
            let ns = &r.meta.namespace;
            let condition = match mixer_core::expr::compile_match(&rule.match_expr, &manifest) {
                Ok(c) => c,
                Err(message) => {
                    issues.push(Issue {
                        resource: id(r),
                        message,
                    });
                    continue;
                }
            };
            let mut feeds = Vec::new();
            for a in &rule.actions {
                let handler = if a.handler.contains('.') {
                    a.handler.clone()
                } else {
                    format!("{}.{ns}", a.handler)
                };
                let Some(defined) = handlers.get(&handler) else {
                    issues.push(Issue {
                        resource: id(r),
                        message: format!(
                            "action handler {handler} is not a configured prometheus or sqlstore handler"
                        ),
                    });
                    continue;
                };
                for i in &a.instances {
                    let key = instance_key(i, ns);
                    match defined {
                        HandlerOut::Prometheus(defined) => {
                            let Some(instance) = instances.get(&key) else {
                                issues.push(Issue {
                                    resource: id(r),
                                    message: format!(
                                        "action instance {key} is not a configured metric instance"
                                    ),
                                });
                                continue;
                            };
                            for (inst, metric) in defined {
                                if *inst == key
                                    && let Some(metric) = metrics.get(metric)
                                {
                                    feeds.push(Feed::Metric {
                                        columns: shared_columns(
                                            &mut label_columns,
                                            &mut label_lists,
                                            instance,
                                            metric,
                                        ),
                                        instance: instance.clone(),
                                        metric: metric.clone(),
                                    });
                                }
                            }
                        }
                        HandlerOut::Otel(exporter, defined) => {
                            if let Some(instance) = span_instances.get(&key) {
                                feeds.push(Feed::Span {
                                    instance: instance.clone(),
                                    exporter: exporter.clone(),
                                });
                                continue;
                            }
                            let Some(instance) = instances.get(&key) else {
                                issues.push(Issue {
                                    resource: id(r),
                                    message: format!("action instance {key} is not a configured metric or tracespan instance"),
                                });
                                continue;
                            };
                            let exported = otel_metrics.get(exporter.endpoint());
                            for (inst, metric) in defined {
                                if *inst == key
                                    && let Some(metric) = exported.and_then(|m| m.get(metric))
                                {
                                    feeds.push(Feed::Metric {
                                        columns: shared_columns(
                                            &mut label_columns,
                                            &mut label_lists,
                                            instance,
                                            metric,
                                        ),
                                        instance: instance.clone(),
                                        metric: metric.clone(),
                                    });
                                }
                            }
                        }
                        HandlerOut::SqlStore(store) => {
                            let Some(instance) = log_instances.get(&key) else {
                                issues.push(Issue {
                                    resource: id(r),
                                    message: format!("action instance {key} is not a configured logentry instance"),
                                });
                                continue;
                            };
                            feeds.push(Feed::Log {
                                instance: instance.clone(),
                                store: store.clone(),
                            });
                        }
                    }
                }
            }
            rules.push(RuleImpl {
                namespace: ns.clone(),
                condition,
                feeds,
            });
        }
        let used: Vec<Arc<LogStore>> = handlers
            .values()
            .filter_map(|h| match h {
                HandlerOut::SqlStore(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        sinks.logs.keep(&used);
        let used: Vec<Arc<OtelExporter>> = handlers
            .values()
            .filter_map(|h| match h {
                HandlerOut::Otel(e, _) => Some(e.clone()),
                _ => None,
            })
            .collect();
        sinks.otel.keep(&used);
        issues.sort_by(|a, b| a.resource.cmp(&b.resource));
        Pipeline {
            manifest,
            rules,
            issues,
        }
    }

    /// The problems found, each naming its resource.
    pub fn issues(&self) -> &[Issue] {
        &self.issues
    }

    /// The vocabulary in force.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Records what one reported bag gives every metric whose rule applies, and
    /// adds the log entries it gives to `logs` (for the caller to hand to their
    /// stores).
    pub fn record(&self, bag: &dyn Bag, outputs: &mut Outputs) -> Outcome {
        let mut out = Outcome::default();
        // Read once, and only if a rule outside the root namespace asks.
        let mut destination_ns: Option<Option<String>> = None;
        let mut labels = LabelKey::new();
        let mut scratch = String::new();
        let mut last: Option<(&Columns, bool)> = None;
        for rule in &self.rules {
            if rule.namespace != ROOT_NAMESPACE
                && destination_ns
                    .get_or_insert_with(|| destination_namespace(bag))
                    .as_deref()
                    != Some(rule.namespace.as_str())
            {
                continue;
            }
            if let Some(c) = &rule.condition
                && !c.evaluate_bool(bag).unwrap_or(false)
            {
                continue;
            }
            for feed in &rule.feeds {
                let (instance, columns, metric) = match feed {
                    Feed::Metric {
                        instance,
                        columns,
                        metric,
                    } => (instance, columns, metric),
                    Feed::Log { instance, store } => {
                        outputs
                            .logs
                            .push((store.clone(), log_record(instance, bag)));
                        continue;
                    }
                    Feed::Span { instance, exporter } => {
                        match span_of(instance, bag) {
                            Some(s) => outputs.spans.push((exporter.clone(), s)),
                            None => out.failed += 1,
                        }
                        continue;
                    }
                };
                let Some(value) = instance.value.evaluate(bag).ok().and_then(|v| number(&v)) else {
                    out.failed += 1;
                    continue;
                };
                // The previous metric read the same dimensions for the same
                // label names: its values stand.
                if let Some((last_columns, ok)) = &last
                    && Arc::ptr_eq(last_columns, columns)
                {
                    if !ok {
                        out.failed += 1;
                        continue;
                    }
                    match metric.record_key(&labels, value) {
                        Recorded::Yes => out.recorded += 1,
                        Recorded::OverLimit => out.over_limit += 1,
                    }
                    continue;
                }
                labels.clear();
                let mut ok = true;
                for column in columns.iter() {
                    match column.as_ref().map(|d| d.evaluate(bag)) {
                        Some(Ok(v)) => {
                            scratch.clear();
                            write_text(&v, &mut scratch);
                            labels.push(&scratch);
                        }
                        // A label no dimension defines is empty, as Istio's
                        // adapter leaves it.
                        None => labels.push(""),
                        Some(Err(_)) => {
                            ok = false;
                            break;
                        }
                    }
                }
                labels.finish();
                last = Some((columns, ok));
                if !ok {
                    out.failed += 1;
                    continue;
                }
                match metric.record_key(&labels, value) {
                    Recorded::Yes => out.recorded += 1,
                    Recorded::OverLimit => out.over_limit += 1,
                }
            }
        }
        out
    }
}

fn metric_instance(
    params: &serde_json::Value,
    manifest: &Manifest,
    shared: &mut HashMap<String, Dimensions>,
) -> Result<MetricInstance, String> {
    let value_text = match params.get("value") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return Err("params.value must be an expression".into()),
        None => "1".to_string(),
    };
    let value = compile(&value_text, manifest).map_err(|e| format!("params.value: {e}"))?;
    let mut dimensions = BTreeMap::new();
    if let Some(map) = params.get("dimensions").and_then(|d| d.as_object()) {
        for (k, v) in map {
            let text = v
                .as_str()
                .ok_or_else(|| format!("params.dimensions.{k} must be an expression"))?;
            let c = compile(text, manifest).map_err(|e| format!("params.dimensions.{k}: {e}"))?;
            dimensions.insert(k.clone(), c);
        }
    }
    let key = params
        .get("dimensions")
        .map(serde_json::Value::to_string)
        .unwrap_or_default();
    let dimensions = shared
        .entry(key)
        .or_insert_with(|| Arc::new(dimensions))
        .clone();
    Ok(MetricInstance { value, dimensions })
}

fn log_instance(
    name: &str,
    params: &serde_json::Value,
    manifest: &Manifest,
) -> Result<LogInstance, String> {
    let expr = |field: &str, v: &serde_json::Value| -> Result<Compiled, String> {
        let text = v
            .as_str()
            .ok_or_else(|| format!("params.{field} must be an expression"))?;
        compile(text, manifest).map_err(|e| format!("params.{field}: {e}"))
    };
    let mut variables = BTreeMap::new();
    if let Some(map) = params.get("variables").and_then(|d| d.as_object()) {
        for (k, v) in map {
            variables.insert(k.clone(), expr(&format!("variables.{k}"), v)?);
        }
    }
    let timestamp = match params.get("timestamp") {
        Some(v) => {
            let c = expr("timestamp", v)?;
            if c.result_type() != mixer_core::ValueType::Timestamp {
                return Err(format!(
                    "params.timestamp must be a TIMESTAMP expression, not {}",
                    c.result_type()
                ));
            }
            Some(c)
        }
        None => None,
    };
    let severity = params
        .get("severity")
        .map(|v| expr("severity", v))
        .transpose()?;
    Ok(LogInstance {
        name: Arc::from(name),
        variables,
        timestamp,
        severity,
    })
}

/// One log entry of `bag`: variables that cannot be evaluated are left out.
fn log_record(i: &LogInstance, bag: &dyn Bag) -> LogRecord {
    let mut vars = serde_json::Map::new();
    for (k, c) in &i.variables {
        if let Ok(v) = c.evaluate(bag) {
            vars.insert(k.clone(), json_value(&v));
        }
    }
    let at = i
        .timestamp
        .as_ref()
        .and_then(|c| c.evaluate(bag).ok())
        .and_then(|v| match v {
            Value::Timestamp(t) => Some(t),
            _ => None,
        })
        .unwrap_or_else(std::time::SystemTime::now);
    let at_ms = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let severity = i
        .severity
        .as_ref()
        .and_then(|c| c.evaluate(bag).ok())
        .map_or_else(|| "INFO".to_string(), |v| text(&v));
    LogRecord {
        at_ms,
        name: i.name.clone(),
        severity,
        variables: serde_json::Value::Object(vars).to_string(),
    }
}

fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::Int64(i) => (*i).into(),
        Value::Double(d) => {
            serde_json::Number::from_f64(*d).map_or(serde_json::Value::Null, Into::into)
        }
        Value::Bool(b) => (*b).into(),
        Value::StringMap(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        ),
        other => serde_json::Value::String(text(other)),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SqlStoreParams {
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    retention: Option<String>,
}

/// Log entries are kept this long unless a handler says otherwise.
pub const DEFAULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

fn sqlstore_handler(
    params: &serde_json::Value,
    logs: &mut LogStores,
) -> Result<Arc<LogStore>, String> {
    let p: SqlStoreParams = if params.is_null() {
        SqlStoreParams::default()
    } else {
        serde_json::from_value(params.clone()).map_err(|e| format!("sqlstore params: {e}"))?
    };
    let url = match p.database {
        Some(url) => url,
        None => logs.default_database().map(str::to_string).ok_or(
            "sqlstore params: no database named and mixer-telemetry has no --log-database",
        )?,
    };
    let retention = match &p.retention {
        Some(r) => mixer_core::expr::parse_duration(r).ok_or_else(|| {
            format!("sqlstore params: retention {r:?} is not a duration (e.g. 168h)")
        })?,
        None => DEFAULT_RETENTION,
    };
    let target = Target {
        url,
        table: p.table.unwrap_or_else(|| "mixer_log_entries".to_string()),
    };
    logs.get(target, retention)
        .map_err(|e| format!("sqlstore params: {e}"))
}

fn span_instance(params: &serde_json::Value, manifest: &Manifest) -> Result<SpanInstance, String> {
    let field = |name: &str| -> Result<Option<Compiled>, String> {
        match params.get(name) {
            None => Ok(None),
            Some(serde_json::Value::String(text)) => compile(text, manifest)
                .map(Some)
                .map_err(|e| format!("params.{name}: {e}")),
            Some(_) => Err(format!("params.{name} must be an expression")),
        }
    };
    let required = |name: &str| -> Result<Compiled, String> {
        field(name)?.ok_or_else(|| format!("tracespan needs params.{name}"))
    };
    let mut span_tags = BTreeMap::new();
    if let Some(map) = params.get("spanTags").and_then(|d| d.as_object()) {
        for (k, v) in map {
            let text = v
                .as_str()
                .ok_or_else(|| format!("params.spanTags.{k} must be an expression"))?;
            let c = compile(text, manifest).map_err(|e| format!("params.spanTags.{k}: {e}"))?;
            span_tags.insert(k.clone(), c);
        }
    }
    Ok(SpanInstance {
        trace_id: required("traceId")?,
        span_id: required("spanId")?,
        parent_span_id: field("parentSpanId")?,
        span_name: required("spanName")?,
        start_time: required("startTime")?,
        end_time: required("endTime")?,
        client_span: field("clientSpan")?,
        http_status_code: field("httpStatusCode")?,
        span_tags,
    })
}

/// Hex text as `len` bytes; a shorter id (64-bit B3 trace ids) is padded on
/// the left.
fn hex_id(text: &str, len: usize) -> Option<Vec<u8>> {
    if text.is_empty() || text.len() > len * 2 || !text.len().is_multiple_of(2) {
        return None;
    }
    let mut out = vec![0u8; len - text.len() / 2];
    for pair in text.as_bytes().chunks(2) {
        let s = std::str::from_utf8(pair).ok()?;
        out.push(u8::from_str_radix(s, 16).ok()?);
    }
    out.iter().any(|b| *b != 0).then_some(out)
}

fn time_of(c: &Compiled, bag: &dyn Bag) -> Option<u64> {
    match c.evaluate(bag).ok()? {
        Value::Timestamp(t) => t
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_nanos()).ok()),
        _ => None,
    }
}

fn any_value(v: &Value) -> AnyValue {
    AnyValue {
        value: Some(match v {
            Value::Int64(i) => any_value::Value::IntValue(*i),
            Value::Double(d) => any_value::Value::DoubleValue(*d),
            Value::Bool(b) => any_value::Value::BoolValue(*b),
            other => any_value::Value::StringValue(text(other)),
        }),
    }
}

/// The span `bag` reports, or none when its ids or times cannot be read.
fn span_of(i: &SpanInstance, bag: &dyn Bag) -> Option<Span> {
    let text_of = |c: &Compiled| c.evaluate(bag).ok().map(|v| text(&v));
    let trace_id = hex_id(&text_of(&i.trace_id)?, 16)?;
    let span_id = hex_id(&text_of(&i.span_id)?, 8)?;
    let parent_span_id = i
        .parent_span_id
        .as_ref()
        .and_then(&text_of)
        .and_then(|p| hex_id(&p, 8))
        .unwrap_or_default();
    let client = i
        .client_span
        .as_ref()
        .and_then(|c| c.evaluate_bool(bag).ok())
        .unwrap_or(false);
    let mut attributes: Vec<KeyValue> = i
        .span_tags
        .iter()
        .filter_map(|(k, c)| c.evaluate(bag).ok().map(|v| kv(k, any_value(&v))))
        .collect();
    let code = i
        .http_status_code
        .as_ref()
        .and_then(|c| c.evaluate(bag).ok())
        .and_then(|v| match v {
            Value::Int64(c) => Some(c),
            _ => None,
        });
    if let Some(code) = code {
        attributes.push(kv(
            "http.response.status_code",
            any_value(&Value::Int64(code)),
        ));
    }
    Some(Span {
        trace_id,
        span_id,
        parent_span_id,
        name: text_of(&i.span_name)?,
        kind: if client {
            span::SpanKind::Client
        } else {
            span::SpanKind::Server
        } as i32,
        start_time_unix_nano: time_of(&i.start_time, bag)?,
        end_time_unix_nano: time_of(&i.end_time, bag)?,
        attributes,
        status: code
            .filter(|c| *c >= 500)
            .map(|c| opentelemetry_proto::tonic::trace::v1::Status {
                message: format!("HTTP {c}"),
                code: status::StatusCode::Error as i32,
            }),
        ..Span::default()
    })
}

/// Metrics go to the collector this often unless a handler says otherwise.
pub const DEFAULT_EXPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

type OtelHandler = (Arc<OtelExporter>, Vec<MetricSpec>, Vec<(String, String)>);

fn otel_handler(
    params: &serde_json::Value,
    namespace: &str,
    otel: &mut OtelExporters,
) -> Result<OtelHandler, String> {
    let mut rest = params.clone();
    let map = rest
        .as_object_mut()
        .ok_or("otel params: endpoint (http://collector:4317) is required")?;
    let endpoint = match map.remove("endpoint") {
        Some(serde_json::Value::String(e))
            if e.starts_with("http://") || e.starts_with("https://") =>
        {
            e
        }
        _ => return Err(
            "otel params: endpoint must be an http:// or https:// URL of an OTLP/gRPC collector"
                .into(),
        ),
    };
    let interval = match map.remove("exportInterval") {
        None => DEFAULT_EXPORT_INTERVAL,
        Some(serde_json::Value::String(d)) => mixer_core::expr::parse_duration(&d)
            .ok_or_else(|| format!("otel params: exportInterval {d:?} is not a duration"))?,
        Some(_) => return Err("otel params: exportInterval must be a duration such as 10s".into()),
    };
    let (specs, feeds) = prometheus_handler(&rest, namespace)
        .map_err(|e| e.replace("prometheus params", "otel params"))?;
    let exporter = otel
        .get(&endpoint, interval)
        .map_err(|e| format!("otel params: {e}"))?;
    Ok((exporter, specs, feeds))
}

type HandlerMetrics = (Vec<MetricSpec>, Vec<(String, String)>);

fn prometheus_handler(
    params: &serde_json::Value,
    namespace: &str,
) -> Result<HandlerMetrics, String> {
    let p: PrometheusParams = if params.is_null() {
        PrometheusParams::default()
    } else {
        serde_json::from_value(params.clone()).map_err(|e| format!("prometheus params: {e}"))?
    };
    let _ = &p.metrics_expiration_policy;
    let max_series = p.cardinality_limit.unwrap_or(DEFAULT_MAX_SERIES).max(1);
    let mut specs = Vec::new();
    let mut feeds = Vec::new();
    for (i, m) in p.metrics.iter().enumerate() {
        let at = format!("params.metrics[{i}]");
        let name =
            metric_name(m.namespace.as_deref(), &m.name).map_err(|e| format!("{at}.name: {e}"))?;
        let kind = match m.kind.as_str() {
            "COUNTER" => Kind::Counter,
            "DISTRIBUTION" => Kind::Distribution,
            "GAUGE" | "VALUE" => Kind::Value,
            other => {
                return Err(format!(
                    "{at}.kind: {other:?} (COUNTER, DISTRIBUTION, GAUGE)"
                ));
            }
        };
        if let Some(bad) = m.label_names.iter().find(|l| !label_name_ok(l)) {
            return Err(format!("{at}.labelNames: {bad:?} is not a label name"));
        }
        if m.instance_name.is_empty() {
            return Err(format!("{at}.instanceName is required"));
        }
        let buckets = match kind {
            Kind::Distribution => buckets(&m.buckets).map_err(|e| format!("{at}.{e}"))?,
            _ => Vec::new(),
        };
        feeds.push((instance_key(&m.instance_name, namespace), name.clone()));
        specs.push(MetricSpec {
            name,
            help: if m.description.is_empty() {
                format!("{} ({})", m.name, m.instance_name)
            } else {
                m.description.clone()
            },
            kind,
            labels: m.label_names.clone(),
            buckets,
            max_series,
        });
    }
    Ok((specs, feeds))
}

/// A metric value as a number: durations in seconds.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int64(i) => Some(*i as f64),
        Value::Double(d) => Some(*d),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::Duration(d) => Some(d.as_secs_f64()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A label value as text, appended to `out`.
fn write_text(v: &Value, out: &mut String) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = match v {
        Value::String(s) => {
            out.push_str(s);
            Ok(())
        }
        Value::Int64(i) => write!(out, "{i}"),
        Value::Double(d) => write!(out, "{d}"),
        Value::Bool(b) => write!(out, "{b}"),
        Value::Ip(ip) => write!(out, "{ip}"),
        Value::Duration(d) => write!(out, "{}s", d.as_secs_f64()),
        Value::Timestamp(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => write!(out, "{}", d.as_secs()),
            Err(_) => Ok(()),
        },
        Value::Bytes(b) => b.iter().try_for_each(|x| write!(out, "{x:02x}")),
        Value::StringMap(m) => m.iter().enumerate().try_for_each(|(i, (k, v))| {
            let sep = if i == 0 { "" } else { "," };
            write!(out, "{sep}{k}={v}")
        }),
    };
}

/// A label value as text.
fn text(v: &Value) -> String {
    let mut out = String::new();
    write_text(v, &mut out);
    out
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
