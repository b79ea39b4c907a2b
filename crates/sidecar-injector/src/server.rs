//! The sidecar-injector process: the HTTPS webhook (9443), monitoring (15014),
//! and the certificate and configuration reloaded when their files change.
//!
//! A configuration or certificate that is bad at start-up stops the process with
//! the reason; a bad one written later is logged and counted, and the last good
//! one keeps serving, so a mistaken edit never blocks pod creation.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{Json, Router, extract::State, routing::get};
use mesh_admission::{CertFiles, HttpsServer, ServingCert};
use mesh_runtime::{AdminServer, Readiness};
use parking_lot::RwLock;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{ConfigError, InjectorConfig},
    inject::Injector,
    metrics::Metrics,
    template::TemplateError,
    webhook::{self, SharedInjector},
};

/// The process's settings.
#[derive(Debug, Clone)]
pub struct InjectorServerConfig {
    /// HTTPS webhook listen address.
    pub webhook_addr: SocketAddr,
    /// The certificate directory.
    pub tls_dir: PathBuf,
    /// The configuration file, if any.
    pub config: Option<PathBuf>,
    /// Monitoring listen address.
    pub monitoring_addr: SocketAddr,
    /// How often the certificate and configuration files are checked.
    pub reload_interval: Duration,
}

/// Why the injector stopped.
#[derive(Debug, thiserror::Error)]
pub enum SidecarInjectorError {
    /// A port cannot be bound.
    #[error(transparent)]
    Bind(#[from] mesh_runtime::BindError),
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration's template cannot be used.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The certificate cannot be used.
    #[error("webhook certificate: {0}")]
    Tls(#[from] mesh_admission::TlsFilesError),
    /// The HTTPS server failed.
    #[error("webhook server: {0}")]
    Serve(#[from] mesh_admission::ServeError),
    /// The monitoring server failed.
    #[error("monitoring server: {0}")]
    Http(std::io::Error),
    /// A task failed.
    #[error("task: {0}")]
    Task(String),
}

/// A started injector.
#[derive(Debug)]
pub struct Running {
    /// The bound webhook address.
    pub webhook_addr: SocketAddr,
    /// The bound monitoring address.
    pub monitoring_addr: SocketAddr,
    /// Ready once serving.
    pub readiness: Readiness,
    tasks: JoinSet<Result<(), SidecarInjectorError>>,
}

impl Running {
    /// Waits until every task stopped, returning the first error.
    pub async fn wait(mut self) -> Result<(), SidecarInjectorError> {
        mesh_runtime::shutdown::join_tasks(&mut self.tasks, SidecarInjectorError::Task).await
    }
}

/// Reads and compiles the configuration file (the defaults without one).
pub fn load_injector(path: Option<&std::path::Path>) -> Result<Injector, SidecarInjectorError> {
    let config = match path {
        Some(path) => InjectorConfig::from_file(path)?,
        None => InjectorConfig::default(),
    };
    Ok(Injector::new(config)?)
}

/// Runs the injector until `shutdown`.
pub async fn run(
    config: InjectorServerConfig,
    shutdown: CancellationToken,
) -> Result<(), SidecarInjectorError> {
    start(config, shutdown).await?.wait().await
}

/// Starts the injector: everything is bound and serving when this returns.
pub async fn start(
    config: InjectorServerConfig,
    shutdown: CancellationToken,
) -> Result<Running, SidecarInjectorError> {
    let injector: SharedInjector = Arc::new(RwLock::new(Arc::new(load_injector(
        config.config.as_deref(),
    )?)));
    let cert = ServingCert::load(CertFiles::new(&config.tls_dir))?;
    let mut registry = Registry::with_prefix("dromon");
    let metrics = Metrics::register(&mut registry);

    let webhook_listener =
        mesh_runtime::bind(config.webhook_addr, "sidecar-injector webhook").await?;
    let monitoring_listener =
        mesh_runtime::bind(config.monitoring_addr, "sidecar-injector monitoring").await?;
    let addr = |l: &tokio::net::TcpListener| l.local_addr().map_err(SidecarInjectorError::Http);
    let (webhook_addr, monitoring_addr) = (addr(&webhook_listener)?, addr(&monitoring_listener)?);

    let readiness = Readiness::new();
    let mut tasks = JoinSet::new();
    let server = HttpsServer::new(cert.clone());
    let router = webhook::router(injector.clone(), metrics.clone());
    let sd = shutdown.clone();
    tasks.spawn(async move { Ok(server.serve(webhook_listener, router, sd).await?) });
    let (interval, sd) = (config.reload_interval, shutdown.clone());
    tasks.spawn(async move {
        cert.watch(interval, sd).await;
        Ok(())
    });
    if let Some(path) = config.config.clone() {
        tasks.spawn(watch_config(
            path,
            injector.clone(),
            metrics.clone(),
            config.reload_interval,
            shutdown.clone(),
        ));
    }
    let debug = Router::new()
        .route("/debug/injectorz", get(injectorz))
        .with_state((injector, config.config.clone()));
    let admin = AdminServer::new(Arc::new(registry), readiness.clone()).with_routes(debug);
    let sd = shutdown.clone();
    tasks.spawn(async move {
        mesh_runtime::serve_admin(monitoring_listener, admin, sd)
            .await
            .map_err(SidecarInjectorError::Http)
    });
    readiness.set(true);
    tracing::info!(%webhook_addr, %monitoring_addr, "sidecar-injector serving");
    Ok(Running {
        webhook_addr,
        monitoring_addr,
        readiness,
        tasks,
    })
}

/// Reloads the configuration file when its contents change; a bad edit keeps the
/// last good configuration.
async fn watch_config(
    path: PathBuf,
    injector: SharedInjector,
    metrics: Arc<Metrics>,
    interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), SidecarInjectorError> {
    let mut last = std::fs::read(&path).ok();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let now = std::fs::read(&path).ok();
        if now.is_none() || now == last {
            continue;
        }
        last = now;
        match load_injector(Some(&path)) {
            Ok(next) => {
                *injector.write() = Arc::new(next);
                metrics.config_reload("ok");
                tracing::info!(path = %path.display(), "injector configuration reloaded");
            }
            Err(e) => {
                metrics.config_reload("error");
                tracing::warn!(error = %e, "injector configuration not reloaded; the previous one stays");
            }
        }
    }
}

async fn injectorz(
    State((injector, path)): State<(SharedInjector, Option<PathBuf>)>,
) -> Json<serde_json::Value> {
    let injector = injector.read().clone();
    let config = injector.config();
    Json(json!({
        "configFile": path.map(|p| p.display().to_string()),
        "policy": config.policy,
        "revision": config.revision,
        "ignoredNamespaces": config.ignored_namespaces,
        "neverInjectSelectors": config.never_inject_selector.len(),
        "alwaysInjectSelectors": config.always_inject_selector.len(),
        "template": if config.template.is_some() { "custom" } else { "built-in" },
        "values": config.values,
    }))
}
