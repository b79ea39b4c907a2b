//! citadel's Kubernetes controllers, run by the one replica holding a Lease:
//!
//! - the Secret controller ([`secret_controller`]) keeps one `istio.<sa>` Secret
//!   of type `istio.io/key-and-cert` per ServiceAccount, holding a key and a
//!   certificate for `spiffe://<td>/ns/<ns>/sa/<sa>` issued in-process and recorded
//!   in the ledger, renewed in place when due or when the roots change, deleted
//!   with its account;
//! - the caBundle controller ([`webhook_controller`]) keeps the `caBundle` of every
//!   entry of the named Mutating/ValidatingWebhookConfigurations equal to the CA's
//!   trusted roots.
//!
//! Both run inside [`mesh_kube::leader::LeaderElector::run_as_leader`]: any number
//! of replicas may run, one writes. CreateCertificate is served by every replica
//! regardless. The pure rules are in [`secret`] and [`cabundle`].

pub mod cabundle;
pub mod secret;
pub mod secret_controller;
pub mod webhook_controller;

use std::{collections::BTreeMap, str::FromStr, sync::Arc, time::Duration};

use mesh_kube::{
    KubeArgs, KubeError,
    leader::{LeaderElectionError, LeaderElector, LeaderMetrics, LeaseConfig},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    ca::{Authority, IssueError},
    service::Recorder,
};

/// Name of the Lease the controllers' replicas elect their leader with.
pub const DEFAULT_LEASE_NAME: &str = "citadel-controllers";
/// How often the Secret controller looks at every Secret even without a change.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);
/// Delay before a failed reconciliation is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How often the CA's trust bundle is compared with the one last written.
pub const ROOT_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Attempts of one write that meets 409 Conflict (each after a fresh read).
pub const CONFLICT_RETRIES: usize = 3;

/// What the Secret controller does.
#[derive(Debug, Clone)]
pub struct SecretsConfig {
    /// Namespaces to serve; every namespace when empty.
    pub namespaces: Vec<String>,
    /// Lifetime of the certificates written (capped by the issuer's).
    pub ttl: Duration,
    /// Every Secret is looked at this often even without a change.
    pub resync: Duration,
    /// Service accounts whose certificates also carry DNS names (webhook serving
    /// certificates), by namespace and name; the names sorted, without duplicates.
    pub dns_names: BTreeMap<(String, String), Vec<String>>,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            ttl: Duration::from_secs(24 * 3600),
            resync: DEFAULT_RESYNC,
            dns_names: BTreeMap::new(),
        }
    }
}

impl SecretsConfig {
    /// Adds `certs` to [`Self::dns_names`]: refused when a service account is named
    /// twice or lies in a namespace this controller does not serve.
    pub fn with_dns_certs(mut self, certs: &[DnsCert]) -> Result<Self, String> {
        for cert in certs {
            let served = self.namespaces.is_empty() || self.namespaces.contains(&cert.namespace);
            if !served {
                return Err(format!(
                    "--dns-certs names {}/{}, in a namespace --secret-namespaces leaves out",
                    cert.namespace, cert.service_account
                ));
            }
            let key = (cert.namespace.clone(), cert.service_account.clone());
            if self.dns_names.contains_key(&key) {
                return Err(format!(
                    "--dns-certs names {}/{} twice",
                    cert.namespace, cert.service_account
                ));
            }
            let mut names = cert.dns_names.clone();
            names.sort();
            names.dedup();
            self.dns_names.insert(key, names);
        }
        Ok(self)
    }
}

/// A service account whose certificate also names DNS names, so that a webhook
/// running as it can serve the API server with it:
/// `NAMESPACE/SERVICE_ACCOUNT=NAME[,NAME...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsCert {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account.
    pub service_account: String,
    /// DNS names, e.g. `dromon-sidecar-injector.dromon-system.svc`.
    pub dns_names: Vec<String>,
}

impl FromStr for DnsCert {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shape = || format!("`{text}` is not NAMESPACE/SERVICE_ACCOUNT=NAME[,NAME...]");
        let (account, names) = text.trim().split_once('=').ok_or_else(shape)?;
        let (namespace, service_account) = account.split_once('/').ok_or_else(shape)?;
        for (what, part) in [
            ("namespace", namespace),
            ("service account", service_account),
        ] {
            if part.is_empty() || part.contains(['/', ' ']) {
                return Err(format!("{}: bad {what} `{part}`", shape()));
            }
        }
        let dns_names: Vec<String> = names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| check_dns_name(n).map(|()| n.to_string()))
            .collect::<Result<_, _>>()?;
        if dns_names.is_empty() {
            return Err(format!("{}: no DNS name", shape()));
        }
        Ok(Self {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            dns_names,
        })
    }
}

/// A DNS name as a certificate may carry it: lowercase RFC 1123 labels of at most
/// 63 characters, at most 253 in all.
fn check_dns_name(name: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "`{name}` is not a DNS name (lowercase letters, digits, `-` and `.`)"
        ));
    }
    Ok(())
}

/// The controllers' configuration.
#[derive(Debug, Clone)]
pub struct ControllersConfig {
    /// How to reach the API server.
    pub kube: KubeArgs,
    /// The Secret controller, when on.
    pub secrets: Option<SecretsConfig>,
    /// Names of Mutating/ValidatingWebhookConfigurations whose caBundle citadel keeps.
    pub webhooks: Vec<String>,
    /// The Lease electing the one replica that writes.
    pub lease: LeaseConfig,
}

/// A write's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `secrets` or `webhooks`.
    pub controller: String,
    /// `create`, `renew`, `delete` (Secrets) or `patch` (webhook configurations).
    pub op: String,
}

/// A controller's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `secrets` or `webhooks`.
    pub controller: String,
}

/// The controllers' metrics (`citadel_controller_` prefix).
#[derive(Debug, Default)]
pub struct ControllerMetrics {
    /// Writes to the API server, by controller and operation.
    pub writes: Family<WriteLabels, Counter>,
    /// Failed reconciliations (retried).
    pub errors: Family<ControllerLabels, Counter>,
}

impl ControllerMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self::default());
        registry.register(
            "citadel_controller_writes",
            "Writes of citadel's Kubernetes controllers (Secrets: create, renew, delete; webhooks: patch)",
            m.writes.clone(),
        );
        registry.register(
            "citadel_controller_errors",
            "Failed reconciliations of citadel's Kubernetes controllers, retried",
            m.errors.clone(),
        );
        m
    }

    /// Writes so far of `controller` with `op`.
    pub fn writes(&self, controller: &str, op: &str) -> u64 {
        self.writes
            .get_or_create(&WriteLabels {
                controller: controller.into(),
                op: op.into(),
            })
            .get()
    }

    pub(crate) fn wrote(&self, controller: &str, op: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                controller: controller.into(),
                op: op.into(),
            })
            .inc();
    }

    pub(crate) fn failed(&self, controller: &str) {
        self.errors
            .get_or_create(&ControllerLabels {
                controller: controller.into(),
            })
            .inc();
    }
}

/// What the controllers need of citadel.
#[derive(Clone)]
pub struct ControllerContext {
    /// Issues the Secrets' certificates; its roots are the webhooks' caBundle.
    pub authority: Arc<Authority>,
    /// Every issued certificate is recorded here before it is written.
    pub recorder: Arc<dyn Recorder>,
    /// Counters.
    pub metrics: Arc<ControllerMetrics>,
}

/// Why one reconciliation failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A request to the API server failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// The CA cannot issue.
    #[error("cannot issue: {0}")]
    Issue(#[from] IssueError),
    /// The ledger cannot record the certificate (it is not written).
    #[error("cannot record the certificate: {0}")]
    Ledger(String),
    /// Every attempt met a conflicting write.
    #[error("{0} changed at every attempt ({CONFLICT_RETRIES} conflicts)")]
    Conflicts(String),
}

/// The controllers of one replica: campaigning for the Lease, running the
/// controllers while leading.
#[derive(Debug)]
pub struct Controllers {
    leading: watch::Receiver<bool>,
    lease: String,
    identity: String,
    secrets: bool,
    webhooks: Vec<String>,
    task: tokio::task::JoinHandle<()>,
}

/// Leadership and settings, for `/debug/ca`.
#[derive(Debug, Clone)]
pub struct ControllersView {
    leading: watch::Receiver<bool>,
    lease: String,
    identity: String,
    secrets: bool,
    webhooks: Vec<String>,
}

impl ControllersView {
    /// As JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "lease": self.lease,
            "identity": self.identity,
            "leading": *self.leading.borrow(),
            "secrets": self.secrets,
            "webhooks": self.webhooks,
        })
    }
}

impl Controllers {
    /// Starts campaigning for `config.lease` with `client`; while this replica
    /// leads, the configured controllers run. Stops (releasing the Lease) on
    /// `shutdown`.
    pub fn spawn(
        client: kube::Client,
        context: ControllerContext,
        config: ControllersConfig,
        leader_metrics: Option<Arc<LeaderMetrics>>,
        shutdown: CancellationToken,
    ) -> Result<Self, LeaderElectionError> {
        let mut elector = LeaderElector::new(client.clone(), config.lease.clone())?;
        if let Some(m) = leader_metrics {
            elector = elector.with_metrics(m);
        }
        let leading = elector.subscribe();
        let view = (
            config.lease.lease_key(),
            config.lease.identity.clone(),
            config.secrets.is_some(),
            config.webhooks.clone(),
        );
        let task = tokio::spawn(async move {
            elector
                .run_as_leader(shutdown, |token| {
                    run_leading(client.clone(), context.clone(), config.clone(), token)
                })
                .await;
        });
        Ok(Self {
            leading,
            lease: view.0,
            identity: view.1,
            secrets: view.2,
            webhooks: view.3,
            task,
        })
    }

    /// Whether this replica leads (and its controllers run) now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// The leadership state, `true` while leading.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Leadership and settings, for monitoring.
    pub fn view(&self) -> ControllersView {
        ControllersView {
            leading: self.leading.clone(),
            lease: self.lease.clone(),
            identity: self.identity.clone(),
            secrets: self.secrets,
            webhooks: self.webhooks.clone(),
        }
    }

    /// Waits until the controllers have stopped and the Lease is released.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// The work of the leader: both controllers until `token` is cancelled.
async fn run_leading(
    client: kube::Client,
    context: ControllerContext,
    config: ControllersConfig,
    token: CancellationToken,
) {
    tracing::info!(
        secrets = config.secrets.is_some(),
        webhooks = ?config.webhooks,
        "leading: starting citadel's Kubernetes controllers"
    );
    let secrets = async {
        if let Some(s) = &config.secrets {
            secret_controller::run(client.clone(), context.clone(), s.clone(), token.clone()).await;
        }
    };
    let webhooks = async {
        if !config.webhooks.is_empty() {
            webhook_controller::run(
                client.clone(),
                context.clone(),
                config.webhooks.clone(),
                token.clone(),
            )
            .await;
        }
    };
    tokio::join!(secrets, webhooks);
    tracing::info!("citadel's Kubernetes controllers stopped");
}

/// The CA's trust bundle now, or `None` while it cannot issue.
pub(crate) fn current_roots(authority: &Authority) -> Option<String> {
    authority.roots_pem().ok()
}
