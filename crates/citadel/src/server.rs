//! Wiring: the authority, the ledger, the authenticators, citadel's own serving
//! certificate, the gRPC CA port (TLS; client certificates optional, for
//! renewal) and the monitoring port (metrics, health, `/debug/ca`, `/crl`), and on
//! Kubernetes the controllers (Secrets, webhook caBundles) behind leader election.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use futures::future::BoxFuture;
use mesh_api::ca::v1::istio_certificate_service_server::IstioCertificateServiceServer;
use mesh_runtime::{AdminServer, GrpcSupport, Readiness};
use mesh_tls::{ClientAuth, MtlsAcceptor, SharedIdentity, SpiffeId, TlsIdentity};
use prometheus_client::registry::Registry;
use rcgen::{KeyPair, PublicKeyData};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use time::OffsetDateTime;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    authn::{
        Authenticators, CallerContext, JwksSource, JwtAuthenticator, JwtConfig, LocalIssuer,
        MtlsAuthenticator, RevokedSerials, TokenReviewAuthenticator,
        local::{CA_AUDIENCE, LOCAL_ISSUER},
    },
    ca::{Authority, CaPolicy, CaSource, IssuedCert, MaterialError},
    controllers::{
        ControllerContext, ControllerMetrics, Controllers, ControllersConfig, ControllersView,
    },
    ledger::{IssuedCertificate, Ledger, LedgerError},
    metrics::CaMetrics,
    service::{CaService, Recorder},
};

/// The gRPC service name of the CA API.
pub const CA_SERVICE: &str = mesh_api::ca::v1::SERVICE_NAME;

/// How often the CA files are checked for changes and revocations re-read.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Lifetime of citadel's own serving certificate.
const SERVING_TTL: Duration = Duration::from_secs(24 * 3600);

/// A JWT issuer citadel trusts besides the local one.
#[derive(Debug, Clone)]
pub struct JwtIssuerConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// Its keys.
    pub jwks: JwksSource,
}

/// Kubernetes TokenReview authentication of service-account tokens.
#[derive(Debug, Clone)]
pub struct TokenReviewConfig {
    /// How to reach the API server.
    pub kube: mesh_kube::KubeArgs,
    /// A reviewed token must be bound to one of these audiences.
    pub audiences: Vec<String>,
}

/// citadel's configuration.
#[derive(Debug, Clone)]
pub struct CitadelConfig {
    /// CA gRPC listen address (8060).
    pub grpc_addr: SocketAddr,
    /// Monitoring listen address.
    pub monitoring_addr: SocketAddr,
    /// State directory (self-signed CA, local token key, SQLite ledger).
    pub data_dir: PathBuf,
    /// Plugged-in CA files; a self-signed root under `data_dir/ca` when `None`.
    pub cacerts: Option<PathBuf>,
    /// Lifetimes and trust domain.
    pub policy: CaPolicy,
    /// Ledger URL; `sqlite://<data_dir>/ledger.db` when `None`.
    pub ledger_url: Option<String>,
    /// Trust tokens minted by `meshctl token` (keys under `data_dir/tokens`).
    pub local_issuer: bool,
    /// Other JWT issuers.
    pub jwt_issuers: Vec<JwtIssuerConfig>,
    /// Service-account tokens checked with the Kubernetes TokenReview API, when set.
    pub token_review: Option<TokenReviewConfig>,
    /// DNS names in citadel's serving certificate, beside its SPIFFE ID.
    pub serving_dns_names: Vec<String>,
    /// citadel's own identity: namespace and service account.
    pub identity: (String, String),
    /// The Kubernetes controllers (Secrets, webhook caBundles), when on.
    pub controllers: Option<ControllersConfig>,
}

impl CitadelConfig {
    /// The ledger URL in force.
    pub fn ledger_url(&self) -> String {
        self.ledger_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("ledger.db").display()))
    }

    /// The CA files' source.
    pub fn ca_source(&self) -> CaSource {
        match &self.cacerts {
            Some(dir) => CaSource::Plugged(dir.clone()),
            None => CaSource::SelfSigned(self.data_dir.join("ca")),
        }
    }
}

/// Why citadel stopped.
#[derive(Debug, thiserror::Error)]
pub enum CitadelError {
    /// The CA material is unusable.
    #[error(transparent)]
    Material(#[from] MaterialError),
    /// The ledger cannot be opened.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// A JWKS cannot be loaded.
    #[error(transparent)]
    Jwks(#[from] crate::authn::jwt::JwksError),
    /// The Kubernetes client (TokenReviews, controllers) cannot be configured.
    #[error("Kubernetes: {0}")]
    Kube(#[from] mesh_kube::KubeError),
    /// The controllers' leader election is misconfigured.
    #[error(transparent)]
    LeaderElection(#[from] mesh_kube::leader::LeaderElectionError),
    /// A port cannot be bound.
    #[error(transparent)]
    Bind(#[from] mesh_runtime::BindError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// Monitoring server failure.
    #[error("monitoring server: {0}")]
    Monitoring(std::io::Error),
    /// The identity for the serving certificate is invalid.
    #[error("citadel's identity: {0}")]
    Identity(String),
    /// A task failed.
    #[error("task: {0}")]
    Task(String),
}

/// A started citadel.
pub struct Running {
    /// The bound CA address.
    pub grpc_addr: SocketAddr,
    /// The bound monitoring address.
    pub monitoring_addr: SocketAddr,
    /// The authority (for tests and tools).
    pub authority: Arc<Authority>,
    tasks: JoinSet<Result<(), CitadelError>>,
}

impl Running {
    /// Waits for every task after shutdown, returning the first error.
    pub async fn wait(mut self) -> Result<(), CitadelError> {
        mesh_runtime::shutdown::join_tasks(&mut self.tasks, CitadelError::Task).await
    }
}

/// Runs citadel until `shutdown`.
pub async fn run(config: CitadelConfig, shutdown: CancellationToken) -> Result<(), CitadelError> {
    let running = start(config, shutdown.clone()).await?;
    tracing::info!(grpc = %running.grpc_addr, monitoring = %running.monitoring_addr, "citadel started");
    let result = running.wait().await;
    shutdown.cancel();
    result
}

/// Records issued certificates in the ledger.
pub struct LedgerRecorder(Ledger);

impl LedgerRecorder {
    /// A recorder writing into `ledger`.
    pub fn new(ledger: Ledger) -> Self {
        Self(ledger)
    }
}

impl Recorder for LedgerRecorder {
    fn record<'a>(&'a self, cert: &'a IssuedCert) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.0
                .record(IssuedCertificate {
                    serial: cert.serial.clone(),
                    identity: cert.identity.to_string(),
                    not_before: cert.not_before.unix_timestamp(),
                    not_after: cert.not_after.unix_timestamp(),
                    fingerprint: cert.fingerprint.clone(),
                    issuer_fingerprint: cert.issuer_fingerprint.clone(),
                })
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// The client-certificate part of a caller's context, from an mTLS connection.
fn peer_context(_: &tonic::metadata::MetadataMap, ext: &tonic::Extensions) -> CallerContext {
    let Some(peer) = mesh_tls::peer_info_from_extensions(ext) else {
        return CallerContext::default();
    };
    let serial = peer
        .certificates
        .as_ref()
        .and_then(|c| c.first())
        .and_then(|leaf| {
            use x509_parser::prelude::{FromDer, X509Certificate};
            X509Certificate::from_der(leaf.as_ref())
                .ok()
                .map(|(_, c)| hex::encode(c.raw_serial()))
        });
    CallerContext {
        bearer: None,
        peer_identity: peer.identity.clone(),
        peer_serial: serial,
    }
}

/// Binds citadel's ports and starts its tasks.
pub async fn start(
    config: CitadelConfig,
    shutdown: CancellationToken,
) -> Result<Running, CitadelError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| MaterialError::Io {
        path: config.data_dir.clone(),
        source,
    })?;
    let source = config.ca_source();
    let policy = config.policy.clone();
    let authority = tokio::task::spawn_blocking(move || {
        Authority::open(source, policy, OffsetDateTime::now_utc())
    })
    .await
    .map_err(|e| CitadelError::Task(e.to_string()))??;
    let authority = Arc::new(authority);
    let ledger = Ledger::open(&config.ledger_url()).await?;

    let mut registry = Registry::default();
    let metrics = CaMetrics::register(&mut registry);
    metrics.observe_material(
        authority.material().as_deref().map_err(String::as_str),
        OffsetDateTime::now_utc(),
    );
    let readiness = Readiness::new();

    let revoked = RevokedSerials::default();
    revoked.replace(ledger.revocations().await?.into_iter().map(|r| r.serial));
    let mut authenticators = Authenticators::new().with(Arc::new(MtlsAuthenticator::new(
        config.policy.trust_domain.clone(),
        revoked.clone(),
    )));
    let mut jwt = Vec::new();
    if config.local_issuer {
        let dir = config.data_dir.join("tokens");
        let issuer = tokio::task::spawn_blocking(move || LocalIssuer::load_or_create(&dir))
            .await
            .map_err(|e| CitadelError::Task(e.to_string()))??;
        jwt.push(JwtConfig {
            issuer: LOCAL_ISSUER.into(),
            audiences: vec![CA_AUDIENCE.into()],
            jwks: JwksSource::File(issuer.jwks_path()),
            trust_domain: config.policy.trust_domain.clone(),
        });
    }
    for i in &config.jwt_issuers {
        jwt.push(JwtConfig {
            issuer: i.issuer.clone(),
            audiences: i.audiences.clone(),
            jwks: i.jwks.clone(),
            trust_domain: config.policy.trust_domain.clone(),
        });
    }
    for c in jwt {
        let a = JwtAuthenticator::new(c).await?;
        a.spawn_refresh(Duration::from_secs(60), shutdown.clone());
        authenticators = authenticators.with(a);
    }
    if let Some(review) = &config.token_review {
        let client = review.kube.client().await?;
        authenticators = authenticators.with(Arc::new(TokenReviewAuthenticator::new(
            client,
            review.audiences.clone(),
            config.policy.trust_domain.clone(),
        )));
        tracing::info!(audiences = ?review.audiences, "authenticating service-account tokens with Kubernetes TokenReviews");
    }

    let identity = SpiffeId::new(
        &config.policy.trust_domain,
        &config.identity.0,
        &config.identity.1,
    )
    .map_err(|e| CitadelError::Identity(e.to_string()))?;
    let serving = Arc::new(SharedIdentity::new(None));
    let serving_not_after =
        renew_serving(&authority, &identity, &config.serving_dns_names, &serving)?;

    let service = CaService::new(
        authority.clone(),
        authenticators,
        Arc::new(LedgerRecorder(ledger.clone())),
        metrics.clone(),
        Arc::new(peer_context),
    );
    let grpc_listener = mesh_runtime::bind(config.grpc_addr, "citadel CA").await?;
    let monitoring_listener =
        mesh_runtime::bind(config.monitoring_addr, "citadel monitoring").await?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(CitadelError::Monitoring)?;
    let monitoring_addr = monitoring_listener
        .local_addr()
        .map_err(CitadelError::Monitoring)?;
    let (_support, router) = GrpcSupport::router(&[CA_SERVICE], &[], &readiness, shutdown.clone())
        .map_err(|e| CitadelError::Task(e.to_string()))?;
    let router = router.add_service(IstioCertificateServiceServer::new(service));
    let acceptor = MtlsAcceptor::new(serving.clone(), ClientAuth::Optional)
        .with_metrics(mesh_tls::TlsMetrics::register(&mut registry));
    let mut tasks = JoinSet::new();
    let mut controllers_view = None;
    if let Some(c) = &config.controllers {
        let client = c.kube.client().await?;
        let context = ControllerContext {
            authority: authority.clone(),
            recorder: Arc::new(LedgerRecorder(ledger.clone())),
            metrics: ControllerMetrics::register(&mut registry),
        };
        let leader_metrics = mesh_kube::leader::LeaderMetrics::register(&mut registry);
        let controllers = Controllers::spawn(
            client,
            context,
            c.clone(),
            Some(leader_metrics),
            shutdown.clone(),
        )?;
        tracing::info!(
            lease = %c.lease.lease_key(),
            identity = %c.lease.identity,
            secrets = c.secrets.is_some(),
            webhooks = ?c.webhooks,
            "Kubernetes controllers enabled; they run while this replica holds the lease"
        );
        controllers_view = Some(controllers.view());
        tasks.spawn(async move {
            controllers.stopped().await;
            Ok(())
        });
    }
    let admin =
        AdminServer::new(Arc::new(registry), readiness.clone()).with_routes(routes(DebugState {
            authority: authority.clone(),
            ledger: ledger.clone(),
            controllers: controllers_view,
        }));

    let sd = shutdown.clone();
    tasks.spawn(async move {
        mesh_runtime::grpc::serve_mtls(grpc_listener, acceptor, router, sd)
            .await
            .map_err(CitadelError::from)
    });
    let sd = shutdown.clone();
    tasks.spawn(async move {
        mesh_runtime::serve_admin(monitoring_listener, admin, sd)
            .await
            .map_err(CitadelError::Monitoring)
    });
    tasks.spawn(refresh_loop(RefreshLoop {
        authority: authority.clone(),
        ledger,
        revoked,
        metrics,
        identity,
        dns_names: config.serving_dns_names.clone(),
        serving,
        serving_not_after,
        shutdown,
    }));
    readiness.set(true);
    Ok(Running {
        grpc_addr,
        monitoring_addr,
        authority,
        tasks,
    })
}

/// Issues citadel's own serving certificate; returns when it expires.
fn renew_serving(
    authority: &Authority,
    identity: &SpiffeId,
    dns_names: &[String],
    serving: &SharedIdentity,
) -> Result<OffsetDateTime, CitadelError> {
    let key = KeyPair::generate().map_err(|e| CitadelError::Identity(e.to_string()))?;
    let issued = authority
        .issue_for_key(
            identity,
            dns_names,
            &key.subject_public_key_info(),
            SERVING_TTL,
            OffsetDateTime::now_utc(),
        )
        .map_err(|e| CitadelError::Identity(e.to_string()))?;
    let material = authority.material().map_err(CitadelError::Identity)?;
    let chain: Vec<CertificateDer<'static>> = issued
        .chain_pem
        .iter()
        .filter_map(|p| CertificateDer::from_pem_slice(p.as_bytes()).ok())
        .collect();
    let roots = material.roots.iter().map(|r| r.der.clone()).collect();
    let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let tls =
        TlsIdentity::new(chain, key, roots).map_err(|e| CitadelError::Identity(e.to_string()))?;
    serving.set(tls);
    Ok(issued.not_after)
}

struct RefreshLoop {
    authority: Arc<Authority>,
    ledger: Ledger,
    revoked: RevokedSerials,
    metrics: Arc<CaMetrics>,
    identity: SpiffeId,
    dns_names: Vec<String>,
    serving: Arc<SharedIdentity>,
    serving_not_after: OffsetDateTime,
    shutdown: CancellationToken,
}

/// Every second: reload changed CA files (renewing the self-signed root when
/// due), publish the material's metrics, re-issue the serving certificate when
/// the material changed or half its life is gone, and re-read revocations
/// (replicas share the ledger).
async fn refresh_loop(mut s: RefreshLoop) -> Result<(), CitadelError> {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    loop {
        tokio::select! {
            _ = s.shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = OffsetDateTime::now_utc();
        let authority = s.authority.clone();
        let changed = tokio::task::spawn_blocking(move || authority.refresh(now))
            .await
            .unwrap_or(false);
        // Every tick, not only on a change: an issuer also becomes unusable by
        // expiring.
        s.metrics.observe_material(
            s.authority.material().as_deref().map_err(String::as_str),
            now,
        );
        let half_life =
            (s.serving_not_after - now) < time::Duration::seconds(SERVING_TTL.as_secs() as i64 / 2);
        if changed || half_life {
            match renew_serving(&s.authority, &s.identity, &s.dns_names, &s.serving) {
                Ok(not_after) => s.serving_not_after = not_after,
                Err(e) => tracing::error!(error = %e, "cannot renew citadel's serving certificate"),
            }
        }
        match s.ledger.revocations().await {
            Ok(list) => s.revoked.replace(list.into_iter().map(|r| r.serial)),
            Err(e) => tracing::warn!(error = %e, "cannot read revocations"),
        }
    }
}

#[derive(Clone)]
struct DebugState {
    authority: Arc<Authority>,
    ledger: Ledger,
    controllers: Option<ControllersView>,
}

fn routes(state: DebugState) -> Router {
    Router::new()
        .route("/debug/ca", get(debug_ca))
        .route("/crl", get(crl_der))
        .route("/crl.pem", get(crl_pem))
        .with_state(state)
}

async fn debug_ca(State(s): State<DebugState>) -> Response {
    match s.authority.material() {
        Ok(m) => {
            let cert = |c: &crate::ca::CertInfo| {
                serde_json::json!({
                    "subject": c.subject,
                    "not_before": c.not_before.unix_timestamp(),
                    "not_after": c.not_after.unix_timestamp(),
                    "fingerprint": c.fingerprint,
                })
            };
            axum::Json(serde_json::json!({
                "source": format!("{:?}", s.authority.source()),
                "trust_domain": s.authority.policy().trust_domain,
                "ledger": s.ledger.backend(),
                "signing": cert(&m.signing),
                "chain": m.chain.iter().map(cert).collect::<Vec<_>>(),
                "roots": m.roots.iter().map(cert).collect::<Vec<_>>(),
                "controllers": s.controllers.as_ref().map(ControllersView::to_json),
            }))
            .into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

async fn signed_crl(s: &DebugState) -> Result<crate::crl::SignedCrl, Response> {
    let material = s
        .authority
        .material()
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e).into_response())?;
    let revoked = s
        .ledger
        .revocations()
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response())?;
    crate::crl::build(&material, &revoked, OffsetDateTime::now_utc())
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

async fn crl_der(State(s): State<DebugState>) -> Response {
    match signed_crl(&s).await {
        Ok(crl) => ([(header::CONTENT_TYPE, "application/pkix-crl")], crl.der).into_response(),
        Err(r) => r,
    }
}

async fn crl_pem(State(s): State<DebugState>) -> Response {
    match signed_crl(&s).await {
        Ok(crl) => ([(header::CONTENT_TYPE, "application/x-pem-file")], crl.pem).into_response(),
        Err(r) => r,
    }
}
