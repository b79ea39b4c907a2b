//! Simulated ADS proxies: many Envoy sidecars (or proxyless gRPC clients) in one
//! process, each on its own HTTP/2 connection, as pilot sees a mesh.
//!
//! - [`ProxySpec`] is who a proxy is: its node id follows pilot's convention
//!   (`sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`, metadata `NAMESPACE`,
//!   `LABELS`, and `GENERATOR=grpc` for proxyless clients);
//! - [`state::ProxyState`] is the protocol logic (what to ask, ACKs), transport-free;
//! - [`Fleet`] runs proxies: each connects, streams, and on any failure reconnects with
//!   jittered exponential backoff (anywhere in `[d/2, d]`, `d` doubling from
//!   `backoff_min` to `backoff_max`), as Envoy does. The load tool reads every
//!   proxy's progress through [`Fleet::reports`].
//!
//! Responses are taken off the wire as raw bytes and read lazily (see [`decode`]),
//! so the simulator stays cheap beside the server it measures.

pub mod decode;
pub mod state;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes};
use mesh_api::envoy::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest},
    },
    google::protobuf::{Struct, Value, value::Kind as ValueKind},
};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};

pub use decode::{Kind, SetStore};
pub use state::{Protocol, ProxyState, Request, TypeView};

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Who a simulated proxy is.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySpec {
    /// Index in the fleet.
    pub index: usize,
    /// Namespace.
    pub namespace: String,
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// Pod name.
    pub pod: String,
    /// Workload labels.
    pub labels: BTreeMap<String, String>,
    /// Proxyless gRPC client asking for these listeners; None for a sidecar.
    pub listeners: Option<Vec<String>>,
}

impl ProxySpec {
    /// The node id, per pilot's convention.
    pub fn node_id(&self) -> String {
        format!(
            "sidecar~{}~{}.{ns}~{ns}.svc.cluster.local",
            self.ip,
            self.pod,
            ns = self.namespace
        )
    }

    /// The node sent on the first request of every stream.
    pub fn node(&self) -> Node {
        let s = |v: &str| Value {
            kind: Some(ValueKind::StringValue(v.to_string())),
        };
        let mut fields = BTreeMap::new();
        fields.insert("NAMESPACE".to_string(), s(&self.namespace));
        fields.insert(
            "LABELS".to_string(),
            Value {
                kind: Some(ValueKind::StructValue(Struct {
                    fields: self.labels.iter().map(|(k, v)| (k.clone(), s(v))).collect(),
                })),
            },
        );
        if self.listeners.is_some() {
            fields.insert("GENERATOR".to_string(), s("grpc"));
        }
        Node {
            id: self.node_id(),
            cluster: format!("{}.{}", self.pod_app(), self.namespace),
            user_agent_name: if self.listeners.is_some() {
                "gRPC Go".into()
            } else {
                "envoy".into()
            },
            metadata: Some(Struct {
                fields: fields.into_iter().collect(),
            }),
            ..Node::default()
        }
    }

    fn pod_app(&self) -> &str {
        self.labels.get("app").map(String::as_str).unwrap_or("load")
    }
}

/// The specs of `count` proxies spread over `namespaces` namespaces (`ns0`, ...),
/// with `apps` distinct `app` labels; proxyless ones ask for `listeners_per_proxy`
/// of `hosts` (as `<host>:<port>`), spread over them.
pub fn proxy_specs(
    count: usize,
    namespaces: usize,
    apps: usize,
    proxyless: Option<(&[String], u16, usize)>,
) -> Vec<ProxySpec> {
    let namespaces = namespaces.max(1);
    let apps = apps.max(1);
    (0..count)
        .map(|i| {
            let app = format!("load-app{}", i % apps);
            let ip = Ipv4Addr::new(
                10,
                128 + ((i >> 16) & 0x3f) as u8,
                ((i >> 8) & 0xff) as u8,
                (i & 0xff) as u8,
            );
            let listeners = proxyless.map(|(hosts, port, per)| {
                let mut l: Vec<String> = (0..per.min(hosts.len()))
                    .map(|j| format!("{}:{port}", hosts[(i * 7 + j * 13) % hosts.len()]))
                    .collect();
                l.sort();
                l.dedup();
                l
            });
            ProxySpec {
                index: i,
                namespace: format!("ns{}", i % namespaces),
                ip,
                pod: format!("{app}-{i}"),
                labels: [
                    ("app".to_string(), app),
                    ("version".to_string(), "v1".to_string()),
                ]
                .into(),
                listeners,
            }
        })
        .collect()
}

/// How the fleet reaches the server.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// e.g. `http://127.0.0.1:15010`.
    pub endpoint: String,
    /// SotW or delta.
    pub protocol: Protocol,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

/// One proxy's progress, as the load tool reads it.
#[derive(Debug, Clone)]
pub struct ProxyReport {
    /// Index in the fleet.
    pub index: usize,
    /// Holds everything it asked for on its current stream.
    pub complete: bool,
    /// When it last became complete.
    pub complete_since: Option<Instant>,
    /// Streams that received at least one response.
    pub streams: u32,
    /// When the current stream received its first response.
    pub stream_started: Option<Instant>,
    /// When the last stream was lost.
    pub stream_lost: Option<Instant>,
    /// Connection or stream failures so far.
    pub failures: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// Per type (index [`Kind::index`]).
    pub types: [TypeView; 4],
    /// Responses received.
    pub responses: u64,
    /// Bytes of responses received.
    pub bytes: u64,
}

impl ProxyReport {
    /// The view of one type.
    pub fn of(&self, kind: Kind) -> &TypeView {
        &self.types[kind.index()]
    }
}

struct Shared {
    state: ProxyState,
    complete: bool,
    complete_since: Option<Instant>,
    streams: u32,
    stream_started: Option<Instant>,
    stream_lost: Option<Instant>,
    failures: u32,
    last_error: Option<String>,
    responses: u64,
    bytes: u64,
}

impl Shared {
    fn report(&self, index: usize) -> ProxyReport {
        ProxyReport {
            index,
            complete: self.complete,
            complete_since: self.complete_since,
            streams: self.streams,
            stream_started: self.stream_started,
            stream_lost: self.stream_lost,
            failures: self.failures,
            last_error: self.last_error.clone(),
            types: Kind::ALL.map(|k| self.state.view(k)),
            responses: self.responses,
            bytes: self.bytes,
        }
    }
}

struct ProxyHandle {
    spec: ProxySpec,
    shared: Mutex<Shared>,
}

/// Running simulated proxies.
pub struct Fleet {
    config: Arc<FleetConfig>,
    store: Arc<SetStore>,
    proxies: Vec<Arc<ProxyHandle>>,
    tasks: tokio::task::JoinSet<()>,
    shutdown: CancellationToken,
}

impl Fleet {
    /// A fleet with no proxy yet.
    pub fn new(config: FleetConfig) -> Self {
        Self {
            config: Arc::new(config),
            store: SetStore::new(),
            proxies: Vec::new(),
            tasks: tokio::task::JoinSet::new(),
            shutdown: CancellationToken::new(),
        }
    }

    /// Starts a proxy now.
    pub fn spawn(&mut self, spec: ProxySpec) {
        let state = ProxyState::new(
            self.config.protocol,
            spec.node(),
            spec.listeners.clone(),
            self.store.clone(),
        );
        let handle = Arc::new(ProxyHandle {
            spec,
            shared: Mutex::new(Shared {
                state,
                complete: false,
                complete_since: None,
                streams: 0,
                stream_started: None,
                stream_lost: None,
                failures: 0,
                last_error: None,
                responses: 0,
                bytes: 0,
            }),
        });
        self.proxies.push(handle.clone());
        let config = self.config.clone();
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(run_proxy(config, handle, shutdown));
    }

    /// Proxies started.
    pub fn len(&self) -> usize {
        self.proxies.len()
    }

    /// Whether no proxy was started.
    pub fn is_empty(&self) -> bool {
        self.proxies.is_empty()
    }

    /// The spec of proxy `index`.
    pub fn spec(&self, index: usize) -> Option<&ProxySpec> {
        self.proxies.get(index).map(|p| &p.spec)
    }

    /// Every proxy's progress now.
    pub fn reports(&self) -> Vec<ProxyReport> {
        self.proxies
            .iter()
            .enumerate()
            .map(|(i, p)| p.shared.lock().report(i))
            .collect()
    }

    /// Resource versions proxy `index` holds of `kind`.
    pub fn resource_versions(
        &self,
        index: usize,
        kind: Kind,
    ) -> std::collections::HashMap<String, String> {
        self.proxies
            .get(index)
            .map(|p| p.shared.lock().state.resource_versions(kind))
            .unwrap_or_default()
    }

    /// Polls the reports until `done` holds for them, or fails after `timeout` with
    /// `done`'s last complaint. `done` returns Ok when satisfied, Err(why) otherwise.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[ProxyReport]) -> Result<(), String>,
    ) -> anyhow::Result<Vec<ProxyReport>> {
        let deadline = Instant::now() + timeout;
        loop {
            let reports = self.reports();
            match done(&reports) {
                Ok(()) => return Ok(reports),
                Err(why) if Instant::now() >= deadline => {
                    anyhow::bail!("not within {timeout:?}: {why}")
                }
                Err(_) => {}
            }
            let poll = if self.proxies.len() > 1000 { 50 } else { 10 };
            tokio::time::sleep(Duration::from_millis(poll)).await;
        }
    }

    /// Stops every proxy.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn run_proxy(
    config: Arc<FleetConfig>,
    handle: Arc<ProxyHandle>,
    shutdown: CancellationToken,
) {
    let mut delay = config.backoff_min;
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = stream_once(&config, &handle) => r,
        };
        let (progressed, error) = match result {
            Ok(progressed) => (progressed, "server closed the stream".to_string()),
            Err((progressed, e)) => (progressed, format!("{e:#}")),
        };
        {
            let mut s = handle.shared.lock();
            s.complete = false;
            s.failures += 1;
            s.last_error = Some(error);
            s.stream_lost = Some(Instant::now());
        }
        if progressed {
            delay = config.backoff_min;
        }
        let wait = delay.mul_f64(0.5 + fastrand::f64() * 0.5);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        delay = (delay * 2).min(config.backoff_max);
    }
}

/// One stream's life: whether any response came, and why it ended.
async fn stream_once(
    config: &FleetConfig,
    handle: &ProxyHandle,
) -> Result<bool, (bool, anyhow::Error)> {
    let channel = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| (false, e.into()))?
        .connect_timeout(Duration::from_secs(10))
        .initial_stream_window_size(Some(16 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| (false, e.into()))?;
    match config.protocol {
        Protocol::Sotw => {
            drive::<DiscoveryRequest>(channel, SOTW_PATH, handle, |r| match r {
                Request::Sotw(r) => Some(r),
                Request::Delta(_) => None,
            })
            .await
        }
        Protocol::Delta => {
            drive::<DeltaDiscoveryRequest>(channel, DELTA_PATH, handle, |r| match r {
                Request::Delta(r) => Some(r),
                Request::Sotw(_) => None,
            })
            .await
        }
    }
}

async fn drive<Req: prost::Message + Default + Send + 'static>(
    channel: tonic::transport::Channel,
    path: &'static str,
    handle: &ProxyHandle,
    unwrap: fn(Request) -> Option<Req>,
) -> Result<bool, (bool, anyhow::Error)> {
    let mut client = tonic::client::Grpc::new(channel).max_decoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::channel::<Req>(64);
    let first = handle.shared.lock().state.start_stream();
    for req in first.into_iter().filter_map(unwrap) {
        if tx.send(req).await.is_err() {
            return Err((false, anyhow::anyhow!("request channel closed")));
        }
    }
    client.ready().await.map_err(|e| (false, e.into()))?;
    let mut stream = client
        .streaming(
            tonic::Request::new(ReceiverStream::new(rx)),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            RawCodec::<Req>::default(),
        )
        .await
        .map_err(|e| (false, e.into()))?
        .into_inner();
    let mut progressed = false;
    loop {
        let body = match stream.message().await {
            Ok(Some(body)) => body,
            Ok(None) => return Err((progressed, anyhow::anyhow!("server closed the stream"))),
            Err(status) => return Err((progressed, status.into())),
        };
        let now = Instant::now();
        let requests = {
            let mut s = handle.shared.lock();
            if !progressed {
                s.streams += 1;
                s.stream_started = Some(now);
            }
            s.responses += 1;
            s.bytes += body.len() as u64;
            let requests = s
                .state
                .on_response(body, now)
                .map_err(|e| (true, anyhow::Error::from(e)))?;
            let complete = s.state.complete();
            if complete && !s.complete {
                s.complete_since = Some(now);
            }
            s.complete = complete;
            requests
        };
        progressed = true;
        for req in requests.into_iter().filter_map(unwrap) {
            if tx.send(req).await.is_err() {
                return Err((true, anyhow::anyhow!("request channel closed")));
            }
        }
    }
}

/// Encodes requests with prost; hands responses over undecoded.
struct RawCodec<Req>(std::marker::PhantomData<fn() -> Req>);

impl<Req> Default for RawCodec<Req> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<Req: prost::Message + Send + 'static> Codec for RawCodec<Req> {
    type Encode = Req;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<Req>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn node_ids_follow_pilots_convention() {
        let specs = proxy_specs(300, 3, 10, None);
        let p = &specs[257];
        assert_eq!(p.namespace, "ns2");
        assert_eq!(
            p.node_id(),
            "sidecar~10.128.1.1~load-app7-257.ns2~ns2.svc.cluster.local"
        );
        let node = p.node();
        let meta = node.metadata.unwrap();
        assert!(meta.fields.contains_key("LABELS"));
        assert!(!meta.fields.contains_key("GENERATOR"));
        assert_eq!(node.user_agent_name, "envoy");
        // Distinct IPs.
        let ips: std::collections::BTreeSet<_> = specs.iter().map(|s| s.ip).collect();
        assert_eq!(ips.len(), 300);
    }

    #[test]
    fn proxyless_clients_ask_for_host_port_listeners() {
        let hosts: Vec<String> = (0..10)
            .map(|i| format!("svc{i}.ns0.svc.cluster.local"))
            .collect();
        let specs = proxy_specs(4, 1, 1, Some((&hosts, 8080, 3)));
        let l = specs[1].listeners.as_ref().unwrap();
        assert_eq!(l.len(), 3);
        assert!(l.iter().all(|n| n.ends_with(".svc.cluster.local:8080")));
        let meta = specs[1].node().metadata.unwrap();
        assert!(meta.fields.contains_key("GENERATOR"));
    }
}
