//! mixer-policy's process: follow galley, compile each configuration version into
//! a [`Policy`], and answer the Mixer Check API and Envoy's ext_authz on 9091.
//!
//! A new configuration replaces the old one atomically: a Check in flight keeps
//! the version it started with. Until galley's configuration has arrived whole
//! and been compiled once, the server is not ready and Checks get `Unavailable`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, routing::get};
use mesh_api::{
    envoy::{
        envoy::{
            service::auth::v3::{
                CheckRequest as AuthzCheckRequest, CheckResponse as AuthzCheckResponse,
                DeniedHttpResponse, OkHttpResponse,
                authorization_server::{Authorization, AuthorizationServer},
                check_response::HttpResponse,
            },
            service::ratelimit::v3::{
                RateLimitRequest, RateLimitResponse,
                rate_limit_response::{Code as RlCode, DescriptorStatus},
                rate_limit_service_server::{RateLimitService, RateLimitServiceServer},
            },
            r#type::v3::HttpStatus,
        },
        google::rpc::Status as RpcStatus,
    },
    mixer::v1::{
        CheckRequest, CheckResponse, ReferencedAttributes, ReportRequest, ReportResponse,
        check_response::{PreconditionResult, QuotaResult as WireQuota},
        mixer_server::{Mixer, MixerServer},
        referenced_attributes::{AttributeMatch, Condition},
    },
};
use mesh_mcp::{McpStore, McpView, collections};
use mesh_runtime::{AdminServer, GrpcSupport, Readiness};
use mesh_xds::client::{DeltaClient, DeltaClientConfig};
use mixer_core::{dictionary::global_index, expr::AttributeRef, wire};
use parking_lot::RwLock;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde_json::json;
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    adapter::{CheckResult, code, listchecker},
    envoy::{ext_authz_attributes, ratelimit_attributes},
    policy::{Policy, QuotaAsk, Stores},
};

/// The gRPC names served on the Check port.
pub const MIXER_SERVICE: &str = "istio.mixer.v1.Mixer";
/// Envoy's external authorization service.
pub const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";
/// Envoy's rate limit service.
pub const RATELIMIT_SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";

/// What to answer when the policy cannot decide (no configuration yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailurePolicy {
    /// Allow the request.
    Open,
    /// Refuse it.
    Closed,
}

/// mixer-policy's configuration.
#[derive(Debug, Clone)]
pub struct MixerPolicyConfig {
    /// galley's MCP endpoint.
    pub galley: String,
    /// Check API listen address (9091).
    pub grpc_addr: SocketAddr,
    /// Monitoring listen address.
    pub monitoring_addr: SocketAddr,
    /// ext_authz answer while no configuration is loaded.
    pub failure_policy: FailurePolicy,
    /// The mTLS Check port (15004) and following galley over `https://`.
    pub tls: Option<MixerTls>,
    /// Where SQL quota handlers count unless their params name a database
    /// (`sqlite://FILE` or `postgres://...`).
    pub quota_database: Option<String>,
}

/// mixer-policy's certificate and what it is used for: the mTLS Check port (15004)
/// and following galley over `https://`.
pub type MixerTls = mesh_tls::ServingTls;

/// Why mixer-policy stopped.
#[derive(Debug, thiserror::Error)]
pub enum MixerPolicyError {
    /// A port cannot be bound.
    #[error(transparent)]
    Bind(#[from] mesh_runtime::BindError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The monitoring server failed.
    #[error("monitoring server: {0}")]
    Monitoring(std::io::Error),
    /// A task failed.
    #[error("task: {0}")]
    Task(String),
    /// The certificate directory is unusable, or galley's endpoint does not fit
    /// the TLS settings.
    #[error("mTLS: {0}")]
    Tls(#[from] mesh_tls::TlsError),
    /// Inconsistent settings.
    #[error("{0}")]
    Config(String),
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    api: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

struct Metrics {
    checks: Family<CheckLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    issues: Gauge,
    versions: Counter,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self {
            checks: Family::default(),
            cache: Family::default(),
            issues: Gauge::default(),
            versions: Counter::default(),
        });
        let r = registry.sub_registry_with_prefix("mixer_policy");
        r.register(
            "checks",
            "Checks answered, by API (mixer, ext_authz) and result (ok, denied, invalid, unavailable)",
            m.checks.clone(),
        );
        r.register(
            "check_cache",
            "Preconditions looked up in the check cache, by result (hit, miss)",
            m.cache.clone(),
        );
        r.register(
            "config_issues",
            "Resources of the current configuration left out for a problem (see /debug/policyz)",
            m.issues.clone(),
        );
        r.register(
            "config_versions",
            "Configuration versions compiled",
            m.versions.clone(),
        );
        m
    }

    fn cache(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache.get_or_create(&CacheLabels { result }).inc();
    }

    fn count(&self, api: &'static str, code: i32) {
        let result = match code {
            code::OK => "ok",
            code::INVALID_ARGUMENT => "invalid",
            code::UNAVAILABLE => "unavailable",
            _ => "denied",
        };
        self.checks
            .get_or_create(&CheckLabels { api, result })
            .inc();
    }
}

/// The current policy, swapped whole.
type Current = Arc<RwLock<Option<Arc<Policy>>>>;

#[derive(Clone)]
struct Service {
    current: Current,
    metrics: Arc<Metrics>,
    failure_policy: FailurePolicy,
}

impl Service {
    fn policy(&self) -> Option<Arc<Policy>> {
        self.current.read().clone()
    }
}

fn rpc_status(code: i32, message: &str) -> RpcStatus {
    RpcStatus {
        code,
        message: message.to_string(),
        details: Vec::new(),
    }
}

fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The referenced attributes in the wire's word form (names as message words).
fn referenced(refs: &[(&AttributeRef, bool)], known_words: u32) -> ReferencedAttributes {
    let mut out = ReferencedAttributes::default();
    let index = |words: &mut Vec<String>, w: &str| -> i32 {
        if let Some(i) =
            global_index(w).filter(|i| u32::try_from(*i).is_ok_and(|i| i < known_words))
        {
            return i;
        }
        if let Some(p) = words.iter().position(|x| x == w) {
            return -i32::try_from(p + 1).unwrap_or(i32::MAX);
        }
        words.push(w.to_string());
        -i32::try_from(words.len()).unwrap_or(i32::MAX)
    };
    for (r, present) in refs {
        let name = index(&mut out.words, &r.name);
        let map_key = r.key.as_deref().map_or(0, |k| index(&mut out.words, k));
        out.attribute_matches.push(AttributeMatch {
            name,
            condition: if *present {
                Condition::Exact as i32
            } else {
                Condition::Absence as i32
            },
            regex: String::new(),
            map_key,
        });
    }
    out
}

#[tonic::async_trait]
impl Mixer for Service {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let Some(policy) = self.policy() else {
            self.metrics.count("mixer", code::UNAVAILABLE);
            return Err(Status::unavailable("no policy configuration loaded yet"));
        };
        let req = request.into_inner();
        let attrs = req.attributes.unwrap_or_default();
        let bag = match wire::decode(&attrs, req.global_word_count, &[], policy.manifest()) {
            Ok(bag) => bag,
            Err(e) => {
                self.metrics.count("mixer", code::INVALID_ARGUMENT);
                return Err(Status::invalid_argument(format!("attributes: {e}")));
            }
        };
        let asks: BTreeMap<String, QuotaAsk> = req
            .quotas
            .iter()
            .map(|(name, q)| {
                (
                    name.clone(),
                    QuotaAsk {
                        amount: q.amount,
                        best_effort: q.best_effort,
                    },
                )
            })
            .collect();
        let mut decision = policy.check(&bag, &asks, &req.deduplication_id, Instant::now());
        drop(bag);
        if asks.is_empty() {
            self.metrics.cache(decision.cached);
        }
        if decision.has_pending() {
            decision.allocate().await;
        }
        let p = &decision.precondition;
        self.metrics.count("mixer", p.code);
        let refs = referenced(&decision.referenced, req.global_word_count);
        let quotas = decision
            .quotas
            .iter()
            .map(|(name, q)| {
                let status = if let Some(e) = decision.quota_errors.get(name) {
                    rpc_status(code::UNAVAILABLE, &format!("quota {name}: {e}"))
                } else if q.granted > 0 || asks.get(name).is_some_and(|a| a.amount == 0) {
                    rpc_status(code::OK, "")
                } else {
                    rpc_status(code::RESOURCE_EXHAUSTED, &format!("quota {name} exhausted"))
                };
                (
                    name.clone(),
                    WireQuota {
                        valid_duration: Some(proto_duration(q.valid_duration)),
                        granted_amount: q.granted,
                        status: Some(status),
                        referenced_attributes: Some(refs.clone()),
                    },
                )
            })
            .collect();
        Ok(Response::new(CheckResponse {
            precondition: Some(PreconditionResult {
                status: Some(rpc_status(p.code, &p.message)),
                valid_duration: Some(proto_duration(p.valid_duration)),
                valid_use_count: p.valid_use_count,
                referenced_attributes: Some(refs),
                route_directive: None,
            }),
            quotas,
        }))
    }

    async fn report(
        &self,
        _request: Request<ReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        Err(Status::unimplemented(
            "Report is served by mixer-telemetry, not mixer-policy",
        ))
    }
}

#[tonic::async_trait]
impl Authorization for Service {
    async fn check(
        &self,
        request: Request<AuthzCheckRequest>,
    ) -> Result<Response<AuthzCheckResponse>, Status> {
        let result = match self.policy() {
            Some(policy) => {
                let bag = ext_authz_attributes(request.get_ref());
                let decision = policy.check(&bag, &BTreeMap::new(), "", Instant::now());
                self.metrics.cache(decision.cached);
                decision.precondition
            }
            None => match self.failure_policy {
                FailurePolicy::Open => CheckResult::ok(Duration::ZERO, 0),
                FailurePolicy::Closed => CheckResult {
                    code: code::UNAVAILABLE,
                    message: "no policy configuration loaded yet".into(),
                    valid_duration: Duration::ZERO,
                    valid_use_count: 0,
                },
            },
        };
        self.metrics.count("ext_authz", result.code);
        let http_response = if result.is_ok() {
            HttpResponse::OkResponse(OkHttpResponse::default())
        } else {
            HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus {
                    // Forbidden, or Service Unavailable when undecided.
                    code: if result.code == code::UNAVAILABLE {
                        503
                    } else {
                        403
                    },
                }),
                body: result.message.clone(),
                ..DeniedHttpResponse::default()
            })
        };
        Ok(Response::new(AuthzCheckResponse {
            status: Some(rpc_status(result.code, &result.message)),
            http_response: Some(http_response),
            ..AuthzCheckResponse::default()
        }))
    }
}

#[tonic::async_trait]
impl RateLimitService for Service {
    /// Each descriptor is one allocation of the quota instance the domain names
    /// (`name` in the root namespace, or `name.namespace`), decided by the same
    /// rules as a Mixer Check asking for that quota.
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let req = request.into_inner();
        let Some(policy) = self.policy() else {
            self.metrics.count("ratelimit", code::UNAVAILABLE);
            return match self.failure_policy {
                FailurePolicy::Open => Ok(Response::new(RateLimitResponse {
                    overall_code: RlCode::Ok as i32,
                    ..RateLimitResponse::default()
                })),
                FailurePolicy::Closed => {
                    Err(Status::unavailable("no policy configuration loaded yet"))
                }
            };
        };
        if req.domain.is_empty() {
            self.metrics.count("ratelimit", code::INVALID_ARGUMENT);
            return Err(Status::invalid_argument(
                "domain must name a quota instance",
            ));
        }
        let quota = if req.domain.contains('.') {
            req.domain.clone()
        } else {
            format!("{}.{}", req.domain, mesh_model::security::ROOT_NAMESPACE)
        };
        let mut overall = RlCode::Ok;
        let mut statuses = Vec::with_capacity(req.descriptors.len());
        for (i, d) in req.descriptors.iter().enumerate() {
            let bag =
                ratelimit_attributes(&req.domain, &d.entries, policy.manifest()).map_err(|e| {
                    self.metrics.count("ratelimit", code::INVALID_ARGUMENT);
                    Status::invalid_argument(format!("descriptor {i}: {e}"))
                })?;
            let hits = d
                .hits_addend
                .map_or(u64::from(req.hits_addend), |h| h.value)
                .max(1);
            let ask = QuotaAsk {
                amount: i64::try_from(hits).unwrap_or(i64::MAX),
                best_effort: false,
            };
            let asks = BTreeMap::from([(quota.clone(), ask.clone())]);
            let mut decision = policy.check(&bag, &asks, "", Instant::now());
            drop(bag);
            if decision.has_pending() {
                decision.allocate().await;
            }
            if let Some(e) = decision.quota_errors.get(&quota) {
                self.metrics.count("ratelimit", code::UNAVAILABLE);
                return Err(Status::unavailable(format!("quota {quota}: {e}")));
            }
            let granted = decision.quotas.get(&quota);
            // No rule limiting this descriptor: nothing to limit.
            let limited = !decision.no_rule.contains(&quota)
                && granted.is_none_or(|g| g.granted < ask.amount);
            if limited {
                overall = RlCode::OverLimit;
            }
            statuses.push(DescriptorStatus {
                code: if limited {
                    RlCode::OverLimit
                } else {
                    RlCode::Ok
                } as i32,
                duration_until_reset: granted.filter(|g| !g.valid_duration.is_zero()).map(|g| {
                    let d = proto_duration(g.valid_duration);
                    mesh_api::envoy::google::protobuf::Duration {
                        seconds: d.seconds,
                        nanos: d.nanos,
                    }
                }),
                ..DescriptorStatus::default()
            });
        }
        self.metrics.count(
            "ratelimit",
            if overall == RlCode::Ok {
                code::OK
            } else {
                code::RESOURCE_EXHAUSTED
            },
        );
        Ok(Response::new(RateLimitResponse {
            overall_code: overall as i32,
            statuses,
            ..RateLimitResponse::default()
        }))
    }
}

/// A running mixer-policy.
pub struct Running {
    /// The bound Check address.
    pub grpc_addr: SocketAddr,
    /// The bound mTLS Check address, when serving one.
    pub mtls_addr: Option<SocketAddr>,
    /// The bound monitoring address.
    pub monitoring_addr: SocketAddr,
    /// Ready once the first configuration is compiled.
    pub readiness: Readiness,
    tasks: JoinSet<Result<(), MixerPolicyError>>,
}

impl Running {
    /// Waits until every task stopped, returning the first error.
    pub async fn wait(mut self) -> Result<(), MixerPolicyError> {
        mesh_runtime::shutdown::join_tasks(&mut self.tasks, MixerPolicyError::Task).await
    }
}

/// Runs mixer-policy until `shutdown`.
pub async fn run(
    config: MixerPolicyConfig,
    shutdown: CancellationToken,
) -> Result<(), MixerPolicyError> {
    let running = start(config, shutdown.clone()).await?;
    tracing::info!(grpc = %running.grpc_addr, monitoring = %running.monitoring_addr, "mixer-policy started");
    let result = running.wait().await;
    shutdown.cancel();
    result
}

/// Binds mixer-policy's ports and starts its tasks.
pub async fn start(
    config: MixerPolicyConfig,
    shutdown: CancellationToken,
) -> Result<Running, MixerPolicyError> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let readiness = Readiness::new();
    let current: Current = Arc::new(RwLock::new(None));
    let service = Service {
        current: current.clone(),
        metrics: metrics.clone(),
        failure_policy: config.failure_policy,
    };
    let grpc_listener = mesh_runtime::bind(config.grpc_addr, "mixer-policy Check").await?;
    let monitoring_listener =
        mesh_runtime::bind(config.monitoring_addr, "mixer-policy monitoring").await?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(MixerPolicyError::Monitoring)?;
    let monitoring_addr = monitoring_listener
        .local_addr()
        .map_err(MixerPolicyError::Monitoring)?;
    let (_support, router) = GrpcSupport::router(
        &[MIXER_SERVICE, AUTHZ_SERVICE, RATELIMIT_SERVICE],
        &[],
        &readiness,
        shutdown.clone(),
    )
    .map_err(|e| MixerPolicyError::Task(e.to_string()))?;
    let router = router
        .add_service(MixerServer::new(service.clone()))
        .add_service(AuthorizationServer::new(service.clone()))
        .add_service(RateLimitServiceServer::new(service));
    let identity: Option<Arc<dyn mesh_tls::IdentitySource>> = match &config.tls {
        Some(tls) => Some(Arc::new(mesh_tls::FileIdentity::open(&tls.dir)?)),
        None => None,
    };
    let mut tasks = JoinSet::new();
    let mut mtls_addr = None;
    if let (Some(tls), Some(identity)) = (&config.tls, &identity) {
        let acceptor =
            mesh_tls::MtlsAcceptor::new(identity.clone(), mesh_tls::ClientAuth::Required)
                .with_metrics(mesh_tls::TlsMetrics::register(&mut registry));
        let listener = mesh_runtime::bind(tls.mtls_addr, "mixer-policy mTLS Check").await?;
        mtls_addr = Some(
            listener
                .local_addr()
                .map_err(MixerPolicyError::Monitoring)?,
        );
        let router = router.clone();
        let sd = shutdown.clone();
        tasks.spawn(async move {
            mesh_runtime::grpc::serve_mtls(listener, acceptor, router, sd)
                .await
                .map_err(MixerPolicyError::from)
        });
    }
    let debug = Router::new()
        .route("/debug/policyz", get(policyz))
        .with_state(current.clone());
    let admin = AdminServer::new(Arc::new(registry), readiness.clone()).with_routes(debug);

    let sd = shutdown.clone();
    tasks.spawn(async move {
        mesh_runtime::grpc::serve(grpc_listener, router, sd)
            .await
            .map_err(MixerPolicyError::from)
    });
    let sd = shutdown.clone();
    tasks.spawn(async move {
        mesh_runtime::serve_admin(monitoring_listener, admin, sd)
            .await
            .map_err(MixerPolicyError::Monitoring)
    });

    let store = McpStore::new();
    let views = store.subscribe();
    let mut client = DeltaClient::new(
        DeltaClientConfig {
            endpoint: config.galley.clone(),
            node_id: "mixer-policy".into(),
            type_urls: collections(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        },
        store,
    );
    if let Some(channel) = mesh_tls::follower_channel(
        "mixer-policy",
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
    tasks.spawn(follow(
        views,
        synced,
        Stores::new(config.quota_database.clone()),
        current,
        readiness.clone(),
        metrics,
        shutdown,
    ));
    Ok(Running {
        grpc_addr,
        mtls_addr,
        monitoring_addr,
        readiness,
        tasks,
    })
}

/// Compiles every configuration version and swaps it in.
async fn follow(
    mut views: watch::Receiver<Arc<McpView>>,
    mut synced: watch::Receiver<bool>,
    mut stores: Stores,
    current: Current,
    readiness: Readiness,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), MixerPolicyError> {
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = synced.wait_for(|s| *s) => if r.is_err() { return Ok(()) },
    }
    // List refreshes belong to the version that configured them.
    let mut version_tasks = shutdown.child_token();
    loop {
        let view = views.borrow_and_update().clone();
        let policy = Arc::new(Policy::compile_with(
            view.resources.values().map(|r| &**r),
            &mut stores,
        ));
        for issue in policy.issues() {
            tracing::warn!(resource = %issue.resource, problem = %issue.message, "policy resource left out");
        }
        metrics
            .issues
            .set(i64::try_from(policy.issues().len()).unwrap_or(i64::MAX));
        metrics.versions.inc();
        version_tasks.cancel();
        version_tasks = shutdown.child_token();
        for checker in policy.list_checkers() {
            tokio::spawn(listchecker::refresh(checker, version_tasks.clone()));
        }
        *current.write() = Some(policy);
        readiness.set(true);
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            changed = views.changed() => if changed.is_err() { return Ok(()) },
        }
    }
}

async fn policyz(State(current): State<Current>) -> Json<serde_json::Value> {
    let policy = current.read().clone();
    Json(match policy {
        None => json!({"loaded": false}),
        Some(p) => json!({
            "loaded": true,
            "check_cache": {"signatures": p.cache_stats().0, "entries": p.cache_stats().1},
            "issues": p.issues().iter().map(|i| json!({"resource": i.resource, "message": i.message})).collect::<Vec<_>>(),
        }),
    })
}
