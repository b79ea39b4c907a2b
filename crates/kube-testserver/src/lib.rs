//! kube-testserver: a test tool, never linked into a mesh binary. It is an
//! in-process HTTP server that speaks enough of the Kubernetes API for the real
//! `kube` client (typed `Api`s, `DynamicObject`s, discovery, `kube::runtime`
//! watchers and reflectors) to run Dromon's Kubernetes code paths on a machine
//! where no Kubernetes API server can run.
//!
//! It binds 127.0.0.1 on a free port (plain HTTP/1.1) and serves:
//! - core v1 namespaces, services, pods, endpoints, secrets, configmaps,
//!   serviceaccounts, nodes, events; apps/v1 deployments; discovery.k8s.io/v1
//!   endpointslices; coordination.k8s.io/v1 leases; admissionregistration.k8s.io/v1
//!   mutating and validating webhook configurations; authentication.k8s.io/v1
//!   tokenreviews (answered by a callback the test installs); apiextensions.k8s.io/v1
//!   customresourcedefinitions, and every custom resource they define (or that
//!   [`KubeTestServer::register_resource`] adds);
//! - discovery (`/api`, `/api/v1`, `/apis`, `/apis/<group>[/<version>]`, `/version`);
//! - get, list (selectors, `limit`/`continue`), watch (bookmarks, `timeoutSeconds`,
//!   410 Expired from a compacted version), create, update, patch (merge, JSON,
//!   strategic merge, apply), delete, deletecollection and `/status`;
//! - errors as `metav1.Status` bodies with the real server's codes and reasons.
//!
//! Semantics it simplifies, on purpose (see `docs/kubernetes.md`): strategic merge
//! patches are JSON merge patches; server-side apply merges the applied object into
//! the live one without field ownership; deletion is immediate (no finalizers, no
//! graceful deletion, no garbage collection, but deleting a namespace deletes what
//! it holds); there is no admission, no defaulting beyond a Service's cluster IP
//! and type and a new Pod's phase, no schema validation of custom resources, no
//! conversion between versions, and `continue` pages read the current state.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use k8s_openapi::api::core::v1::ConfigMap;
//! let server = kube_testserver::KubeTestServer::start().await?;
//! let configmaps: kube::Api<ConfigMap> = kube::Api::default_namespaced(server.client());
//! let list = configmaps.list(&Default::default()).await?;
//! assert!(list.items.is_empty());
//! # Ok(()) }
//! ```

mod discovery;
mod faults;
mod handler;
mod meta;
mod patch;
mod path;
mod resources;
mod selector;
mod serve;
mod shared;
mod status;
mod store;
mod tokenreview;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::authentication::v1::{TokenReviewSpec, TokenReviewStatus};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::net::TcpListener;

pub use faults::Fault;
pub use resources::ResourceType;
pub use selector::{FieldSelector, LabelSelector};
pub use shared::{ServerConfig, TokenReviewer};
pub use status::ApiError;

use serve::Listening;
use shared::Shared;
use store::WriteScope;

/// Why the server could not start or be reached again.
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The kube client could not be built.
    #[error("cannot build a kube client for {url}: {source}")]
    Client {
        /// The server's URL.
        url: String,
        /// The underlying error.
        source: Box<kube::Error>,
    },
}

/// A running test API server. Dropping it stops it.
pub struct KubeTestServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    listening: Mutex<Option<Listening>>,
}

impl std::fmt::Debug for KubeTestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTestServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl KubeTestServer {
    /// Starts a server with the default [`ServerConfig`] on 127.0.0.1 and a free port.
    pub async fn start() -> Result<Self, TestServerError> {
        Self::start_with(ServerConfig::default()).await
    }

    /// Starts a server with the given settings on 127.0.0.1 and a free port.
    pub async fn start_with(config: ServerConfig) -> Result<Self, TestServerError> {
        let shared = Arc::new(Shared::new(config));
        let wanted: SocketAddr = ([127, 0, 0, 1], 0).into();
        let listener = TcpListener::bind(wanted)
            .await
            .map_err(|source| TestServerError::Bind {
                addr: wanted,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| TestServerError::Bind {
                addr: wanted,
                source,
            })?;
        *shared.server_address.lock() = addr.to_string();
        let listening = Listening::spawn(listener, handler::router(shared.clone()));
        Ok(Self {
            shared,
            addr,
            listening: Mutex::new(Some(listening)),
        })
    }

    /// The server's base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A `kube::Config` for this server, with the configured default namespace.
    pub fn kube_config(&self) -> kube::Config {
        let url = self
            .url()
            .parse()
            .expect("a socket address always makes a valid URL");
        let mut config = kube::Config::new(url);
        config.default_namespace = self.shared.config.default_namespace.clone();
        config
    }

    /// Writes a kubeconfig file for this server (context `test`, the configured
    /// default namespace) as `<dir>/kubeconfig`, for binaries started with
    /// `--kubeconfig`; its path.
    pub fn write_kubeconfig(&self, dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: \"{url}\"}}\nusers:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test, namespace: {ns}}}\ncurrent-context: test\n",
            url = self.url(),
            ns = self.shared.config.default_namespace,
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// A `kube::Client` for this server.
    pub fn try_client(&self) -> Result<kube::Client, TestServerError> {
        kube::Client::try_from(self.kube_config()).map_err(|e| TestServerError::Client {
            url: self.url(),
            source: Box::new(e),
        })
    }

    /// A `kube::Client` for this server (building one for a plain-HTTP URL cannot fail).
    pub fn client(&self) -> kube::Client {
        self.try_client()
            .expect("a kube client for a plain-HTTP loopback URL")
    }

    /// Creates or replaces an object directly, status included, as a test's setup.
    /// The type comes from `apiVersion` and `kind`; a namespaced object without a
    /// namespace goes to the default one, and a missing namespace is created.
    pub fn apply_object(&self, object: Value) -> Result<Value, ApiError> {
        let text = |p: &str| {
            object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (api_version, kind, name) =
            (text("/apiVersion"), text("/kind"), text("/metadata/name"));
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
        let mut namespace = text("/metadata/namespace");
        let default_namespace = self.shared.config.default_namespace.clone();
        self.shared.mutate(|state| {
            let t = state
                .registry
                .find_kind(group, version, &kind)
                .cloned()
                .ok_or_else(|| {
                    ApiError::new(
                        404,
                        format!("no resource serves kind {kind} in {api_version}"),
                    )
                })?;
            if t.namespaced {
                if namespace.is_empty() {
                    namespace = default_namespace;
                }
                let ns_type = state
                    .registry
                    .find("", "v1", "namespaces")
                    .cloned()
                    .ok_or_else(|| ApiError::new(500, "namespaces are not registered"))?;
                if state.get(&ns_type, "", &namespace).is_none() {
                    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": namespace}});
                    state.create(&ns_type, "", ns, false)?;
                }
            }
            let exists = !name.is_empty() && state.get(&t, &namespace, &name).is_some();
            let target = exists.then_some(name.as_str());
            shared::write_object(state, &t, &namespace, target, object, WriteScope::All, None)
                .map(|written| handler::present(&written, &t, version))
        })
    }

    /// One stored object, as the API would return it.
    pub fn get_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let state = self.shared.state.lock();
        let t = state.registry.find_kind(group, version, kind)?;
        state
            .get(t, namespace, name)
            .map(|o| handler::present(&o, t, version))
    }

    /// Every stored object of a kind, in all namespaces, in key order.
    pub fn objects(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let state = self.shared.state.lock();
        let Some(t) = state.registry.find_kind(group, version, kind) else {
            return Vec::new();
        };
        state
            .list(t, None)
            .iter()
            .map(|o| handler::present(o, t, version))
            .collect()
    }

    /// Deletes an object directly; `None` when it did not exist.
    pub fn delete_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.shared.mutate(|state| {
            let t = state.registry.find_kind(group, version, kind)?.clone();
            state.delete(&t, namespace, name, None, None).ok()
        })
    }

    /// Serves a custom resource without a CustomResourceDefinition object.
    pub fn register_resource(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
    ) {
        self.register_resource_type(ResourceType::new(group, version, kind, plural, namespaced));
    }

    /// Serves a resource type described in full (versions, status subresource, names).
    pub fn register_resource_type(&self, resource: ResourceType) {
        self.shared.state.lock().registry.insert(resource);
    }

    /// The newest resource version handed out.
    pub fn resource_version(&self) -> u64 {
        self.shared.state.lock().current_rv()
    }

    /// Forgets the change history, so a watch from any version handed out so far
    /// gets 410 Expired; open watches go on (they have seen what they need).
    pub fn expire_resource_versions(&self) {
        self.shared.mutate(store::State::compact);
    }

    /// [`expire_resource_versions`](Self::expire_resource_versions), then ends every
    /// open watch, as when a client falls behind the server's window: each client
    /// watches again from its last version, gets 410 Expired and must list again.
    pub fn force_compaction(&self) {
        self.expire_resource_versions();
        self.shared.end_watches();
    }

    /// Ends every open watch stream (clients resume from their last version).
    pub fn end_watches(&self) {
        self.shared.end_watches();
    }

    /// Makes matching requests fail (see [`Fault`]).
    pub fn inject_fault(&self, fault: Fault) {
        self.shared.faults.lock().add(fault);
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().clear();
    }

    /// Installs the function answering TokenReviews.
    pub fn set_token_reviewer(
        &self,
        reviewer: impl Fn(&TokenReviewSpec) -> TokenReviewStatus + Send + Sync + 'static,
    ) {
        *self.shared.token_reviewer.lock() = Some(Arc::new(reviewer));
    }

    /// Closes the port and every connection (`true`), so clients see connection
    /// errors, or listens again on the same address (`false`).
    pub async fn set_unreachable(&self, unreachable: bool) -> Result<(), TestServerError> {
        if unreachable {
            let listening = self.listening.lock().take();
            if let Some(listening) = listening {
                listening.shutdown().await;
            }
            return Ok(());
        }
        if self.listening.lock().is_some() {
            return Ok(());
        }
        let listener =
            TcpListener::bind(self.addr)
                .await
                .map_err(|source| TestServerError::Bind {
                    addr: self.addr,
                    source,
                })?;
        let listening = Listening::spawn(listener, handler::router(self.shared.clone()));
        *self.listening.lock() = Some(listening);
        Ok(())
    }

    /// Stops the server: the port closes and every connection is cut.
    pub async fn stop(self) {
        let listening = self.listening.lock().take();
        if let Some(listening) = listening {
            listening.shutdown().await;
        }
    }
}

impl Drop for KubeTestServer {
    fn drop(&mut self) {
        if let Some(listening) = self.listening.lock().take() {
            listening.abort();
        }
    }
}
