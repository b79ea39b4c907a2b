//! Leader election through a `coordination.k8s.io/v1` Lease, so that of several
//! replicas of a component exactly one does the work that must not run twice.
//!
//! The rules are those every Kubernetes controller follows:
//! - a candidate takes the Lease when it does not exist, when it has no holder, or
//!   when it has expired (`renewTime + leaseDurationSeconds` is in the past);
//!   taking it over from another holder increments `leaseTransitions`;
//! - the leader renews it every retry period; when no renewal has succeeded for the
//!   renew deadline (shorter than the lease duration) it stops leading, before any
//!   other replica may consider the Lease expired;
//! - every write carries the `resourceVersion` it read, so of two replicas racing for
//!   the Lease one gets 409 Conflict; that one reads the Lease again and decides anew;
//! - on shutdown the leader clears `holderIdentity`, so another replica takes over at
//!   its next attempt instead of waiting for the lease to expire.
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), mesh_kube::leader::LeaderElectionError> {
//! use mesh_kube::leader::{LeaderElector, LeaseConfig, default_identity};
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let config = LeaseConfig::new("istio-system", "galley-leader", default_identity());
//! let elector = LeaderElector::new(client, config)?;
//! elector
//!     .run_as_leader(shutdown, |leading| async move {
//!         // Work only the leader does; stop when `leading` is cancelled.
//!         leading.cancelled().await;
//!     })
//!     .await;
//! # Ok(()) }
//! ```

use std::{future::Future, sync::Arc, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::api::{Api, PostParams};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::client::{KubeError, error_chain, request_error};

/// How long a Lease is valid after its last renewal, by default.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the leader keeps leading without a successful renewal, by default.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader renews and a candidate tries to acquire, by default.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// How many times one attempt reads the Lease again after a 409 Conflict.
const CONFLICT_RETRIES: usize = 3;

/// Which Lease, who is asking, and the timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity, written into `holderIdentity`; unique per process.
    pub identity: String,
    /// How long the Lease stays valid after a renewal (whole seconds in the Lease).
    pub lease_duration: Duration,
    /// How long the leader goes on leading without a successful renewal.
    pub renew_deadline: Duration,
    /// Time between renewals, and between a candidate's attempts.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// A Lease with the default timings (15 s / 10 s / 2 s).
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }

    /// Sets the three timings.
    pub fn with_timings(
        mut self,
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Self {
        self.lease_duration = lease_duration;
        self.renew_deadline = renew_deadline;
        self.retry_period = retry_period;
        self
    }

    /// `namespace/name`, for logs and metrics.
    pub fn lease_key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Checks that a leader always stops before its Lease expires for the others.
    pub fn validate(&self) -> Result<(), LeaderElectionError> {
        let invalid = |reason: String| LeaderElectionError::InvalidConfig {
            lease: self.lease_key(),
            reason,
        };
        if self.namespace.is_empty() || self.name.is_empty() {
            return Err(invalid("the lease needs a namespace and a name".into()));
        }
        if self.identity.is_empty() {
            return Err(invalid("the identity is empty".into()));
        }
        if self.retry_period.is_zero() {
            return Err(invalid("the retry period is zero".into()));
        }
        if self.renew_deadline <= self.retry_period {
            return Err(invalid(format!(
                "the renew deadline ({:?}) must be longer than the retry period ({:?})",
                self.renew_deadline, self.retry_period
            )));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(invalid(format!(
                "the lease duration ({:?}) must be longer than the renew deadline ({:?})",
                self.lease_duration, self.renew_deadline
            )));
        }
        Ok(())
    }

    /// The duration written into `leaseDurationSeconds`, rounded up.
    fn lease_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

/// Why leader election cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LeaderElectionError {
    /// The settings would let two replicas lead at once.
    #[error("leader election for lease {lease}: {reason}")]
    InvalidConfig {
        /// `namespace/name`.
        lease: String,
        /// What is wrong.
        reason: String,
    },
}

/// A unique identity for this process: the pod's name (`POD_NAME`, else `HOSTNAME`)
/// and a random suffix, so a restarted pod never mistakes the old holder for itself.
pub fn default_identity() -> String {
    let base = ["POD_NAME", "HOSTNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "dromon".to_string());
    let suffix: String = std::iter::repeat_with(fastrand::lowercase)
        .take(8)
        .collect();
    format!("{base}-{suffix}")
}

/// The Lease a leader-election metric is about.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabels {
    /// `namespace/name`.
    pub lease: String,
}

/// A change of leadership.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// `namespace/name`.
    pub lease: String,
    /// `acquired`, `lost` (renew deadline passed or taken over) or `released`.
    pub event: String,
}

/// Leader-election metrics (`leader_election_` prefix).
#[derive(Debug, Default)]
pub struct LeaderMetrics {
    /// 1 while this replica leads.
    pub leading: Family<LeaseLabels, Gauge>,
    /// Leadership changes of this replica, by event.
    pub transitions: Family<TransitionLabels, Counter>,
}

impl LeaderMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self::default());
        registry.register(
            "leader_election_leading",
            "1 while this replica holds the lease",
            m.leading.clone(),
        );
        registry.register(
            "leader_election_transitions",
            "Leadership changes of this replica (acquired, lost, released)",
            m.transitions.clone(),
        );
        m
    }
}

/// The result of one attempt to take or keep the Lease.
#[derive(Debug)]
enum Attempt {
    /// We hold it; `taken` when it was just created or taken over.
    Holding { taken: bool, transitions: i32 },
    /// Another replica holds a live Lease.
    HeldBy(String),
}

/// Why leading ended.
enum Ended {
    Lost,
    WorkReturned,
    Shutdown,
}

/// Takes part in the election for one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    leading: watch::Sender<bool>,
    metrics: Option<Arc<LeaderMetrics>>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.config)
            .field("leading", &*self.leading.borrow())
            .finish_non_exhaustive()
    }
}

/// A running elector (see [`LeaderElector::spawn`]).
#[derive(Debug)]
pub struct LeaderHandle {
    leading: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaderHandle {
    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// A receiver of the leadership state (`true` while leading).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Waits until the state is `leading`.
    pub async fn wait_until(&mut self, leading: bool) {
        // The sender lives in the task; it is dropped only when the elector stops.
        let _ = self.leading.wait_for(|l| *l == leading).await;
    }

    /// Waits until the elector has stopped (after releasing the Lease on shutdown).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

impl LeaderElector {
    /// An elector for `config`'s Lease; checks the timings.
    pub fn new(client: kube::Client, config: LeaseConfig) -> Result<Self, LeaderElectionError> {
        config.validate()?;
        let api = Api::namespaced(client, &config.namespace);
        Ok(Self {
            api,
            config,
            leading: watch::Sender::new(false),
            metrics: None,
        })
    }

    /// Records transitions in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<LeaderMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The settings.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// A receiver of the leadership state (`true` while leading).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Runs [`LeaderElector::run`] in a task.
    pub fn spawn(self, shutdown: CancellationToken) -> LeaderHandle {
        let leading = self.subscribe();
        let task = tokio::spawn(async move { self.run(shutdown).await });
        LeaderHandle { leading, task }
    }

    /// Campaigns, leads while it can and campaigns again after losing the Lease,
    /// until `shutdown`; then releases the Lease if held. The state is published to
    /// [`LeaderElector::subscribe`]rs.
    pub async fn run(&self, shutdown: CancellationToken) {
        self.run_as_leader(shutdown, |leading| async move { leading.cancelled().await })
            .await;
    }

    /// Runs `work` each time this replica becomes the leader. Its token is cancelled
    /// when leadership is lost or on `shutdown`; on shutdown the Lease is still
    /// renewed until `work` has returned, and released only then, so the next
    /// leader never overlaps with it. Returns after `shutdown`, or when `work`
    /// returns by itself (the Lease is then released).
    pub async fn run_as_leader<F, Fut>(&self, shutdown: CancellationToken, mut work: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            let Some(renewed_at) = self.campaign(&shutdown).await else {
                return;
            };
            let token = CancellationToken::new();
            let task = work(token.clone());
            tokio::pin!(task);
            let keep = self.keep_leading(renewed_at);
            tokio::pin!(keep);
            let mut ended = tokio::select! {
                () = &mut keep => Ended::Lost,
                () = &mut task => Ended::WorkReturned,
                () = shutdown.cancelled() => Ended::Shutdown,
            };
            if let Ended::Shutdown = ended {
                token.cancel();
                tokio::select! {
                    () = &mut task => {}
                    () = &mut keep => ended = Ended::Lost,
                }
            }
            match ended {
                Ended::Lost => {
                    self.set_leading(false, "lost");
                    token.cancel();
                    task.await;
                    if shutdown.is_cancelled() {
                        return;
                    }
                }
                Ended::WorkReturned | Ended::Shutdown => {
                    token.cancel();
                    self.set_leading(false, "released");
                    self.release().await;
                    return;
                }
            }
        }
    }

    /// Tries to acquire the Lease every retry period until it succeeds (the instant
    /// the successful attempt started) or `shutdown` (`None`).
    async fn campaign(&self, shutdown: &CancellationToken) -> Option<Instant> {
        let lease = self.config.lease_key();
        let mut last_error: Option<String> = None;
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            let started = Instant::now();
            let attempt = tokio::select! {
                () = shutdown.cancelled() => {
                    // The interrupted write may have reached the server.
                    self.release().await;
                    return None;
                }
                a = tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew()) => a,
            };
            match attempt {
                Ok(Ok(Attempt::Holding { taken, transitions })) => {
                    tracing::info!(
                        %lease,
                        identity = %self.config.identity,
                        transitions,
                        taken_over = taken,
                        "became the leader"
                    );
                    self.set_leading(true, "acquired");
                    return Some(started);
                }
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    last_error = None;
                    tracing::debug!(%lease, %holder, "lease held by another replica");
                }
                Ok(Err(e)) => {
                    let text = error_chain(&e);
                    if last_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(%lease, error = %text, "cannot acquire the lease; retrying");
                    }
                    last_error = Some(text);
                }
                Err(_) => {
                    tracing::warn!(%lease, "acquiring the lease timed out; retrying");
                }
            }
            let period = self
                .config
                .retry_period
                .mul_f64(0.8 + 0.2 * fastrand::f64());
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(period) => {}
            }
        }
    }

    /// Renews every retry period; returns when no renewal has succeeded for the
    /// renew deadline, or another replica holds the Lease.
    async fn keep_leading(&self, mut renewed_at: Instant) {
        let lease = self.config.lease_key();
        loop {
            let deadline = renewed_at + self.config.renew_deadline;
            let next = (Instant::now() + self.config.retry_period).min(deadline);
            tokio::time::sleep_until(next).await;
            if Instant::now() >= deadline {
                tracing::warn!(%lease, deadline = ?self.config.renew_deadline, "no renewal within the renew deadline; stepping down");
                return;
            }
            let started = Instant::now();
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Holding { .. })) => renewed_at = started,
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    tracing::warn!(%lease, %holder, "the lease was taken over; stepping down");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(%lease, error = %error_chain(&e), "renewing the lease failed");
                }
                Err(_) => {
                    tracing::warn!(%lease, "renewing the lease timed out; stepping down");
                    return;
                }
            }
        }
    }

    /// One attempt: read the Lease, then create, take over or renew it. A 409
    /// Conflict (someone wrote in between) reads it again.
    async fn try_acquire_or_renew(&self) -> Result<Attempt, KubeError> {
        let ns = Some(self.config.namespace.as_str());
        for attempt in 1..=CONFLICT_RETRIES {
            let last_try = attempt == CONFLICT_RETRIES;
            let now = MicroTime(Timestamp::now());
            let current = self
                .api
                .get_opt(&self.config.name)
                .await
                .map_err(|e| request_error(e, "get", "leases", ns))?;
            let Some(current) = current else {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(self.config.lease_seconds()),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => {
                        return Ok(Attempt::Holding {
                            taken: true,
                            transitions: 0,
                        });
                    }
                    Err(e) if is_conflict(&e) && !last_try => continue,
                    Err(e) => return Err(request_error(e, "create", "leases", ns)),
                }
            };
            let spec = current.spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
            let ours = holder.as_deref() == Some(self.config.identity.as_str());
            if let Some(holder) = holder.as_ref()
                && !ours
                && !expired(&spec, &now.0)
            {
                return Ok(Attempt::HeldBy(holder.clone()));
            }
            let transitions = spec.lease_transitions.unwrap_or(0);
            let transitions = if ours {
                transitions
            } else {
                transitions.saturating_add(1)
            };
            let mut lease = current;
            lease.spec = Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(self.config.lease_seconds()),
                acquire_time: if ours {
                    spec.acquire_time.clone()
                } else {
                    Some(now.clone())
                },
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..spec
            });
            match self
                .api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => {
                    return Ok(Attempt::Holding {
                        taken: !ours,
                        transitions,
                    });
                }
                Err(e) if is_conflict(&e) && !last_try => {}
                Err(e) => return Err(request_error(e, "update", "leases", ns)),
            }
        }
        // Not reached: the last attempt returns whatever its outcome.
        Ok(Attempt::HeldBy(String::from(
            "(unknown: conflicting writes)",
        )))
    }

    /// Clears `holderIdentity` if this replica still holds the Lease, so another
    /// takes over at once. Bounded by the renew deadline; failures are logged.
    async fn release(&self) {
        let lease = self.config.lease_key();
        match tokio::time::timeout(self.config.renew_deadline, self.try_release()).await {
            Ok(Ok(true)) => tracing::info!(%lease, "released the lease"),
            Ok(Ok(false)) => tracing::debug!(%lease, "the lease was no longer ours to release"),
            Ok(Err(e)) => {
                tracing::warn!(%lease, error = %error_chain(&e), "cannot release the lease; it will expire");
            }
            Err(_) => tracing::warn!(%lease, "releasing the lease timed out; it will expire"),
        }
    }

    async fn try_release(&self) -> Result<bool, KubeError> {
        let ns = Some(self.config.namespace.as_str());
        for attempt in 1..=CONFLICT_RETRIES {
            let last_try = attempt == CONFLICT_RETRIES;
            let current = self
                .api
                .get_opt(&self.config.name)
                .await
                .map_err(|e| request_error(e, "get", "leases", ns))?;
            let Some(mut lease) = current else {
                return Ok(false);
            };
            let spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(false);
            }
            let now = MicroTime(Timestamp::now());
            lease.spec = Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..spec
            });
            match self
                .api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if is_conflict(&e) && !last_try => {}
                Err(e) => return Err(request_error(e, "update", "leases", ns)),
            }
        }
        Ok(false)
    }

    fn set_leading(&self, leading: bool, event: &str) {
        let was = self.leading.send_replace(leading);
        if was == leading {
            return;
        }
        if !leading {
            tracing::info!(lease = %self.config.lease_key(), identity = %self.config.identity, event, "stopped leading");
        }
        if let Some(m) = &self.metrics {
            let lease = self.config.lease_key();
            m.leading
                .get_or_create(&LeaseLabels {
                    lease: lease.clone(),
                })
                .set(i64::from(leading));
            m.transitions
                .get_or_create(&TransitionLabels {
                    lease,
                    event: event.to_string(),
                })
                .inc();
        }
    }
}

/// Whether a Lease's holder has let it expire: `renewTime + leaseDurationSeconds`
/// is before `now` (a Lease never renewed counts as expired).
pub fn expired(spec: &LeaseSpec, now: &Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    match renewed.0.checked_add(duration) {
        Ok(until) => until < *now,
        Err(_) => false,
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        let now = Timestamp::now();
        LeaseSpec {
            holder_identity: Some("other".into()),
            renew_time: Some(MicroTime(
                now.checked_sub(SignedDuration::from_secs(renewed_secs_ago))
                    .expect("a time in range"),
            )),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_expires_after_its_duration_from_the_last_renewal() {
        let now = Timestamp::now();
        assert!(!expired(&spec(5, 15), &now));
        assert!(expired(&spec(16, 15), &now));
        assert!(expired(&LeaseSpec::default(), &now));
    }

    #[test]
    fn timings_that_could_give_two_leaders_are_refused() {
        let ok = LeaseConfig::new("ns", "lease", "me");
        assert!(ok.validate().is_ok());
        assert_eq!(ok.lease_seconds(), 15);
        let short = ok.clone().with_timings(
            Duration::from_millis(1000),
            Duration::from_millis(600),
            Duration::from_millis(200),
        );
        assert!(short.validate().is_ok());
        assert_eq!(
            short
                .clone()
                .with_timings(Duration::from_millis(1500), Duration::ZERO, Duration::ZERO)
                .lease_seconds(),
            2
        );
        let bad = ok.clone().with_timings(
            Duration::from_secs(10),
            Duration::from_secs(10),
            Duration::from_secs(2),
        );
        let error = bad.validate().expect_err("deadline equal to duration");
        assert!(error.to_string().contains("lease duration"), "{error}");
        let bad = ok.with_timings(
            Duration::from_secs(15),
            Duration::from_secs(2),
            Duration::from_secs(2),
        );
        assert!(bad.validate().is_err());
    }

    #[test]
    fn identities_are_unique_per_process() {
        let (a, b) = (default_identity(), default_identity());
        assert_ne!(a, b);
        assert!(a.len() > 9);
    }
}
