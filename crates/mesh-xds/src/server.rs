//! The ADS gRPC service: one protocol state machine per stream, fed by the client's
//! requests and by snapshot changes of the client's node group.
//!
//! The service is written against tonic's server primitives rather than generated
//! from the proto, so responses travel as pre-encoded bytes ([`Encoded`]): a set
//! pushed to a thousand clients is encoded once, and each stream adds only its nonce.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Instant,
};

use bytes::Bytes;
use http_body::Frame;
use parking_lot::Mutex;
use std::collections::VecDeque;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tonic::{
    Status,
    codegen::{Body, BoxFuture, StdError, http},
    server::NamedService,
};

use crate::{
    NodeGrouper, Snapshot, SnapshotCache, TypeMap, XdsMetrics,
    cache::{Published, node_id},
    delta::{DeltaResponse, DeltaStream},
    discovery::DeltaDiscoveryRequest,
    encode::Encoded,
    inbound::RequestStream,
    metrics::{RequestLabels, TypeLabels},
    sotw::{ProtocolError, RequestKind, SotwRequest, SotwResponse, SotwStream},
    status::{Nack, StreamGuard, SyncStatus, TypeStatus},
};

/// Decides whether the client on a stream may be served the node it claims, from
/// what its connection proved (the mTLS peer, if any) and the `Node` of its first
/// request. A refusal ends the stream with the returned status.
pub trait NodeAuthorizer: Send + Sync + 'static {
    /// `Ok` to serve the stream; `Err` (usually `PermissionDenied`) to end it.
    fn authorize(
        &self,
        peer: Option<&mesh_tls::PeerInfo>,
        node: Option<&mesh_api::envoy::envoy::config::core::v3::Node>,
    ) -> Result<(), Status>;
}

/// A [`NodeAuthorizer`] for servers whose clients are known workloads (galley's
/// mTLS MCP port): the client's certificate must name an identity matching one of
/// the patterns, whatever node it claims.
#[derive(Debug, Clone)]
pub struct AllowIdentities(pub Vec<mesh_tls::IdentityPattern>);

impl NodeAuthorizer for AllowIdentities {
    fn authorize(
        &self,
        peer: Option<&mesh_tls::PeerInfo>,
        _node: Option<&mesh_api::envoy::envoy::config::core::v3::Node>,
    ) -> Result<(), Status> {
        let Some(id) = peer.and_then(|p| p.identity.as_ref()) else {
            return Err(Status::unauthenticated(
                "a client certificate naming a SPIFFE identity is required",
            ));
        };
        if self.0.iter().any(|p| p.matches(id)) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "identity {id} may not read from this server"
            )))
        }
    }
}

/// The full gRPC name of the service.
pub const SERVICE_NAME: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Options of an ADS server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Identifier sent as `control_plane` in every response.
    pub control_plane_id: Option<String>,
    /// Type URLs pushed first, in this order, when a snapshot changes.
    pub push_order: Vec<&'static str>,
    /// Responses buffered per stream before the server waits for the client.
    pub response_buffer: usize,
    /// Streams computing a push at the same time; the rest wait their turn, so a
    /// storm of reconnecting clients cannot starve everything else of CPU.
    pub max_concurrent_pushes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            control_plane_id: None,
            push_order: crate::type_url::ENVOY_ORDER.to_vec(),
            response_buffer: 16,
            max_concurrent_pushes: 100,
        }
    }
}

/// An AggregatedDiscoveryService serving snapshots from a [`SnapshotCache`].
#[derive(Clone)]
pub struct AdsServer {
    inner: Arc<Inner>,
}

struct Inner {
    cache: SnapshotCache,
    grouper: Arc<dyn NodeGrouper>,
    ready: watch::Receiver<bool>,
    status: Arc<SyncStatus>,
    metrics: Arc<XdsMetrics>,
    opts: ServerOptions,
    shutdown: CancellationToken,
    push_slots: Semaphore,
}

impl AdsServer {
    /// Builds a server. Streams are refused with `Unavailable` while `ready` is false.
    pub fn new(
        cache: SnapshotCache,
        grouper: Arc<dyn NodeGrouper>,
        ready: watch::Receiver<bool>,
        status: Arc<SyncStatus>,
        metrics: Arc<XdsMetrics>,
        opts: ServerOptions,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                cache,
                grouper,
                ready,
                status,
                metrics,
                push_slots: Semaphore::new(opts.max_concurrent_pushes.max(1)),
                opts,
                shutdown,
            }),
        }
    }

    /// The tonic service to add to a server.
    pub fn into_service(self) -> AdsService {
        AdsService {
            server: self,
            authorizer: None,
        }
    }

    fn check_ready(&self) -> Result<(), Status> {
        if *self.inner.ready.borrow() {
            Ok(())
        } else {
            self.inner.metrics.refused_not_ready.inc();
            Err(Status::unavailable(
                "not ready: configuration sources are still loading",
            ))
        }
    }

    /// Serves one ADS stream: requests are decoded by tonic, responses are written
    /// as they are (see the module docs).
    fn serve_stream<P: Protocol, B>(
        &self,
        req: http::Request<B>,
        authorizer: Option<Arc<dyn NodeAuthorizer>>,
    ) -> http::Response<tonic::body::Body>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        if let Err(status) = self.check_ready() {
            return status.into_http();
        }
        let (parts, body) = req.into_parts();
        let peer = mesh_tls::remote_addr(&parts.extensions).map(|a| a.to_string());
        // Boxed: only mTLS ports have one, and it would make every stream's task larger.
        let gate = authorizer.map(|authorizer| {
            Box::new(Gate {
                authorizer,
                peer: mesh_tls::peer_info_from_extensions(&parts.extensions).cloned(),
            })
        });
        let inbound = RequestStream::<B, P::Req>::new(body, MAX_REQUEST_BYTES);
        let (tx, rx) = outbox(self.inner.opts.response_buffer.max(1));
        tokio::spawn(run_stream(
            self.inner.clone(),
            P::default(),
            inbound,
            tx,
            peer,
            gate,
        ));
        let mut response = http::Response::new(tonic::body::Body::new(ResponseBody {
            rx,
            queued: VecDeque::new(),
            finished: false,
        }));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        response
    }
}

/// The tonic service for [`AdsServer`]: both ADS methods.
#[derive(Clone)]
pub struct AdsService {
    server: AdsServer,
    authorizer: Option<Arc<dyn NodeAuthorizer>>,
}

impl AdsService {
    /// Checks every stream's first request with `authorizer` (for a port whose
    /// clients prove an identity, such as pilot's mTLS port).
    pub fn with_authorizer(mut self, authorizer: Arc<dyn NodeAuthorizer>) -> Self {
        self.authorizer = Some(authorizer);
        self
    }
}

/// What a stream checks its first request against.
struct Gate {
    authorizer: Arc<dyn NodeAuthorizer>,
    peer: Option<mesh_tls::PeerInfo>,
}

impl NamedService for AdsService {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> tonic::codegen::Service<http::Request<B>> for AdsService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let response = match req.uri().path() {
            SOTW_PATH => self
                .server
                .serve_stream::<SotwStream, B>(req, self.authorizer.clone()),
            DELTA_PATH => self
                .server
                .serve_stream::<DeltaStream, B>(req, self.authorizer.clone()),
            _ => Status::unimplemented("unknown method").into_http(),
        };
        Box::pin(async move { Ok(response) })
    }
}

/// Responses a stream's task has produced and its body has not yet taken: a
/// bounded queue between the two tasks of a stream, small enough to matter with
/// thousands of streams (tokio's `mpsc` channel is over 1 KiB per stream, most of
/// it room for 32 messages and padding).
struct Outbox {
    state: Mutex<OutboxState>,
    capacity: usize,
}

#[derive(Default)]
struct OutboxState {
    items: VecDeque<Result<Encoded, Status>>,
    /// The body, waiting for a response.
    body: Option<Waker>,
    /// The stream's task, waiting for room.
    task: Option<Waker>,
    /// The task is done: no more responses.
    task_done: bool,
    /// The body is gone (the client went away): responses are not wanted.
    body_gone: bool,
}

/// A bounded queue of responses and its two ends.
fn outbox(capacity: usize) -> (OutboxSender, OutboxReceiver) {
    let outbox = Arc::new(Outbox {
        state: Mutex::new(OutboxState::default()),
        capacity,
    });
    (OutboxSender(outbox.clone()), OutboxReceiver(outbox))
}

/// The stream task's end of its [`Outbox`].
struct OutboxSender(Arc<Outbox>);

impl OutboxSender {
    /// Queues a response, waiting while the outbox is full; false once the body
    /// is gone.
    async fn send(&self, item: Result<Encoded, Status>) -> bool {
        let mut item = Some(item);
        std::future::poll_fn(|cx| {
            let mut state = self.0.state.lock();
            if state.body_gone {
                return Poll::Ready(false);
            }
            if state.items.len() >= self.0.capacity {
                state.task = Some(cx.waker().clone());
                return Poll::Pending;
            }
            if let Some(item) = item.take() {
                state.items.push_back(item);
            }
            if let Some(body) = state.body.take() {
                body.wake();
            }
            Poll::Ready(true)
        })
        .await
    }
}

impl Drop for OutboxSender {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.task_done = true;
        if let Some(body) = state.body.take() {
            body.wake();
        }
    }
}

/// The response body's end of its [`Outbox`].
struct OutboxReceiver(Arc<Outbox>);

impl OutboxReceiver {
    /// The next response; `Ready(None)` once the task is done and all is taken.
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Encoded, Status>>> {
        let mut state = self.0.state.lock();
        match state.items.pop_front() {
            Some(item) => {
                if state.items.is_empty() && state.items.capacity() > 4 {
                    // A push's burst of responses is not kept room for while idle.
                    state.items.shrink_to(4);
                }
                if let Some(task) = state.task.take() {
                    task.wake();
                }
                Poll::Ready(Some(item))
            }
            None if state.task_done => Poll::Ready(None),
            None => {
                state.body = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.body_gone = true;
        state.items.clear();
        if let Some(task) = state.task.take() {
            task.wake();
        }
    }
}

/// A gRPC response body made of shared buffers: each message is its 5-byte frame
/// header followed by the encoded chunks; large chunks (a whole set's SotW body) are
/// handed to HTTP/2 without being copied, small ones are gathered into a few frames.
/// A set pushed to thousands of streams stays one allocation, and no stream keeps a
/// buffer the size of the largest response it ever sent.
struct ResponseBody {
    rx: OutboxReceiver,
    queued: VecDeque<Bytes>,
    finished: bool,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(chunk) = self.queued.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if self.finished {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(encoded))) => {
                let len = u32::try_from(encoded.len()).unwrap_or(u32::MAX);
                let mut header = Vec::with_capacity(5);
                header.push(0u8);
                header.extend_from_slice(&len.to_be_bytes());
                let frames = coalesce(Bytes::from(header), encoded.chunks);
                self.queued.extend(frames);
                let first = self.queued.pop_front().unwrap_or_default();
                Poll::Ready(Some(Ok(Frame::data(first))))
            }
            Poll::Ready(Some(Err(status))) => {
                self.finished = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))))
            }
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers(&Status::ok(""))))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished && self.queued.is_empty()
    }
}

/// Chunks at least this large go out as they are (shared); smaller neighbours are
/// copied together, so a response of a thousand small resources is a handful of
/// HTTP/2 frames rather than a thousand (HTTP/2 keeps bookkeeping per queued frame).
const SHARE_AT: usize = 16 * 1024;
/// Largest frame built by copying small chunks together.
const COALESCE_UP_TO: usize = 64 * 1024;

fn coalesce(header: Bytes, chunks: Vec<Bytes>) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut buf = bytes::BytesMut::from(header.as_ref());
    for chunk in chunks {
        if chunk.len() >= SHARE_AT {
            if !buf.is_empty() {
                out.push(std::mem::take(&mut buf).freeze());
            }
            out.push(chunk);
        } else {
            if buf.len() + chunk.len() > COALESCE_UP_TO {
                out.push(std::mem::take(&mut buf).freeze());
            }
            buf.extend_from_slice(&chunk);
        }
    }
    if !buf.is_empty() {
        out.push(buf.freeze());
    }
    out
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.clear();
        map.insert("grpc-status", http::HeaderValue::from_static("13"));
    }
    map
}

/// How a state machine classified a request, what to send, and any NACK.
type Handled<R> = Result<(RequestKind, Vec<R>, Option<Nack>), ProtocolError>;

/// What the stream loop needs of a protocol state machine.
trait Protocol: Default + Send + 'static {
    type Req: prost::Message + Default + Send + 'static;
    type Resp: Send + 'static;
    const NAME: &'static str;
    fn node(req: &Self::Req) -> Option<&mesh_api::envoy::envoy::config::core::v3::Node>;
    fn type_url(req: &Self::Req) -> &str;
    fn resp_type_url(resp: &Self::Resp) -> &str;
    fn encode(resp: &Self::Resp, control_plane: Option<&str>) -> Encoded;
    fn on_request(&mut self, req: &Self::Req, snapshot: Option<&Snapshot>) -> Handled<Self::Resp>;
    fn on_snapshot(&mut self, snapshot: &Snapshot, order: &[&str]) -> Vec<Self::Resp>;
    fn write_status(&self, out: &mut TypeMap<TypeStatus>);
}

impl Protocol for SotwStream {
    // Read with the subscribed names undecoded: most requests repeat the held ones.
    type Req = SotwRequest;
    type Resp = SotwResponse;
    const NAME: &'static str = "sotw";
    fn node(req: &Self::Req) -> Option<&mesh_api::envoy::envoy::config::core::v3::Node> {
        req.request.node.as_ref()
    }
    fn type_url(req: &Self::Req) -> &str {
        &req.request.type_url
    }
    fn resp_type_url(resp: &Self::Resp) -> &str {
        &resp.type_url
    }
    fn encode(resp: &Self::Resp, control_plane: Option<&str>) -> Encoded {
        resp.encode(control_plane)
    }
    fn on_request(&mut self, req: &Self::Req, snapshot: Option<&Snapshot>) -> Handled<Self::Resp> {
        SotwStream::on_sotw_request(self, req, snapshot).map(|o| (o.kind, o.responses, o.nack))
    }
    fn on_snapshot(&mut self, snapshot: &Snapshot, order: &[&str]) -> Vec<Self::Resp> {
        SotwStream::on_snapshot(self, snapshot, order)
    }
    fn write_status(&self, out: &mut TypeMap<TypeStatus>) {
        SotwStream::write_status(self, out)
    }
}

impl Protocol for DeltaStream {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaResponse;
    const NAME: &'static str = "delta";
    fn node(req: &Self::Req) -> Option<&mesh_api::envoy::envoy::config::core::v3::Node> {
        req.node.as_ref()
    }
    fn type_url(req: &Self::Req) -> &str {
        &req.type_url
    }
    fn resp_type_url(resp: &Self::Resp) -> &str {
        &resp.type_url
    }
    fn encode(resp: &Self::Resp, control_plane: Option<&str>) -> Encoded {
        resp.encode(control_plane)
    }
    fn on_request(&mut self, req: &Self::Req, snapshot: Option<&Snapshot>) -> Handled<Self::Resp> {
        DeltaStream::on_request(self, req, snapshot).map(|o| (o.kind, o.responses, o.nack))
    }
    fn on_snapshot(&mut self, snapshot: &Snapshot, order: &[&str]) -> Vec<Self::Resp> {
        DeltaStream::on_snapshot(self, snapshot, order)
    }
    fn write_status(&self, out: &mut TypeMap<TypeStatus>) {
        DeltaStream::write_status(self, out)
    }
}

type SnapshotRx = watch::Receiver<Option<Published>>;

async fn snapshot_changed(rx: &mut Option<SnapshotRx>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

async fn run_stream<P, B>(
    inner: Arc<Inner>,
    mut machine: P,
    mut inbound: RequestStream<B, P::Req>,
    tx: OutboxSender,
    peer: Option<String>,
    gate: Option<Box<Gate>>,
) where
    P: Protocol,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let guard: StreamGuard = inner.status.register(P::NAME, peer);
    let mut conn = Connected::new(&inner, P::NAME);
    let mut snapshots: Option<SnapshotRx> = None;
    let order: Vec<&str> = inner.opts.push_order.clone();
    // When the snapshot this stream was last pushed was published, until the
    // client has ACKed all of it.
    let mut converging: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => {
                tx.send(Err(Status::unavailable("server shutting down"))).await;
                break;
            }
            msg = inbound.message() => {
                let req = match msg {
                    Ok(Some(req)) => req,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(node = %conn.node, error = %status, "xDS stream ended by client");
                        break;
                    }
                };
                if snapshots.is_none() {
                    let n = P::node(&req);
                    conn.node = node_id(n);
                    if let Some(gate) = &gate
                        && let Err(status) = gate.authorizer.authorize(gate.peer.as_ref(), n)
                    {
                        inner.metrics.refused_unauthorized.inc();
                        let identity = gate
                            .peer
                            .as_ref()
                            .and_then(|p| p.identity.as_ref())
                            .map(|id| id.to_string());
                        tracing::warn!(node = %conn.node, identity = identity.as_deref().unwrap_or("<none>"), error = %status.message(), "xDS stream refused");
                        tx.send(Err(status)).await;
                        break;
                    }
                    let group = inner.grouper.group(n);
                    let cluster = n.map(|n| n.cluster.clone()).unwrap_or_default();
                    guard.update(|s| {
                        s.node_id = conn.node.clone();
                        s.node_cluster = cluster;
                        s.group = group.clone();
                    });
                    tracing::info!(node = %conn.node, group = %group, protocol = P::NAME, "xDS client connected");
                    snapshots = Some(inner.cache.watch(&group));
                }
                // Read without marking seen: a change not yet pushed to the other
                // subscribed types must still wake the snapshot branch.
                let current = snapshots.as_ref().and_then(|rx| rx.borrow().clone());
                let type_url = P::type_url(&req).to_string();
                let started = Instant::now();
                let Ok(_slot) = inner.push_slots.acquire().await else { break };
                let handled = machine.on_request(&req, current.as_ref().map(|p| &*p.snapshot));
                match handled {
                    Ok((kind, responses, nack)) => {
                        inner.metrics.requests
                            .get_or_create(&RequestLabels { type_url: type_url.clone(), kind: kind.as_str().into() })
                            .inc();
                        if let Some(nack) = nack {
                            inner.metrics.nacks.get_or_create(&TypeLabels { type_url: type_url.clone() }).inc();
                            tracing::warn!(node = %conn.node, %type_url, version = %nack.version, error = %nack.error, "xDS client rejected a response");
                        }
                        let pushing = !responses.is_empty();
                        let encoded = encode_all::<P>(&inner, responses);
                        drop(_slot);
                        if pushing {
                            inner.metrics.push_seconds.observe(started.elapsed().as_secs_f64());
                            if converging.is_none() {
                                converging = current.as_ref().map(|p| p.at);
                            }
                        }
                        if !send_all(&tx, encoded).await {
                            break;
                        }
                    }
                    Err(e) => {
                        tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                        break;
                    }
                }
                let mut converged = false;
                guard.update(|s| {
                    machine.write_status(&mut s.types);
                    converged = s.types.values().all(|t| t.sent_version.is_none() || t.sent_version == t.acked_version);
                });
                if let Some(since) = converging
                    && converged
                {
                    inner.metrics.convergence_seconds.observe(since.elapsed().as_secs_f64());
                    converging = None;
                }
            }
            alive = snapshot_changed(&mut snapshots) => {
                if !alive {
                    break;
                }
                let current = snapshots.as_mut().and_then(|rx| rx.borrow_and_update().clone());
                if let Some(published) = current {
                    let started = Instant::now();
                    let Ok(slot) = inner.push_slots.acquire().await else { break };
                    let responses = machine.on_snapshot(&published.snapshot, &order);
                    let pushing = !responses.is_empty();
                    let encoded = encode_all::<P>(&inner, responses);
                    drop(slot);
                    if pushing {
                        inner.metrics.push_seconds.observe(started.elapsed().as_secs_f64());
                        converging = Some(published.at);
                    }
                    if !send_all(&tx, encoded).await {
                        break;
                    }
                    guard.update(|s| machine.write_status(&mut s.types));
                }
            }
        }
    }
}

/// Counts a stream as connected while its task lives, and logs its end however it
/// ends (the task is also dropped where it stands when the runtime shuts down).
struct Connected<'a> {
    inner: &'a Inner,
    protocol: &'static str,
    node: String,
}

impl<'a> Connected<'a> {
    fn new(inner: &'a Inner, protocol: &'static str) -> Self {
        inner.metrics.connected.inc();
        Self {
            inner,
            protocol,
            node: String::from("<no node>"),
        }
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.inner.metrics.connected.dec();
        tracing::info!(node = %self.node, protocol = self.protocol, "xDS client disconnected");
    }
}

/// Encodes responses (counting them) so they can be sent after the push slot is
/// released: a slow client then holds up only its own stream.
fn encode_all<P: Protocol>(inner: &Inner, responses: Vec<P::Resp>) -> Vec<Encoded> {
    let control_plane = inner.opts.control_plane_id.as_deref();
    responses
        .iter()
        .map(|resp| {
            inner
                .metrics
                .pushes
                .get_or_create(&TypeLabels {
                    type_url: P::resp_type_url(resp).to_string(),
                })
                .inc();
            P::encode(resp, control_plane)
        })
        .collect()
}

async fn send_all(tx: &OutboxSender, encoded: Vec<Encoded>) -> bool {
    for e in encoded {
        if !tx.send(Ok(e)).await {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod body_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn recv(rx: &OutboxReceiver) -> Option<Result<Encoded, Status>> {
        std::future::poll_fn(|cx| rx.poll_recv(cx)).await
    }

    #[tokio::test]
    async fn the_outbox_is_bounded_and_ends_with_either_side() {
        let (tx, rx) = outbox(2);
        assert!(tx.send(Ok(Encoded::default())).await);
        assert!(tx.send(Ok(Encoded::default())).await);
        // Full: the third waits until the body takes one.
        let third = tokio::spawn(async move {
            let sent = tx.send(Err(Status::internal("last"))).await;
            (sent, tx)
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "a full outbox makes the task wait");
        assert!(matches!(recv(&rx).await, Some(Ok(_))));
        let (sent, tx) = tokio::time::timeout(std::time::Duration::from_secs(5), third)
            .await
            .unwrap()
            .unwrap();
        assert!(sent, "taking a response wakes the waiting task");
        assert!(matches!(recv(&rx).await, Some(Ok(_))));
        assert_eq!(recv(&rx).await.unwrap().unwrap_err().message(), "last");
        // A waiting body is woken when the task ends, and sees the end.
        let body = tokio::spawn(async move { recv(&rx).await.is_none() });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(tx);
        assert!(body.await.unwrap());

        // Once the body is gone, a task waiting for room learns it.
        let (tx, rx) = outbox(1);
        assert!(tx.send(Ok(Encoded::default())).await);
        let waiting = tokio::spawn(async move { tx.send(Ok(Encoded::default())).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(rx);
        assert!(!waiting.await.unwrap());
    }

    #[test]
    fn small_chunks_are_gathered_and_large_ones_shared() {
        let big = Bytes::from(vec![7u8; SHARE_AT]);
        let small: Vec<Bytes> = (0..100).map(|i| Bytes::from(vec![i as u8; 1000])).collect();
        let mut chunks = small.clone();
        chunks.push(big.clone());
        chunks.extend(small.iter().take(3).cloned());
        let frames = coalesce(Bytes::from_static(b"HDR01"), chunks.clone());
        let joined: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        let expected: Vec<u8> = b"HDR01"
            .iter()
            .copied()
            .chain(chunks.iter().flat_map(|c| c.iter().copied()))
            .collect();
        assert_eq!(joined, expected, "same bytes in the same order");
        assert!(frames.len() <= 5, "{} frames", frames.len());
        assert!(
            frames
                .iter()
                .all(|f| f.len() <= COALESCE_UP_TO || f.len() == big.len())
        );
        assert!(
            frames.iter().any(|f| f.as_ptr() == big.as_ptr()),
            "the large chunk is not copied"
        );
    }
}

#[cfg(test)]
mod stream_size_tests {
    use super::*;

    /// Every connected stream's task holds its future for as long as the stream
    /// lives: with thousands of streams its size is a real share of the memory.
    /// Holding a request inline (hundreds of bytes, once per await point that
    /// keeps it) made it 2.8 KiB; boxed, it is about 1 KiB.
    #[test]
    fn a_stream_task_stays_small() {
        let server = AdsServer::new(
            SnapshotCache::new(),
            Arc::new(crate::SingleGroup),
            watch::channel(true).1,
            SyncStatus::new(),
            XdsMetrics::unregistered(),
            ServerOptions::default(),
            CancellationToken::new(),
        );
        let (tx, _rx) = outbox(1);
        let sotw = run_stream(
            server.inner.clone(),
            SotwStream::default(),
            RequestStream::<_, SotwRequest>::new(tonic::body::Body::empty(), 1),
            tx,
            None,
            None,
        );
        let delta = run_stream(
            server.inner.clone(),
            DeltaStream::default(),
            RequestStream::<_, DeltaDiscoveryRequest>::new(tonic::body::Body::empty(), 1),
            outbox(1).0,
            None,
            None,
        );
        for (protocol, size) in [
            ("sotw", std::mem::size_of_val(&sotw)),
            ("delta", std::mem::size_of_val(&delta)),
        ] {
            assert!(size <= 1536, "{protocol} stream future is {size} bytes");
        }
    }
}
