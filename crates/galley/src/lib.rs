//! Galley: configuration ingestion, validation, analysis and distribution.
//!
//! Galley reads Istio's resource YAML (a watched directory, or the Istio custom
//! resources of a Kubernetes API server, through one [`source::ConfigSource`]
//! trait), validates every document with
//! `mesh-model`, keeps the last good version of anything refused, analyses the
//! whole set ([`analysis`]: cross-resource checks and mixer expressions), and
//! publishes versioned snapshots to pilot and the mixers over MCP:
//! `envoy.service.discovery.v3` ADS (state-of-the-world and delta) with one type URL
//! per collection, on port 9901. With the Kubernetes source, the replica holding
//! the `galley-status` Lease also writes the analysis messages into the status of
//! the resources they are about ([`status`]).
//!
//! Monitoring (15014 in a container): `/metrics`, `/healthz`, `/ready`,
//! `/debug/configz`, `/debug/syncz`, `/debug/analyze`, `/debug/errors`.

pub mod analysis;
pub mod args;
pub mod debug;
pub mod metrics;
pub mod offline;
pub mod snapshot;
pub mod source;
pub mod status;
pub mod store;
pub mod webhook;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use mesh_model::{AnalysisMessage, Level, parse::ParseOptions};
use mesh_runtime::{AdminServer, GrpcSupport, Readiness};
use mesh_xds::{AdsServer, ServerOptions, SingleGroup, SnapshotCache, SyncStatus, XdsMetrics};
use parking_lot::RwLock;
use prometheus_client::registry::Registry;
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use crate::{
    analysis::AnalysisRun,
    metrics::{CollectionLabels, GalleyMetrics, LevelLabels},
    snapshot::SnapshotBuilder,
    source::{
        ConfigSource, DirectorySource, KubeObjects, KubeSource, KubeStatus, SourceError,
        SourceEvent, dir::Debounce, kube::KubeSourceMetrics,
    },
    status::writer::{StatusConfig, StatusMetrics, StatusWriter},
    store::{ConfigStore, ConfigView},
};

/// The gRPC service galley serves MCP on.
pub const ADS_SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";

/// Where galley reads configuration from.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A directory of YAML/JSON files, watched.
    Directory {
        /// The directory.
        path: PathBuf,
        /// Debounce of file events.
        debounce: Debounce,
    },
    /// The Istio custom resources of a Kubernetes API server, watched.
    Kubernetes {
        /// How to reach the API server.
        connection: KubeConnection,
        /// Namespaces to watch; every namespace when empty.
        namespaces: Vec<String>,
        /// Write analysis messages into the resources' status (in the replica
        /// holding the Lease), when set.
        status: Option<StatusConfig>,
    },
}

/// How galley reaches the Kubernetes API server.
#[derive(Debug, Clone)]
pub enum KubeConnection {
    /// The shared `--kubeconfig`/`--kube-context`/`--in-cluster` flags.
    Args(mesh_kube::KubeArgs),
    /// A client configuration made by the caller (tests, embedding).
    Config(Box<kube::Config>),
}

/// Everything galley needs to run.
#[derive(Debug, Clone)]
pub struct GalleyConfig {
    /// The configuration source.
    pub source: SourceConfig,
    /// MCP (xDS) gRPC listen address.
    pub mcp_addr: SocketAddr,
    /// Monitoring HTTP listen address.
    pub monitoring_addr: SocketAddr,
    /// Namespace of resources that name none.
    pub default_namespace: String,
    /// The mTLS MCP port, when galley has a certificate.
    pub tls: Option<GalleyTls>,
    /// The validating admission webhook, when galley has a serving certificate.
    pub webhook: Option<GalleyWebhook>,
}

/// galley's validating admission webhook (`POST /validate` over HTTPS).
#[derive(Debug, Clone)]
pub struct GalleyWebhook {
    /// Listen address.
    pub addr: SocketAddr,
    /// Directory with the serving certificate: `tls.crt`/`tls.key` or
    /// `cert-chain.pem`/`key.pem`, reloaded when they change.
    pub tls_dir: PathBuf,
}

/// galley's mTLS MCP port: clients (pilot, the mixers) present citadel-issued
/// certificates, and only the identities allowed may read configuration.
#[derive(Debug, Clone)]
pub struct GalleyTls {
    /// Directory with `cert-chain.pem`, `key.pem` and `root-cert.pem`, renewed in
    /// place by citadel's agent.
    pub dir: PathBuf,
    /// mTLS MCP listen address.
    pub mcp_mtls_addr: SocketAddr,
    /// Client identities allowed to read (`*` for any namespace or service account).
    pub allowed: Vec<mesh_tls::IdentityPattern>,
}

/// Identities allowed on galley's mTLS port by default: the control plane's
/// namespace.
pub const DEFAULT_ALLOWED_CLIENTS: &str = "spiffe://cluster.local/ns/istio-system/sa/*";

/// galley failed to start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GalleyError {
    /// A port could not be bound.
    #[error(transparent)]
    Bind(#[from] mesh_runtime::BindError),
    /// The configuration source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The gRPC server failed.
    #[error("MCP gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// Reflection could not be built.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    /// The monitoring server failed.
    #[error("monitoring server failed: {0}")]
    Monitoring(std::io::Error),
    /// The certificate directory of the mTLS port is unusable.
    #[error("mTLS identity: {0}")]
    Tls(#[from] mesh_tls::TlsError),
    /// The webhook's serving certificate is unusable.
    #[error("webhook certificate: {0}")]
    WebhookTls(#[from] mesh_admission::TlsFilesError),
    /// The webhook's HTTPS server failed.
    #[error("webhook server: {0}")]
    Webhook(#[from] mesh_admission::ServeError),
    /// A task panicked or was cancelled.
    #[error("galley task failed: {0}")]
    Task(String),
    /// The status writer's leader election is misconfigured.
    #[error(transparent)]
    LeaderElection(#[from] mesh_kube::leader::LeaderElectionError),
}

/// What the debug endpoints read.
#[derive(Debug, Default)]
pub struct GalleyState {
    /// The merged configuration.
    pub view: Arc<ConfigView>,
    /// Version of each collection in the published snapshot.
    pub versions: Vec<(String, String, usize)>,
    /// Current analysis messages.
    pub analysis: Vec<AnalysisMessage>,
}

/// A running galley.
pub struct Running {
    /// The bound MCP address.
    pub mcp_addr: SocketAddr,
    /// The bound mTLS MCP address, when serving one.
    pub mcp_mtls_addr: Option<SocketAddr>,
    /// The bound webhook address, when serving one.
    pub webhook_addr: Option<SocketAddr>,
    /// The bound monitoring address.
    pub monitoring_addr: SocketAddr,
    /// Becomes ready once the first snapshot is published.
    pub readiness: Readiness,
    /// The snapshot cache (for embedding in tests or tools).
    pub cache: SnapshotCache,
    tasks: JoinSet<Result<(), GalleyError>>,
}

impl Running {
    /// Waits until every task stopped (after shutdown), returning the first error.
    pub async fn wait(mut self) -> Result<(), GalleyError> {
        mesh_runtime::shutdown::join_tasks(&mut self.tasks, GalleyError::Task).await
    }
}

/// Runs galley until `shutdown` fires.
pub async fn run(config: GalleyConfig, shutdown: CancellationToken) -> Result<(), GalleyError> {
    let running = start(config, shutdown.clone()).await?;
    tracing::info!(mcp = %running.mcp_addr, monitoring = %running.monitoring_addr, "galley started");
    let result = running.wait().await;
    // A failed task stops the others too.
    shutdown.cancel();
    result
}

/// Binds galley's ports and starts its tasks.
pub async fn start(
    config: GalleyConfig,
    shutdown: CancellationToken,
) -> Result<Running, GalleyError> {
    let mut registry = Registry::default();
    let kube_status = KubeStatus::default();
    let objects = KubeObjects::default();
    let mut status_writer = None;
    let source: Box<dyn ConfigSource> = match &config.source {
        SourceConfig::Directory { path, debounce } => {
            std::fs::metadata(path).map_err(|source| SourceError::Read {
                path: path.display().to_string(),
                source,
            })?;
            Box::new(DirectorySource::new(path.clone(), *debounce))
        }
        SourceConfig::Kubernetes {
            connection,
            namespaces,
            status,
        } => {
            let kube_config = match connection {
                KubeConnection::Args(args) => args
                    .config(&mesh_kube::KubeEnv::from_process())
                    .await
                    .map_err(|e| SourceError::Kube(Box::new(e)))?,
                KubeConnection::Config(config) => (**config).clone(),
            };
            if let Some(status) = status {
                let client = mesh_kube::client::client_from(kube_config.clone())
                    .map_err(|e| SourceError::Kube(Box::new(e)))?;
                status_writer = Some((
                    client,
                    status.clone(),
                    StatusMetrics::register(&mut registry),
                    mesh_kube::leader::LeaderMetrics::register(&mut registry),
                ));
            }
            Box::new(KubeSource::new(
                kube_config,
                namespaces.clone(),
                kube_status.clone(),
                KubeSourceMetrics::register(&mut registry),
                objects.clone(),
            ))
        }
    };

    let xds_metrics = XdsMetrics::register(&mut registry);
    let metrics = GalleyMetrics::register(&mut registry);
    let readiness = Readiness::new();
    let cache = SnapshotCache::new();
    let status = SyncStatus::new();
    let state = Arc::new(RwLock::new(GalleyState::default()));

    let ads = AdsServer::new(
        cache.clone(),
        Arc::new(SingleGroup),
        readiness.subscribe(),
        status.clone(),
        xds_metrics,
        ServerOptions {
            control_plane_id: Some("galley".into()),
            push_order: mesh_model::Kind::ALL
                .iter()
                .map(|k| k.collection())
                .collect(),
            ..ServerOptions::default()
        },
        shutdown.clone(),
    );

    let mcp_listener = mesh_runtime::bind(config.mcp_addr, "galley MCP").await?;
    let secure = match &config.tls {
        Some(tls) => {
            let identity = Arc::new(mesh_tls::FileIdentity::open(&tls.dir)?);
            let acceptor = mesh_tls::MtlsAcceptor::new(identity, mesh_tls::ClientAuth::Required)
                .with_metrics(mesh_tls::TlsMetrics::register(&mut registry));
            let listener = mesh_runtime::bind(tls.mcp_mtls_addr, "galley mTLS MCP").await?;
            Some((listener, acceptor, tls.allowed.clone()))
        }
        None => None,
    };
    let webhook = match &config.webhook {
        Some(webhook) => {
            let cert = mesh_admission::ServingCert::load(mesh_admission::CertFiles::new(
                &webhook.tls_dir,
            ))?;
            let listener = mesh_runtime::bind(webhook.addr, "galley validating webhook").await?;
            let metrics = webhook::WebhookMetrics::register(&mut registry);
            Some((listener, cert, metrics))
        }
        None => None,
    };
    let monitoring_listener =
        mesh_runtime::bind(config.monitoring_addr, "galley monitoring").await?;
    let mcp_addr = mcp_listener.local_addr().map_err(GalleyError::Monitoring)?;
    let monitoring_addr = monitoring_listener
        .local_addr()
        .map_err(GalleyError::Monitoring)?;

    let (_support, router) = GrpcSupport::router(&[ADS_SERVICE], &[], &readiness, shutdown.clone())
        .map_err(|e| GalleyError::Reflection(e.to_string()))?;
    let mut tasks = JoinSet::new();
    let mut mcp_mtls_addr = None;
    if let Some((listener, acceptor, allowed)) = secure {
        mcp_mtls_addr = Some(listener.local_addr().map_err(GalleyError::Monitoring)?);
        let service = ads
            .clone()
            .into_service()
            .with_authorizer(Arc::new(mesh_xds::AllowIdentities(allowed)));
        let router = router.clone().add_service(service);
        let sd = shutdown.clone();
        tasks.spawn(async move {
            mesh_runtime::grpc::serve_mtls(listener, acceptor, router, sd)
                .await
                .map_err(GalleyError::from)
        });
    }
    let mut webhook_addr = None;
    if let Some((listener, cert, metrics)) = webhook {
        webhook_addr = Some(listener.local_addr().map_err(GalleyError::Monitoring)?);
        let router = webhook::router(&config.default_namespace, metrics);
        let server = mesh_admission::HttpsServer::new(cert.clone());
        let sd = shutdown.clone();
        tasks.spawn(async move { Ok(server.serve(listener, router, sd).await?) });
        let sd = shutdown.clone();
        tasks.spawn(async move {
            cert.watch(mesh_admission::tls::DEFAULT_RELOAD_INTERVAL, sd)
                .await;
            Ok(())
        });
    }
    let router = router.add_service(ads.into_service());
    let admin = AdminServer::new(Arc::new(registry), readiness.clone()).with_routes(debug::routes(
        state.clone(),
        status,
        kube_status,
    ));

    let sd = shutdown.clone();
    tasks.spawn(async move {
        mesh_runtime::grpc::serve(mcp_listener, router, sd)
            .await
            .map_err(GalleyError::from)
    });
    let sd = shutdown.clone();
    tasks.spawn(async move {
        mesh_runtime::serve_admin(monitoring_listener, admin, sd)
            .await
            .map_err(GalleyError::Monitoring)
    });

    let (tx, rx) = mpsc::channel(64);
    tracing::info!(source = %source.describe(), "reading configuration");
    let sd = shutdown.clone();
    tasks.spawn(async move {
        // Without its source galley can never serve: a failed source stops galley.
        let result = source.run(tx, sd.clone()).await;
        if result.is_err() {
            sd.cancel();
        }
        result.map_err(GalleyError::from)
    });
    let processor = Processor {
        store: ConfigStore::new(ParseOptions {
            default_namespace: config.default_namespace.clone(),
        }),
        builder: SnapshotBuilder::new(),
        cache: cache.clone(),
        readiness: readiness.clone(),
        state: state.clone(),
        metrics: metrics.clone(),
        analysis: watch::channel(None).0,
        generations: imbl::HashMap::new(),
    };
    let runs = watch::channel(None).0;
    if let Some((client, status, status_metrics, leader_metrics)) = status_writer {
        let writer = StatusWriter::new(client, objects, runs.subscribe(), status_metrics);
        let sd = shutdown.clone();
        tasks.spawn(async move {
            writer
                .run_elected(status.lease, leader_metrics, sd)
                .await
                .map_err(GalleyError::from)
        });
    }
    tasks.spawn(run_analysis(
        processor.analysis.subscribe(),
        runs,
        state,
        metrics,
        shutdown.clone(),
    ));
    tasks.spawn(processor.run(rx, shutdown));
    Ok(Running {
        mcp_addr,
        mcp_mtls_addr,
        webhook_addr,
        monitoring_addr,
        readiness,
        cache,
        tasks,
    })
}

struct Processor {
    store: ConfigStore,
    builder: SnapshotBuilder,
    cache: SnapshotCache,
    readiness: Readiness,
    state: Arc<RwLock<GalleyState>>,
    metrics: Arc<GalleyMetrics>,
    analysis: watch::Sender<Option<Published>>,
    /// Kubernetes generation of the object behind each file.
    generations: imbl::HashMap<String, i64>,
}

/// A published view, with the generations of the objects it was read from.
#[derive(Debug, Clone)]
struct Published {
    view: Arc<ConfigView>,
    generations: imbl::HashMap<String, i64>,
}

impl Processor {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<SourceEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), GalleyError> {
        let mut synced = false;
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                ev = rx.recv() => match ev { Some(ev) => ev, None => return Ok(()) },
            };
            match event {
                SourceEvent::Changes(changes) => {
                    for change in changes {
                        let path = change.path.clone();
                        let errors = self.store.apply(change);
                        for e in &errors {
                            tracing::warn!(file = %path, error = %e, "configuration refused");
                        }
                        self.metrics.validation_errors.inc_by(errors.len() as u64);
                    }
                    if synced {
                        self.publish();
                    }
                }
                SourceEvent::Generations(generations) => {
                    for (path, generation) in generations {
                        match generation {
                            Some(g) => self.generations.insert(path, g),
                            None => self.generations.remove(&path),
                        };
                    }
                }
                SourceEvent::Synced => {
                    synced = true;
                    self.publish();
                    self.readiness.set(true);
                    tracing::info!("configuration synced; serving");
                }
            }
        }
    }

    fn publish(&mut self) {
        let span = tracing::info_span!("galley.publish", resources = tracing::field::Empty);
        let _entered = span.enter();
        let started = std::time::Instant::now();
        let changed = self.store.take_changed();
        let view = Arc::new(self.store.view());
        let snapshot = self.builder.build(&view, &changed);
        let versions: Vec<(String, String, usize)> = snapshot
            .type_urls()
            .filter_map(|t| {
                snapshot
                    .get(t)
                    .map(|s| (t.to_string(), s.version.clone(), s.items.len()))
            })
            .collect();
        self.cache.set("", snapshot);
        let elapsed = started.elapsed();
        span.record("resources", view.resources.len());
        self.metrics.snapshots.inc();
        self.metrics.publish_seconds.observe(elapsed.as_secs_f64());
        for (collection, _, count) in &versions {
            self.metrics
                .resources
                .get_or_create(&CollectionLabels {
                    collection: collection.clone(),
                })
                .set(*count as i64);
        }
        self.metrics.rejected.set(view.errors.len() as i64);
        self.metrics.kept.set(view.kept.len() as i64);
        self.metrics.files.set(self.store.file_count() as i64);
        tracing::debug!(
            resources = view.resources.len(),
            errors = view.errors.len(),
            took = ?elapsed,
            "snapshot published"
        );
        {
            let mut state = self.state.write();
            state.view = view.clone();
            state.versions = versions;
        }
        // Analysis runs beside distribution, on the newest view only.
        self.analysis.send_replace(Some(Published {
            view,
            generations: self.generations.clone(),
        }));
    }
}

/// Shortest time between two analyses: a burst of changes is analysed once, on
/// its newest view, and never delays distribution.
const ANALYSIS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Analyses the newest published view, off the publishing path.
async fn run_analysis(
    mut views: watch::Receiver<Option<Published>>,
    runs: watch::Sender<Option<Arc<AnalysisRun>>>,
    state: Arc<RwLock<GalleyState>>,
    metrics: Arc<GalleyMetrics>,
    shutdown: CancellationToken,
) -> Result<(), GalleyError> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            changed = views.changed() => if changed.is_err() { return Ok(()) },
        }
        let Some(Published { view, generations }) = views.borrow_and_update().clone() else {
            continue;
        };
        let analysed = view.clone();
        let analysis = tokio::task::spawn_blocking(move || {
            let resources: Vec<&mesh_model::Resource> =
                view.resources.values().map(|r| r.as_ref()).collect();
            crate::analysis::analyze(&resources)
        })
        .await
        .map_err(|e| GalleyError::Task(format!("analysis: {e}")))?;
        for level in [Level::Info, Level::Warning, Level::Error] {
            let n = analysis.iter().filter(|m| m.level == level).count();
            metrics
                .analysis
                .get_or_create(&LevelLabels {
                    level: format!("{level:?}"),
                })
                .set(n as i64);
        }
        state.write().analysis = analysis.clone();
        runs.send_replace(Some(Arc::new(AnalysisRun {
            view: analysed,
            generations,
            messages: Arc::new(analysis),
        })));
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(ANALYSIS_INTERVAL) => {}
        }
    }
}
