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
use mixer_core::{
    Bag, Value,
    expr::{Compiled, compile},
    manifest::Manifest,
};
use serde::Deserialize;

use crate::prom::{Kind, Metric, MetricSpec, Recorded, Registry};

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

struct MetricInstance {
    value: Compiled,
    dimensions: BTreeMap<String, Compiled>,
}

/// A metric a rule feeds: the instance that builds its records and the metric.
struct Feed {
    instance: Arc<MetricInstance>,
    metric: Arc<Metric>,
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
    /// `defaults`, keeping metrics in `registry`.
    pub fn compile<'a>(
        resources: impl IntoIterator<Item = &'a Resource>,
        defaults: &[Resource],
        registry: &Registry,
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
        // Metric instances.
        let mut instances: HashMap<String, Arc<MetricInstance>> = HashMap::new();
        for r in &resources {
            let Spec::Instance(i) = &r.spec else { continue };
            let template = if i.compiled_template.is_empty() {
                i.template.as_str()
            } else {
                i.compiled_template.as_str()
            };
            if template != "metric" {
                continue;
            }
            match metric_instance(&i.params, &manifest) {
                Ok(m) => {
                    instances.insert(format!("{}.{}", r.meta.name, r.meta.namespace), Arc::new(m));
                }
                Err(message) => issues.push(Issue {
                    resource: id(r),
                    message,
                }),
            }
        }
        // Prometheus handlers: their metrics, by instance.
        let mut specs = Vec::new();
        let mut handlers: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for r in &resources {
            let Spec::Handler(h) = &r.spec else { continue };
            let adapter = if h.compiled_adapter.is_empty() {
                h.adapter.as_str()
            } else {
                h.compiled_adapter.as_str()
            };
            if adapter != "prometheus" {
                issues.push(Issue {
                    resource: id(r),
                    message: format!("unknown adapter {adapter:?} (prometheus)"),
                });
                continue;
            }
            match prometheus_handler(&h.params, &r.meta.namespace) {
                Ok((metric_specs, feeds)) => {
                    specs.extend(metric_specs);
                    handlers.insert(format!("{}.{}", r.meta.name, r.meta.namespace), feeds);
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
        let mut rules = Vec::new();
        for r in &resources {
            let Spec::Rule(rule) = &r.spec else { continue };
            let ns = &r.meta.namespace;
            let condition = if rule.match_expr.trim().is_empty() {
                None
            } else {
                match compile(&rule.match_expr, &manifest) {
                    Ok(c) if c.result_type() == mixer_core::ValueType::Bool => Some(c),
                    Ok(c) => {
                        issues.push(Issue {
                            resource: id(r),
                            message: format!(
                                "match must be a BOOL expression, not {}",
                                c.result_type()
                            ),
                        });
                        continue;
                    }
                    Err(e) => {
                        issues.push(Issue {
                            resource: id(r),
                            message: format!("match: {e}"),
                        });
                        continue;
                    }
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
                            "action handler {handler} is not a configured prometheus handler"
                        ),
                    });
                    continue;
                };
                for i in &a.instances {
                    let key = instance_key(i, ns);
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
                            feeds.push(Feed {
                                instance: instance.clone(),
                                metric: metric.clone(),
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

    /// Records what one reported bag gives every metric whose rule applies.
    pub fn record(&self, bag: &dyn Bag) -> Outcome {
        let mut out = Outcome::default();
        let destination_ns = destination_namespace(bag);
        let mut labels: Vec<String> = Vec::new();
        for rule in &self.rules {
            if rule.namespace != ROOT_NAMESPACE
                && destination_ns.as_deref() != Some(rule.namespace.as_str())
            {
                continue;
            }
            if let Some(c) = &rule.condition
                && !c.evaluate_bool(bag).unwrap_or(false)
            {
                continue;
            }
            for feed in &rule.feeds {
                let Some(value) = feed
                    .instance
                    .value
                    .evaluate(bag)
                    .ok()
                    .and_then(|v| number(&v))
                else {
                    out.failed += 1;
                    continue;
                };
                labels.clear();
                let mut ok = true;
                for name in &feed.metric.spec().labels {
                    match feed.instance.dimensions.get(name).map(|d| d.evaluate(bag)) {
                        Some(Ok(v)) => labels.push(text(&v)),
                        // A label no dimension defines is empty, as Istio's
                        // adapter leaves it.
                        None => labels.push(String::new()),
                        Some(Err(_)) => {
                            ok = false;
                            break;
                        }
                    }
                }
                if !ok {
                    out.failed += 1;
                    continue;
                }
                match feed.metric.record(&labels, value) {
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
    Ok(MetricInstance { value, dimensions })
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

/// A label value as text.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Int64(i) => i.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Ip(ip) => ip.to_string(),
        Value::Duration(d) => format!("{}s", d.as_secs_f64()),
        Value::Timestamp(t) => t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
        Value::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Value::StringMap(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn destination_namespace(bag: &dyn Bag) -> Option<String> {
    let s = |name: &str| bag.get(name).and_then(|v| v.as_str().map(str::to_string));
    s("destination.namespace").or_else(|| {
        s("destination.service.host").and_then(|h| h.split('.').nth(1).map(str::to_string))
    })
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
