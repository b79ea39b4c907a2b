//! Reports shaped like a mesh's, for the load tool and the benchmarks: HTTP
//! requests between 10 client workloads and 20 services, with the attributes a
//! sidecar reports (20 per request) and a spread of response codes, durations and
//! sizes.

use std::time::Duration;

use mesh_api::mixer::v1::{ReportRequest, report_request::RepeatedAttributesSemantics};
use mixer_core::{
    Value,
    dictionary::GLOBAL_WORDS,
    wire::{AttributeBag, encode},
};

/// Request `j` of batch `i`: 10 sources x 20 destinations x the response codes
/// 200, 404 and 503.
pub fn request_bag(i: usize, j: usize) -> AttributeBag {
    let n = i.wrapping_mul(31).wrapping_add(j);
    let mut b = AttributeBag::new();
    let src = n % 10;
    let dst = (n / 10) % 20;
    b.insert("context.protocol", Value::from("http"));
    b.insert("context.reporter.kind", Value::from("inbound"));
    b.insert(
        "source.workload.name",
        Value::from(format!("client-{src}").as_str()),
    );
    b.insert("source.workload.namespace", Value::from("load"));
    b.insert(
        "source.principal",
        Value::from(format!("cluster.local/ns/load/sa/client-{src}").as_str()),
    );
    b.insert(
        "source.labels",
        Value::string_map([("app", "client"), ("version", "v1")]),
    );
    b.insert(
        "destination.workload.name",
        Value::from(format!("svc-{dst}-v1").as_str()),
    );
    b.insert("destination.workload.namespace", Value::from("load"));
    b.insert(
        "destination.service.host",
        Value::from(format!("svc-{dst}.load.svc.cluster.local").as_str()),
    );
    b.insert(
        "destination.service.name",
        Value::from(format!("svc-{dst}").as_str()),
    );
    b.insert("destination.service.namespace", Value::from("load"));
    b.insert(
        "destination.labels",
        Value::string_map([("app", "svc"), ("version", "v1")]),
    );
    b.insert("request.path", Value::from("/api/items"));
    b.insert("request.method", Value::from("GET"));
    b.insert(
        "response.code",
        Value::Int64([200, 200, 200, 200, 200, 200, 200, 404, 200, 503][n % 10]),
    );
    b.insert(
        "response.duration",
        Value::Duration(Duration::from_micros(500 + (n % 97) as u64 * 300)),
    );
    b.insert("request.size", Value::Int64((n % 13) as i64 * 100));
    b.insert("response.size", Value::Int64((n % 17) as i64 * 1_000));
    b.insert("connection.mtls", Value::Bool(true));
    b.insert("api.protocol", Value::from("http"));
    b
}

/// Report `i` of `batch` requests, each bag encoded on its own against the whole
/// global dictionary.
pub fn report(i: usize, batch: usize) -> ReportRequest {
    let words = u32::try_from(GLOBAL_WORDS.len()).unwrap_or(u32::MAX);
    ReportRequest {
        attributes: (0..batch)
            .map(|j| encode(&request_bag(i, j), words))
            .collect(),
        repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding as i32,
        global_word_count: words,
        ..ReportRequest::default()
    }
}
