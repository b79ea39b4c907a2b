//! pilot's process: follow galley, translate, serve xDS.
//!
//! Configuration arrives from galley over MCP (delta), or from a directory through
//! an in-process galley when pilot runs alone; with a [`KubeRegistryConfig`], the
//! services of a Kubernetes cluster are merged in ([`crate::kube`]). Each burst of
//! changes, from either source (debounced:
//! 100 ms quiet, 10 s at most) is translated into Envoy resources and published as
//! one snapshot; the ADS server pushes to every connected proxy what changed for
//! it, clusters before endpoints before listeners before routes. Pilot serves
//! nothing, and refuses streams with `Unavailable`, until galley's configuration has
//! been received whole (and the Kubernetes caches listed) and translated once.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{Json, Router, extract::State, routing::get};
use mesh_mcp::{McpStore, McpView, collections};
use mesh_runtime::{AdminServer, GrpcSupport, Readiness};
use mesh_xds::{
    AdsServer, NodeAuthorizer, NodeGrouper, ServerOptions, SnapshotCache, SyncStatus, XdsMetrics,
    client::{DeltaClient, DeltaClientConfig},
};
use parking_lot::RwLock;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    ServiceRegistry,
    kube::{KubeRegistry, KubeRegistryConfig},
    model::Service,
    proxy::Proxy,
    push::{Inputs, PushEngine},
};

/// Groups streams by the proxy behind them ([`Proxy::group_key`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyGrouper;

impl NodeGrouper for ProxyGrouper {
    fn group(&self, node: Option<&mesh_api::envoy::envoy::config::core::v3::Node>) -> String {
        Proxy::from_node(node).group_key()
    }
}

/// Where pilot's configuration comes from.
#[derive(Debug, Clone)]
pub enum ConfigFrom {
    /// galley's MCP endpoint.
    Galley(String),
    /// A directory read by an in-process galley.
    Directory(PathBuf),
}

/// Everything pilot needs to run.
#[derive(Debug, Clone)]
pub struct PilotConfig {
    /// Configuration source.
    pub from: ConfigFrom,
    /// xDS listen address.
    pub xds_addr: SocketAddr,
    /// Monitoring listen address.
    pub monitoring_addr: SocketAddr,
    /// Quiet period ending a burst of changes.
    pub debounce: Duration,
    /// Longest a burst is held.
    pub debounce_max: Duration,
    /// The mTLS xDS port and the mTLS connection to galley, when pilot has a
    /// certificate.
    pub tls: Option<PilotTls>,
    /// The Kubernetes service registry, merged before ServiceEntries; `None` for
    /// ServiceEntries only.
    pub kube: Option<KubeRegistryConfig>,
    /// Trust domain of workload identities: clusters under `ISTIO_MUTUAL` check
    /// `spiffe://<trust domain>/ns/<ns>/sa/<account>` of the service's endpoints.
    pub trust_domain: String,
}

/// pilot's certificate and what it is used for: the mTLS xDS port (15011), where
/// each proxy's certificate must name the namespace (and service account) its node
/// claims, and following galley over `https://`.
#[derive(Debug, Clone)]
pub struct PilotTls {
    /// Directory with `cert-chain.pem`, `key.pem` and `root-cert.pem`, renewed in
    /// place by citadel's agent.
    pub dir: PathBuf,
    /// mTLS xDS listen address.
    pub xds_mtls_addr: SocketAddr,
    /// The identity galley's certificate must name (default: any identity of
    /// pilot's own trust domain).
    pub galley_identity: Option<mesh_tls::SpiffeId>,
}

/// The [`NodeAuthorizer`] of pilot's mTLS port: a proxy is served only the
/// configuration of the namespace its certificate names, and when its node
/// metadata states a `SERVICE_ACCOUNT`, that must be the certificate's too.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyAuthorizer;

impl NodeAuthorizer for ProxyAuthorizer {
    fn authorize(
        &self,
        peer: Option<&mesh_tls::PeerInfo>,
        node: Option<&mesh_api::envoy::envoy::config::core::v3::Node>,
    ) -> Result<(), tonic::Status> {
        let Some(id) = peer.and_then(|p| p.identity.as_ref()) else {
            return Err(tonic::Status::unauthenticated(
                "a client certificate naming a SPIFFE identity is required",
            ));
        };
        let proxy = Proxy::from_node(node);
        if proxy.namespace != id.namespace() {
            return Err(tonic::Status::permission_denied(format!(
                "identity {id} may not act for a proxy in namespace {:?}",
                proxy.namespace
            )));
        }
        let claimed_sa = node
            .and_then(|n| n.metadata.as_ref())
            .and_then(|m| m.fields.get("SERVICE_ACCOUNT"))
            .and_then(crate::proxy::string_value)
            .filter(|s| !s.is_empty());
        if let Some(sa) = claimed_sa
            && sa != id.service_account()
        {
            return Err(tonic::Status::permission_denied(format!(
                "identity {id} may not act for service account {sa:?}"
            )));
        }
        Ok(())
    }
}

/// pilot failed to start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PilotError {
    /// A port could not be bound.
    #[error(transparent)]
    Bind(#[from] mesh_runtime::BindError),
    /// The in-process galley failed.
    #[error("in-process galley: {0}")]
    Galley(#[from] galley::GalleyError),
    /// The xDS server failed.
    #[error("xDS server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// Server reflection could not be built.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    /// The monitoring server failed.
    #[error("monitoring server failed: {0}")]
    Monitoring(std::io::Error),
    /// The certificate directory is unusable, or galley's endpoint does not fit
    /// the TLS settings.
    #[error("mTLS: {0}")]
    Tls(#[from] mesh_tls::TlsError),
    /// The Kubernetes client could not be configured.
    #[error("Kubernetes registry: {0}")]
    Kube(#[from] mesh_kube::KubeError),
    /// Inconsistent settings.
    #[error("{0}")]
    Config(String),
    /// A task failed.
    #[error("pilot task failed: {0}")]
    Task(String),
}

/// A running pilot.
pub struct Running {
    /// The bound xDS address.
    pub xds_addr: SocketAddr,
    /// The bound mTLS xDS address, when serving one.
    pub xds_mtls_addr: Option<SocketAddr>,
    /// The bound monitoring address.
    pub monitoring_addr: SocketAddr,
    /// Ready once the first snapshot is published.
    pub readiness: Readiness,
    tasks: JoinSet<Result<(), PilotError>>,
}

impl Running {
    /// Waits until every task stopped, returning the first error.
    pub async fn wait(mut self) -> Result<(), PilotError> {
        mesh_runtime::shutdown::join_tasks(&mut self.tasks, PilotError::Task).await
    }
}

/// Runs pilot until `shutdown` fires.
pub async fn run(config: PilotConfig, shutdown: CancellationToken) -> Result<(), PilotError> {
    let running = start(config, shutdown.clone()).await?;
    tracing::info!(xds = %running.xds_addr, monitoring = %running.monitoring_addr, "pilot started");
    let result = running.wait().await;
    shutdown.cancel();
    result
}

/// What the debug endpoints read.
struct PilotState {
    inputs: Arc<Inputs>,
    cache: SnapshotCache,
    trust_domain: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushLabels {
    /// `full` or `eds`.
    kind: &'static str,
}

struct Metrics {
    translations: Family<PushLabels, Counter>,
    translate_seconds: Histogram,
    services: Gauge,
    groups: Gauge,
    scopes: Gauge,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self {
            translations: Family::default(),
            groups: Gauge::default(),
            scopes: Gauge::default(),
            translate_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16),
            ),
            services: Gauge::default(),
        });
        let r = registry.sub_registry_with_prefix("pilot");
        r.register(
            "translations",
            "Configuration versions translated and published, by kind (full, or eds when only endpoints moved)",
            m.translations.clone(),
        );
        r.register(
            "translate_duration_seconds",
            "Time to translate a configuration version into every watched group's snapshot",
            m.translate_seconds.clone(),
        );
        r.register(
            "proxy_groups",
            "Proxy groups (kind, namespace, locality, labels) served a snapshot",
            m.groups.clone(),
        );
        r.register(
            "scopes",
            "Distinct views of the mesh translated (namespace, Sidecar, kind, locality)",
            m.scopes.clone(),
        );
        r.register(
            "services",
            "Services in the merged registry",
            m.services.clone(),
        );
        m
    }
}

/// Binds pilot's ports and starts its tasks.
pub async fn start(
    config: PilotConfig,
    shutdown: CancellationToken,
) -> Result<Running, PilotError> {
    let mut tasks = JoinSet::new();
    let identity: Option<Arc<dyn mesh_tls::IdentitySource>> = match &config.tls {
        Some(tls) => Some(Arc::new(mesh_tls::FileIdentity::open(&tls.dir)?)),
        None => None,
    };
    let endpoint = match &config.from {
        ConfigFrom::Galley(endpoint) => endpoint.clone(),
        ConfigFrom::Directory(path) => {
            let embedded = galley::start(
                galley::GalleyConfig {
                    source: galley::SourceConfig::Directory {
                        path: path.clone(),
                        debounce: galley::source::dir::Debounce::default(),
                    },
                    mcp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                    monitoring_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                    default_namespace: "default".into(),
                    tls: None,
                    webhook: None,
                },
                shutdown.clone(),
            )
            .await?;
            let endpoint = format!("http://{}", embedded.mcp_addr);
            tasks.spawn(async move { embedded.wait().await.map_err(PilotError::from) });
            endpoint
        }
    };

    let kube = match &config.kube {
        None => None,
        Some(kube) => {
            let kube_config = kube
                .args
                .config(&mesh_kube::KubeEnv::from_process())
                .await?;
            let url = kube_config.cluster_url.to_string();
            let client = mesh_kube::client::client_from(kube_config)?;
            let domain = if kube.cluster_domain.is_empty() {
                crate::kube::DEFAULT_CLUSTER_DOMAIN.to_string()
            } else {
                kube.cluster_domain.clone()
            };
            tracing::info!(%url, cluster_domain = %domain, "following Kubernetes services and endpoints");
            let (registry, changes, run) =
                KubeRegistry::watch(client, url, domain, shutdown.clone());
            tasks.spawn(async move {
                run.await;
                Ok(())
            });
            Some(KubeFeed {
                registry,
                changes,
                last: Vec::new(),
            })
        }
    };

    let mut registry = Registry::default();
    let xds_metrics = XdsMetrics::register(&mut registry);
    let metrics = Metrics::register(&mut registry);
    let readiness = Readiness::new();
    let cache = SnapshotCache::new();
    let status = SyncStatus::new();
    let trust_domain = if config.trust_domain.is_empty() {
        crate::model::DEFAULT_TRUST_DOMAIN.to_string()
    } else {
        config.trust_domain.clone()
    };
    let state = Arc::new(RwLock::new(PilotState {
        inputs: Arc::new(Inputs::default()),
        cache: cache.clone(),
        trust_domain: trust_domain.clone(),
    }));

    let ads = AdsServer::new(
        cache.clone(),
        Arc::new(ProxyGrouper),
        readiness.subscribe(),
        status.clone(),
        xds_metrics,
        ServerOptions {
            control_plane_id: Some("pilot".into()),
            ..ServerOptions::default()
        },
        shutdown.clone(),
    );
    let xds_listener = mesh_runtime::bind(config.xds_addr, "pilot xDS").await?;
    let monitoring_listener =
        mesh_runtime::bind(config.monitoring_addr, "pilot monitoring").await?;
    let xds_addr = xds_listener.local_addr().map_err(PilotError::Monitoring)?;
    let monitoring_addr = monitoring_listener
        .local_addr()
        .map_err(PilotError::Monitoring)?;
    let (_support, router) = GrpcSupport::router(
        &[mesh_xds::server::SERVICE_NAME],
        &[],
        &readiness,
        shutdown.clone(),
    )
    .map_err(|e| PilotError::Reflection(e.to_string()))?;
    let mut xds_mtls_addr = None;
    if let (Some(tls), Some(identity)) = (&config.tls, &identity) {
        let acceptor =
            mesh_tls::MtlsAcceptor::new(identity.clone(), mesh_tls::ClientAuth::Required)
                .with_metrics(mesh_tls::TlsMetrics::register(&mut registry));
        let listener = mesh_runtime::bind(tls.xds_mtls_addr, "pilot mTLS xDS").await?;
        xds_mtls_addr = Some(listener.local_addr().map_err(PilotError::Monitoring)?);
        let service = ads
            .clone()
            .into_service()
            .with_authorizer(Arc::new(ProxyAuthorizer));
        let router = router.clone().add_service(service);
        let sd = shutdown.clone();
        tasks.spawn(async move {
            mesh_runtime::grpc::serve_mtls(listener, acceptor, router, sd)
                .await
                .map_err(PilotError::from)
        });
    }
    let router = router.add_service(ads.into_service());
    let admin = AdminServer::new(Arc::new(registry), readiness.clone())
        .with_routes(debug_routes(state.clone(), status));

    let sd = shutdown.clone();
    tasks.spawn(async move {
        mesh_runtime::grpc::serve(xds_listener, router, sd)
            .await
            .map_err(PilotError::from)
    });
    let sd = shutdown.clone();
    tasks.spawn(async move {
        mesh_runtime::serve_admin(monitoring_listener, admin, sd)
            .await
            .map_err(PilotError::Monitoring)
    });

    let store = McpStore::new();
    let views = store.subscribe();
    let mut client = DeltaClient::new(
        DeltaClientConfig {
            endpoint: endpoint.clone(),
            node_id: "pilot".into(),
            type_urls: collections(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        },
        store,
    );
    if let Some(channel) = mesh_tls::follower_channel(
        "pilot",
        &endpoint,
        identity.as_ref(),
        config.tls.as_ref().and_then(|t| t.galley_identity.as_ref()),
    )? {
        client = client.with_channel(channel);
    }
    let synced = client.synced();
    tracing::info!(%endpoint, "following galley");
    let sd = shutdown.clone();
    tasks.spawn(async move {
        client.run(sd).await;
        Ok(())
    });
    let translator = Translator {
        engine: PushEngine::new(cache.clone()).with_trust_domain(&trust_domain),
        demand: cache.demand(),
        readiness: readiness.clone(),
        state,
        metrics,
        debounce: config.debounce,
        debounce_max: config.debounce_max,
        kube,
    };
    tasks.spawn(translator.run(views, synced, shutdown));
    Ok(Running {
        xds_addr,
        xds_mtls_addr,
        monitoring_addr,
        readiness,
        tasks,
    })
}

struct Translator {
    engine: PushEngine,
    demand: watch::Receiver<u64>,
    readiness: Readiness,
    state: Arc<RwLock<PilotState>>,
    metrics: Arc<Metrics>,
    debounce: Duration,
    debounce_max: Duration,
    kube: Option<KubeFeed>,
}

/// The Kubernetes registry as the translator follows it.
struct KubeFeed {
    registry: KubeRegistry,
    changes: watch::Receiver<u64>,
    /// The services last published.
    last: Vec<Service>,
}

impl KubeFeed {
    /// Waits for the next change of the caches; never returns when there is no
    /// registry, or once its watches stopped.
    async fn changed(feed: &mut Option<KubeFeed>) {
        let stopped = match feed {
            Some(f) => f.changes.changed().await.is_err(),
            None => true,
        };
        if stopped {
            std::future::pending::<()>().await;
        }
    }
}

impl Translator {
    async fn run(
        mut self,
        mut views: watch::Receiver<Arc<McpView>>,
        mut synced: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) -> Result<(), PilotError> {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = synced.wait_for(|s| *s) => if r.is_err() { return Ok(()) },
        }
        if let Some(kube) = &self.kube {
            tracing::info!("waiting for the Kubernetes caches to sync");
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                synced = kube.registry.wait_synced() => if !synced { return Ok(()) },
            }
        }
        let view = views.borrow_and_update().clone();
        self.publish(view);
        self.readiness.set(true);
        tracing::info!("configuration received from galley and translated; serving xDS");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                changed = self.demand.changed() => {
                    if changed.is_err() { return Ok(()) }
                    self.serve_new_groups();
                    continue;
                }
                changed = views.changed() => if changed.is_err() { return Ok(()) },
                _ = KubeFeed::changed(&mut self.kube) => {}
            }
            // Debounce: wait for quiet, but never longer than the maximum. Proxies
            // connecting meanwhile are served the current configuration at once.
            let deadline = tokio::time::Instant::now() + self.debounce_max;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.debounce) => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                    changed = self.demand.changed() => {
                        if changed.is_err() { return Ok(()) }
                        self.serve_new_groups();
                    }
                    changed = views.changed() => if changed.is_err() { return Ok(()) },
                    _ = KubeFeed::changed(&mut self.kube) => {}
                }
            }
            let view = views.borrow_and_update().clone();
            let kube_services = self.kube.as_ref().map(|k| k.registry.services());
            if Arc::ptr_eq(&view, &self.engine.inputs().view)
                && kube_services.as_ref() == self.kube.as_ref().map(|k| &k.last)
            {
                tracing::debug!("Kubernetes objects changed nothing the mesh sees");
                continue;
            }
            self.publish_with(view, kube_services);
        }
    }

    fn serve_new_groups(&mut self) {
        self.demand.borrow_and_update();
        let built = self.engine.serve_new_groups();
        if built > 0 {
            self.metrics.groups.set(self.engine.group_count() as i64);
            self.metrics.scopes.set(self.engine.scope_count() as i64);
            tracing::debug!(built, "new proxy groups served");
        }
    }

    fn publish(&mut self, view: Arc<McpView>) {
        self.publish_with(view, None);
    }

    /// Publishes `view` with the Kubernetes services (read now when `None`).
    fn publish_with(&mut self, view: Arc<McpView>, kube_services: Option<Vec<Service>>) {
        let started = std::time::Instant::now();
        // Groups arriving from here on are built by this push.
        self.demand.borrow_and_update();
        let stats = match &mut self.kube {
            None => self.engine.update(view),
            Some(kube) => {
                kube.last = kube_services.unwrap_or_else(|| kube.registry.services());
                self.engine
                    .update_inputs(Inputs::from_view_and(view, &kube.last))
            }
        };
        let kind = if stats.endpoints_only { "eds" } else { "full" };
        self.metrics
            .translations
            .get_or_create(&PushLabels { kind })
            .inc();
        self.metrics
            .translate_seconds
            .observe(started.elapsed().as_secs_f64());
        let inputs = self.engine.inputs();
        self.metrics.services.set(inputs.services.len() as i64);
        self.metrics.groups.set(self.engine.group_count() as i64);
        self.metrics.scopes.set(self.engine.scope_count() as i64);
        tracing::debug!(
            kind,
            groups = stats.groups,
            scopes = stats.scopes,
            took = ?started.elapsed(),
            "configuration translated"
        );
        self.state.write().inputs = inputs;
    }
}

#[derive(Clone)]
struct DebugState {
    pilot: Arc<RwLock<PilotState>>,
    status: Arc<SyncStatus>,
}

fn debug_routes(pilot: Arc<RwLock<PilotState>>, status: Arc<SyncStatus>) -> Router {
    Router::new()
        .route("/debug/syncz", get(syncz))
        .route("/debug/configz", get(configz))
        .route("/debug/registryz", get(registryz))
        .route("/debug/config_dump", get(config_dump))
        .with_state(DebugState { pilot, status })
}

async fn syncz(State(s): State<DebugState>) -> Json<Value> {
    Json(json!({ "proxies": s.status.streams() }))
}

async fn configz(State(s): State<DebugState>) -> Json<Value> {
    let inputs = s.pilot.read().inputs.clone();
    let resources: Vec<Value> = inputs
        .resources
        .iter()
        .map(|r| json!({"kind": r.kind().as_str(), "metadata": r.meta, "spec": r.spec.to_value()}))
        .collect();
    Json(json!({"generation": inputs.view.generation, "resources": resources}))
}

async fn registryz(State(s): State<DebugState>) -> Json<Value> {
    let (inputs, trust_domain) = {
        let pilot = s.pilot.read();
        (pilot.inputs.clone(), pilot.trust_domain.clone())
    };
    let services: Vec<Value> = inputs
        .services
        .iter()
        .map(|svc| registry_entry(svc, &trust_domain))
        .collect();
    Json(json!({ "services": services }))
}

/// One service as `/debug/registryz` shows it: its registry, resolution, ports,
/// endpoint count, the service accounts of its endpoints and the identities its
/// clusters verify under `ISTIO_MUTUAL`.
fn registry_entry(svc: &Service, trust_domain: &str) -> Value {
    json!({
        "host": svc.host,
        "namespace": svc.namespace,
        "registry": svc.registry.as_str(),
        "resolution": svc.resolution,
        "ports": svc.ports.iter().map(|p| json!({"number": p.number, "name": p.name})).collect::<Vec<_>>(),
        "endpoints": svc.endpoints.len(),
        "serviceAccounts": svc.service_accounts(),
        "identities": svc.identities(trust_domain),
        "exportTo": svc.export_to,
    })
}

#[derive(Debug, serde::Deserialize)]
struct DumpQuery {
    #[serde(rename = "proxyID")]
    proxy_id: Option<String>,
}

/// Without `proxyID`: every served group with its resource names by type. With it:
/// the full configuration that proxy is served, each resource as Envoy's JSON. The
/// id is a node id, or the `<pod>.<namespace>` part of one.
async fn config_dump(
    State(s): State<DebugState>,
    axum::extract::Query(q): axum::extract::Query<DumpQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let cache = s.pilot.read().cache.clone();
    let Some(id) = q.proxy_id else {
        let groups: Vec<Value> = cache
            .groups()
            .into_iter()
            .filter_map(|g| cache.get(&g).map(|snap| (g, snap)))
            .map(|(g, snap)| {
                let types: serde_json::Map<String, Value> = snap
                    .type_urls()
                    .filter_map(|t| snap.get(t).map(|set| (t, set)))
                    .map(|(t, set)| (t.to_string(), json!(set.items.keys().collect::<Vec<_>>())))
                    .collect();
                json!({"group": g, "types": types})
            })
            .collect();
        return Json(json!({ "groups": groups })).into_response();
    };
    let stream =
        s.status.streams().into_iter().find(|st| {
            st.node_id == id || st.node_id.split('~').nth(2).is_some_and(|part| part == id)
        });
    let Some(stream) = stream else {
        return (
            axum::http::StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no connected proxy with id {id:?}")})),
        )
            .into_response();
    };
    let Some(snapshot) = cache.get(&stream.group) else {
        return (
            axum::http::StatusCode::NOT_FOUND,
            Json(json!({"error": format!("proxy {id:?} has not been served yet")})),
        )
            .into_response();
    };
    let mut configs = Vec::new();
    for t in snapshot.type_urls() {
        let Some(set) = snapshot.get(t) else { continue };
        let resources: Vec<Value> = set
            .items
            .values()
            .map(|r| crate::dump::resource_json(&r.body))
            .collect();
        configs.push(json!({"typeUrl": t, "version": set.version, "resources": resources}));
    }
    Json(json!({
        "proxy": stream.node_id,
        "group": stream.group,
        "configs": configs,
    }))
    .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use mesh_api::envoy::{
        envoy::config::core::v3::Node,
        google::protobuf::{Struct, Value, value::Kind},
    };
    use tonic::Code;

    use super::*;

    fn peer(id: Option<&str>) -> mesh_tls::PeerInfo {
        mesh_tls::PeerInfo {
            remote_addr: None,
            certificates: None,
            identity: id.map(|s| s.parse().unwrap()),
        }
    }

    fn node(id: &str, meta: &[(&str, &str)]) -> Node {
        Node {
            id: id.into(),
            metadata: Some(Struct {
                fields: meta
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            Value {
                                kind: Some(Kind::StringValue(v.to_string())),
                            },
                        )
                    })
                    .collect(),
            }),
            ..Node::default()
        }
    }

    const REVIEWS: &str = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews";
    const SIDECAR: &str = "sidecar~10.0.0.1~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local";

    #[test]
    fn a_proxy_is_served_only_the_namespace_and_account_its_certificate_names() {
        let auth = ProxyAuthorizer;
        let code = |p: Option<&str>, n: &Node| {
            auth.authorize(Some(&peer(p)), Some(n))
                .err()
                .map(|s| s.code())
        };
        assert_eq!(code(Some(REVIEWS), &node(SIDECAR, &[])), None);
        assert_eq!(
            code(
                Some(REVIEWS),
                &node(SIDECAR, &[("SERVICE_ACCOUNT", "bookinfo-reviews")])
            ),
            None
        );
        // Metadata naming the namespace counts as the node id does.
        assert_eq!(
            code(
                Some(REVIEWS),
                &node("grpc-client", &[("NAMESPACE", "bookinfo")])
            ),
            None
        );
        assert_eq!(
            code(
                Some(REVIEWS),
                &node(SIDECAR, &[("SERVICE_ACCOUNT", "bookinfo-ratings")])
            ),
            Some(Code::PermissionDenied)
        );
        assert_eq!(
            code(
                Some(REVIEWS),
                &node("sidecar~10.0.0.1~x.default~default.svc.cluster.local", &[])
            ),
            Some(Code::PermissionDenied)
        );
        // A node naming no namespace is in `default`.
        assert_eq!(
            code(Some(REVIEWS), &node("grpc-client", &[])),
            Some(Code::PermissionDenied)
        );
        assert_eq!(code(None, &node(SIDECAR, &[])), Some(Code::Unauthenticated));
        assert_eq!(
            auth.authorize(None, Some(&node(SIDECAR, &[])))
                .unwrap_err()
                .code(),
            Code::Unauthenticated
        );
    }
}
