//! The Kubernetes service registry: Services, EndpointSlices, Pods and Nodes of
//! every namespace, followed with `kube::runtime` reflectors and read as the
//! mesh's [`Service`]s ([`convert`] says how). Nodes are watched as metadata only
//! (labels are all the registry reads of them); Pods are cut down to their labels
//! and service account before they are cached ([`convert::strip_pod`]). Either way
//! specs and statuses (a node's image list, a pod's containers) stay out of
//! pilot's memory.
//!
//! [`KubeRegistry::watch`] returns the registry and the future that keeps its
//! caches current; every change bumps a counter the translator waits on. The
//! registry is synced once every cache has been listed whole
//! ([`KubeRegistry::wait_synced`]); pilot serves nothing before that. A failed list
//! or watch is logged with what failed (the API server's URL when it cannot be
//! reached, the verb and resource when RBAC forbids it) and retried with
//! exponential backoff; an expired resource version (410) makes the watcher list
//! again, losing nothing.

pub mod convert;

use std::{fmt::Debug, sync::Arc};

use ::kube::{
    Api, Client, Resource,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use futures::{Stream, StreamExt};
use k8s_openapi::api::{
    core::v1::{Node, Pod, Service as KubeService},
    discovery::v1::EndpointSlice,
};
use mesh_kube::{KubeError, client::error_chain, request_error};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::model::{Service, ServiceRegistry};
use convert::ClusterObjects;

/// The default Kubernetes cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// How pilot reaches the cluster and names its services.
#[derive(Debug, Clone, Default)]
pub struct KubeRegistryConfig {
    /// Client configuration (kubeconfig, context, in-cluster).
    pub args: mesh_kube::KubeArgs,
    /// Cluster domain of service hosts (`<svc>.<ns>.svc.<domain>`).
    pub cluster_domain: String,
}

/// The services of a Kubernetes cluster, read from reflector caches.
#[derive(Clone)]
pub struct KubeRegistry {
    services: Store<KubeService>,
    slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    nodes: Store<PartialObjectMeta<Node>>,
    cluster_domain: String,
}

impl Debug for KubeRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeRegistry")
            .field("services", &self.services.len())
            .field("slices", &self.slices.len())
            .field("pods", &self.pods.len())
            .field("nodes", &self.nodes.len())
            .field("cluster_domain", &self.cluster_domain)
            .finish()
    }
}

impl KubeRegistry {
    /// The registry fed by `client`, the counter bumped at every change, and the
    /// future running the watches until `shutdown` fires. `url` (the API server's)
    /// is only used in error messages.
    pub fn watch(
        client: Client,
        url: String,
        cluster_domain: String,
        shutdown: CancellationToken,
    ) -> (
        Self,
        watch::Receiver<u64>,
        impl Future<Output = ()> + Send + 'static,
    ) {
        let (changes_tx, changes) = watch::channel(0u64);
        let changes_tx = Arc::new(changes_tx);
        let feed = Feed {
            client,
            url: Arc::from(url),
            changes: changes_tx,
            shutdown,
        };
        let (services, services_w) = reflector::store();
        let (slices, slices_w) = reflector::store();
        let (pods, pods_w) = reflector::store();
        let (nodes, nodes_w) = reflector::store();
        let run = {
            let feed = feed.clone();
            async move {
                let config = watcher::Config::default;
                let client = feed.client.clone();
                tokio::join!(
                    feed.clone().reflect(
                        services_w,
                        watcher::watcher(Api::all(client.clone()), config()),
                        "services"
                    ),
                    feed.clone().reflect(
                        slices_w,
                        watcher::watcher(Api::all(client.clone()), config()),
                        "endpointslices.discovery.k8s.io"
                    ),
                    feed.clone().reflect(
                        pods_w,
                        watcher::watcher(Api::<Pod>::all(client.clone()), config())
                            .modify(convert::strip_pod),
                        "pods"
                    ),
                    feed.clone().reflect(
                        nodes_w,
                        watcher::watcher(Api::<PartialObjectMeta<Node>>::all(client), config()),
                        "nodes"
                    ),
                );
            }
        };
        let registry = Self {
            services,
            slices,
            pods,
            nodes,
            cluster_domain,
        };
        (registry, changes, run)
    }

    /// Waits until every cache has been listed whole once; false when the watches
    /// stopped first.
    pub async fn wait_synced(&self) -> bool {
        self.services.wait_until_ready().await.is_ok()
            && self.slices.wait_until_ready().await.is_ok()
            && self.pods.wait_until_ready().await.is_ok()
            && self.nodes.wait_until_ready().await.is_ok()
    }

    /// A copy of the cached objects.
    pub fn objects(&self) -> ClusterObjects {
        ClusterObjects {
            services: self.services.state(),
            slices: self.slices.state(),
            pods: self.pods.state(),
            nodes: self.nodes.state(),
        }
    }
}

impl ServiceRegistry for KubeRegistry {
    fn services(&self) -> Vec<Service> {
        convert::services(&self.objects(), &self.cluster_domain)
    }
}

/// What every watch shares.
#[derive(Clone)]
struct Feed {
    client: Client,
    url: Arc<str>,
    changes: Arc<watch::Sender<u64>>,
    shutdown: CancellationToken,
}

impl Feed {
    /// Keeps `writer`'s cache equal to the cluster's objects of kind `K` until
    /// shutdown, bumping the change counter after each applied change.
    async fn reflect<K>(
        self,
        writer: reflector::store::Writer<K>,
        watch: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send,
        resource: &'static str,
    ) where
        K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    {
        let stream = reflector::reflector(writer, watch).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        loop {
            let next = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                next = stream.next() => next,
            };
            match next {
                None => return,
                Some(Ok(event)) => {
                    if failing {
                        tracing::info!(resource, url = %self.url, "Kubernetes watch recovered");
                        failing = false;
                    }
                    match event {
                        watcher::Event::Apply(_)
                        | watcher::Event::Delete(_)
                        | watcher::Event::InitDone => {
                            self.changes.send_modify(|n| *n += 1);
                        }
                        watcher::Event::Init | watcher::Event::InitApply(_) => {}
                    }
                }
                Some(Err(e)) => {
                    failing |= self.log_error(e, resource);
                }
            }
        }
    }

    /// Logs a failed list or watch; true when it is a failure (not an expiry).
    fn log_error(&self, error: watcher::Error, resource: &str) -> bool {
        match describe_failure(error, resource, &self.url) {
            None => {
                tracing::debug!(resource, "resource version expired; listing again");
                false
            }
            Some(message) => {
                tracing::error!(resource, url = %self.url, "{message}; retrying with backoff");
                true
            }
        }
    }
}

/// What a failed list or watch of `resource` means, in words; `None` for an
/// expired resource version, which the watcher handles by listing again.
pub fn describe_failure(error: watcher::Error, resource: &str, url: &str) -> Option<String> {
    let (verb, source) = match error {
        watcher::Error::InitialListFailed(e) => ("list", e),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => ("watch", e),
        watcher::Error::WatchError(status) if status.code == 410 => return None,
        other => return Some(format!("cannot watch {resource}: {}", error_chain(&other))),
    };
    let error = match source {
        e @ ::kube::Error::Api(_) => request_error(e, verb, resource, None),
        e => KubeError::Unreachable {
            url: url.to_string(),
            detail: error_chain(&e),
            source: Box::new(e),
        },
    };
    Some(error.to_string())
}

#[cfg(test)]
mod tests {
    use ::kube::core::Status;

    use super::*;

    #[test]
    fn failures_name_the_verb_resource_and_server() {
        let mut status = Status::failure(
            "endpointslices is forbidden: User \"pilot\" cannot list",
            "Forbidden",
        );
        status.code = 403;
        let forbidden = watcher::Error::InitialListFailed(::kube::Error::Api(Box::new(status)));
        let text = describe_failure(
            forbidden,
            "endpointslices.discovery.k8s.io",
            "https://k8s:6443/",
        )
        .unwrap_or_default();
        assert!(
            text.starts_with(
                "forbidden: cannot list endpointslices.discovery.k8s.io at the cluster scope: "
            ),
            "{text}"
        );
        let mut expired = Status::failure("too old resource version", "Expired");
        expired.code = 410;
        assert_eq!(
            describe_failure(watcher::Error::WatchError(Box::new(expired)), "pods", "u"),
            None
        );
        let refused = ::kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        )));
        let text = describe_failure(
            watcher::Error::WatchFailed(refused),
            "pods",
            "https://k8s:6443/",
        )
        .unwrap_or_default();
        assert!(
            text.starts_with("Kubernetes API server https://k8s:6443/ unreachable: "),
            "{text}"
        );
    }
}
