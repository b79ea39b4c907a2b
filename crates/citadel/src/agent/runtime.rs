//! Running the agent: binding its sockets, delivering each certificate (files,
//! SDS, in-process users, metrics, readiness) and the renewal loop.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use mesh_runtime::{AdminServer, Readiness};
use mesh_tls::SharedIdentity;
use prometheus_client::registry::Registry;
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::{
    AgentConfig, AgentError, AgentMetrics, CaClient, CertBundle, CertDir, SdsService, SecretCache,
    metrics,
    schedule::{self, Backoff},
};

/// Obtains one certificate and writes it to `config.output_dir` (renewing over
/// mTLS with a valid certificate already there, else with the token).
pub async fn fetch_once(config: &AgentConfig) -> Result<Arc<CertBundle>, AgentError> {
    config.validate()?;
    let dir = config
        .output_dir
        .as_ref()
        .map(CertDir::new)
        .ok_or_else(|| AgentError::Config("--once needs --output-dir".into()))?;
    let current = CertBundle::from_dir(dir.path()).ok();
    let (bundle, via) = config.client().obtain(current.as_ref()).await?;
    let bundle = Arc::new(bundle);
    let writer = dir.clone();
    let written = bundle.clone();
    tokio::task::spawn_blocking(move || writer.write(&written))
        .await
        .map_err(|e| AgentError::Task(e.to_string()))??;
    tracing::info!(serial = %bundle.serial, via = via.as_str(), dir = %dir.path().display(), "certificate written");
    Ok(bundle)
}

/// A started agent; dropping it stops it.
pub struct RunningAgent {
    /// The SDS Unix socket, when serving on one.
    pub sds_socket: Option<PathBuf>,
    /// The bound SDS TCP address, when serving on one.
    pub sds_addr: Option<SocketAddr>,
    /// The bound monitoring address, when serving one.
    pub monitoring_addr: Option<SocketAddr>,
    readiness: Readiness,
    current: watch::Receiver<Option<Arc<CertBundle>>>,
    identity: Arc<SharedIdentity>,
    metrics: Arc<AgentMetrics>,
    shutdown: CancellationToken,
    tasks: JoinSet<Result<(), AgentError>>,
}

impl fmt::Debug for RunningAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningAgent")
            .field("sds_socket", &self.sds_socket)
            .field("sds_addr", &self.sds_addr)
            .field("monitoring_addr", &self.monitoring_addr)
            .field("ready", &self.readiness.is_ready())
            .finish()
    }
}

impl RunningAgent {
    /// Waits until the agent holds a valid certificate.
    pub async fn ready(&self) {
        self.readiness.wait().await;
    }

    /// Whether the agent holds a valid certificate now.
    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }

    /// The certificate held now.
    pub fn certificate(&self) -> Option<Arc<CertBundle>> {
        self.current.borrow().clone()
    }

    /// A receiver seeing every new certificate.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<CertBundle>>> {
        self.current.clone()
    }

    /// The current certificate as a TLS identity source (for in-process
    /// servers and clients: [`mesh_tls::MtlsAcceptor`], [`mesh_tls::channel`]).
    pub fn identity(&self) -> Arc<SharedIdentity> {
        self.identity.clone()
    }

    /// The agent's metrics.
    pub fn metrics(&self) -> Arc<AgentMetrics> {
        self.metrics.clone()
    }

    /// Waits for every task after shutdown, returning the first error. A task
    /// that fails (a server that stops) shuts the others down.
    pub async fn wait(mut self) -> Result<(), AgentError> {
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            let r = joined
                .map_err(|e| AgentError::Task(e.to_string()))
                .and_then(|r| r);
            if let Err(e) = &r {
                tracing::error!(error = %e, "citadel agent task failed; stopping");
                self.shutdown.cancel();
            }
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// Runs the agent until `shutdown`.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let running = start(config, shutdown.clone()).await?;
    tracing::info!(
        sds_socket = ?running.sds_socket,
        sds_addr = ?running.sds_addr,
        monitoring = ?running.monitoring_addr,
        "citadel agent started"
    );
    let result = running.wait().await;
    shutdown.cancel();
    result
}

/// Binds the agent's sockets and starts renewing. A valid certificate already
/// in the output directory is served at once and renewed on its schedule.
///
/// The agent stops when `shutdown` is cancelled, when one of its servers fails
/// (without cancelling `shutdown`), or when the [`RunningAgent`] is dropped.
pub async fn start(
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<RunningAgent, AgentError> {
    config.validate()?;
    let shutdown = shutdown.child_token();
    let readiness = Readiness::new();
    let mut registry = Registry::default();
    // mesh-xds's stream metrics stay unregistered: the agent shows the one that
    // matters here (open streams) under its own name.
    let xds_metrics = mesh_xds::XdsMetrics::unregistered();
    let metrics = AgentMetrics::register(&mut registry, xds_metrics.connected.clone());
    let secrets = SecretCache::new();
    let identity = Arc::new(SharedIdentity::new(None));
    let (current_tx, current_rx) = watch::channel(None);
    let delivery = Delivery {
        dir: config.output_dir.clone().map(CertDir::new),
        secrets: secrets.clone(),
        identity: identity.clone(),
        current: current_tx,
        metrics: metrics.clone(),
        readiness: readiness.clone(),
    };

    let mut tasks = JoinSet::new();
    let sds = SdsService::new(
        &secrets,
        readiness.subscribe(),
        xds_metrics,
        shutdown.clone(),
    );
    let mut sds_socket = None;
    if let Some(path) = &config.sds_socket {
        let listener = bind_unix(path)?;
        let service = sds.clone();
        let sd = shutdown.clone();
        let socket_path = path.clone();
        tasks.spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    sd.cancelled_owned(),
                )
                .await;
            let _ = std::fs::remove_file(&socket_path);
            result.map_err(|e| AgentError::Serve {
                what: "SDS (unix socket)",
                reason: e.to_string(),
            })
        });
        sds_socket = Some(path.clone());
    }
    let mut sds_addr = None;
    if let Some(addr) = config.sds_addr {
        let listener = mesh_runtime::bind(addr, "citadel agent SDS").await?;
        sds_addr = Some(listener.local_addr().map_err(|e| AgentError::Serve {
            what: "SDS (TCP)",
            reason: e.to_string(),
        })?);
        let service = sds.clone();
        let sd = shutdown.clone();
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    sd.cancelled_owned(),
                )
                .await
                .map_err(|e| AgentError::Serve {
                    what: "SDS (TCP)",
                    reason: e.to_string(),
                })
        });
    }
    let mut monitoring_addr = None;
    if let Some(addr) = config.monitoring_addr {
        let listener = mesh_runtime::bind(addr, "citadel agent monitoring").await?;
        monitoring_addr = Some(listener.local_addr().map_err(|e| AgentError::Serve {
            what: "monitoring",
            reason: e.to_string(),
        })?);
        let admin = AdminServer::new(Arc::new(registry), readiness.clone());
        let sd = shutdown.clone();
        tasks.spawn(async move {
            mesh_runtime::serve_admin(listener, admin, sd)
                .await
                .map_err(|e| AgentError::Serve {
                    what: "monitoring",
                    reason: e.to_string(),
                })
        });
    }

    let existing = match &config.output_dir {
        Some(dir) => match CertBundle::from_dir(dir) {
            Ok(bundle) => {
                tracing::info!(serial = %bundle.serial, dir = %dir.display(), "serving the certificate found in the output directory until its renewal");
                let bundle = Arc::new(bundle);
                delivery.publish(&bundle);
                Some(bundle)
            }
            Err(e) => {
                tracing::debug!(error = %e, "no usable certificate in the output directory");
                None
            }
        },
        None => None,
    };
    let agent_metrics = metrics.clone();
    tasks.spawn(renewal_loop(
        config.client(),
        delivery,
        existing,
        shutdown.clone(),
    ));
    Ok(RunningAgent {
        sds_socket,
        sds_addr,
        monitoring_addr,
        readiness,
        current: current_rx,
        identity,
        metrics: agent_metrics,
        shutdown,
        tasks,
    })
}

/// Binds the SDS Unix socket (mode 0660), replacing a stale socket left by an
/// earlier run; anything else at that path is an error.
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, AgentError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let fail = |reason: String| AgentError::Socket {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path)
                .map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
        }
        Ok(_) => return Err(fail("exists and is not a socket".into())),
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| fail(e.to_string()))?;
    Ok(listener)
}

/// Where a new certificate goes.
struct Delivery {
    dir: Option<CertDir>,
    secrets: SecretCache,
    identity: Arc<SharedIdentity>,
    current: watch::Sender<Option<Arc<CertBundle>>>,
    metrics: Arc<AgentMetrics>,
    readiness: Readiness,
}

impl Delivery {
    /// Hands `bundle` to SDS streams and in-process users.
    fn publish(&self, bundle: &Arc<CertBundle>) {
        self.secrets.publish(bundle);
        match bundle.tls_identity() {
            Ok(id) => self.identity.set(id),
            Err(e) => {
                tracing::warn!(error = %e, "the new certificate is not a usable TLS identity")
            }
        }
        self.current.send_replace(Some(bundle.clone()));
        self.metrics.cert_expiry.set(bundle.not_after_unix());
        self.metrics.cert_expired.set(0);
        self.readiness.set(true);
    }

    /// Writes the files, then publishes: once the agent reports a certificate
    /// (and turns ready), its files are in place.
    async fn deliver(&self, bundle: &Arc<CertBundle>) -> Result<(), AgentError> {
        if let Some(dir) = &self.dir {
            let dir = dir.clone();
            let b = bundle.clone();
            tokio::task::spawn_blocking(move || dir.write(&b))
                .await
                .map_err(|e| AgentError::Task(e.to_string()))??;
        }
        self.publish(bundle);
        Ok(())
    }

    /// Reports a held certificate that has expired: loudly, every time.
    fn check_expired(&self, current: Option<&CertBundle>) {
        if let Some(cert) = current
            && cert.expired_at(SystemTime::now())
        {
            tracing::error!(serial = %cert.serial, "the certificate has expired and could not be renewed; peers will refuse it");
            self.metrics.cert_expired.set(1);
            self.readiness.set(false);
        }
    }
}

/// Renews on schedule until `shutdown`; failures retry with backoff while the
/// current certificate stays in use.
async fn renewal_loop(
    client: CaClient,
    delivery: Delivery,
    mut current: Option<Arc<CertBundle>>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let mut backoff = Backoff::new();
    loop {
        if let Some(cert) = &current {
            let wait = schedule::wait_until(cert.renew_at, SystemTime::now());
            tracing::debug!(serial = %cert.serial, ?wait, "next renewal");
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
        loop {
            let attempt = async {
                let (bundle, via) = client.obtain(current.as_deref()).await?;
                let bundle = Arc::new(bundle);
                delivery.deliver(&bundle).await?;
                Ok::<_, AgentError>((bundle, via))
            };
            let result = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = attempt => r,
            };
            match result {
                Ok((bundle, via)) => {
                    delivery.metrics.renewal(true);
                    delivery
                        .metrics
                        .issued
                        .get_or_create(&metrics::ViaLabels {
                            via: via.as_str().into(),
                        })
                        .inc();
                    tracing::info!(
                        serial = %bundle.serial,
                        via = via.as_str(),
                        not_after = bundle.not_after_unix(),
                        renew_in = ?bundle.renew_at.duration_since(SystemTime::now()).unwrap_or_default(),
                        "certificate obtained"
                    );
                    backoff.reset();
                    current = Some(bundle);
                    break;
                }
                Err(e) => {
                    delivery.metrics.renewal(false);
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot obtain a certificate");
                    delivery.check_expired(current.as_deref());
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}
