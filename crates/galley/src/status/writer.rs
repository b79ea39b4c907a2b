//! Writing analysis messages into the status of the Kubernetes objects they are
//! about, in the one galley replica holding a Lease (`galley-status` by default).
//!
//! After each analysis run the leader compares, for every analysed object, the
//! status it wants ([`super::status_patch`]) with the one the object holds (as the
//! Kubernetes source last saw it, [`KubeObjects`], or as galley's own last write
//! answered, when that is newer) and sends a JSON merge patch to the object's
//! `/status` subresource only where they differ: a steady state makes no request.
//!
//! - Objects served at their last good version (their newest one refused), and
//!   objects whose generation moved on since the analysed view, are left alone
//!   until an analysis of what they hold now.
//! - 404 (deleted meanwhile): quiet, nothing to do.
//! - 403, 409 or any other failure: logged with verb and resource, and retried
//!   with backoff (0.5 s doubling to 30 s) on a later pass; galley keeps serving.
//!
//! Every outcome is counted in `galley_status_writes_total{result}` (`written`,
//! `not_found`, `forbidden`, `conflict`, `error`).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use mesh_kube::leader::{LeaderElectionError, LeaderElector, LeaderMetrics, LeaseConfig};
use mesh_model::ResourceKey;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use serde_json::Value;
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{status_patch, validation_message};
use crate::{
    analysis::AnalysisRun,
    source::kube::{KubeObjects, ObjectState, RETRY_MAX, RETRY_MIN, api_resource},
};

/// Name of the Lease electing the replica that writes status.
pub const DEFAULT_LEASE_NAME: &str = "galley-status";
/// Prefix of the "files" the Kubernetes source feeds the store.
const KUBE_PREFIX: &str = "kubernetes/";
/// Shortest time between two passes, so a burst of watch events costs one pass.
const PASS_INTERVAL: Duration = Duration::from_millis(100);
/// Status writes in flight at once.
const CONCURRENT_WRITES: usize = 4;

/// The status writer's settings.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// The Lease electing the one replica that writes.
    pub lease: LeaseConfig,
}

/// The outcome of a status write.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `written`, `not_found`, `forbidden`, `conflict` or `error`.
    pub result: String,
}

/// The status writer's metrics (`galley_status_` prefix).
#[derive(Debug, Default)]
pub struct StatusMetrics {
    /// Status patches sent, by outcome.
    pub writes: Family<WriteLabels, Counter>,
}

impl StatusMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self::default());
        registry.sub_registry_with_prefix("galley_status").register(
            "writes",
            "Status patches of analysis messages, by result (written, not_found, forbidden, conflict, error)",
            m.writes.clone(),
        );
        m
    }

    /// Writes so far with `result`.
    pub fn writes(&self, result: &str) -> u64 {
        self.writes
            .get_or_create(&WriteLabels {
                result: result.into(),
            })
            .get()
    }

    fn count(&self, result: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                result: result.into(),
            })
            .inc();
    }
}

/// Writes analysis messages into resource status while this replica leads.
#[derive(Clone)]
pub struct StatusWriter {
    client: kube::Client,
    objects: KubeObjects,
    runs: watch::Receiver<Option<Arc<AnalysisRun>>>,
    metrics: Arc<StatusMetrics>,
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter").finish_non_exhaustive()
    }
}

/// One status patch to send.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusWrite {
    /// The object's "file" name.
    pub path: String,
    /// The object.
    pub key: ResourceKey,
    /// The merge patch, `{"status": {...}}`.
    pub patch: Value,
}

/// What one leadership term remembers: the statuses it wrote and its failures.
#[derive(Debug, Default)]
pub struct Term {
    /// Status returned by our last write, by path, until the watch catches up.
    known: HashMap<String, Written>,
    /// Paths whose last write failed, and when to try again.
    failures: HashMap<String, Failure>,
}

#[derive(Debug)]
struct Written {
    resource_version: Option<String>,
    status: Option<Value>,
}

#[derive(Debug)]
struct Failure {
    attempts: u32,
    next_at: Instant,
}

/// Whether resource version `a` is newer than `b`. Resource versions are opaque;
/// when both are numbers (as the API server's are) the larger is newer, otherwise
/// neither is.
fn newer(a: Option<&str>, b: Option<&str>) -> bool {
    match (
        a.and_then(|a| a.parse::<u64>().ok()),
        b.and_then(|b| b.parse::<u64>().ok()),
    ) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

impl Term {
    /// The freshest status known for `path`: our own write's answer when the watch
    /// has not shown it yet, else what the watch saw.
    fn current<'a>(&'a self, path: &str, seen: &'a ObjectState) -> Option<&'a Value> {
        match self.known.get(path) {
            Some(w)
                if newer(
                    w.resource_version.as_deref(),
                    seen.resource_version.as_deref(),
                ) =>
            {
                w.status.as_ref()
            }
            _ => seen.status.as_ref(),
        }
    }

    /// When the earliest failed write is due again.
    fn next_retry(&self) -> Option<Instant> {
        self.failures.values().map(|f| f.next_at).min()
    }

    fn failed(&mut self, path: &str, now: Instant) -> Duration {
        let failure = self.failures.entry(path.to_string()).or_insert(Failure {
            attempts: 0,
            next_at: now,
        });
        failure.attempts = failure.attempts.saturating_add(1);
        let exponent = failure.attempts.saturating_sub(1).min(16);
        let delay = RETRY_MIN.saturating_mul(1 << exponent).min(RETRY_MAX);
        failure.next_at = now + delay;
        delay
    }
}

/// The status writes one pass makes: for every object of `run`'s view read from
/// Kubernetes, not kept at an older version, still at the analysed generation, not
/// waiting out a failure, and whose status differs from what analysis found.
pub fn plan(
    run: &AnalysisRun,
    objects: &HashMap<String, ObjectState>,
    term: &Term,
    now: Instant,
) -> Vec<StatusWrite> {
    let kept: HashSet<&ResourceKey> = run.view.kept.iter().map(|k| &k.key).collect();
    let mut messages: HashMap<&ResourceKey, Vec<Value>> = HashMap::new();
    for m in run.messages.iter() {
        messages
            .entry(&m.resource)
            .or_default()
            .push(validation_message(m));
    }
    let mut writes = Vec::new();
    for (key, resource) in run.view.resources.iter() {
        let path: &str = &resource.source.file;
        if !path.starts_with(KUBE_PREFIX) || kept.contains(key) {
            continue;
        }
        let (Some(&generation), Some(seen)) = (run.generations.get(path), objects.get(path)) else {
            continue;
        };
        if seen.generation.is_some_and(|g| g != generation)
            || term.failures.get(path).is_some_and(|f| f.next_at > now)
        {
            continue;
        }
        let wanted = messages.get(key).map(Vec::as_slice).unwrap_or_default();
        if let Some(patch) = status_patch(wanted, generation, term.current(path, seen)) {
            writes.push(StatusWrite {
                path: path.to_string(),
                key: key.clone(),
                patch,
            });
        }
    }
    writes
}

impl StatusWriter {
    /// A writer patching through `client`, comparing with `objects`, after each
    /// analysis run published on `runs`.
    pub fn new(
        client: kube::Client,
        objects: KubeObjects,
        runs: watch::Receiver<Option<Arc<AnalysisRun>>>,
        metrics: Arc<StatusMetrics>,
    ) -> Self {
        Self {
            client,
            objects,
            runs,
            metrics,
        }
    }

    /// Campaigns for `lease` and writes while this replica leads, until `shutdown`
    /// (then releases the Lease).
    pub async fn run_elected(
        self,
        lease: LeaseConfig,
        leader_metrics: Arc<LeaderMetrics>,
        shutdown: CancellationToken,
    ) -> Result<(), LeaderElectionError> {
        let elector = LeaderElector::new(self.client.clone(), lease)?.with_metrics(leader_metrics);
        elector
            .run_as_leader(shutdown, |leading| self.clone().run(leading))
            .await;
        Ok(())
    }

    /// The leader's work: a pass after each analysis run, each status change seen
    /// and each retry due, until `leading` is cancelled.
    pub async fn run(mut self, leading: CancellationToken) {
        tracing::info!("leading: writing analysis messages into resource status");
        let mut term = Term::default();
        let mut changes = self.objects.subscribe();
        loop {
            changes.borrow_and_update();
            let run = self.runs.borrow_and_update().clone();
            if let Some(run) = run {
                tokio::select! {
                    _ = leading.cancelled() => break,
                    _ = self.pass(&run, &mut term) => {}
                }
            }
            let retry_at = term.next_retry();
            tokio::select! {
                _ = leading.cancelled() => break,
                changed = self.runs.changed() => if changed.is_err() { break },
                changed = changes.changed() => if changed.is_err() { break },
                _ = sleep_until(retry_at) => {}
            }
            tokio::select! {
                _ = leading.cancelled() => break,
                _ = tokio::time::sleep(PASS_INTERVAL) => {}
            }
        }
        tracing::info!("stopped writing resource status");
    }

    /// One pass: plan, then send the writes.
    async fn pass(&self, run: &AnalysisRun, term: &mut Term) {
        let writes = self.objects.with(|objects| {
            // Our own writes are forgotten once the watch has shown them.
            term.known.retain(|path, w| {
                objects.get(path).is_some_and(|seen| {
                    newer(
                        w.resource_version.as_deref(),
                        seen.resource_version.as_deref(),
                    )
                })
            });
            plan(run, objects, term, Instant::now())
        });
        if writes.is_empty() {
            return;
        }
        tracing::debug!(writes = writes.len(), "writing resource status");
        let mut results = futures::stream::iter(writes)
            .map(|write| async move {
                let result = self.send(&write).await;
                (write, result)
            })
            .buffer_unordered(CONCURRENT_WRITES);
        while let Some((write, result)) = results.next().await {
            self.record(term, write, result);
        }
    }

    async fn send(&self, write: &StatusWrite) -> Result<DynamicObject, kube::Error> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &write.key.namespace,
            &api_resource(write.key.kind),
        );
        api.patch_status(
            &write.key.name,
            &PatchParams::default(),
            &Patch::Merge(&write.patch),
        )
        .await
    }

    fn record(
        &self,
        term: &mut Term,
        write: StatusWrite,
        result: Result<DynamicObject, kube::Error>,
    ) {
        let error = match result {
            Ok(object) => {
                self.metrics.count("written");
                tracing::debug!(resource = %write.key, "status written");
                term.failures.remove(&write.path);
                term.known.insert(
                    write.path,
                    Written {
                        resource_version: object.metadata.resource_version.clone(),
                        status: object.data.get("status").cloned(),
                    },
                );
                return;
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                self.metrics.count("not_found");
                tracing::debug!(resource = %write.key, "status not written: the object is gone");
                term.failures.remove(&write.path);
                return;
            }
            Err(error) => error,
        };
        let result = match &error {
            kube::Error::Api(status) if status.code == 403 => "forbidden",
            kube::Error::Api(status) if status.code == 409 => "conflict",
            _ => "error",
        };
        self.metrics.count(result);
        let resource = api_resource(write.key.kind);
        let error = mesh_kube::request_error(
            error,
            "patch",
            &format!("{}.{}/status", resource.plural, resource.group),
            Some(&write.key.namespace),
        );
        let retry_in = term.failed(&write.path, Instant::now());
        tracing::warn!(
            resource = %write.key,
            error = %error,
            ?retry_in,
            "writing analysis messages into the status failed; retrying"
        );
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use mesh_model::{ParseOptions, Resource, parse_document_set};
    use serde_json::json;

    use super::*;
    use crate::store::{ConfigView, KeptResource};

    const CART: &str = "kubernetes/virtualservices.networking.istio.io/shop/cart";

    /// A run over one VirtualService, read from Kubernetes at generation 2, that
    /// names a missing gateway.
    fn mk_run() -> AnalysisRun {
        let yaml = r#"{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "cart", "namespace": "shop"},
            "spec": {"hosts": ["cart"], "gateways": ["missing"],
                     "http": [{"route": [{"destination": {"host": "cart"}}]}]}}"#;
        let set = parse_document_set(CART, yaml, &ParseOptions::default());
        assert_eq!(
            set.errors().count(),
            0,
            "{:?}",
            set.errors().collect::<Vec<_>>()
        );
        let resource: Resource = set.accepted.into_iter().next().unwrap();
        let mut view = ConfigView::default();
        view.resources.insert(resource.key(), Arc::new(resource));
        let resources: Vec<&Resource> = view.resources.values().map(|r| r.as_ref()).collect();
        let messages = crate::analysis::analyze(&resources);
        assert!(messages.iter().any(|m| m.code == "GAL0103"));
        AnalysisRun {
            view: Arc::new(view),
            generations: [(CART.to_string(), 2)].into_iter().collect(),
            messages: Arc::new(messages),
        }
    }

    fn mk_objects(
        generation: i64,
        rv: &str,
        status: Option<Value>,
    ) -> HashMap<String, ObjectState> {
        HashMap::from([(
            CART.to_string(),
            ObjectState {
                generation: Some(generation),
                resource_version: Some(rv.into()),
                status,
            },
        )])
    }

    #[test]
    fn writes_only_what_differs() {
        let run = mk_run();
        let term = Term::default();
        let now = Instant::now();
        let writes = plan(&run, &mk_objects(2, "5", None), &term, now);
        assert_eq!(writes.len(), 1);
        let status = writes[0].patch["status"].clone();
        assert_eq!(status["observedGeneration"], 2);
        assert!(
            status["validationMessages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["type"]["code"] == "GAL0103")
        );
        // Once the object holds that status, nothing more.
        let objects = mk_objects(2, "6", Some(status));
        assert!(plan(&run, &objects, &term, now).is_empty());
    }

    #[test]
    fn our_last_write_counts_until_the_watch_catches_up() {
        let run = mk_run();
        let now = Instant::now();
        let mut term = Term::default();
        let wanted = plan(&run, &mk_objects(2, "5", None), &term, now)[0].patch["status"].clone();
        term.known.insert(
            CART.into(),
            Written {
                resource_version: Some("6".into()),
                status: Some(wanted),
            },
        );
        // The watch still shows version 5 without status: no second write.
        assert!(plan(&run, &mk_objects(2, "5", None), &term, now).is_empty());
        // Someone changed the status after our write: it is written again.
        let objects = mk_objects(2, "7", Some(json!({"validationMessages": []})));
        assert_eq!(plan(&run, &objects, &term, now).len(), 1);
    }

    #[test]
    fn objects_kept_moved_on_gone_or_failing_are_left_alone() {
        let run = mk_run();
        let now = Instant::now();
        let term = Term::default();
        // Generation 3 is on the server; analysis saw 2.
        assert!(plan(&run, &mk_objects(3, "9", None), &term, now).is_empty());
        // Deleted meanwhile.
        assert!(plan(&run, &HashMap::new(), &term, now).is_empty());
        // Served at its last good version.
        let mut kept = run.clone();
        let mut view = (*kept.view).clone();
        view.kept.push(KeptResource {
            key: view.resources.keys().next().unwrap().clone(),
            source: CART.into(),
        });
        kept.view = Arc::new(view);
        assert!(plan(&kept, &mk_objects(2, "5", None), &term, now).is_empty());
        // Waiting out a failure, then tried again.
        let mut term = Term::default();
        let delay = term.failed(CART, now);
        assert_eq!(delay, RETRY_MIN);
        assert_eq!(term.failed(CART, now), RETRY_MIN * 2);
        assert!(plan(&run, &mk_objects(2, "5", None), &term, now).is_empty());
        let later = now + RETRY_MIN * 2;
        assert_eq!(plan(&run, &mk_objects(2, "5", None), &term, later).len(), 1);
        assert_eq!(term.next_retry(), Some(later));
    }

    #[test]
    fn resource_versions_compare_as_numbers_when_they_are() {
        assert!(newer(Some("10"), Some("9")));
        assert!(!newer(Some("9"), Some("10")));
        assert!(!newer(Some("a"), Some("1")));
        assert!(!newer(None, Some("1")));
    }
}
