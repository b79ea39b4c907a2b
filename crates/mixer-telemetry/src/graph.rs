//! The service graph: which workloads call which services, with request and
//! error rates over the last minute, built from the reports themselves (no
//! configuration), served as JSON, as Graphviz DOT, and as a page that draws it.
//!
//! Each request is counted once: from the server side's report (reporter
//! `inbound`, or unnamed). A request is an error when its response code is 500
//! or more. The source node is the calling workload (`name.namespace`), the
//! destination its service host; what a report does not name is `unknown`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use mixer_core::{AttrName, Bag, Value};
use parking_lot::Mutex;
use serde::Serialize;

/// Seconds of history kept per edge (the longest window).
pub const MAX_WINDOW_SECS: u64 = 60;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: u64,
    requests: u64,
    errors: u64,
}

#[derive(Debug)]
struct Edge {
    buckets: [Bucket; MAX_WINDOW_SECS as usize],
    last: u64,
}

impl Default for Edge {
    fn default() -> Self {
        Self {
            buckets: [Bucket::default(); MAX_WINDOW_SECS as usize],
            last: 0,
        }
    }
}

/// One edge of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeView {
    /// Calling workload.
    pub source: String,
    /// Called service.
    pub target: String,
    /// Requests in the window.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
    /// Requests per second over the window.
    pub request_rate: f64,
    /// Errors / requests: the fraction of the window's requests that failed
    /// (0 to 1), not a rate per second.
    pub error_rate: f64,
}

/// The graph over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphView {
    /// The window, in seconds.
    pub window_seconds: u64,
    /// Every node with an edge in the window, sorted.
    pub nodes: Vec<String>,
    /// Every edge with requests in the window, sorted.
    pub edges: Vec<EdgeView>,
}

/// Edges by source, then target: a known edge is found without allocating.
type Edges = HashMap<Arc<str>, HashMap<Arc<str>, Edge>>;

/// The service graph.
#[derive(Debug, Default)]
pub struct ServiceGraph {
    edges: Mutex<Edges>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The attributes the graph reads, compiled once.
struct Names {
    reporter: AttrName,
    source: AttrName,
    source_namespace: AttrName,
    host: AttrName,
    destination: AttrName,
    code: AttrName,
}

fn names() -> &'static Names {
    static NAMES: std::sync::LazyLock<Names> = std::sync::LazyLock::new(|| Names {
        reporter: AttrName::new("context.reporter.kind"),
        source: AttrName::new("source.workload.name"),
        source_namespace: AttrName::new("source.workload.namespace"),
        host: AttrName::new("destination.service.host"),
        destination: AttrName::new("destination.workload.name"),
        code: AttrName::new("response.code"),
    });
    &NAMES
}

fn text(bag: &dyn Bag, name: &AttrName) -> Option<Arc<str>> {
    match bag.get_attr(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

impl ServiceGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts the request `bag` reports, if it is the server side's report.
    pub fn record(&self, bag: &dyn Bag) {
        self.record_at(bag, now_secs());
    }

    fn record_at(&self, bag: &dyn Bag, second: u64) {
        thread_local! {
            static SOURCE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        let n = names();
        if text(bag, &n.reporter).as_deref() == Some("outbound") {
            return;
        }
        let target = text(bag, &n.host).or_else(|| text(bag, &n.destination));
        let target = target.as_deref().unwrap_or("unknown");
        let error = matches!(bag.get_attr(&n.code), Some(Value::Int64(c)) if c >= 500);
        let (name, namespace) = (text(bag, &n.source), text(bag, &n.source_namespace));
        SOURCE.with_borrow_mut(|source| {
            source.clear();
            match (&name, &namespace) {
                (Some(n), Some(ns)) => {
                    source.push_str(n);
                    source.push('.');
                    source.push_str(ns);
                }
                (Some(n), None) => source.push_str(n),
                _ => source.push_str("unknown"),
            }
            self.count(source, target, error, second);
        });
    }

    fn count(&self, source: &str, target: &str, error: bool, second: u64) {
        let mut edges = self.edges.lock();
        let targets = match edges.get_mut(source) {
            Some(t) => t,
            None => edges.entry(Arc::from(source)).or_default(),
        };
        let edge = match targets.get_mut(target) {
            Some(e) => e,
            None => targets.entry(Arc::from(target)).or_default(),
        };
        let b = &mut edge.buckets[(second % MAX_WINDOW_SECS) as usize];
        if b.second != second {
            *b = Bucket {
                second,
                ..Bucket::default()
            };
        }
        b.requests += 1;
        b.errors += u64::from(error);
        edge.last = edge.last.max(second);
    }

    /// The graph over the last `window` seconds (1 to 60).
    pub fn view(&self, window: u64) -> GraphView {
        self.view_at(window, now_secs())
    }

    fn view_at(&self, window: u64, now: u64) -> GraphView {
        let window = window.clamp(1, MAX_WINDOW_SECS);
        let mut edges = self.edges.lock();
        // Edges idle for the longest window are forgotten.
        for targets in edges.values_mut() {
            targets.retain(|_, e| e.last + MAX_WINDOW_SECS > now);
        }
        edges.retain(|_, targets| !targets.is_empty());
        let mut out = Vec::new();
        let mut nodes = BTreeSet::new();
        for (source, target, e) in edges
            .iter()
            .flat_map(|(s, targets)| targets.iter().map(move |(t, e)| (s, t, e)))
        {
            let (requests, errors) = e
                .buckets
                .iter()
                .filter(|b| b.second + window > now && b.second <= now)
                .fold((0, 0), |(r, x), b| (r + b.requests, x + b.errors));
            if requests == 0 {
                continue;
            }
            nodes.insert(source.to_string());
            nodes.insert(target.to_string());
            out.push(EdgeView {
                source: source.to_string(),
                target: target.to_string(),
                requests,
                errors,
                request_rate: requests as f64 / window as f64,
                error_rate: errors as f64 / requests as f64,
            });
        }
        out.sort_by(|a, b| (&a.source, &a.target).cmp(&(&b.source, &b.target)));
        GraphView {
            window_seconds: window,
            nodes: nodes.into_iter().collect(),
            edges: out,
        }
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl GraphView {
    /// Graphviz DOT.
    pub fn dot(&self) -> String {
        let mut out = String::from("digraph mesh {\n  rankdir=LR;\n");
        for n in &self.nodes {
            let _ = writeln!(out, "  \"{}\";", dot_escape(n));
        }
        for e in &self.edges {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [label=\"{:.2} rps, {:.1}% errors\"{}];",
                dot_escape(&e.source),
                dot_escape(&e.target),
                e.request_rate,
                e.error_rate * 100.0,
                if e.errors > 0 { ", color=red" } else { "" }
            );
        }
        out.push_str("}\n");
        out
    }

    /// A page drawing the graph as SVG (nodes on a circle), refreshing itself.
    pub fn html(&self) -> String {
        const W: f64 = 900.0;
        const H: f64 = 640.0;
        let n = self.nodes.len().max(1) as f64;
        let (cx, cy, r) = (W / 2.0, H / 2.0, (H / 2.0 - 80.0).max(50.0));
        let pos: BTreeMap<&str, (f64, f64)> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let a = std::f64::consts::TAU * i as f64 / n - std::f64::consts::FRAC_PI_2;
                (name.as_str(), (cx + r * a.cos(), cy + r * a.sin()))
            })
            .collect();
        let mut svg = String::new();
        for e in &self.edges {
            let (Some(&(x1, y1)), Some(&(x2, y2))) =
                (pos.get(e.source.as_str()), pos.get(e.target.as_str()))
            else {
                continue;
            };
            let color = if e.errors > 0 { "#c0392b" } else { "#7f8c8d" };
            let width = 1.0 + e.request_rate.log10().max(0.0) * 2.0;
            let _ = write!(
                svg,
                r#"<g class="edge" data-source="{s}" data-target="{t}" data-requests="{req}" data-errors="{err}"><line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{color}" stroke-width="{width:.1}" marker-end="url(#arrow)"/><text x="{mx:.1}" y="{my:.1}" class="rate">{rate:.2} rps · {pct:.1}% err</text></g>"#,
                s = html_escape(&e.source),
                t = html_escape(&e.target),
                req = e.requests,
                err = e.errors,
                mx = (x1 + x2) / 2.0,
                my = (y1 + y2) / 2.0,
                rate = e.request_rate,
                pct = e.error_rate * 100.0,
            );
        }
        for (name, (x, y)) in &pos {
            let _ = write!(
                svg,
                r#"<g class="node" data-name="{n}"><circle cx="{x:.1}" cy="{y:.1}" r="18"/><text x="{x:.1}" y="{ty:.1}">{n}</text></g>"#,
                n = html_escape(name),
                ty = y + 34.0,
            );
        }
        format!(
            r##"<!doctype html>
<html><head><meta charset="utf-8"><title>Dromon service graph</title>
<style>
body {{ font-family: sans-serif; margin: 1em; color: #2c3e50; }}
circle {{ fill: #3498db; stroke: #1f618d; }}
text {{ font-size: 12px; text-anchor: middle; }}
text.rate {{ fill: #555; font-size: 11px; }}
</style></head>
<body>
<h1>Service graph</h1>
<p id="summary">{nodes} services, {edges} edges, last {window} s. <a href="graph.json?window={window}">JSON</a> · <a href="graph.dot?window={window}">DOT</a></p>
<svg id="graph" width="{W}" height="{H}" viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="28" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#7f8c8d"/></marker></defs>
{svg}
</svg>
<script>setTimeout(function () {{ location.reload(); }}, 5000);</script>
</body></html>
"##,
            nodes = self.nodes.len(),
            edges = self.edges.len(),
            window = self.window_seconds,
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use mixer_core::wire::AttributeBag;

    use super::*;

    fn bag(src: &str, dst: &str, code: i64, reporter: &str) -> AttributeBag {
        let mut b = AttributeBag::new();
        b.insert("source.workload.name", Value::from(src));
        b.insert("source.workload.namespace", Value::from("bookinfo"));
        b.insert("destination.service.host", Value::from(dst));
        b.insert("response.code", Value::Int64(code));
        b.insert("context.reporter.kind", Value::from(reporter));
        b
    }

    #[test]
    fn edges_count_server_side_reports_over_the_window() {
        let g = ServiceGraph::new();
        let t = 1_000_000;
        for i in 0..30 {
            g.record_at(
                &bag(
                    "productpage-v1",
                    "reviews",
                    if i % 10 == 0 { 503 } else { 200 },
                    "inbound",
                ),
                t,
            );
            // The client's report of the same request is not counted again.
            g.record_at(&bag("productpage-v1", "reviews", 200, "outbound"), t);
        }
        for _ in 0..10 {
            g.record_at(&bag("reviews-v2", "ratings", 200, "inbound"), t - 30);
        }
        let v = g.view_at(60, t);
        assert_eq!(
            v.nodes,
            [
                "productpage-v1.bookinfo",
                "ratings",
                "reviews",
                "reviews-v2.bookinfo"
            ]
        );
        assert_eq!(v.edges.len(), 2);
        let e = &v.edges[0];
        assert_eq!(
            (e.source.as_str(), e.target.as_str()),
            ("productpage-v1.bookinfo", "reviews")
        );
        assert_eq!((e.requests, e.errors), (30, 3));
        assert!((e.request_rate - 0.5).abs() < 1e-9 && (e.error_rate - 0.1).abs() < 1e-9);
        // A shorter window leaves the older edge out.
        assert_eq!(g.view_at(10, t).edges.len(), 1);
        // A minute later, nothing is left.
        assert!(g.view_at(60, t + 90).edges.is_empty());
        let dot = v.dot();
        assert!(dot.contains("\"productpage-v1.bookinfo\" -> \"reviews\" [label=\"0.50 rps, 10.0% errors\", color=red];"), "{dot}");
        let html = v.html();
        assert!(html.contains(r#"data-source="productpage-v1.bookinfo" data-target="reviews" data-requests="30" data-errors="3""#));
        assert_eq!(html.matches("class=\"node\"").count(), 4);
    }
}
