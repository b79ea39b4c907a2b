//! `mesh-load mixer`: Mixer Check load against real galley and mixer-policy
//! processes.
//!
//! Writes a policy of `--rules` rules (each a condition over request attributes;
//! one in ten also sends a listentry instance to a listchecker, the rest a
//! checknothing instance to an always-allowing list of the caller's version),
//! starts galley on it and mixer-policy following galley, then sends Checks whose
//! bags carry 20 attributes in the compressed wire form, in two phases: a closed
//! loop for throughput and a fixed rate for latency.
//!
//! The load costs as little CPU as it can, so that the server is what is
//! measured: every distinct request is encoded once up front and sent as those
//! bytes, and of each answer only the precondition's status code is decoded. The
//! CPU of both processes is printed per check.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use mesh_api::mixer::v1::CheckRequest;
use mixer_core::{
    Value,
    dictionary::GLOBAL_WORDS,
    wire::{AttributeBag, encode},
};
use prost::Message;

use crate::{drive::Unit, prepared};

/// Flags of `mesh-load mixer`.
#[derive(Debug, Clone, Args)]
pub struct MixerArgs {
    /// Rules in the policy.
    #[arg(long, default_value_t = 10)]
    pub rules: usize,
    /// HTTP/2 connections to mixer-policy.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests in flight in the throughput phase.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Length of the throughput phase.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Checks per second in the latency phase (0 skips it).
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// Length of the latency phase.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub rate_duration: Duration,
    /// mixer-policy's `--worker-threads` (default: its own, one per CPU).
    #[arg(long)]
    pub server_threads: Option<std::num::NonZeroUsize>,
}

/// The policy: `rules` rules, each reading a few attributes.
pub fn policy(rules: usize) -> String {
    let mut out = String::from(
        "apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: versions, namespace: istio-system}
spec:
  compiledAdapter: listchecker
  params: {overrides: [v1, v2, v3]}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: version, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params:
    value: 'source.labels[\"version\"] | \"v1\"'

---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: nobody, namespace: istio-system}
spec:
  compiledAdapter: listchecker
  params: {overrides: [nobody], blacklist: true}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: user, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params:
    value: 'request.headers[\"x-user\"] | \"anonymous\"'

",
    );
    for i in 0..rules {
        let (handler, instance) = if i % 2 == 0 {
            ("versions", "version")
        } else {
            ("nobody", "user")
        };
        out.push_str(&format!(
            "---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: rule-{i}, namespace: istio-system}}
spec:
  match: 'destination.service.host == \"svc-{i}.load.svc.cluster.local\" || (request.method == \"GET\" && match(request.path, \"/api/{i}/*\")) || source.namespace == \"load\"'

  actions: [{{handler: {handler}, instances: [{instance}]}}]
"
        ));
    }
    out
}

/// A request's 20 attributes.
pub fn bag(i: usize) -> AttributeBag {
    let map = |pairs: &[(&str, &str)]| Value::string_map(pairs.iter().copied());
    let mut b = AttributeBag::new();
    let ip = |last: u8| Value::Ip(std::net::IpAddr::from([10, 1, 0, last]));
    b.insert("source.ip", ip(7));
    b.insert("source.port", Value::Int64(43_210));
    b.insert("source.namespace", Value::from("load"));
    b.insert(
        "source.principal",
        Value::from("cluster.local/ns/load/sa/client"),
    );
    b.insert(
        "source.labels",
        map(&[("app", "client"), ("version", "v2")]),
    );
    b.insert("destination.ip", ip(9));
    b.insert("destination.port", Value::Int64(8080));
    b.insert("destination.namespace", Value::from("load"));
    b.insert(
        "destination.service.host",
        Value::from(format!("svc-{}.load.svc.cluster.local", i % 1000).as_str()),
    );
    b.insert("destination.labels", map(&[("app", "server")]));
    b.insert("request.method", Value::from("GET"));
    b.insert(
        "request.path",
        Value::from(format!("/api/{}/items", i % 10).as_str()),
    );
    b.insert("request.host", Value::from("server.load"));
    b.insert("request.scheme", Value::from("http"));
    b.insert("request.id", Value::from(format!("req-{i}").as_str()));
    b.insert("request.size", Value::Int64(512));
    b.insert("request.useragent", Value::from("mesh-load"));
    b.insert(
        "request.headers",
        map(&[("x-user", "jason"), (":authority", "server.load")]),
    );
    b.insert("context.protocol", Value::from("http"));
    b.insert("connection.mtls", Value::Bool(true));
    b
}

/// Mixer's Check method.
const PATH: &str = "/istio.mixer.v1.Mixer/Check";

/// A Check answer, reduced to the precondition's status code (the other fields
/// are skipped when decoding).
#[derive(Clone, PartialEq, prost::Message)]
struct CheckAnswer {
    /// `CheckResponse.precondition`.
    #[prost(message, optional, tag = "2")]
    precondition: Option<PreconditionAnswer>,
}

/// `CheckResponse.PreconditionResult`, reduced to its status.
#[derive(Clone, PartialEq, prost::Message)]
struct PreconditionAnswer {
    /// `PreconditionResult.status`.
    #[prost(message, optional, tag = "1")]
    status: Option<StatusCode>,
}

/// `google.rpc.Status`, reduced to its code.
#[derive(Clone, PartialEq, prost::Message)]
struct StatusCode {
    /// `Status.code`.
    #[prost(int32, tag = "1")]
    code: i32,
}

struct Checks {
    /// mixer-policy's gRPC address.
    addr: SocketAddr,
    clients: Vec<(prepared::GrpcConnection, hyper::Uri)>,
    /// Encoded `CheckRequest`s.
    requests: Vec<Bytes>,
}

impl Checks {
    /// `connections` connections to `addr`, as tasks of the current runtime.
    async fn connect(
        addr: SocketAddr,
        connections: usize,
        requests: Vec<Bytes>,
    ) -> anyhow::Result<Self> {
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            let connection = prepared::GrpcConnection::connect(addr).await?;
            let uri = connection.uri(PATH)?;
            clients.push((connection, uri));
        }
        Ok(Self {
            addr,
            clients,
            requests,
        })
    }

    async fn check(&self, i: usize) -> anyhow::Result<i32> {
        let pick = |n: usize| i.checked_rem(n).unwrap_or(0);
        let client = self
            .clients
            .get(pick(self.clients.len()))
            .context("no connection")?;
        let req = self
            .requests
            .get(pick(self.requests.len()))
            .context("no request")?
            .clone();
        let (connection, uri) = client;
        let answer: CheckAnswer = connection.call(uri.clone(), req).await?;
        Ok(answer
            .precondition
            .and_then(|p| p.status)
            .map_or(-1, |s| s.code))
    }
}

impl Unit for Checks {
    async fn one(&self, i: usize) -> bool {
        matches!(self.check(i).await, Ok(0))
    }

    async fn reopen(&self) -> anyhow::Result<Option<Self>> {
        Self::connect(self.addr, self.clients.len(), self.requests.clone())
            .await
            .map(Some)
    }
}

/// CPU seconds of mixer-policy and of this process (the load) so far.
/// Runs the scenario and prints the figures.
pub async fn run(args: MixerArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let config = tmp.path().join("config");
    std::fs::create_dir_all(&config)?;
    std::fs::write(config.join("policy.yaml"), policy(args.rules))?;
    let addr = || -> anyhow::Result<SocketAddr> {
        Ok(format!("127.0.0.1:{}", dromon_e2e::free_port()).parse()?)
    };
    let (grpc, monitoring) = (addr()?, addr()?);
    let quiet = ["--log-level", "warn"];
    let threads = args.server_threads.map(|n| n.to_string());
    let threads: Vec<&str> = threads
        .iter()
        .flat_map(|n| ["--worker-threads", n.as_str()])
        .collect();
    let galley = dromon_e2e::start_galley(&config).await?;
    let mcp = galley.mcp;
    let policy = dromon_e2e::ChildGuard::spawn(
        "mixer-policy",
        &[
            &["--galley", &format!("http://{mcp}")][..],
            &["--grpc-addr", &grpc.to_string()][..],
            &["--monitoring-addr", &monitoring.to_string()][..],
            &quiet[..],
            &threads[..],
        ]
        .concat(),
    )?;
    dromon_e2e::wait_http_ok(monitoring, "/ready", Duration::from_secs(30)).await?;
    let issues = dromon_e2e::http_json(monitoring, "/debug/policyz").await?;
    anyhow::ensure!(
        issues["issues"].as_array().is_some_and(|a| a.is_empty()),
        "the generated policy has issues: {issues}"
    );
    let pid = policy.id();

    let words = u32::try_from(GLOBAL_WORDS.len())?;
    let requests: Vec<Bytes> = (0..1000)
        .map(|i| {
            let req = CheckRequest {
                attributes: Some(encode(&bag(i), words)),
                global_word_count: words,
                ..CheckRequest::default()
            };
            prepared::frame(&req.encode_to_vec())
        })
        .collect();
    let work = Arc::new(Checks::connect(grpc, args.connections, requests).await?);
    let code = work.check(0).await.context("first Check")?;
    anyhow::ensure!(code == 0, "the load's Check is refused (code {code})");
    println!(
        "policy: {} rules, bag of {} attributes ({} bytes on the wire)",
        args.rules,
        bag(0).len(),
        // The message, without its 5-byte gRPC frame header.
        work.requests
            .first()
            .map_or(0, |r| r.len().saturating_sub(5))
    );

    crate::drive::run_phases(
        &work,
        &crate::drive::Phases {
            server: "mixer-policy",
            pid,
            unit: "check",
            concurrency: args.concurrency,
            duration: args.duration,
            rate: args.rate,
            rate_duration: args.rate_duration,
        },
    )
    .await;
    drop(policy);
    drop(galley);
    Ok(())
}

#[cfg(test)]
mod tests {
    use mesh_model::{ParseOptions, parse_document_set};

    #[test]
    fn the_generated_policy_parses() {
        let set = parse_document_set("p.yaml", &super::policy(10), &ParseOptions::default());
        assert!(set.rejected.is_empty(), "{:?}", set.rejected);
        assert_eq!(set.accepted.len(), 14);
        assert_eq!(super::bag(3).len(), 20);
    }
}
