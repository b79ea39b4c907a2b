//! The tonic service: one protocol state machine per ADS stream, fed by the client's
//! requests and by snapshot changes of the client's node group.

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    NodeGrouper, Snapshot, SnapshotCache, XdsMetrics,
    cache::node_id,
    delta::DeltaStream,
    discovery::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
        aggregated_discovery_service_server::{
            AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
        },
    },
    metrics::{RequestLabels, TypeLabels},
    sotw::{ProtocolError, RequestKind, SotwStream},
    status::{Nack, StreamGuard, SyncStatus, TypeStatus},
};

/// Options of an ADS server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Identifier sent as `control_plane` in every response.
    pub control_plane_id: Option<String>,
    /// Type URLs pushed first, in this order, when a snapshot changes.
    pub push_order: Vec<&'static str>,
    /// Responses buffered per stream before the server waits for the client.
    pub response_buffer: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            control_plane_id: None,
            push_order: crate::type_url::ENVOY_ORDER.to_vec(),
            response_buffer: 16,
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
                opts,
                shutdown,
            }),
        }
    }

    /// The tonic service to add to a server.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
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
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.check_ready()?;
        let peer = request.remote_addr().map(|a| a.to_string());
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(self.inner.opts.response_buffer.max(1));
        let machine = SotwStream::new(self.inner.opts.control_plane_id.clone());
        tokio::spawn(run_stream(self.inner.clone(), machine, inbound, tx, peer));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        self.check_ready()?;
        let peer = request.remote_addr().map(|a| a.to_string());
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(self.inner.opts.response_buffer.max(1));
        let machine = DeltaStream::new(self.inner.opts.control_plane_id.clone());
        tokio::spawn(run_stream(self.inner.clone(), machine, inbound, tx, peer));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// How a state machine classified a request, what to send, and any NACK.
type Handled<R> = Result<(RequestKind, Vec<R>, Option<Nack>), ProtocolError>;

/// What the stream loop needs of a protocol state machine.
trait Protocol: Send + 'static {
    type Req: Send + 'static;
    type Resp: Send + 'static;
    const NAME: &'static str;
    fn node(req: &Self::Req) -> Option<&mesh_api::envoy::envoy::config::core::v3::Node>;
    fn type_url(req: &Self::Req) -> &str;
    fn resp_type_url(resp: &Self::Resp) -> &str;
    fn on_request(
        &mut self,
        req: &Self::Req,
        snapshot: Option<&Snapshot>,
    ) -> Handled<Self::Resp>;
    fn on_snapshot(&mut self, snapshot: &Snapshot, order: &[&str]) -> Vec<Self::Resp>;
    fn status(&self) -> std::collections::BTreeMap<String, TypeStatus>;
}

impl Protocol for SotwStream {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    const NAME: &'static str = "sotw";
    fn node(req: &Self::Req) -> Option<&mesh_api::envoy::envoy::config::core::v3::Node> {
        req.node.as_ref()
    }
    fn type_url(req: &Self::Req) -> &str {
        &req.type_url
    }
    fn resp_type_url(resp: &Self::Resp) -> &str {
        &resp.type_url
    }
    fn on_request(
        &mut self,
        req: &Self::Req,
        snapshot: Option<&Snapshot>,
    ) -> Handled<Self::Resp> {
        SotwStream::on_request(self, req, snapshot).map(|o| (o.kind, o.responses, o.nack))
    }
    fn on_snapshot(&mut self, snapshot: &Snapshot, order: &[&str]) -> Vec<Self::Resp> {
        SotwStream::on_snapshot(self, snapshot, order)
    }
    fn status(&self) -> std::collections::BTreeMap<String, TypeStatus> {
        SotwStream::status(self)
    }
}

impl Protocol for DeltaStream {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
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
    fn on_request(
        &mut self,
        req: &Self::Req,
        snapshot: Option<&Snapshot>,
    ) -> Handled<Self::Resp> {
        DeltaStream::on_request(self, req, snapshot).map(|o| (o.kind, o.responses, o.nack))
    }
    fn on_snapshot(&mut self, snapshot: &Snapshot, order: &[&str]) -> Vec<Self::Resp> {
        DeltaStream::on_snapshot(self, snapshot, order)
    }
    fn status(&self) -> std::collections::BTreeMap<String, TypeStatus> {
        DeltaStream::status(self)
    }
}

type SnapshotRx = watch::Receiver<Option<Arc<Snapshot>>>;

async fn snapshot_changed(rx: &mut Option<SnapshotRx>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

async fn run_stream<P: Protocol>(
    inner: Arc<Inner>,
    mut machine: P,
    mut inbound: Streaming<P::Req>,
    tx: mpsc::Sender<Result<P::Resp, Status>>,
    peer: Option<String>,
) where
    Streaming<P::Req>: Send,
{
    let guard: StreamGuard = inner.status.register(P::NAME, peer);
    inner.metrics.connected.inc();
    let mut snapshots: Option<SnapshotRx> = None;
    let mut node = String::from("<no node>");
    let order: Vec<&str> = inner.opts.push_order.clone();
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => {
                let _ = tx.send(Err(Status::unavailable("server shutting down"))).await;
                break;
            }
            msg = inbound.message() => {
                let req = match msg {
                    Ok(Some(req)) => req,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%node, error = %status, "xDS stream ended by client");
                        break;
                    }
                };
                if snapshots.is_none() {
                    let n = P::node(&req);
                    node = node_id(n);
                    let group = inner.grouper.group(n);
                    let cluster = n.map(|n| n.cluster.clone()).unwrap_or_default();
                    guard.update(|s| {
                        s.node_id = node.clone();
                        s.node_cluster = cluster;
                        s.group = group.clone();
                    });
                    tracing::info!(%node, group = %group, protocol = P::NAME, "xDS client connected");
                    snapshots = Some(inner.cache.watch(&group));
                }
                let current = snapshots.as_ref().and_then(|rx| rx.borrow().clone());
                let type_url = P::type_url(&req).to_string();
                match machine.on_request(&req, current.as_deref()) {
                    Ok((kind, responses, nack)) => {
                        inner.metrics.requests
                            .get_or_create(&RequestLabels { type_url: type_url.clone(), kind: kind.as_str().into() })
                            .inc();
                        if let Some(nack) = nack {
                            inner.metrics.nacks.get_or_create(&TypeLabels { type_url: type_url.clone() }).inc();
                            tracing::warn!(%node, %type_url, version = %nack.version, error = %nack.error, "xDS client rejected a response");
                        }
                        if !send_all::<P>(&inner, &tx, responses).await {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                        break;
                    }
                }
                guard.update(|s| s.types = machine.status());
            }
            alive = snapshot_changed(&mut snapshots) => {
                if !alive {
                    break;
                }
                let current = snapshots.as_mut().and_then(|rx| rx.borrow_and_update().clone());
                if let Some(snapshot) = current {
                    let responses = machine.on_snapshot(&snapshot, &order);
                    if !send_all::<P>(&inner, &tx, responses).await {
                        break;
                    }
                    guard.update(|s| s.types = machine.status());
                }
            }
        }
    }
    inner.metrics.connected.dec();
    tracing::info!(%node, protocol = P::NAME, "xDS client disconnected");
}

async fn send_all<P: Protocol>(
    inner: &Inner,
    tx: &mpsc::Sender<Result<P::Resp, Status>>,
    responses: Vec<P::Resp>,
) -> bool {
    for resp in responses {
        inner
            .metrics
            .pushes
            .get_or_create(&TypeLabels {
                type_url: P::resp_type_url(&resp).to_string(),
            })
            .inc();
        if tx.send(Ok(resp)).await.is_err() {
            return false;
        }
    }
    true
}
