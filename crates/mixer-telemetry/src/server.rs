//! mixer-telemetry's process: follow galley, compile each configuration version
//! into a [`Pipeline`], take reports on 9091 (the Mixer Report API and Envoy's
//! access log service) and serve the prometheus handlers' metrics on 42422.
//!
//! Reports are decoded and checked as they arrive, then queued for the workers
//! that feed the pipeline. The queue is bounded (in records): a report that
//! does not fit waits for the workers to make room, up to `queue_wait`, and is
//! then refused whole with `ResourceExhausted`, for the reporter to retry, and
//! counted; nothing is dropped silently.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, header},
    response::IntoResponse,
    routing::get,
};
use bytes::Bytes;
use mesh_api::{
    envoy::envoy::service::accesslog::v3::{
        StreamAccessLogsMessage, StreamAccessLogsResponse,
        access_log_service_server::{AccessLogService, AccessLogServiceServer},
        stream_access_logs_message::LogEntries,
    },
    mixer::v1::{
        CheckRequest, CheckResponse, ReportRequest, ReportResponse,
        mixer_server::{Mixer, MixerServer},
    },
};
use mesh_mcp::{McpStore, McpView, collections};
use mesh_model::Resource;
use mesh_runtime::{AdminServer, GrpcSupport, Readiness};
use mesh_xds::client::{DeltaClient, DeltaClientConfig};
use mixer_core::wire::{self, AttributeBag};
use parking_lot::RwLock;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry as MetricsRegistry,
};
use serde_json::json;
use tokio::{
    sync::{Mutex, Notify, mpsc, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    accesslog::{Reporter, http_attributes, tcp_attributes},
    defaults::standard_metrics,
    graph::ServiceGraph,
    otel::{OtelCounters, OtelExporters},
    pipeline::{Outcome, Outputs, Pipeline, Sinks},
    prom::{Format, Registry},
    report_route::{ReportBytes, ReportRoute},
    sqlstore::{LogStores, StoreCounters},
};

/// The gRPC names served on the report port.
pub const MIXER_SERVICE: &str = "istio.mixer.v1.Mixer";
/// Envoy's access log service.
pub const ACCESS_LOG_SERVICE: &str = "envoy.service.accesslog.v3.AccessLogService";

/// mixer-telemetry's configuration.
#[derive(Debug, Clone)]
pub struct MixerTelemetryConfig {
    /// galley's MCP endpoint.
    pub galley: String,
    /// Report API listen address (9091).
    pub grpc_addr: SocketAddr,
    /// The prometheus handlers' metrics (42422).
    pub prometheus_addr: SocketAddr,
    /// Monitoring listen address.
    pub monitoring_addr: SocketAddr,
    /// Records queued at most before reports are refused.
    pub queue_records: usize,
    /// How long a report waits for room in a full queue before it is refused.
    pub queue_wait: Duration,
    /// Workers feeding the pipeline.
    pub workers: usize,
    /// Whether the standard mesh metrics are configured.
    pub standard_metrics: bool,
    /// Where sqlstore handlers write unless their params name a database.
    pub log_database: Option<String>,
    /// The mTLS report port (15004) and following galley over `https://`.
    pub tls: Option<TelemetryTls>,
}

/// mixer-telemetry's certificate and what it is used for: the mTLS report port
/// (15004) and following galley over `https://`.
pub type TelemetryTls = mesh_tls::ServingTls;

/// Why mixer-telemetry stopped.
#[derive(Debug, thiserror::Error)]
pub enum MixerTelemetryError {
    /// A port cannot be bound.
    #[error(transparent)]
    Bind(#[from] mesh_runtime::BindError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// An HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    /// A task failed.
    #[error("task: {0}")]
    Task(String),
    /// The certificate directory is unusable, or galley's endpoint does not fit
    /// the TLS settings.
    #[error("mTLS: {0}")]
    Tls(#[from] mesh_tls::TlsError),
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: &'static str,
}

struct Metrics {
    accepted: Family<ApiLabels, Counter>,
    exported: Counter,
    refused: Family<ReasonLabels, Counter>,
    queued: Gauge,
    issues: Gauge,
    logs: StoreCounters,
    otel: OtelCounters,
}

impl Metrics {
    fn register(registry: &mut MetricsRegistry) -> Arc<Self> {
        let m = Arc::new(Self {
            accepted: Family::default(),
            exported: Counter::default(),
            refused: Family::default(),
            queued: Gauge::default(),
            issues: Gauge::default(),
            logs: StoreCounters::default(),
            otel: OtelCounters::default(),
        });
        let r = registry.sub_registry_with_prefix("mixer_telemetry");
        r.register(
            "records_accepted",
            "Reported records (attribute bags) taken into the queue, by API (report, accesslog)",
            m.accepted.clone(),
        );
        r.register(
            "metric_records_exported",
            "Metric records counted into the prometheus and otel handlers' metrics (one per metric a reported record feeds)",
            m.exported.clone(),
        );
        r.register(
            "records_refused",
            "Records refused, by reason: queue_full (the reporter was told to retry), invalid (a malformed report), over_limit (a new series past its metric's cardinality limit), failed (a value or dimension that cannot be evaluated)",
            m.refused.clone(),
        );
        r.register(
            "queue_records",
            "Records waiting in the queue",
            m.queued.clone(),
        );
        r.register(
            "log_entries_written",
            "Log entries written by the sqlstore handlers",
            m.logs.written.clone(),
        );
        r.register(
            "otel_spans_exported",
            "Spans the OTLP collectors took",
            m.otel.spans.clone(),
        );
        r.register(
            "otel_metric_exports",
            "Metric exports the OTLP collectors took",
            m.otel.metric_exports.clone(),
        );
        r.register(
            "otel_export_errors",
            "Failed OTLP exports (spans are retried until taken; metrics go again at the next export)",
            m.otel.errors.clone(),
        );
        r.register(
            "log_write_errors",
            "Failed sqlstore writes (each retried with backoff until it succeeds)",
            m.logs.errors.clone(),
        );
        r.register(
            "config_issues",
            "Resources of the current configuration left out for a problem (see /debug/telemetryz)",
            m.issues.clone(),
        );
        m
    }

    fn refuse(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.refused
                .get_or_create(&ReasonLabels { reason })
                .inc_by(n);
        }
    }
}

/// The current pipeline, swapped whole.
type Current = Arc<RwLock<Option<Arc<Pipeline>>>>;

struct Batch {
    bags: Vec<AttributeBag>,
}

/// How full the queue is, shared by the APIs and the workers.
#[derive(Default)]
struct Level {
    /// Records queued.
    queued: AtomicUsize,
    /// Signalled each time the workers take records out.
    room: Notify,
}

impl Level {
    /// The workers took `n` records out: count them and wake waiting reports;
    /// the records still queued.
    fn taken(&self, n: usize) -> usize {
        let left = self.queued.fetch_sub(n, Ordering::AcqRel).saturating_sub(n);
        self.room.notify_waiters();
        left
    }

    /// Counts `n` more records in if they fit under `max` (a batch always fits
    /// an empty queue, so one larger than the queue is not refused forever).
    fn try_reserve(&self, n: usize, max: usize) -> bool {
        let mut queued = self.queued.load(Ordering::Acquire);
        loop {
            if queued != 0 && queued + n > max {
                return false;
            }
            match self.queued.compare_exchange_weak(
                queued,
                queued + n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => queued = now,
            }
        }
    }
}

/// Room held in the queue for a batch of records: filled with
/// [`Room::fill`], or given back when dropped.
struct Room<'a> {
    queue: &'a Queue,
    n: usize,
}

impl Room<'_> {
    /// Queues `bags` in the room held for them.
    fn fill(mut self, bags: Vec<AttributeBag>) -> Result<(), Vec<AttributeBag>> {
        let level = &self.queue.level;
        // The workers give back what they take out, so the count must match
        // the batch (a decoder may count differently from the bytes' prefix).
        match bags.len().cmp(&self.n) {
            std::cmp::Ordering::Greater => {
                level
                    .queued
                    .fetch_add(bags.len() - self.n, Ordering::AcqRel);
            }
            std::cmp::Ordering::Less => {
                level.taken(self.n - bags.len());
            }
            std::cmp::Ordering::Equal => {}
        }
        self.n = bags.len();
        self.queue.tx.send(Batch { bags }).map_err(|e| e.0.bags)?;
        // Queued: the workers give the room back.
        self.n = 0;
        Ok(())
    }
}

impl Drop for Room<'_> {
    fn drop(&mut self) {
        if self.n > 0 {
            self.queue.level.taken(self.n);
        }
    }
}

/// The bounded queue between the APIs and the workers.
#[derive(Clone)]
struct Queue {
    tx: mpsc::UnboundedSender<Batch>,
    level: Arc<Level>,
    max: usize,
    /// How long a report waits for room before it is refused.
    wait: Duration,
}

impl Queue {
    /// Holds room for a batch of `n`, waiting up to the queue's wait for the
    /// workers to make it; `None` when there is still none. Room is held before
    /// a Report is decoded, so one bound to be refused is not decoded first,
    /// and two waiters woken together cannot both take the same room.
    async fn room_for(&self, n: usize) -> Option<Room<'_>> {
        // `then`, not `then_some`: a Room built and dropped gives room back.
        let room = || {
            self.level
                .try_reserve(n, self.max)
                .then(|| Room { queue: self, n })
        };
        if let Some(r) = room() {
            return Some(r);
        }
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let notified = self.level.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so a signal in between is not lost.
            notified.as_mut().enable();
            if let Some(r) = room() {
                return Some(r);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return room();
            }
        }
    }
}

#[derive(Clone)]
struct Service {
    current: Current,
    metrics: Arc<Metrics>,
    queue: Queue,
}

impl Service {
    fn pipeline(&self) -> Result<Arc<Pipeline>, Status> {
        self.current
            .read()
            .clone()
            .ok_or_else(|| Status::unavailable("no telemetry configuration loaded yet"))
    }

    /// Queues a batch, waiting for room up to the queue's wait.
    async fn enqueue(&self, api: &'static str, bags: Vec<AttributeBag>) -> Result<(), Status> {
        let Some(room) = self.queue.room_for(bags.len()).await else {
            return Err(self.refuse_full(bags.len() as u64));
        };
        self.fill(api, room, bags)
    }

    /// Queues a batch in the room held for it.
    fn fill(
        &self,
        api: &'static str,
        room: Room<'_>,
        bags: Vec<AttributeBag>,
    ) -> Result<(), Status> {
        let n = bags.len() as u64;
        match room.fill(bags) {
            Ok(()) => {
                self.metrics
                    .accepted
                    .get_or_create(&ApiLabels { api })
                    .inc_by(n);
                Ok(())
            }
            // Only when the workers are gone (shutting down).
            Err(_) => Err(self.refuse_full(n)),
        }
    }

    /// Counts `n` records refused for a full queue; the reporter's answer.
    fn refuse_full(&self, n: u64) -> Status {
        self.metrics.refuse("queue_full", n);
        Status::resource_exhausted("report queue full: retry with backoff")
    }
}

impl ReportBytes for Service {
    async fn report_bytes(&self, bytes: Bytes) -> Result<ReportResponse, Status> {
        let pipeline = self.pipeline()?;
        let n = wire::raw::count_bags(&bytes);
        let Some(room) = self.queue.room_for(n).await else {
            return Err(self.refuse_full(n as u64));
        };
        let bags = wire::raw::decode_report(&bytes, pipeline.manifest()).map_err(|e| {
            self.metrics.refuse("invalid", n as u64);
            Status::invalid_argument(e.to_string())
        })?;
        // Room was held before decoding.
        self.fill("report", room, bags)?;
        Ok(ReportResponse::default())
    }
}

#[tonic::async_trait]
impl Mixer for Service {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Err(Status::unimplemented(
            "Check is served by mixer-policy, not mixer-telemetry",
        ))
    }

    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        let pipeline = self.pipeline()?;
        let req = request.into_inner();
        let bags = wire::decode_report(&req, pipeline.manifest()).map_err(|e| {
            self.metrics.refuse("invalid", req.attributes.len() as u64);
            Status::invalid_argument(e.to_string())
        })?;
        self.enqueue("report", bags).await?;
        Ok(Response::new(ReportResponse::default()))
    }
}

#[tonic::async_trait]
impl AccessLogService for Service {
    async fn stream_access_logs(
        &self,
        request: Request<Streaming<StreamAccessLogsMessage>>,
    ) -> Result<Response<StreamAccessLogsResponse>, Status> {
        self.pipeline()?;
        let mut stream = request.into_inner();
        let mut reporter = Reporter::default();
        while let Some(msg) = stream.message().await? {
            if let Some(node) = msg.identifier.as_ref().and_then(|i| i.node.as_ref()) {
                reporter = Reporter::from_node(node);
            }
            let bags: Vec<AttributeBag> = match &msg.log_entries {
                Some(LogEntries::HttpLogs(h)) => h
                    .log_entry
                    .iter()
                    .map(|e| http_attributes(e, &reporter))
                    .collect(),
                Some(LogEntries::TcpLogs(t)) => t
                    .log_entry
                    .iter()
                    .map(|e| tcp_attributes(e, &reporter))
                    .collect(),
                None => continue,
            };
            self.enqueue("accesslog", bags).await?;
        }
        Ok(Response::new(StreamAccessLogsResponse::default()))
    }
}

/// A running mixer-telemetry.
pub struct Running {
    /// The bound report address.
    pub grpc_addr: SocketAddr,
    /// The bound mTLS report address, when serving one.
    pub mtls_addr: Option<SocketAddr>,
    /// The bound prometheus address.
    pub prometheus_addr: SocketAddr,
    /// The bound monitoring address.
    pub monitoring_addr: SocketAddr,
    /// Ready once the first configuration is compiled.
    pub readiness: Readiness,
    tasks: JoinSet<Result<(), MixerTelemetryError>>,
}

impl Running {
    /// Waits until every task stopped, returning the first error.
    pub async fn wait(mut self) -> Result<(), MixerTelemetryError> {
        mesh_runtime::shutdown::join_tasks(&mut self.tasks, MixerTelemetryError::Task).await
    }
}

/// Runs mixer-telemetry until `shutdown`.
pub async fn run(
    config: MixerTelemetryConfig,
    shutdown: CancellationToken,
) -> Result<(), MixerTelemetryError> {
    let running = start(config, shutdown.clone()).await?;
    tracing::info!(grpc = %running.grpc_addr, prometheus = %running.prometheus_addr, monitoring = %running.monitoring_addr, "mixer-telemetry started");
    let result = running.wait().await;
    shutdown.cancel();
    result
}

/// Binds mixer-telemetry's ports and starts its tasks.
pub async fn start(
    config: MixerTelemetryConfig,
    shutdown: CancellationToken,
) -> Result<Running, MixerTelemetryError> {
    let mut registry = MetricsRegistry::default();
    let metrics = Metrics::register(&mut registry);
    let readiness = Readiness::new();
    let current: Current = Arc::new(RwLock::new(None));
    let prom = Arc::new(Registry::new());
    let (tx, rx) = mpsc::unbounded_channel();
    let queue = Queue {
        tx,
        level: Arc::new(Level::default()),
        max: config.queue_records.max(1),
        wait: config.queue_wait,
    };
    let service = Service {
        current: current.clone(),
        metrics: metrics.clone(),
        queue: queue.clone(),
    };
    let grpc_listener = mesh_runtime::bind(config.grpc_addr, "mixer-telemetry report").await?;
    let prom_listener =
        mesh_runtime::bind(config.prometheus_addr, "mixer-telemetry prometheus").await?;
    let monitoring_listener =
        mesh_runtime::bind(config.monitoring_addr, "mixer-telemetry monitoring").await?;
    let addr = |l: &tokio::net::TcpListener| l.local_addr().map_err(MixerTelemetryError::Http);
    let (grpc_addr, prometheus_addr, monitoring_addr) = (
        addr(&grpc_listener)?,
        addr(&prom_listener)?,
        addr(&monitoring_listener)?,
    );
    let (_support, router) = GrpcSupport::router(
        &[MIXER_SERVICE, ACCESS_LOG_SERVICE],
        &[],
        &readiness,
        shutdown.clone(),
    )
    .map_err(|e| MixerTelemetryError::Task(e.to_string()))?;
    let router = router
        .add_service(ReportRoute::new(
            MixerServer::new(service.clone()),
            Arc::new(service.clone()),
        ))
        .add_service(AccessLogServiceServer::new(service));
    let graph = Arc::new(ServiceGraph::new());
    let debug = Router::new()
        .route("/debug/telemetryz", get(telemetryz))
        .with_state(current.clone())
        .merge(
            Router::new()
                .route("/graph", get(graph_html))
                .route("/graph.json", get(graph_json))
                .route("/graph.dot", get(graph_dot))
                .with_state(graph.clone()),
        );

    let mut tasks = JoinSet::new();
    let identity: Option<Arc<dyn mesh_tls::IdentitySource>> = match &config.tls {
        Some(tls) => Some(Arc::new(mesh_tls::FileIdentity::open(&tls.dir)?)),
        None => None,
    };
    let mut mtls_addr = None;
    if let (Some(tls), Some(identity)) = (&config.tls, &identity) {
        let acceptor =
            mesh_tls::MtlsAcceptor::new(identity.clone(), mesh_tls::ClientAuth::Required)
                .with_metrics(mesh_tls::TlsMetrics::register(&mut registry));
        let listener = mesh_runtime::bind(tls.mtls_addr, "mixer-telemetry mTLS report").await?;
        mtls_addr = Some(listener.local_addr().map_err(MixerTelemetryError::Http)?);
        let router = router.clone();
        let sd = shutdown.clone();
        tasks.spawn(async move {
            mesh_runtime::grpc::serve_mtls(listener, acceptor, router, sd)
                .await
                .map_err(MixerTelemetryError::from)
        });
    }
    let admin = AdminServer::new(Arc::new(registry), readiness.clone()).with_routes(debug);
    let sd = shutdown.clone();
    tasks.spawn(async move {
        mesh_runtime::grpc::serve(grpc_listener, router, sd)
            .await
            .map_err(MixerTelemetryError::from)
    });
    let sd = shutdown.clone();
    tasks.spawn(async move {
        mesh_runtime::serve_admin(monitoring_listener, admin, sd)
            .await
            .map_err(MixerTelemetryError::Http)
    });
    let prom_app = Router::new()
        .route("/metrics", get(prometheus))
        .with_state(prom.clone());
    let sd = shutdown.clone();
    tasks.spawn(async move {
        axum::serve(prom_listener, prom_app)
            .with_graceful_shutdown(sd.cancelled_owned())
            .await
            .map_err(MixerTelemetryError::Http)
    });
    let rx = Arc::new(Mutex::new(rx));
    // Each worker holds a sender: the channel closes when the last one ends.
    let (alive, mut workers_done) = mpsc::channel::<()>(1);
    for _ in 0..config.workers.max(1) {
        tasks.spawn(work(
            graph.clone(),
            rx.clone(),
            queue.level.clone(),
            current.clone(),
            metrics.clone(),
            shutdown.clone(),
            alive.clone(),
        ));
    }
    drop(alive);

    let store = McpStore::new();
    let views = store.subscribe();
    let mut client = DeltaClient::new(
        DeltaClientConfig {
            endpoint: config.galley.clone(),
            node_id: "mixer-telemetry".into(),
            type_urls: collections(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        },
        store,
    );
    if let Some(channel) = mesh_tls::follower_channel(
        "mixer-telemetry",
        &config.galley,
        identity.as_ref(),
        config.tls.as_ref().and_then(|t| t.galley_identity.as_ref()),
    )? {
        client = client.with_channel(channel);
    }
    let synced = client.synced();
    tracing::info!(endpoint = %config.galley, "following galley");
    let sd = shutdown.clone();
    tasks.spawn(async move {
        client.run(sd).await;
        Ok(())
    });
    let defaults = if config.standard_metrics {
        standard_metrics()
    } else {
        Vec::new()
    };
    let logs = LogStores::new(config.log_database.clone(), metrics.logs.clone());
    let writers = logs.writers();
    let sd = shutdown.clone();
    let flushed = current.clone();
    tasks.spawn(async move {
        sd.cancelled().await;
        // Workers drain the queue, then the pipeline goes, and with it the last
        // senders of each log store: its writer writes what it holds and ends.
        let _ = workers_done.recv().await;
        *flushed.write() = None;
        if !writers.finish(Duration::from_secs(15)).await {
            tracing::warn!("log entries still unwritten after 15s; stopping anyway");
        }
        Ok(())
    });
    tasks.spawn(follow(Follow {
        sinks: Sinks {
            logs,
            otel: OtelExporters::new(metrics.otel.clone(), "mixer-telemetry"),
        },
        views,
        synced,
        defaults,
        prom,
        current,
        readiness: readiness.clone(),
        metrics,
        shutdown,
    }));
    Ok(Running {
        grpc_addr,
        mtls_addr,
        prometheus_addr,
        monitoring_addr,
        readiness,
        tasks,
    })
}

/// Feeds queued batches to the current pipeline.
async fn work(
    graph: Arc<ServiceGraph>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Batch>>>,
    level: Arc<Level>,
    current: Current,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    _alive: mpsc::Sender<()>,
) -> Result<(), MixerTelemetryError> {
    let mut draining = false;
    // The pipeline last used, for batches drained after it was retired.
    let mut last: Option<Arc<Pipeline>> = None;
    loop {
        let batch = if draining {
            // Shutting down: what was accepted is still recorded.
            match rx.lock().await.try_recv() {
                Ok(b) => b,
                Err(_) => return Ok(()),
            }
        } else {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    draining = true;
                    continue;
                }
                b = async { rx.lock().await.recv().await } => match b {
                    Some(b) => b,
                    None => return Ok(()),
                },
            }
        };
        let n = batch.bags.len();
        let pipeline = current.read().clone().or_else(|| last.clone());
        last.clone_from(&pipeline);
        let mut out = Outcome::default();
        let mut outputs = Outputs::default();
        if let Some(p) = pipeline {
            for bag in &batch.bags {
                out += p.record(bag, &mut outputs);
                graph.record(bag);
            }
        }
        // A store behind makes this wait, and the queue fill: backpressure.
        for (store, record) in outputs.logs {
            if store.send(record).await.is_err() {
                metrics.refuse("failed", 1);
            }
        }
        for (exporter, span) in outputs.spans {
            if exporter.send(span).await.is_err() {
                metrics.refuse("failed", 1);
            }
        }
        let left = level.taken(n);
        metrics.queued.set(i64::try_from(left).unwrap_or(i64::MAX));
        metrics.exported.inc_by(out.recorded);
        metrics.refuse("over_limit", out.over_limit);
        metrics.refuse("failed", out.failed);
        // Long batches must not starve the runtime's other tasks.
        tokio::task::yield_now().await;
    }
}

struct Follow {
    sinks: Sinks,
    views: watch::Receiver<Arc<McpView>>,
    synced: watch::Receiver<bool>,
    defaults: Vec<Resource>,
    prom: Arc<Registry>,
    current: Current,
    readiness: Readiness,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

/// Compiles every configuration version and swaps it in.
async fn follow(mut f: Follow) -> Result<(), MixerTelemetryError> {
    tokio::select! {
        _ = f.shutdown.cancelled() => return Ok(()),
        r = f.synced.wait_for(|s| *s) => if r.is_err() { return Ok(()) },
    }
    loop {
        let view = f.views.borrow_and_update().clone();
        let pipeline = Arc::new(Pipeline::compile(
            view.resources.values().map(|r| &**r),
            &f.defaults,
            &f.prom,
            &mut f.sinks,
        ));
        for issue in pipeline.issues() {
            tracing::warn!(resource = %issue.resource, problem = %issue.message, "telemetry resource left out");
        }
        f.metrics
            .issues
            .set(i64::try_from(pipeline.issues().len()).unwrap_or(i64::MAX));
        *f.current.write() = Some(pipeline);
        f.readiness.set(true);
        tokio::select! {
            _ = f.shutdown.cancelled() => return Ok(()),
            changed = f.views.changed() => if changed.is_err() { return Ok(()) },
        }
    }
}

async fn prometheus(State(prom): State<Arc<Registry>>, headers: HeaderMap) -> impl IntoResponse {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    (
        [(header::CONTENT_TYPE, format.content_type())],
        prom.encode(format),
    )
}

#[derive(Debug, serde::Deserialize)]
struct Window {
    /// Seconds, 1 to 60 (default 60).
    window: Option<String>,
}

impl Window {
    fn seconds(&self) -> u64 {
        self.window
            .as_deref()
            .and_then(|w| {
                mixer_core::expr::parse_duration(w)
                    .map(|d| d.as_secs())
                    .or_else(|| w.parse().ok())
            })
            .unwrap_or(crate::graph::MAX_WINDOW_SECS)
    }
}

async fn graph_json(
    State(graph): State<Arc<ServiceGraph>>,
    Query(w): Query<Window>,
) -> Json<crate::graph::GraphView> {
    Json(graph.view(w.seconds()))
}

async fn graph_dot(
    State(graph): State<Arc<ServiceGraph>>,
    Query(w): Query<Window>,
) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")],
        graph.view(w.seconds()).dot(),
    )
}

async fn graph_html(
    State(graph): State<Arc<ServiceGraph>>,
    Query(w): Query<Window>,
) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        graph.view(w.seconds()).html(),
    )
}

async fn telemetryz(State(current): State<Current>) -> Json<serde_json::Value> {
    let pipeline = current.read().clone();
    Json(match pipeline {
        None => json!({"loaded": false}),
        Some(p) => json!({
            "loaded": true,
            "issues": p.issues().iter().map(|i| json!({"resource": i.resource, "message": i.message})).collect::<Vec<_>>(),
        }),
    })
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
