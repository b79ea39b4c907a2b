//! The Kubernetes source: the Istio custom resources of an API server, watched.
//!
//! One `kube::runtime` watcher per kind of [`mesh_model::Kind`] (per kind and
//! namespace when the source is restricted to namespaces) reads the kind at its
//! storage version as `DynamicObject`s. Each object becomes one JSON "file" named
//! `kubernetes/<plural>.<group>/<namespace>/<name>` holding its `apiVersion`, `kind`,
//! `metadata` (name, namespace, labels, annotations) and every top-level field but
//! `status`, so the store refuses a bad object exactly as it refuses a bad file and
//! keeps its last good version.
//!
//! Each watch keeps what it last reported, like a reflector's store: a re-list
//! (after a 410 Gone, a broken connection or a restarted watch) is compared with it,
//! so objects changed or deleted while the watch was down are reported and nothing
//! is lost. [`SourceEvent::Synced`] is sent once every watch finished its first list.
//!
//! Failures:
//! - the API server unreachable at start: retried with backoff, logging its URL;
//! - a kind whose CRD is not installed (404 on list): logged, shown on
//!   `/debug/syncz` and in `galley_kube_crd_missing`, and counted as synced and
//!   empty so it does not hold the others back; its watch keeps retrying, and the
//!   kind's objects are served once the CRD appears;
//! - 403 on list or watch before that watch's first list: fatal, with an error naming
//!   verb and resource (a deployment problem, fixed in RBAC, not by waiting); after
//!   it, logged and retried while the last good configuration is served;
//! - any other failure: logged and retried with backoff (0.5 s doubling to 30 s).
//!
//! Beside the configuration, each object's generation, resource version and status
//! are kept in [`KubeObjects`] for galley's status writer, and the generation of
//! every changed object is sent ahead of its change
//! ([`SourceEvent::Generations`]).

pub mod objects;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use futures::{FutureExt, StreamExt, future::BoxFuture, stream::BoxStream};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
    runtime::{WatchStreamExt, utils::Backoff, watcher},
};
use mesh_model::Kind;
use parking_lot::RwLock;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ConfigSource, FileChange, SourceError, SourceEvent};
pub use objects::{KubeObjects, ObjectState};

/// Shortest wait before retrying a failed request.
pub const RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest wait between retries.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// The annotation `kubectl apply` writes: a copy of the object, not configuration.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The Istio custom resources of a Kubernetes API server.
pub struct KubeSource {
    config: kube::Config,
    namespaces: Vec<String>,
    status: KubeStatus,
    metrics: Arc<KubeSourceMetrics>,
    objects: KubeObjects,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("cluster_url", &self.config.cluster_url.to_string())
            .field("namespaces", &self.namespaces)
            .finish_non_exhaustive()
    }
}

impl KubeSource {
    /// A source reading from the API server `config` names, in `namespaces` (all
    /// namespaces when empty); it reports each watch's state to `status`, and each
    /// object's generation, resource version and status to `objects`.
    pub fn new(
        config: kube::Config,
        namespaces: Vec<String>,
        status: KubeStatus,
        metrics: Arc<KubeSourceMetrics>,
        objects: KubeObjects,
    ) -> Self {
        Self {
            config,
            namespaces,
            status,
            metrics,
            objects,
        }
    }
}

/// The state of one watch, as `/debug/syncz` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchPhase {
    /// The first list has not completed.
    Listing,
    /// Listed, watching.
    Synced,
    /// The CRD is not installed (404); counted as synced and empty.
    CrdMissing,
    /// The last request failed; retrying.
    Retrying,
}

/// One watch's state.
#[derive(Debug, Clone, Serialize)]
pub struct WatchStatus {
    /// `<plural>.<group>`.
    pub resource: String,
    /// The version watched (the storage version).
    pub version: String,
    /// The namespace watched; all when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Where the watch is.
    pub phase: WatchPhase,
    /// Objects currently known.
    pub objects: usize,
    /// Completed lists (the first one and every re-list).
    pub lists: u64,
    /// The last failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The state of every watch of the Kubernetes source (empty for other sources);
/// cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct KubeStatus(Arc<RwLock<BTreeMap<String, WatchStatus>>>);

impl KubeStatus {
    /// Every watch's state, by `<resource>` or `<resource> in <namespace>`.
    pub fn watches(&self) -> Vec<WatchStatus> {
        self.0.read().values().cloned().collect()
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut WatchStatus)) {
        if let Some(status) = self.0.write().get_mut(id) {
            f(status);
        }
    }
}

/// Labels naming a watched resource.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// `<plural>.<group>`.
    pub resource: String,
}

/// Metrics of the Kubernetes source.
#[derive(Debug, Default)]
pub struct KubeSourceMetrics {
    /// 1 once the resource's first list completed.
    pub synced: Family<ResourceLabels, Gauge>,
    /// 1 while the resource's CRD is not installed.
    pub crd_missing: Family<ResourceLabels, Gauge>,
    /// Completed lists (initial and re-lists).
    pub lists: Family<ResourceLabels, Counter>,
    /// Failed list and watch requests.
    pub errors: Family<ResourceLabels, Counter>,
}

impl KubeSourceMetrics {
    /// Creates and registers the metrics under the `galley_kube_` prefix.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self::default());
        let r = registry.sub_registry_with_prefix("galley_kube");
        r.register(
            "watch_synced",
            "1 once the resource's first list completed",
            m.synced.clone(),
        );
        r.register(
            "crd_missing",
            "1 while the resource's CustomResourceDefinition is not installed",
            m.crd_missing.clone(),
        );
        r.register(
            "lists",
            "Completed lists of the resource (initial and re-lists)",
            m.lists.clone(),
        );
        r.register(
            "watch_errors",
            "Failed list and watch requests",
            m.errors.clone(),
        );
        m
    }
}

/// How a kind is addressed on the API server: at its storage version.
pub fn api_resource(kind: Kind) -> ApiResource {
    let crd = mesh_kube::crds::crd(kind);
    let version = mesh_kube::crds::storage_version(kind);
    ApiResource {
        group: kind.group().to_string(),
        version: version.to_string(),
        api_version: format!("{}/{version}", kind.group()),
        kind: kind.as_str().to_string(),
        plural: crd.spec.names.plural,
    }
}

/// The "file" an object is fed to the store as: its name, and its content as JSON.
pub fn object_document(resource: &ApiResource, object: &DynamicObject) -> (String, String) {
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone().unwrap_or_default();
    let path = format!(
        "kubernetes/{}.{}/{namespace}/{name}",
        resource.plural, resource.group
    );
    let (api_version, kind) = match &object.types {
        Some(t) => (t.api_version.clone(), t.kind.clone()),
        None => (resource.api_version.clone(), resource.kind.clone()),
    };
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(name));
    metadata.insert("namespace".into(), json!(namespace));
    if let Some(labels) = object.metadata.labels.as_ref().filter(|l| !l.is_empty()) {
        metadata.insert("labels".into(), json!(labels));
    }
    if let Some(annotations) = &object.metadata.annotations {
        let kept: BTreeMap<&String, &String> = annotations
            .iter()
            .filter(|(k, _)| k.as_str() != LAST_APPLIED)
            .collect();
        if !kept.is_empty() {
            metadata.insert("annotations".into(), json!(kept));
        }
    }
    let mut document = Map::new();
    document.insert("apiVersion".into(), json!(api_version));
    document.insert("kind".into(), json!(kind));
    document.insert("metadata".into(), Value::Object(metadata));
    if let Value::Object(fields) = &object.data {
        for (key, value) in fields {
            if key != "status" && key != "metadata" {
                document.insert(key.clone(), value.clone());
            }
        }
    }
    (path, Value::Object(document).to_string())
}

/// Exponential backoff for the watchers: [`RETRY_MIN`] doubling to [`RETRY_MAX`],
/// back to the start after a success.
#[derive(Debug, Clone)]
struct RetryBackoff {
    next: Duration,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self { next: RETRY_MIN }
    }
}

impl Iterator for RetryBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (current * 2).min(RETRY_MAX);
        Some(current)
    }
}

impl Backoff for RetryBackoff {
    fn reset(&mut self) {
        self.next = RETRY_MIN;
    }
}

/// What one watch last reported, and its progress.
struct Watch {
    id: String,
    resource: ApiResource,
    namespace: Option<String>,
    /// Path -> content of every object reported.
    objects: HashMap<String, String>,
    /// Objects of a list in progress, with their state.
    relist: Option<HashMap<String, (String, ObjectState)>>,
    /// Where each object's generation, resource version and status go.
    states: KubeObjects,
    /// The first list completed (or the CRD is missing).
    synced: bool,
    crd_missing: bool,
}

impl Watch {
    fn qualified(&self) -> String {
        format!("{}.{}", self.resource.plural, self.resource.group)
    }

    fn labels(&self) -> ResourceLabels {
        ResourceLabels {
            resource: self.qualified(),
        }
    }

    /// Applies one watcher event, appending what changed to `out`.
    fn apply(&mut self, event: watcher::Event<DynamicObject>, out: &mut Vec<FileChange>) {
        match event {
            watcher::Event::Init => self.relist = Some(HashMap::new()),
            watcher::Event::InitApply(object) => {
                let (path, content) = object_document(&self.resource, &object);
                self.relist
                    .get_or_insert_with(HashMap::new)
                    .insert(path, (content, ObjectState::of(&object)));
            }
            watcher::Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                for (path, (content, state)) in &listed {
                    self.states.set(path, state.clone());
                    if self.objects.get(path) != Some(content) {
                        out.push(FileChange {
                            path: path.clone(),
                            content: Some(content.clone()),
                        });
                    }
                }
                for path in self.objects.keys() {
                    if !listed.contains_key(path) {
                        self.states.remove(path);
                        out.push(FileChange {
                            path: path.clone(),
                            content: None,
                        });
                    }
                }
                self.objects = listed
                    .into_iter()
                    .map(|(path, (content, _))| (path, content))
                    .collect();
            }
            watcher::Event::Apply(object) => {
                let (path, content) = object_document(&self.resource, &object);
                self.states.set(&path, ObjectState::of(&object));
                if self.objects.get(&path) != Some(&content) {
                    out.push(FileChange {
                        path: path.clone(),
                        content: Some(content.clone()),
                    });
                    self.objects.insert(path, content);
                }
            }
            watcher::Event::Delete(object) => {
                let (path, _) = object_document(&self.resource, &object);
                self.states.remove(&path);
                if self.objects.remove(&path).is_some() {
                    out.push(FileChange {
                        path,
                        content: None,
                    });
                }
            }
        }
    }
}

/// The failed request of a watcher error: its verb and kube's error (a status sent
/// inside a watch counts as the watch's answer); None when no request failed.
fn failed_request(error: watcher::Error) -> Option<(&'static str, kube::Error)> {
    match error {
        watcher::Error::InitialListFailed(e) => Some(("list", e)),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => Some(("watch", e)),
        watcher::Error::WatchError(status) => Some(("watch", kube::Error::Api(status))),
        watcher::Error::NoResourceVersion => None,
    }
}

impl ConfigSource for KubeSource {
    fn describe(&self) -> String {
        let scope = if self.namespaces.is_empty() {
            "all namespaces".to_string()
        } else {
            format!("namespaces {}", self.namespaces.join(","))
        };
        format!(
            "Kubernetes API server {} ({scope})",
            self.config.cluster_url
        )
    }

    fn run(
        self: Box<Self>,
        tx: mpsc::Sender<SourceEvent>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), SourceError>> {
        async move { self.watch(tx, shutdown).await }.boxed()
    }
}

impl KubeSource {
    /// Waits until the API server answers, retrying with backoff; None on shutdown.
    async fn connect(&self, shutdown: &CancellationToken) -> Result<Option<Client>, SourceError> {
        let url = self.config.cluster_url.to_string();
        let client = mesh_kube::client::client_from(self.config.clone())
            .map_err(|e| SourceError::Kube(Box::new(e)))?;
        let mut backoff = RetryBackoff::default();
        loop {
            let error = match client.apiserver_version().await {
                Ok(_) => {
                    tracing::info!(url = %url, "connected to the Kubernetes API server");
                    return Ok(Some(client));
                }
                Err(e @ kube::Error::Api(_)) => {
                    mesh_kube::request_error(e, "get", "/version", None)
                }
                Err(e) => mesh_kube::KubeError::Unreachable {
                    url: url.clone(),
                    detail: mesh_kube::client::error_chain(&e),
                    source: Box::new(e),
                },
            };
            let wait = backoff.next().unwrap_or(RETRY_MAX);
            tracing::warn!(url = %url, error = %error, retry_in = ?wait, "Kubernetes API server not answering; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn watch(
        self,
        tx: mpsc::Sender<SourceEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        let Some(client) = self.connect(&shutdown).await? else {
            return Ok(());
        };
        let scopes: Vec<Option<String>> = if self.namespaces.is_empty() {
            vec![None]
        } else {
            self.namespaces.iter().cloned().map(Some).collect()
        };
        let mut watches = Vec::new();
        let mut streams: Vec<BoxStream<'static, (usize, watcher::Result<_>)>> = Vec::new();
        for kind in Kind::ALL {
            let resource = api_resource(kind);
            for namespace in &scopes {
                let api: Api<DynamicObject> = match namespace {
                    Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                    None => Api::all_with(client.clone(), &resource),
                };
                let index = watches.len();
                let qualified = format!("{}.{}", resource.plural, resource.group);
                let id = match namespace {
                    Some(ns) => format!("{qualified} in {ns}"),
                    None => qualified.clone(),
                };
                self.status.0.write().insert(
                    id.clone(),
                    WatchStatus {
                        resource: qualified,
                        version: resource.version.clone(),
                        namespace: namespace.clone(),
                        phase: WatchPhase::Listing,
                        objects: 0,
                        lists: 0,
                        last_error: None,
                    },
                );
                streams.push(
                    watcher(api, watcher::Config::default())
                        .backoff(RetryBackoff::default())
                        .map(move |event| (index, event))
                        .boxed(),
                );
                watches.push(Watch {
                    id,
                    resource: resource.clone(),
                    namespace: namespace.clone(),
                    objects: HashMap::new(),
                    relist: None,
                    states: self.objects.clone(),
                    synced: false,
                    crd_missing: false,
                });
            }
        }
        let mut events = futures::stream::select_all(streams).ready_chunks(256);
        let mut sent_synced = false;
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                batch = events.next() => match batch { Some(b) => b, None => return Ok(()) },
            };
            let mut changes = Vec::new();
            for (index, event) in batch {
                let Some(watch) = watches.get_mut(index) else {
                    continue;
                };
                match event {
                    Ok(event) => {
                        let done = matches!(event, watcher::Event::InitDone);
                        watch.apply(event, &mut changes);
                        if done {
                            self.listed(watch);
                        }
                    }
                    Err(error) => self.failed(watch, error)?,
                }
            }
            if !changes.is_empty() {
                tracing::debug!(changed = changes.len(), "Kubernetes resources changed");
                // The generations first, so galley never sees content without the
                // generation it belongs to.
                let generations = changes
                    .iter()
                    .map(|c| {
                        let generation = c
                            .content
                            .as_ref()
                            .and_then(|_| self.objects.generation(&c.path));
                        (c.path.clone(), generation)
                    })
                    .collect();
                if tx
                    .send(SourceEvent::Generations(generations))
                    .await
                    .is_err()
                    || tx.send(SourceEvent::Changes(changes)).await.is_err()
                {
                    return Ok(());
                }
            }
            if !sent_synced && watches.iter().all(|w| w.synced) {
                sent_synced = true;
                let objects: usize = watches.iter().map(|w| w.objects.len()).sum();
                let missing: Vec<String> = watches
                    .iter()
                    .filter(|w| w.crd_missing)
                    .map(|w| w.qualified())
                    .collect();
                tracing::info!(objects, crds_missing = ?missing, "Kubernetes resources listed");
                if tx.send(SourceEvent::Synced).await.is_err() {
                    return Ok(());
                }
            }
        }
    }

    /// A list completed.
    fn listed(&self, watch: &mut Watch) {
        let labels = watch.labels();
        if watch.crd_missing {
            tracing::info!(resource = %watch.id, "CRD installed; resources listed");
        }
        watch.synced = true;
        watch.crd_missing = false;
        self.metrics.synced.get_or_create(&labels).set(1);
        self.metrics.crd_missing.get_or_create(&labels).set(0);
        self.metrics.lists.get_or_create(&labels).inc();
        let objects = watch.objects.len();
        self.status.update(&watch.id, |s| {
            s.phase = WatchPhase::Synced;
            s.objects = objects;
            s.lists += 1;
            s.last_error = None;
        });
    }

    /// A request failed: decides whether it is fatal, and reports it.
    fn failed(&self, watch: &mut Watch, error: watcher::Error) -> Result<(), SourceError> {
        let Some((verb, error)) = failed_request(error) else {
            tracing::warn!(resource = %watch.id, "list without metadata.resourceVersion; re-listing");
            return Ok(());
        };
        let code = match &error {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        };
        let labels = watch.labels();
        // A 410 Gone is the normal end of a compacted watch: the watcher re-lists.
        if code == Some(410) {
            tracing::debug!(resource = %watch.id, "watch expired (410 Gone); re-listing");
            return Ok(());
        }
        self.metrics.errors.get_or_create(&labels).inc();
        let qualified = watch.qualified();
        let error = mesh_kube::request_error(error, verb, &qualified, watch.namespace.as_deref());
        let message = error.to_string();
        if code == Some(403) && !watch.synced {
            return Err(SourceError::Kube(Box::new(error)));
        }
        if code == Some(404) && verb == "list" {
            if !watch.crd_missing {
                tracing::warn!(
                    resource = %watch.id,
                    version = %watch.resource.version,
                    "CRD not installed (404 on list); serving none of this kind until it is"
                );
            }
            watch.crd_missing = true;
            watch.synced = true;
            self.metrics.crd_missing.get_or_create(&labels).set(1);
            self.metrics.synced.get_or_create(&labels).set(1);
            self.status.update(&watch.id, |s| {
                s.phase = WatchPhase::CrdMissing;
                s.last_error = Some(message);
            });
            return Ok(());
        }
        tracing::warn!(resource = %watch.id, error = %message, "Kubernetes request failed; retrying with backoff");
        self.status.update(&watch.id, |s| {
            if s.phase != WatchPhase::CrdMissing {
                s.phase = WatchPhase::Retrying;
            }
            s.last_error = Some(message);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mk_object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn mk_watch() -> Watch {
        Watch {
            id: "virtualservices.networking.istio.io".into(),
            resource: api_resource(Kind::VirtualService),
            namespace: None,
            objects: HashMap::new(),
            relist: None,
            states: KubeObjects::default(),
            synced: false,
            crd_missing: false,
        }
    }

    fn mk_vs(name: &str, host: &str) -> DynamicObject {
        mk_object(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": "7",
                "uid": "u", "annotations": {LAST_APPLIED: "{}", "team": "a"}},
            "spec": {"hosts": [host]},
            "status": {"validationMessages": []}
        }))
    }

    #[test]
    fn addresses_kinds_at_their_storage_version() {
        let r = api_resource(Kind::VirtualService);
        assert_eq!(r.api_version, "networking.istio.io/v1");
        assert_eq!(r.plural, "virtualservices");
        let r = api_resource(Kind::AttributeManifest);
        assert_eq!(r.api_version, "config.istio.io/v1alpha2");
        assert_eq!(r.plural, "attributemanifests");
    }

    #[test]
    fn documents_keep_configuration_only() {
        let (path, content) =
            object_document(&api_resource(Kind::VirtualService), &mk_vs("cart", "cart"));
        assert_eq!(
            path,
            "kubernetes/virtualservices.networking.istio.io/shop/cart"
        );
        let doc: Value = serde_json::from_str(&content).unwrap();
        assert_eq!(
            doc,
            json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": "cart", "namespace": "shop", "annotations": {"team": "a"}},
                "spec": {"hosts": ["cart"]}
            })
        );
    }

    #[test]
    fn relist_reports_what_changed_while_away() {
        let mut watch = mk_watch();
        let mut out = Vec::new();
        watch.apply(watcher::Event::Init, &mut out);
        watch.apply(watcher::Event::InitApply(mk_vs("a", "a")), &mut out);
        watch.apply(watcher::Event::InitApply(mk_vs("b", "b")), &mut out);
        assert!(out.is_empty(), "nothing before the list completes");
        watch.apply(watcher::Event::InitDone, &mut out);
        assert_eq!(out.len(), 2);
        out.clear();

        // Unchanged objects are not reported again.
        watch.apply(watcher::Event::Apply(mk_vs("a", "a")), &mut out);
        assert!(out.is_empty());

        // A re-list: a changed, b gone, c new.
        watch.apply(watcher::Event::Init, &mut out);
        watch.apply(watcher::Event::InitApply(mk_vs("a", "a2")), &mut out);
        watch.apply(watcher::Event::InitApply(mk_vs("c", "c")), &mut out);
        watch.apply(watcher::Event::InitDone, &mut out);
        out.sort_by(|x, y| x.path.cmp(&y.path));
        let summary: Vec<(&str, bool)> = out
            .iter()
            .map(|c| (c.path.rsplit('/').next().unwrap(), c.content.is_some()))
            .collect();
        assert_eq!(summary, vec![("a", true), ("b", false), ("c", true)]);
        out.clear();

        watch.apply(watcher::Event::Delete(mk_vs("c", "c")), &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].content.is_none());
    }

    #[test]
    fn object_states_follow_the_watch_status_changes_included() {
        let mut watch = mk_watch();
        let states = watch.states.clone();
        let path = "kubernetes/virtualservices.networking.istio.io/shop/a";
        let mut out = Vec::new();
        watch.apply(watcher::Event::Init, &mut out);
        watch.apply(watcher::Event::InitApply(mk_vs("a", "a")), &mut out);
        assert!(
            states.get(path).is_none(),
            "nothing before the list completes"
        );
        watch.apply(watcher::Event::InitDone, &mut out);
        let listed = states.get(path).unwrap();
        assert_eq!(listed.resource_version.as_deref(), Some("7"));
        assert_eq!(listed.status, Some(json!({"validationMessages": []})));
        out.clear();

        // A status-only change is no configuration change, but is recorded.
        let mut written = mk_vs("a", "a");
        written.metadata.resource_version = Some("8".into());
        written.data["status"] = json!({"observedGeneration": 1});
        let mut changes = states.subscribe();
        changes.borrow_and_update();
        watch.apply(watcher::Event::Apply(written), &mut out);
        assert!(out.is_empty());
        assert!(changes.has_changed().unwrap());
        assert_eq!(
            states.get(path).unwrap().status,
            Some(json!({"observedGeneration": 1}))
        );

        watch.apply(watcher::Event::Delete(mk_vs("a", "a")), &mut out);
        assert!(states.get(path).is_none());
    }

    #[test]
    fn backoff_doubles_to_its_ceiling_and_resets() {
        let mut b = RetryBackoff::default();
        let first: Vec<Duration> = b.by_ref().take(3).collect();
        assert_eq!(first, vec![RETRY_MIN, RETRY_MIN * 2, RETRY_MIN * 4]);
        assert_eq!(b.by_ref().nth(20), Some(RETRY_MAX));
        b.reset();
        assert_eq!(b.next(), Some(RETRY_MIN));
    }
}
