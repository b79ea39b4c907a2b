//! Envoy's access log service mapped onto the attribute vocabulary: each HTTP or
//! TCP log entry becomes the bag a Mixer Report would carry for the same
//! request or connection.
//!
//! The reporting proxy is named by the stream's first message (its node): an
//! entry whose upstream cluster is `outbound|...` was reported by the client's
//! proxy (`context.reporter.kind` outbound, the node describes the source),
//! others by the server's (inbound, the node describes the destination). The
//! node's Istio metadata `WORKLOAD_NAME`, `NAMESPACE` and `LABELS` give that
//! side's workload name, namespace and labels.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use mesh_api::envoy::envoy::{
    config::core::v3::{Address, Node, RequestMethod},
    data::accesslog::v3::{AccessLogCommon, HttpAccessLogEntry, TcpAccessLogEntry},
};
use mixer_core::{
    Value,
    envoy::{cluster_host, socket_address},
    wire::AttributeBag,
};

/// What the stream's node says about the reporting workload.
#[derive(Debug, Clone, Default)]
pub struct Reporter {
    workload: Option<String>,
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
}

impl Reporter {
    /// Reads a node's Istio metadata.
    pub fn from_node(node: &Node) -> Self {
        let mut r = Reporter::default();
        let Some(meta) = &node.metadata else {
            return r;
        };
        let text = |k: &str| match meta.fields.get(k).and_then(|v| v.kind.as_ref()) {
            Some(prost_kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        r.workload = text("WORKLOAD_NAME");
        r.namespace = text("NAMESPACE");
        if let Some(Some(prost_kind::StructValue(labels))) =
            meta.fields.get("LABELS").map(|v| v.kind.as_ref())
        {
            for (k, v) in &labels.fields {
                if let Some(prost_kind::StringValue(s)) = &v.kind {
                    r.labels.insert(k.clone(), s.clone());
                }
            }
        }
        r
    }
}

use mesh_api::envoy::google::protobuf::value::Kind as prost_kind;

fn duration(d: &Option<mesh_api::envoy::google::protobuf::Duration>) -> Option<Duration> {
    let d = d.as_ref()?;
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    Some(Duration::new(secs, nanos))
}

fn address(bag: &mut AttributeBag, side: &str, a: &Option<Address>) {
    if let Some((ip, port)) = a.as_ref().and_then(socket_address) {
        bag.insert(&format!("{side}.ip"), Value::Ip(ip));
        if let Some(port) = port {
            bag.insert(&format!("{side}.port"), Value::Int64(i64::from(port)));
        }
    }
}

fn text(bag: &mut AttributeBag, name: &str, v: &str) {
    if !v.is_empty() {
        bag.insert(name, Value::from(v));
    }
}

fn int(v: u64) -> Value {
    Value::Int64(i64::try_from(v).unwrap_or(i64::MAX))
}

/// The attributes every entry has: addresses, cluster, times, TLS, reporter.
fn common(bag: &mut AttributeBag, c: &AccessLogCommon, reporter: &Reporter) {
    address(bag, "source", &c.downstream_remote_address);
    address(bag, "destination", &c.downstream_local_address);
    let outbound = c.upstream_cluster.starts_with("outbound|");
    bag.insert(
        "context.reporter.kind",
        Value::from(if outbound { "outbound" } else { "inbound" }),
    );
    if !c.upstream_cluster.is_empty() {
        let host = cluster_host(&c.upstream_cluster);
        bag.insert("destination.service.host", Value::from(host));
        let mut parts = host.split('.');
        if let (Some(name), Some(ns)) = (parts.next(), parts.next()) {
            bag.insert("destination.service.name", Value::from(name));
            bag.insert("destination.service.namespace", Value::from(ns));
        }
    }
    if let Some(t) = &c.start_time
        && let (Ok(secs), Ok(nanos)) = (u64::try_from(t.seconds), u32::try_from(t.nanos))
        && nanos < 1_000_000_000
    {
        bag.insert(
            "request.time",
            Value::Timestamp(UNIX_EPOCH + Duration::new(secs, nanos)),
        );
    }
    if let Some(d) = duration(&c.time_to_last_downstream_tx_byte) {
        bag.insert("response.duration", Value::Duration(d));
    }
    if let Some(tls) = &c.tls_properties {
        let peer = tls
            .peer_certificate_properties
            .as_ref()
            .and_then(|p| {
                p.subject_alt_name.iter().find_map(|san| match &san.san {
                    Some(
                        mesh_api::envoy::envoy::data::accesslog::v3::tls_properties::certificate_properties::subject_alt_name::San::Uri(u),
                    ) => Some(u.clone()),
                    _ => None,
                })
            });
        bag.insert("connection.mtls", Value::Bool(peer.is_some()));
        if let Some(uri) = peer {
            let principal = uri.strip_prefix("spiffe://").unwrap_or(&uri).to_string();
            // The peer is the other side: the client for an inbound entry.
            let side = if outbound { "destination" } else { "source" };
            bag.insert(
                &format!("{side}.principal"),
                Value::from(principal.as_str()),
            );
        }
        text(
            bag,
            "connection.requested_server_name",
            &tls.tls_sni_hostname,
        );
    }
    // The node describes the side that reported.
    let side = if outbound { "source" } else { "destination" };
    if let Some(w) = &reporter.workload {
        bag.insert(&format!("{side}.workload.name"), Value::from(w.as_str()));
    }
    if let Some(ns) = &reporter.namespace {
        bag.insert(
            &format!("{side}.workload.namespace"),
            Value::from(ns.as_str()),
        );
        bag.insert(&format!("{side}.namespace"), Value::from(ns.as_str()));
    }
    if !reporter.labels.is_empty() {
        bag.insert(
            &format!("{side}.labels"),
            Value::StringMap(Arc::new(reporter.labels.clone())),
        );
    }
}

/// The attributes of one HTTP access log entry.
pub fn http_attributes(e: &HttpAccessLogEntry, reporter: &Reporter) -> AttributeBag {
    let mut bag = AttributeBag::new();
    if let Some(c) = &e.common_properties {
        common(&mut bag, c, reporter);
    }
    let mut protocol = "http";
    if let Some(r) = &e.request {
        if let Ok(m) = RequestMethod::try_from(r.request_method)
            && m != RequestMethod::MethodUnspecified
        {
            bag.insert("request.method", Value::from(m.as_str_name()));
        }
        text(&mut bag, "request.scheme", &r.scheme);
        text(&mut bag, "request.host", &r.authority);
        text(&mut bag, "request.path", &r.path);
        text(
            &mut bag,
            "request.url_path",
            r.path.split('?').next().unwrap_or(""),
        );
        text(&mut bag, "request.useragent", &r.user_agent);
        text(&mut bag, "request.referer", &r.referer);
        text(&mut bag, "request.id", &r.request_id);
        bag.insert("request.size", int(r.request_body_bytes));
        bag.insert(
            "request.total_size",
            int(r.request_headers_bytes.saturating_add(r.request_body_bytes)),
        );
        let headers: BTreeMap<String, String> = r
            .request_headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        if headers
            .get("content-type")
            .is_some_and(|c| c.starts_with("application/grpc"))
        {
            protocol = "grpc";
        }
        if !headers.is_empty() {
            bag.insert("request.headers", Value::StringMap(Arc::new(headers)));
        }
    }
    bag.insert("context.protocol", Value::from(protocol));
    if let Some(r) = &e.response {
        if let Some(code) = &r.response_code {
            bag.insert("response.code", Value::Int64(i64::from(code.value)));
        }
        bag.insert("response.size", int(r.response_body_bytes));
        bag.insert(
            "response.total_size",
            int(r
                .response_headers_bytes
                .saturating_add(r.response_body_bytes)),
        );
    }
    bag
}

/// The attributes of one TCP access log entry.
pub fn tcp_attributes(e: &TcpAccessLogEntry, reporter: &Reporter) -> AttributeBag {
    let mut bag = AttributeBag::new();
    if let Some(c) = &e.common_properties {
        common(&mut bag, c, reporter);
    }
    bag.insert("context.protocol", Value::from("tcp"));
    if let Some(p) = &e.connection_properties {
        bag.insert("connection.received.bytes", int(p.received_bytes));
        bag.insert("connection.sent.bytes", int(p.sent_bytes));
    }
    bag
}

#[cfg(test)]
#[path = "accesslog_tests.rs"]
mod tests;
