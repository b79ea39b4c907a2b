//! The prometheus handler's metrics: counters, distributions (histograms with
//! configured buckets) and values (gauges), each a family of series keyed by
//! its label values, exposed in the Prometheus text format (0.0.4) or in
//! OpenMetrics, whichever the scraper asks for.
//!
//! A metric keeps at most its cardinality limit of series; a record that would
//! add one more is refused and counted, never silently dropped.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    hash::BuildHasher,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use parking_lot::{Mutex, RwLock};

/// How a metric aggregates what it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A running total: each value is added.
    Counter,
    /// A histogram: each value is observed into buckets.
    Distribution,
    /// The last value given.
    Value,
}

/// A metric's definition.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    /// The exposed name, e.g. `istio_requests_total`.
    pub name: String,
    /// Help text.
    pub help: String,
    /// Aggregation.
    pub kind: Kind,
    /// Label names, in order.
    pub labels: Vec<String>,
    /// Upper bounds of the finite buckets, ascending (distributions).
    pub buckets: Vec<f64>,
    /// Series kept at most.
    pub max_series: usize,
}

#[derive(Debug, Clone)]
enum Series {
    Number(f64),
    Histogram {
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

/// What one series holds.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesValue {
    /// A counter's total or a gauge's value.
    Number(f64),
    /// A histogram: counts per finite bucket (not cumulative; values above the
    /// last bound are in `count` only), sum and count.
    Histogram {
        /// Per finite bucket.
        counts: Vec<u64>,
        /// Sum of values.
        sum: f64,
        /// Number of values.
        count: u64,
    },
}

/// The label values of a series, encoded once per record and looked up in every
/// metric that records it with the same labels: each value's length (4 bytes,
/// little-endian) then its UTF-8 bytes, and the hash of all that. The buffers are
/// reused from one record to the next.
#[derive(Debug, Default, Clone)]
pub struct LabelKey {
    bytes: Vec<u8>,
    hash: u64,
}

/// The hasher of every [`LabelKey`]: seeded once per process, so that a key
/// hashed once serves every metric.
fn key_hasher() -> &'static foldhash::fast::RandomState {
    static HASHER: std::sync::LazyLock<foldhash::fast::RandomState> =
        std::sync::LazyLock::new(Default::default);
    &HASHER
}

impl LabelKey {
    /// An empty key.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key of `values`.
    pub fn of<S: AsRef<str>>(values: &[S]) -> Self {
        let mut key = Self::new();
        for v in values {
            key.push(v.as_ref());
        }
        key.finish();
        key
    }

    /// Starts a new key.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.hash = 0;
    }

    /// Appends a label value.
    pub fn push(&mut self, value: &str) {
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes
            .extend_from_slice(&value.as_bytes()[..len as usize]);
    }

    /// Hashes the values pushed; call before recording.
    pub fn finish(&mut self) {
        self.hash = key_hasher().hash_one(self.bytes.as_slice());
    }

    /// The label values again.
    fn values(bytes: &[u8]) -> Box<[String]> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let len = u32::from_le_bytes(*len) as usize;
            let (value, tail) = tail.split_at(len.min(tail.len()));
            out.push(String::from_utf8_lossy(value).into_owned());
            rest = tail;
        }
        out.into_boxed_slice()
    }
}

/// A series and its encoded key.
#[derive(Debug)]
struct Entry {
    key: Box<[u8]>,
    hash: u64,
    series: Series,
}

/// One metric and its series.
#[derive(Debug)]
pub struct Metric {
    spec: MetricSpec,
    series: Mutex<hashbrown::HashTable<Entry>>,
    refused: AtomicU64,
}

/// What became of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Counted.
    Yes,
    /// A new series past the cardinality limit: not counted.
    OverLimit,
}

impl Metric {
    /// An empty metric.
    pub fn new(spec: MetricSpec) -> Self {
        Self {
            spec,
            series: Mutex::new(hashbrown::HashTable::new()),
            refused: AtomicU64::new(0),
        }
    }

    /// Its definition.
    pub fn spec(&self) -> &MetricSpec {
        &self.spec
    }

    /// Records `value` for the series `labels` (one value per label name).
    pub fn record(&self, labels: &[String], value: f64) -> Recorded {
        self.record_key(&LabelKey::of(labels), value)
    }

    /// Records `value` for the series whose label values `key` holds (one per
    /// label name, hashed: [`LabelKey::finish`]).
    pub fn record_key(&self, key: &LabelKey, value: f64) -> Recorded {
        let mut series = self.series.lock();
        let bytes = key.bytes.as_slice();
        let s = match series.find_mut(key.hash, |e| *e.key == *bytes) {
            Some(e) => &mut e.series,
            None => {
                if series.len() >= self.spec.max_series {
                    drop(series);
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return Recorded::OverLimit;
                }
                let fresh = match self.spec.kind {
                    Kind::Counter | Kind::Value => Series::Number(0.0),
                    Kind::Distribution => Series::Histogram {
                        counts: vec![0; self.spec.buckets.len()],
                        sum: 0.0,
                        count: 0,
                    },
                };
                let entry = Entry {
                    key: bytes.into(),
                    hash: key.hash,
                    series: fresh,
                };
                &mut series
                    .insert_unique(key.hash, entry, |e| e.hash)
                    .into_mut()
                    .series
            }
        };
        match s {
            Series::Number(n) => match self.spec.kind {
                Kind::Value => *n = value,
                _ => *n += value,
            },
            Series::Histogram { counts, sum, count } => {
                // Buckets are cumulative when exposed; here each value counts once,
                // in the first bucket whose bound holds it (none: +Inf only).
                if let Some(i) = self.spec.buckets.iter().position(|b| value <= *b) {
                    counts[i] += 1;
                }
                *sum += value;
                *count += 1;
            }
        }
        Recorded::Yes
    }

    /// Records refused for the cardinality limit.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Series held.
    pub fn len(&self) -> usize {
        self.series.lock().len()
    }

    /// Whether it holds no series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every series: its label values and what it holds.
    pub fn series(&self) -> Vec<(Box<[String]>, SeriesValue)> {
        self.series
            .lock()
            .iter()
            .map(|e| {
                let v = match &e.series {
                    Series::Number(n) => SeriesValue::Number(*n),
                    Series::Histogram { counts, sum, count } => SeriesValue::Histogram {
                        counts: counts.clone(),
                        sum: *sum,
                        count: *count,
                    },
                };
                (LabelKey::values(&e.key), v)
            })
            .collect()
    }

    /// The value of one series (counter or gauge), for tests and debugging.
    pub fn value(&self, labels: &[&str]) -> Option<f64> {
        let key = LabelKey::of(labels);
        let series = self.series.lock();
        match series
            .find(key.hash, |e| *e.key == *key.bytes)
            .map(|e| &e.series)
        {
            Some(Series::Number(n)) => Some(*n),
            Some(Series::Histogram { count, .. }) => Some(*count as f64),
            None => None,
        }
    }
}

/// The exposition formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    /// Its content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Every metric the prometheus handlers define, by exposed name. Metrics outlive
/// configuration versions while their definition stays the same.
#[derive(Debug, Default)]
pub struct Registry {
    metrics: RwLock<BTreeMap<String, Arc<Metric>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The metrics a new configuration version defines: an existing metric with
    /// the same definition is kept (with its series), a changed one starts
    /// afresh, and metrics no longer defined are dropped.
    pub fn replace(&self, specs: Vec<MetricSpec>) -> BTreeMap<String, Arc<Metric>> {
        let mut metrics = self.metrics.write();
        let mut next = BTreeMap::new();
        for spec in specs {
            let kept = metrics.get(&spec.name).filter(|m| m.spec == spec).cloned();
            let name = spec.name.clone();
            next.insert(name, kept.unwrap_or_else(|| Arc::new(Metric::new(spec))));
        }
        *metrics = next.clone();
        next
    }

    /// Every metric, by name.
    pub fn all(&self) -> Vec<Arc<Metric>> {
        self.metrics.read().values().cloned().collect()
    }

    /// A metric by exposed name.
    pub fn get(&self, name: &str) -> Option<Arc<Metric>> {
        self.metrics.read().get(name).cloned()
    }

    /// Every metric in `format`.
    pub fn encode(&self, format: Format) -> String {
        let metrics: Vec<Arc<Metric>> = self.metrics.read().values().cloned().collect();
        let mut out = String::new();
        for m in metrics {
            encode_metric(&m, format, &mut out);
        }
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

/// Help text escaped for `format`: backslashes and line feeds in both; in
/// OpenMetrics help is an escaped string like a label value, quotes included.
fn escape_help(text: &str, format: Format) -> String {
    match format {
        Format::Text => text.replace('\\', "\\\\").replace('\n', "\\n"),
        Format::OpenMetrics => escape_value(text),
    }
}

fn escape_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else {
        format!("{v}")
    }
}

fn labels(names: &[String], values: &[String], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape_value(v)))
        .collect();
    if let Some((n, v)) = extra {
        parts.push(format!("{n}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn encode_metric(m: &Metric, format: Format, out: &mut String) {
    let spec = &m.spec;
    let mut series: Vec<(Box<[String]>, Series)> = m
        .series
        .lock()
        .iter()
        .map(|e| (LabelKey::values(&e.key), e.series.clone()))
        .collect();
    series.sort_by(|a, b| a.0.cmp(&b.0));
    // OpenMetrics names a counter family without `_total`, and its samples with.
    let (family, sample) = match (format, spec.kind) {
        (Format::OpenMetrics, Kind::Counter) => {
            let base = spec.name.strip_suffix("_total").unwrap_or(&spec.name);
            (base.to_string(), format!("{base}_total"))
        }
        _ => (spec.name.clone(), spec.name.clone()),
    };
    let type_name = match spec.kind {
        Kind::Counter => "counter",
        Kind::Distribution => "histogram",
        Kind::Value => "gauge",
    };
    let _ = writeln!(out, "# HELP {family} {}", escape_help(&spec.help, format));
    let _ = writeln!(out, "# TYPE {family} {type_name}");
    for (values, s) in &series {
        match s {
            Series::Number(n) => {
                let _ = writeln!(
                    out,
                    "{sample}{} {}",
                    labels(&spec.labels, values, None),
                    number(*n)
                );
            }
            Series::Histogram { counts, sum, count } => {
                let mut cumulative = 0;
                for (bound, c) in spec.buckets.iter().zip(counts) {
                    cumulative += c;
                    let le = number(*bound);
                    let _ = writeln!(
                        out,
                        "{family}_bucket{} {cumulative}",
                        labels(&spec.labels, values, Some(("le", &le)))
                    );
                }
                let _ = writeln!(
                    out,
                    "{family}_bucket{} {count}",
                    labels(&spec.labels, values, Some(("le", "+Inf")))
                );
                let l = labels(&spec.labels, values, None);
                let _ = writeln!(out, "{family}_sum{l} {}", number(*sum));
                let _ = writeln!(out, "{family}_count{l} {count}");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(name: &str, kind: Kind) -> MetricSpec {
        MetricSpec {
            name: name.into(),
            help: "help \\ text".into(),
            kind,
            labels: vec!["code".into(), "dest".into()],
            buckets: vec![0.1, 1.0],
            max_series: 2,
        }
    }

    fn l(a: &str, b: &str) -> Vec<String> {
        vec![a.to_string(), b.to_string()]
    }

    #[test]
    fn counters_add_gauges_set_histograms_bucket() {
        let c = Metric::new(spec("requests_total", Kind::Counter));
        c.record(&l("200", "a"), 1.0);
        c.record(&l("200", "a"), 2.0);
        assert_eq!(c.value(&["200", "a"]), Some(3.0));
        let g = Metric::new(spec("size", Kind::Value));
        g.record(&l("200", "a"), 5.0);
        g.record(&l("200", "a"), 2.0);
        assert_eq!(g.value(&["200", "a"]), Some(2.0));
        let r = Registry::new();
        r.replace(vec![spec("latency", Kind::Distribution)]);
        let h = r.get("latency").unwrap();
        for v in [0.05, 0.1, 0.5, 3.0] {
            h.record(&l("200", "a\"b"), v);
        }
        let text = r.encode(Format::Text);
        assert!(text.contains("# TYPE latency histogram"), "{text}");
        assert!(
            text.contains(r#"latency_bucket{code="200",dest="a\"b",le="0.1"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"latency_bucket{code="200",dest="a\"b",le="1"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"latency_bucket{code="200",dest="a\"b",le="+Inf"} 4"#),
            "{text}"
        );
        assert!(
            text.contains(r#"latency_sum{code="200",dest="a\"b"} 3.65"#),
            "{text}"
        );
        assert!(
            text.contains(r#"latency_count{code="200",dest="a\"b"} 4"#),
            "{text}"
        );
    }

    #[test]
    fn the_cardinality_limit_refuses_new_series_and_counts_them() {
        let c = Metric::new(spec("requests_total", Kind::Counter));
        assert_eq!(c.record(&l("200", "a"), 1.0), Recorded::Yes);
        assert_eq!(c.record(&l("500", "a"), 1.0), Recorded::Yes);
        assert_eq!(c.record(&l("503", "a"), 1.0), Recorded::OverLimit);
        // Existing series still count.
        assert_eq!(c.record(&l("200", "a"), 1.0), Recorded::Yes);
        assert_eq!((c.len(), c.refused()), (2, 1));
    }

    #[test]
    fn formats_follow_the_scraper() {
        let r = Registry::new();
        r.replace(vec![spec("istio_requests_total", Kind::Counter)]);
        r.get("istio_requests_total")
            .unwrap()
            .record(&l("200", "x"), 7.0);
        let text = r.encode(Format::from_accept(Some("text/plain")));
        assert!(
            text.contains("# TYPE istio_requests_total counter\n"),
            "{text}"
        );
        assert!(text.contains("istio_requests_total{code=\"200\",dest=\"x\"} 7\n"));
        assert!(text.contains("# HELP istio_requests_total help \\\\ text\n"));
        let om = r.encode(Format::from_accept(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )));
        assert!(om.contains("# TYPE istio_requests counter\n"), "{om}");
        assert!(om.contains("istio_requests_total{code=\"200\",dest=\"x\"} 7\n"));
        assert!(om.ends_with("# EOF\n"));
        // Quotes in help are escaped in OpenMetrics only.
        let mut quoted = spec("quoted_total", Kind::Counter);
        quoted.help = "the \"main\" path".into();
        r.replace(vec![quoted]);
        assert!(
            r.encode(Format::Text)
                .contains("# HELP quoted_total the \"main\" path\n")
        );
        assert!(
            r.encode(Format::OpenMetrics)
                .contains(r#"# HELP quoted the \"main\" path"#)
        );
    }

    #[test]
    fn unchanged_metrics_keep_their_series_across_versions() {
        let r = Registry::new();
        r.replace(vec![spec("a_total", Kind::Counter)]);
        r.get("a_total").unwrap().record(&l("1", "2"), 1.0);
        r.replace(vec![spec("a_total", Kind::Counter)]);
        assert_eq!(r.get("a_total").unwrap().value(&["1", "2"]), Some(1.0));
        let mut changed = spec("a_total", Kind::Counter);
        changed.labels.pop();
        r.replace(vec![changed]);
        assert!(r.get("a_total").unwrap().is_empty());
    }
}
