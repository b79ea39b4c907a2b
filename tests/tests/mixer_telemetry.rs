//! mixer-telemetry end to end: the real galley and mixer-telemetry, reports sent
//! over the Mixer Report API and Envoy's access log service, and a real
//! Prometheus server scraping 42422: after N reports, PromQL counts N.

#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use dromon_e2e::{
    ChildGuard, grpc_channel, http_get, http_json, local_addr, prometheus::PrometheusServer,
    start_galley,
};
use mesh_api::{
    envoy::{
        envoy::{
            config::core::v3::{Node, RequestMethod},
            data::accesslog::v3::{
                AccessLogCommon, HttpAccessLogEntry, HttpRequestProperties, HttpResponseProperties,
            },
            service::accesslog::v3::{
                StreamAccessLogsMessage,
                access_log_service_client::AccessLogServiceClient,
                stream_access_logs_message::{HttpAccessLogEntries, Identifier, LogEntries},
            },
        },
        google::protobuf::UInt32Value,
    },
    mixer::v1::{
        CompressedAttributes, ReportRequest, mixer_client::MixerClient,
        report_request::RepeatedAttributesSemantics,
    },
};
use mixer_core::{
    Value,
    dictionary::GLOBAL_WORDS,
    wire::{AttributeBag, encode},
};

const CUSTOM: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: pathcount, namespace: istio-system}
spec:
  compiledTemplate: metric
  params:
    value: "1"
    dimensions:
      path: request.url_path | "/"
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: paths, namespace: istio-system}
spec:
  compiledAdapter: prometheus
  params:
    cardinalityLimit: 3
    metrics:
    - name: path_requests_total
      namespace: dromon
      instanceName: pathcount.instance.istio-system
      kind: COUNTER
      labelNames: [path]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: paths, namespace: istio-system}
spec:
  match: context.protocol == "http"
  actions: [{handler: paths, instances: [pathcount]}]
"#;

struct Telemetry {
    child: ChildGuard,
    grpc: SocketAddr,
    prometheus: SocketAddr,
    monitoring: SocketAddr,
}

/// Starts mixer-telemetry on free ports and waits until it is ready (on other
/// ports if one is taken before it binds it).
async fn start_telemetry(mcp: SocketAddr, extra: &[&str]) -> Telemetry {
    let galley = format!("http://{mcp}");
    let (child, (grpc, prometheus, monitoring)) =
        dromon_e2e::start_ready(
            Duration::from_secs(30),
            |_| {
                let (grpc, prometheus, monitoring) = (local_addr(), local_addr(), local_addr());
                let (g, p, m) = (
                    grpc.to_string(),
                    prometheus.to_string(),
                    monitoring.to_string(),
                );
                let mut args = vec![
                    "--galley",
                    &galley,
                    "--grpc-addr",
                    &g,
                    "--prometheus-addr",
                    &p,
                    "--monitoring-addr",
                    &m,
                ];
                args.extend_from_slice(extra);
                let child = ChildGuard::spawn("mixer-telemetry", &args)?;
                Ok((child, (grpc, prometheus, monitoring)))
            },
            |(_, _, monitoring)| async move {
                matches!(http_get(monitoring, "/ready").await, Ok((200, _)))
            },
        )
        .await;
    Telemetry {
        child,
        grpc,
        prometheus,
        monitoring,
    }
}

fn words() -> u32 {
    u32::try_from(GLOBAL_WORDS.len()).unwrap()
}

fn request_bag(path: &str, code: i64) -> AttributeBag {
    let mut b = AttributeBag::new();
    b.insert("context.protocol", Value::from("http"));
    b.insert("context.reporter.kind", Value::from("inbound"));
    b.insert("source.workload.name", Value::from("productpage-v1"));
    b.insert("destination.workload.name", Value::from("reviews-v1"));
    b.insert(
        "destination.service.host",
        Value::from("reviews.bookinfo.svc.cluster.local"),
    );
    b.insert("request.url_path", Value::from(path));
    b.insert("response.code", Value::Int64(code));
    b.insert(
        "response.duration",
        Value::Duration(Duration::from_millis(12)),
    );
    b
}

fn access_log(n: usize) -> StreamAccessLogsMessage {
    let entry = HttpAccessLogEntry {
        common_properties: Some(AccessLogCommon {
            upstream_cluster: "inbound|9080||reviews.bookinfo.svc.cluster.local".into(),
            ..AccessLogCommon::default()
        }),
        request: Some(HttpRequestProperties {
            request_method: RequestMethod::Get as i32,
            path: "/reviews/1".into(),
            ..HttpRequestProperties::default()
        }),
        response: Some(HttpResponseProperties {
            response_code: Some(UInt32Value { value: 200 }),
            ..HttpResponseProperties::default()
        }),
        ..HttpAccessLogEntry::default()
    };
    StreamAccessLogsMessage {
        identifier: Some(Identifier {
            node: Some(Node {
                id: "sidecar~10.0.0.9~reviews-v1.bookinfo~bookinfo.svc.cluster.local".into(),
                ..Node::default()
            }),
            log_name: "als".into(),
        }),
        log_entries: Some(LogEntries::HttpLogs(HttpAccessLogEntries {
            log_entry: vec![entry; n],
        })),
    }
}

/// Polls `promql` until it gives `want` (Prometheus scrapes every second).
async fn wait_for(prom: &PrometheusServer, promql: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        last = prom.query_scalar(promql).await.unwrap();
        if last == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{promql}: {last:?}, not {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_reach_a_real_prometheus_exactly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("telemetry.yaml"), CUSTOM).unwrap();
    let galley = start_galley(dir.path()).await.unwrap();
    let t = start_telemetry(galley.mcp, &[]).await;
    let prom = PrometheusServer::start(&[t.prometheus]).await.unwrap();

    let channel = grpc_channel(t.grpc).await.unwrap();
    let mut mixer = MixerClient::new(channel.clone());
    // N = 3 batches of 40 reports over the Mixer API, paths spread over 5 values.
    let mut n = 0;
    for batch in 0..3 {
        let bags: Vec<_> = (0..40)
            .map(|i| {
                let code = if i % 10 == 0 { 503 } else { 200 };
                encode(
                    &request_bag(&format!("/p{}", (batch + i) % 5), code),
                    words(),
                )
            })
            .collect();
        n += bags.len();
        mixer
            .report(ReportRequest {
                attributes: bags,
                repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding
                    as i32,
                global_word_count: words(),
                ..ReportRequest::default()
            })
            .await
            .unwrap();
    }
    // M = 2 x 15 entries over Envoy's access log service.
    let mut als = AccessLogServiceClient::new(channel);
    let m = 30;
    als.stream_access_logs(tokio_stream::iter(vec![access_log(15), access_log(15)]))
        .await
        .unwrap();
    let total = (n + m) as f64;
    let records = (n + m) as u64;

    // The standard metric counts every request, reported either way.
    wait_for(&prom, "sum(istio_requests_total)", total).await;
    wait_for(
        &prom,
        r#"sum(istio_requests_total{response_code="503"})"#,
        12.0,
    )
    .await;
    wait_for(
        &prom,
        r#"sum(istio_requests_total{destination_service="reviews.bookinfo.svc.cluster.local",reporter="destination"})"#,
        total,
    )
    .await;
    wait_for(&prom, "sum(istio_request_duration_seconds_count)", total).await;
    // The configured metric: 3 paths kept (its limit), the rest refused and
    // counted, none silently.
    let kept = prom
        .query_scalar("count(dromon_path_requests_total)")
        .await
        .unwrap();
    assert_eq!(kept, Some(3.0));
    let counted = prom
        .query_scalar("sum(dromon_path_requests_total)")
        .await
        .unwrap()
        .unwrap();
    // mixer-telemetry's own counters (its monitoring port) account for every
    // record: each accepted by the API it came in on, and each metric record
    // (four standard metrics per request, and the path metric) counted into
    // the exposition or refused for its limit. The workers add to these after
    // each batch, so they are read once they have caught up.
    let own = own_metrics_once(t.monitoring, |own| {
        sample(own, EXPORTED) + sample(own, OVER_LIMIT) >= 5 * records
    })
    .await;
    let refused = sample(&own, OVER_LIMIT);
    assert_eq!(
        counted + refused as f64,
        total,
        "every path record counted or refused"
    );
    assert_eq!(sample(&own, ACCEPTED_REPORT), n as u64, "{own}");
    assert_eq!(sample(&own, ACCEPTED_ACCESSLOG), m as u64, "{own}");
    assert_eq!(
        sample(&own, EXPORTED),
        4 * records + counted as u64,
        "{own}"
    );
    for reason in ["queue_full", "invalid", "failed"] {
        let line = format!("mixer_telemetry_records_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&own, &line), 0, "{reason}: {own}");
    }
    assert!(prom.targets_up().await.unwrap());
    let z = http_json(t.monitoring, "/debug/telemetryz").await.unwrap();
    assert_eq!(z["issues"].as_array().unwrap().len(), 0, "{z}");

    // The exposition answers in the format asked for. OpenMetrics 1.0 (which
    // the Prometheus server above asks for first when it scrapes): counter
    // families named without `_total` and their samples with it, ended by
    // `# EOF`.
    let (status, content_type, om) = http_get_accept(
        t.prometheus,
        "/metrics",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    assert!(om.ends_with("\n# EOF\n"), "{om}");
    assert_eq!(om.matches("# EOF").count(), 1, "{om}");
    for family in [
        "# TYPE istio_requests counter\n",
        "# TYPE dromon_path_requests counter\n",
        "# TYPE istio_request_duration_seconds histogram\n",
    ] {
        assert!(om.contains(family), "{family} in {om}");
    }
    assert!(!om.contains("# TYPE istio_requests_total"), "{om}");
    assert_eq!(sum(&samples(&om, "istio_requests_total")), total);
    assert_eq!(sum(&samples(&om, "dromon_path_requests_total")), counted);
    assert_eq!(
        sum(&samples(&om, "istio_request_duration_seconds_count")),
        total
    );
    // The Prometheus text format (0.0.4) otherwise: families named as their
    // samples, no terminator.
    let (status, content_type, text) =
        http_get_accept(t.prometheus, "/metrics", "text/plain").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(
        text.contains("# TYPE istio_requests_total counter\n"),
        "{text}"
    );
    assert!(!text.contains("# EOF"), "{text}");
    assert_eq!(sum(&samples(&text, "istio_requests_total")), total);
    assert_eq!(sum(&samples(&text, "dromon_path_requests_total")), counted);
}

/// mixer-telemetry's own counters.
const ACCEPTED_REPORT: &str = "mixer_telemetry_records_accepted_total{api=\"report\"}";
const ACCEPTED_ACCESSLOG: &str = "mixer_telemetry_records_accepted_total{api=\"accesslog\"}";
const EXPORTED: &str = "mixer_telemetry_metric_records_exported_total ";
const OVER_LIMIT: &str = "mixer_telemetry_records_refused_total{reason=\"over_limit\"}";

/// mixer-telemetry's own `/metrics` once `done` holds for it (or after 30 s,
/// for the caller's assertions to show what was missing).
async fn own_metrics_once(monitoring: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, own) = http_get(monitoring, "/metrics").await.unwrap();
        if done(&own) || Instant::now() > deadline {
            return own;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A GET with an `Accept` header: status, `Content-Type` and body.
async fn http_get_accept(addr: SocketAddr, path: &str, accept: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    // A body whose length is known (this server's): no chunks to undo.
    assert!(header("transfer-encoding").is_none(), "{head}");
    (
        status,
        header("content-type").unwrap_or_default(),
        body.to_string(),
    )
}

/// The samples named `name` in a text exposition (either format): labels and
/// value.
fn samples(exposition: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    exposition
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (labels, r) = parse_labels(r);
                    (labels, r.strip_prefix(' ')?)
                }
                None => (BTreeMap::new(), rest.strip_prefix(' ')?),
            };
            Some((labels, value.parse().unwrap()))
        })
        .collect()
}

/// Labels up to and past the closing `}`: `a="x",b="y\"z"} rest`.
fn parse_labels(text: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return (labels, r);
        }
        let (key, r) = rest.split_once("=\"").unwrap();
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next().unwrap() {
                (i, '"') => break i,
                (_, '\\') => match chars.next().unwrap().1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim_start_matches(',').to_string(), value);
        rest = &r[end + 1..];
    }
}

fn sum(samples: &[(BTreeMap<String, String>, f64)]) -> f64 {
    samples.iter().map(|(_, v)| v).sum()
}

/// A Report whose bags are each encoded on their own.
fn independent(attributes: Vec<CompressedAttributes>) -> ReportRequest {
    ReportRequest {
        attributes,
        repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding as i32,
        global_word_count: words(),
        ..ReportRequest::default()
    }
}

/// The value of the sample in `metrics` whose line starts with `prefix` (0 when
/// absent).
fn sample(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap())
}

/// What a burst of 40 concurrent Reports of 40 records met at a mixer-telemetry
/// with a queue of 50 records, one worker and `--queue-wait wait`.
struct Burst {
    taken: u64,
    refused: u64,
    /// mixer-telemetry's own `/metrics` afterwards.
    metrics: String,
}

impl Burst {
    async fn against_a_small_queue(wait: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let galley = start_galley(dir.path()).await.unwrap();
        let t = start_telemetry(
            galley.mcp,
            &[
                "--queue-records",
                "50",
                "--workers",
                "1",
                "--queue-wait",
                wait,
            ],
        )
        .await;
        let channel = grpc_channel(t.grpc).await.unwrap();
        let mut calls = tokio::task::JoinSet::new();
        for c in 0..40 {
            let mut client = MixerClient::new(channel.clone());
            let req = independent(
                (0..40)
                    .map(|i| encode(&request_bag(&format!("/{c}/{i}"), 200), words()))
                    .collect(),
            );
            calls.spawn(async move { client.report(req).await.map(|_| ()) });
        }
        let (mut taken, mut refused) = (0u64, 0u64);
        while let Some(r) = calls.join_next().await {
            match r.unwrap() {
                Ok(()) => taken += 1,
                Err(s) => {
                    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
                    refused += 1;
                }
            }
        }
        eprintln!("{taken} reports taken, {refused} refused");
        let (_, metrics) = http_get(t.monitoring, "/metrics").await.unwrap();
        Self {
            taken,
            refused,
            metrics,
        }
    }

    /// The value of the sample whose line starts with `prefix` (0 when absent).
    fn value(&self, prefix: &str) -> u64 {
        sample(&self.metrics, prefix)
    }
}

/// A full queue refuses reports with ResourceExhausted, for the reporter to
/// retry; the refusals are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_reports_and_counts_them() {
    // Many concurrent batches of 40 against a queue of 50, no wait: some must be
    // refused.
    let b = Burst::against_a_small_queue("0").await;
    assert!(b.taken > 0, "some reports fit");
    assert_eq!(
        b.value("mixer_telemetry_records_accepted_total{api=\"report\"}"),
        b.taken * 40
    );
    assert_eq!(
        b.value("mixer_telemetry_records_refused_total{reason=\"queue_full\"}"),
        b.refused * 40
    );
}

/// With a wait, a report that finds the queue full waits for the workers to make
/// room instead of being refused: every report of the same burst is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_reports_wait_for_room() {
    let b = Burst::against_a_small_queue("20s").await;
    assert_eq!((b.taken, b.refused), (40, 0));
    assert_eq!(
        b.value("mixer_telemetry_records_accepted_total{api=\"report\"}"),
        1_600
    );
    assert_eq!(
        b.value("mixer_telemetry_records_refused_total{reason=\"queue_full\"}"),
        0
    );
}

fn log_config(pg_url: &str) -> String {
    format!(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: accesslog, namespace: istio-system}}
spec:
  compiledTemplate: logentry
  params:
    severity: '"Info"'
    timestamp: request.time
    variables:
      path: request.url_path | ""
      code: response.code | 0
      latency: response.duration | "0ms"
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: local, namespace: istio-system}}
spec:
  compiledAdapter: sqlstore
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: shared, namespace: istio-system}}
spec:
  compiledAdapter: sqlstore
  params: {{database: "{pg_url}", table: access_log, retention: 24h}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: logs, namespace: istio-system}}
spec:
  actions:
  - {{handler: local, instances: [accesslog]}}
  - {{handler: shared, instances: [accesslog]}}
"#
    )
}

/// Log entries land in SQLite and in a real PostgreSQL server, none lost while
/// reports arrive faster than the queue holds (reporters retry refusals).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_entries_land_in_sqlite_and_postgres_none_lost() {
    let pg = mesh_testkit::postgres::PostgresServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("logs.yaml"), log_config(&pg.url())).unwrap();
    let sqlite = dir.path().join("state/logs.db");
    let sqlite_url = format!("sqlite://{}", sqlite.display());
    let galley = start_galley(dir.path()).await.unwrap();
    let t = start_telemetry(
        galley.mcp,
        // No wait: a full queue refuses at once, and the reporters retry.
        &[
            "--queue-records",
            "500",
            "--queue-wait",
            "0",
            "--log-database",
            &sqlite_url,
        ],
    )
    .await;
    let channel = grpc_channel(t.grpc).await.unwrap();
    // 16 reporters x 25 batches of 20 = 8,000 entries, each batch retried until
    // taken.
    let mut reporters = tokio::task::JoinSet::new();
    for r in 0..16 {
        let mut client = MixerClient::new(channel.clone());
        reporters.spawn(async move {
            let mut refused = 0u64;
            for b in 0..25 {
                let req = independent(
                    (0..20)
                        .map(|i| encode(&request_bag(&format!("/{r}/{b}/{i}"), 200), words()))
                        .collect(),
                );
                loop {
                    match client.report(req.clone()).await {
                        Ok(_) => break,
                        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(s) => panic!("{s:?}"),
                    }
                }
            }
            refused
        });
    }
    let mut refused = 0;
    while let Some(r) = reporters.join_next().await {
        refused += r.unwrap();
    }
    eprintln!("8,000 entries reported; {refused} batches refused and retried");
    let deadline = Instant::now() + Duration::from_secs(60);
    let count_pg = || {
        pg.psql(
            "test",
            "SELECT COUNT(*), COUNT(DISTINCT variables) FROM access_log",
        )
        .unwrap_or_default()
    };
    loop {
        let (_, own) = http_get(t.monitoring, "/metrics").await.unwrap();
        let written = own
            .lines()
            .find(|l| l.starts_with("mixer_telemetry_log_entries_written_total "))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse::<f64>().unwrap());
        if written >= 16_000.0 {
            assert_eq!(written, 16_000.0);
            break;
        }
        assert!(Instant::now() < deadline, "{written} of 16,000 written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every entry once, with its variables, in PostgreSQL ...
    assert_eq!(count_pg(), "8000|8000");
    let row = pg
        .psql(
            "test",
            "SELECT name, severity, variables FROM access_log WHERE variables LIKE '%\"/3/4/5\"%'",
        )
        .unwrap();
    assert_eq!(
        row,
        r#"accesslog.istio-system|Info|{"code":200,"latency":"0.012s","path":"/3/4/5"}"#
    );
    // ... and in SQLite.
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('SELECT COUNT(*), COUNT(DISTINCT variables) FROM mixer_log_entries').fetchone())",
            sqlite.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "(8000, 8000)");
}

/// Entries accepted just before a clean shutdown (SIGTERM) are still written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_writes_what_was_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let config = log_config("postgres://unused@127.0.0.1:1/none")
        .replace("  - {handler: shared, instances: [accesslog]}\n", "");
    std::fs::write(dir.path().join("logs.yaml"), config).unwrap();
    let sqlite = dir.path().join("state/logs.db");
    let sqlite_url = format!("sqlite://{}", sqlite.display());
    let galley = start_galley(dir.path()).await.unwrap();
    let mut t = start_telemetry(galley.mcp, &["--log-database", &sqlite_url]).await;
    let mut client = MixerClient::new(grpc_channel(t.grpc).await.unwrap());
    for b in 0..20 {
        let req = ReportRequest {
            attributes: (0..100)
                .map(|i| encode(&request_bag(&format!("/{b}/{i}"), 200), words()))
                .collect(),
            repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding as i32,
            global_word_count: words(),
            ..ReportRequest::default()
        };
        client.report(req).await.unwrap();
    }
    let status = t.child.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status:?}");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('SELECT COUNT(*) FROM mixer_log_entries').fetchone()[0])",
            sqlite.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2000");
}

/// The service graph page, loaded in a real headless Chromium, shows the
/// services that reported calls and the edges between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_graph_page_shows_nodes_and_edges_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let galley = start_galley(dir.path()).await.unwrap();
    let t = start_telemetry(galley.mcp, &[]).await;
    let mut client = MixerClient::new(grpc_channel(t.grpc).await.unwrap());
    let call = |src: &str, dst: &str, code: i64| {
        let mut b = request_bag("/", code);
        b.insert("source.workload.name", Value::from(src));
        b.insert("source.workload.namespace", Value::from("bookinfo"));
        b.insert("destination.service.host", Value::from(dst));
        encode(&b, words())
    };
    let mut bags = Vec::new();
    for i in 0..20 {
        bags.push(call(
            "productpage-v1",
            "reviews.bookinfo.svc.cluster.local",
            200,
        ));
        bags.push(call(
            "productpage-v1",
            "details.bookinfo.svc.cluster.local",
            if i < 5 { 503 } else { 200 },
        ));
        bags.push(call(
            "reviews-v2",
            "ratings.bookinfo.svc.cluster.local",
            200,
        ));
    }
    client
        .report(ReportRequest {
            attributes: bags,
            repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding as i32,
            global_word_count: words(),
            ..ReportRequest::default()
        })
        .await
        .unwrap();
    // The JSON view first (the workers record asynchronously).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let g = http_json(t.monitoring, "/graph.json").await.unwrap();
        let total: u64 = g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["requests"].as_u64().unwrap())
            .sum();
        if total == 60 {
            assert_eq!(g["edges"].as_array().unwrap().len(), 3, "{g}");
            let details = g["edges"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["target"] == "details.bookinfo.svc.cluster.local")
                .unwrap();
            assert_eq!(details["requests"], 20);
            assert_eq!(details["error_rate"], 0.25);
            break;
        }
        assert!(Instant::now() < deadline, "{g}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, dot) = http_get(t.monitoring, "/graph.dot").await.unwrap();
    assert!(
        dot.contains("\"reviews-v2.bookinfo\" -> \"ratings.bookinfo.svc.cluster.local\""),
        "{dot}"
    );

    let profile = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            &format!("http://{}/graph", t.monitoring),
        ])
        .output()
        .await
        .expect("chromium (Debian's chromium package)");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in [
        "productpage-v1.bookinfo",
        "reviews-v2.bookinfo",
        "reviews.bookinfo.svc.cluster.local",
        "details.bookinfo.svc.cluster.local",
        "ratings.bookinfo.svc.cluster.local",
    ] {
        assert!(
            dom.contains(&format!(r#"class="node" data-name="{node}""#)),
            "{node} in {dom}"
        );
    }
    assert_eq!(dom.matches(r#"class="node""#).count(), 5, "{dom}");
    assert_eq!(dom.matches(r#"class="edge""#).count(), 3, "{dom}");
    assert!(dom.contains(r#"data-source="productpage-v1.bookinfo" data-target="details.bookinfo.svc.cluster.local" data-requests="20" data-errors="5""#), "{dom}");
    assert!(dom.contains("5 services, 3 edges"), "{dom}");
}

mod otlp {
    use opentelemetry_proto::tonic::collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::MetricsService,
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::TraceService,
        },
    };
    use tokio::sync::mpsc::UnboundedSender;

    /// A real OTLP/gRPC receiver of spans and metrics.
    #[derive(Clone)]
    pub struct Receiver {
        pub spans: UnboundedSender<ExportTraceServiceRequest>,
        pub metrics: UnboundedSender<ExportMetricsServiceRequest>,
    }

    #[tonic::async_trait]
    impl TraceService for Receiver {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let _ = self.spans.send(request.into_inner());
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    #[tonic::async_trait]
    impl MetricsService for Receiver {
        async fn export(
            &self,
            request: tonic::Request<ExportMetricsServiceRequest>,
        ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
            let _ = self.metrics.send(request.into_inner());
            Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
        }
    }
}

fn otel_config(endpoint: &str) -> String {
    format!(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: span, namespace: istio-system}}
spec:
  compiledTemplate: tracespan
  params:
    traceId: request.headers["x-b3-traceid"] | ""
    spanId: request.headers["x-b3-spanid"] | ""
    parentSpanId: request.headers["x-b3-parentspanid"] | ""
    spanName: request.url_path | "/"
    startTime: request.time
    endTime: response.time
    clientSpan: (context.reporter.kind | "inbound") == "outbound"
    httpStatusCode: response.code | 0
    spanTags:
      destination: destination.service.host | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: collector, namespace: istio-system}}
spec:
  compiledAdapter: otel
  params:
    endpoint: "{endpoint}"
    exportInterval: 1s
    metrics:
    - name: requests_total
      namespace: mesh
      instanceName: requestcount.instance.istio-system
      kind: COUNTER
      labelNames: [destination_service, response_code]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: otel, namespace: istio-system}}
spec:
  actions: [{{handler: collector, instances: [span, requestcount]}}]
"#
    )
}

/// Spans and metrics reach a real OTLP receiver: every span with the ids,
/// times and parent the reports carried, and the request count exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_an_otlp_receiver() {
    use opentelemetry_proto::tonic::{
        collector::{
            metrics::v1::metrics_service_server::MetricsServiceServer,
            trace::v1::trace_service_server::TraceServiceServer,
        },
        metrics::v1::{metric, number_data_point},
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr = listener.local_addr().unwrap();
    let (spans_tx, mut spans_rx) = tokio::sync::mpsc::unbounded_channel();
    let (metrics_tx, mut metrics_rx) = tokio::sync::mpsc::unbounded_channel();
    let receiver = otlp::Receiver {
        spans: spans_tx,
        metrics: metrics_tx,
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .add_service(MetricsServiceServer::new(receiver))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("otel.yaml"),
        otel_config(&format!("http://{otlp_addr}")),
    )
    .unwrap();
    let galley = start_galley(dir.path()).await.unwrap();
    let t = start_telemetry(galley.mcp, &[]).await;
    let z = http_json(t.monitoring, "/debug/telemetryz").await.unwrap();
    assert_eq!(z["issues"].as_array().unwrap().len(), 0, "{z}");
    let mut client = MixerClient::new(grpc_channel(t.grpc).await.unwrap());
    let start = std::time::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let n = 50u64;
    let bags = (0..n)
        .map(|i| {
            let mut b = request_bag(&format!("/span/{i}"), if i < 5 { 503 } else { 200 });
            b.insert(
                "request.headers",
                Value::string_map([
                    ("x-b3-traceid", format!("{:032x}", 0xabc000 + i).as_str()),
                    ("x-b3-spanid", format!("{:016x}", 0x100 + i).as_str()),
                    ("x-b3-parentspanid", "00000000000000ff"),
                ]),
            );
            b.insert(
                "request.time",
                Value::Timestamp(start + Duration::from_millis(i)),
            );
            b.insert(
                "response.time",
                Value::Timestamp(start + Duration::from_millis(i + 12)),
            );
            encode(&b, words())
        })
        .collect();
    client
        .report(ReportRequest {
            attributes: bags,
            repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding as i32,
            global_word_count: words(),
            ..ReportRequest::default()
        })
        .await
        .unwrap();

    let mut spans = Vec::new();
    while (spans.len() as u64) < n {
        let req = tokio::time::timeout(Duration::from_secs(20), spans_rx.recv())
            .await
            .expect("spans within 20 s")
            .unwrap();
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
    }
    assert_eq!(spans.len() as u64, n, "each span once");
    let s7 = spans.iter().find(|s| s.name == "/span/7").unwrap();
    assert_eq!(s7.trace_id[13..], [0xab, 0xc0, 0x07]);
    assert_eq!(s7.span_id, 0x107u64.to_be_bytes());
    assert_eq!(s7.parent_span_id, 0xffu64.to_be_bytes());
    assert_eq!(s7.end_time_unix_nano - s7.start_time_unix_nano, 12_000_000);
    assert_eq!(s7.kind, 2, "server span (reported inbound)");
    let errors = spans
        .iter()
        .filter(|s| s.status.as_ref().is_some_and(|st| st.code == 2))
        .count();
    assert_eq!(errors, 5);

    // The exported counter reaches n (cumulative, re-sent every second).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let req = tokio::time::timeout(Duration::from_secs(20), metrics_rx.recv())
            .await
            .expect("metrics within 20 s")
            .unwrap();
        let total: f64 = req
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .filter(|m| m.name == "mesh_requests_total")
            .flat_map(|m| match &m.data {
                Some(metric::Data::Sum(s)) => s.data_points.clone(),
                _ => Vec::new(),
            })
            .map(|p| match p.value {
                Some(number_data_point::Value::AsDouble(v)) => v,
                _ => 0.0,
            })
            .sum();
        if total == n as f64 {
            break;
        }
        assert!(Instant::now() < deadline, "exported total {total}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_reports_are_refused_with_invalid_argument_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let galley = start_galley(dir.path()).await.unwrap();
    let t = start_telemetry(galley.mcp, &[]).await;
    let channel = grpc_channel(t.grpc).await.unwrap();
    let mut client = MixerClient::new(channel);
    // Three bags, the second naming a word that does not exist.
    let mut bad = encode(&request_bag("/ok", 200), words());
    bad.strings.insert(-40, -41);
    let req = ReportRequest {
        attributes: vec![
            encode(&request_bag("/a", 200), words()),
            bad,
            encode(&request_bag("/b", 200), words()),
        ],
        repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding as i32,
        global_word_count: words(),
        ..ReportRequest::default()
    };
    let status = client.report(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("attribute bag 1") && status.message().contains("-40"),
        "{status:?}"
    );
    // A global_word_count past the dictionary.
    let req = ReportRequest {
        attributes: vec![encode(&request_bag("/a", 200), words())],
        global_word_count: 100_000,
        ..ReportRequest::default()
    };
    let status = client.report(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // Nothing of either was taken; all four records are counted as invalid.
    let (_, own) = http_get(t.monitoring, "/metrics").await.unwrap();
    assert_eq!(
        sample(
            &own,
            "mixer_telemetry_records_refused_total{reason=\"invalid\"}"
        ),
        4
    );
    assert_eq!(
        sample(
            &own,
            "mixer_telemetry_records_accepted_total{api=\"report\"}"
        ),
        0
    );
    // A good Report is still taken.
    let req = independent(vec![encode(&request_bag("/a", 200), words())]);
    client.report(req).await.unwrap();
}

/// A Report in the default delta encoding: each bag after the first carries
/// only what changed since the one before (an empty one, nothing), and every
/// record is counted under its own labels, the attributes it inherited
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_encoded_reports_count_each_record_under_its_own_labels() {
    let dir = tempfile::tempdir().unwrap();
    let galley = start_galley(dir.path()).await.unwrap();
    let t = start_telemetry(galley.mcp, &[]).await;
    let mut client = MixerClient::new(grpc_channel(t.grpc).await.unwrap());
    let delta = |changes: &[(&str, Value)]| {
        let mut b = AttributeBag::new();
        for (name, value) in changes {
            b.insert(name, value.clone());
        }
        encode(&b, words())
    };
    let ratings = "ratings.bookinfo.svc.cluster.local";
    let req = ReportRequest {
        attributes: vec![
            // productpage-v1 -> reviews, 200, 12 ms.
            encode(&request_bag("/d", 200), words()),
            delta(&[("response.code", Value::Int64(503))]),
            delta(&[("source.workload.name", Value::from("details-v1"))]),
            delta(&[
                ("destination.service.host", Value::from(ratings)),
                ("response.code", Value::Int64(200)),
                ("response.duration", Value::Duration(Duration::from_secs(2))),
            ]),
            delta(&[]),
            delta(&[("context.reporter.kind", Value::from("outbound"))]),
        ],
        global_word_count: words(),
        ..ReportRequest::default()
    };
    assert_eq!(
        req.repeated_attributes_semantics(),
        RepeatedAttributesSemantics::DeltaEncoding
    );
    client.report(req).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let exposition = loop {
        let (_, text) = http_get(t.prometheus, "/metrics").await.unwrap();
        if sum(&samples(&text, "istio_requests_total")) >= 6.0 || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let series = |metric: &str| -> BTreeMap<[String; 5], f64> {
        samples(&exposition, metric)
            .into_iter()
            .map(|(l, v)| {
                let key = [
                    "reporter",
                    "source_workload",
                    "destination_service",
                    "response_code",
                    "destination_workload",
                ]
                .map(|k| l[k].clone());
                (key, v)
            })
            .collect()
    };
    let key = |reporter: &str, source: &str, service: &str, code: &str| {
        [reporter, source, service, code, "reviews-v1"].map(str::to_string)
    };
    let reviews = "reviews.bookinfo.svc.cluster.local";
    assert_eq!(
        series("istio_requests_total"),
        BTreeMap::from([
            (key("destination", "productpage-v1", reviews, "200"), 1.0),
            (key("destination", "productpage-v1", reviews, "503"), 1.0),
            (key("destination", "details-v1", reviews, "503"), 1.0),
            // The bag with no changes repeats the one before it.
            (key("destination", "details-v1", ratings, "200"), 2.0),
            (key("source", "details-v1", ratings, "200"), 1.0),
        ]),
        "{exposition}"
    );
    // Durations too: 12 ms inherited by the first three records, 2 s by the
    // last three.
    assert_eq!(
        series("istio_request_duration_seconds_sum"),
        BTreeMap::from([
            (key("destination", "productpage-v1", reviews, "200"), 0.012),
            (key("destination", "productpage-v1", reviews, "503"), 0.012),
            (key("destination", "details-v1", reviews, "503"), 0.012),
            (key("destination", "details-v1", ratings, "200"), 4.0),
            (key("source", "details-v1", ratings, "200"), 2.0),
        ]),
        "{exposition}"
    );
    let own = own_metrics_once(t.monitoring, |own| sample(own, EXPORTED) >= 24).await;
    assert_eq!(sample(&own, ACCEPTED_REPORT), 6, "{own}");
    assert_eq!(sample(&own, EXPORTED), 6 * 4, "{own}");
}

fn retention_config(pg_url: &str) -> String {
    format!(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: accesslog, namespace: istio-system}}
spec:
  compiledTemplate: logentry
  params:
    timestamp: request.time
    variables:
      path: request.url_path | ""
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: shared, namespace: istio-system}}
spec:
  compiledAdapter: sqlstore
  params: {{database: "{pg_url}", table: access_log, retention: 24h}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: logs, namespace: istio-system}}
spec:
  actions: [{{handler: shared, instances: [accesslog]}}]
"#
    )
}

/// The paths of the entries in PostgreSQL's `access_log`, once they are
/// `want` (or after 30 s, whatever they are).
async fn logged_paths(pg: &mesh_testkit::postgres::PostgresServer, want: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let paths: Vec<String> = pg
            .psql(
                "test",
                "SELECT variables::json->>'path' FROM access_log ORDER BY 1",
            )
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if paths == want || Instant::now() > deadline {
            return paths;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Log entries older than the sqlstore handler's retention are deleted from a
/// real PostgreSQL, newer ones kept: by each writer right after its first write
/// (so a restarted mixer-telemetry deletes what is past retention at once), then
/// every minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_entries_past_their_retention_are_deleted() {
    let pg = mesh_testkit::postgres::PostgresServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("logs.yaml"), retention_config(&pg.url())).unwrap();
    let galley = start_galley(dir.path()).await.unwrap();
    let now = std::time::SystemTime::now();
    let hours = |h: u64| now - Duration::from_secs(h * 3600);
    let entry = |path: &str, at: std::time::SystemTime| {
        let mut b = request_bag(path, 200);
        b.insert("request.time", Value::Timestamp(at));
        encode(&b, words())
    };

    let mut t = start_telemetry(galley.mcp, &[]).await;
    let mut client = MixerClient::new(grpc_channel(t.grpc).await.unwrap());
    // The writer's first write, and the expiry right after it.
    client
        .report(independent(vec![entry("/first", now)]))
        .await
        .unwrap();
    assert_eq!(logged_paths(&pg, &["/first"]).await, ["/first"]);
    // Entries 48 h, 23 h and 0 h old: all written as they are (the next expiry
    // is a minute away), with the time they were reported at.
    client
        .report(independent(vec![
            entry("/old/0", hours(48)),
            entry("/old/1", hours(48)),
            entry("/day", hours(23)),
            entry("/now", now),
        ]))
        .await
        .unwrap();
    let all = ["/day", "/first", "/now", "/old/0", "/old/1"];
    assert_eq!(logged_paths(&pg, &all).await, all);
    let at_ms = hours(48)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert_eq!(
        pg.psql(
            "test",
            "SELECT DISTINCT at_ms FROM access_log WHERE variables LIKE '%/old/%'"
        )
        .unwrap(),
        at_ms.to_string()
    );
    let status = t.child.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status:?}");

    // Restarted: its first write is followed by an expiry that deletes the
    // entries past 24 h, and only those.
    let t = start_telemetry(galley.mcp, &[]).await;
    let mut client = MixerClient::new(grpc_channel(t.grpc).await.unwrap());
    client
        .report(independent(vec![entry("/again", now)]))
        .await
        .unwrap();
    let kept = ["/again", "/day", "/first", "/now"];
    assert_eq!(logged_paths(&pg, &kept).await, kept);
    let (_, own) = http_get(t.monitoring, "/metrics").await.unwrap();
    assert_eq!(
        sample(&own, "mixer_telemetry_log_write_errors_total "),
        0,
        "{own}"
    );
}
