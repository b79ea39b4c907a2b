//! What a simulated proxy reads from a response, and the sets it holds.
//!
//! A proxy needs little of a response: the version, type and nonce to ACK it, and of
//! the resources only the names they lead to (the EDS name of an EDS cluster, the
//! route configuration of a listener, the clusters of a virtual host). Thousands of
//! proxies receive the same sets, so reading every resource of every response would
//! make the load tool cost more than the server it measures. Instead:
//! - a response is first read as a small head ([`SotwHead`], [`DeltaHead`]) whose
//!   decoding skips the resources;
//! - the sets a proxy holds are immutable [`HeldSet`]s shared through a [`SetStore`],
//!   keyed by type and version. The server's versions are content hashes (a SotW
//!   `version_info` of the set sent, a delta `system_version_info` of the client's
//!   whole subscribed set), so a proxy told a version already in the store adopts that
//!   set without looking at the resources. Only the first proxy to see a version
//!   decodes the resources in full.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, OnceLock},
};

use mesh_api::envoy::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType},
            },
            listener::v3::{Listener, filter::ConfigType},
            route::v3::{RouteConfiguration, route::Action, route_action::ClusterSpecifier},
        },
        extensions::filters::network::http_connection_manager::v3::{
            HttpConnectionManager, http_connection_manager::RouteSpecifier,
        },
    },
    google::protobuf::Any,
};
use parking_lot::Mutex;
use prost::Message;

/// CDS type URL.
pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// EDS type URL.
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// LDS type URL.
pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// RDS type URL.
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// The four xDS types a proxy follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Clusters.
    Cds,
    /// Cluster load assignments.
    Eds,
    /// Listeners.
    Lds,
    /// Route configurations.
    Rds,
}

impl Kind {
    /// Every kind, in the order Envoy depends on them.
    pub const ALL: [Kind; 4] = [Kind::Cds, Kind::Eds, Kind::Lds, Kind::Rds];

    /// The type URL.
    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Cds => CDS,
            Kind::Eds => EDS,
            Kind::Lds => LDS,
            Kind::Rds => RDS,
        }
    }

    /// The kind of a type URL.
    pub fn from_type_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// Short name (`cds`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cds => "cds",
            Kind::Eds => "eds",
            Kind::Lds => "lds",
            Kind::Rds => "rds",
        }
    }

    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The fields of a DiscoveryResponse a proxy reads first; the resources are skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SotwHead {
    /// `version_info`.
    #[prost(string, tag = "1")]
    pub version_info: String,
    /// `type_url`.
    #[prost(string, tag = "4")]
    pub type_url: String,
    /// `nonce`.
    #[prost(string, tag = "5")]
    pub nonce: String,
}

/// The fields of a DeltaDiscoveryResponse a proxy reads first.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeltaHead {
    /// `system_version_info` (set on the last part of a split update only).
    #[prost(string, tag = "1")]
    pub system_version_info: String,
    /// `type_url`.
    #[prost(string, tag = "4")]
    pub type_url: String,
    /// `nonce`.
    #[prost(string, tag = "5")]
    pub nonce: String,
    /// `removed_resources`.
    #[prost(string, repeated, tag = "6")]
    pub removed_resources: Vec<String>,
}

/// What one resource leads a proxy to ask for next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Derived {
    /// Nothing (an endpoint assignment, a non-EDS cluster).
    Nothing,
    /// Names of the next type: a cluster's EDS name, a listener's route configuration.
    Names(Vec<Arc<str>>),
    /// A route configuration: the clusters each domain routes to.
    Routes(HashMap<String, Vec<Arc<str>>>),
}

/// One resource held: its version (empty in SotW) and what it leads to.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// Resource version (delta) or empty (SotW).
    pub version: Arc<str>,
    /// What it references.
    pub derived: Arc<Derived>,
}

/// An immutable set of resources of one type, shared by every proxy holding it.
#[derive(Debug, Default)]
pub struct HeldSet {
    /// Resources by name.
    pub items: BTreeMap<Arc<str>, Held>,
    names: OnceLock<Arc<BTreeSet<Arc<str>>>>,
}

impl HeldSet {
    /// A set of `items`.
    pub fn new(items: BTreeMap<Arc<str>, Held>) -> Self {
        Self {
            items,
            names: OnceLock::new(),
        }
    }

    /// Union of the names every resource references (computed once per set).
    pub fn referenced(&self) -> Arc<BTreeSet<Arc<str>>> {
        self.names
            .get_or_init(|| {
                let mut out = BTreeSet::new();
                for held in self.items.values() {
                    if let Derived::Names(names) = held.derived.as_ref() {
                        out.extend(names.iter().cloned());
                    }
                }
                Arc::new(out)
            })
            .clone()
    }

    /// The clusters the virtual hosts for `domains` route to, over every route
    /// configuration in the set.
    pub fn clusters_for(&self, domains: &[String]) -> BTreeSet<Arc<str>> {
        let mut out = BTreeSet::new();
        for held in self.items.values() {
            if let Derived::Routes(by_domain) = held.derived.as_ref() {
                for d in domains {
                    if let Some(clusters) = by_domain.get(d) {
                        out.extend(clusters.iter().cloned());
                    }
                }
            }
        }
        out
    }
}

/// Sets shared between proxies, by type and version.
#[derive(Debug, Default)]
pub struct SetStore {
    sets: Mutex<HashMap<(Kind, String), Arc<HeldSet>>>,
}

/// Sets kept before unused ones are dropped.
const STORE_SOFT_LIMIT: usize = 64;

impl SetStore {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The set known for `kind` at `version`.
    pub fn get(&self, kind: Kind, version: &str) -> Option<Arc<HeldSet>> {
        if version.is_empty() {
            return None;
        }
        self.sets.lock().get(&(kind, version.to_string())).cloned()
    }

    /// Records `set` as `kind` at `version` and returns the stored set (an earlier one
    /// for the same version wins).
    pub fn put(&self, kind: Kind, version: &str, set: HeldSet) -> Arc<HeldSet> {
        if version.is_empty() {
            return Arc::new(set);
        }
        let mut sets = self.sets.lock();
        if sets.len() >= STORE_SOFT_LIMIT {
            sets.retain(|_, s| Arc::strong_count(s) > 1);
        }
        sets.entry((kind, version.to_string()))
            .or_insert_with(|| Arc::new(set))
            .clone()
    }

    /// Sets stored.
    pub fn len(&self) -> usize {
        self.sets.lock().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a resource of `kind` references.
pub fn derive(kind: Kind, body: &Any) -> Derived {
    match kind {
        Kind::Cds => Cluster::decode(body.value.as_slice())
            .ok()
            .and_then(|c| eds_name(&c))
            .map(|n| Derived::Names(vec![n]))
            .unwrap_or(Derived::Nothing),
        Kind::Lds => match Listener::decode(body.value.as_slice()) {
            Ok(l) => Derived::Names(route_names(&l)),
            Err(_) => Derived::Nothing,
        },
        Kind::Rds => match RouteConfiguration::decode(body.value.as_slice()) {
            Ok(rc) => Derived::Routes(routes_by_domain(&rc)),
            Err(_) => Derived::Nothing,
        },
        Kind::Eds => Derived::Nothing,
    }
}

/// The EDS service name of an EDS cluster (its own name when it names none).
pub fn eds_name(c: &Cluster) -> Option<Arc<str>> {
    let eds = matches!(
        c.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32
    );
    if !eds {
        return None;
    }
    let service = c
        .eds_cluster_config
        .as_ref()
        .map(|e| e.service_name.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or(&c.name);
    Some(Arc::from(service))
}

/// Route configurations a listener takes from RDS: its API listener's, or those of
/// the HTTP connection managers in its filter chains.
pub fn route_names(l: &Listener) -> Vec<Arc<str>> {
    let mut out = Vec::new();
    let mut hcm = |any: &Any| {
        if any.type_url == HCM
            && let Ok(h) = HttpConnectionManager::decode(any.value.as_slice())
            && let Some(RouteSpecifier::Rds(rds)) = h.route_specifier
        {
            out.push(Arc::from(rds.route_config_name.as_str()));
        }
    };
    if let Some(any) = l
        .api_listener
        .as_ref()
        .and_then(|a| a.api_listener.as_ref())
    {
        hcm(any);
    }
    for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
        for f in &chain.filters {
            if let Some(ConfigType::TypedConfig(any)) = &f.config_type {
                hcm(any);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Clusters each domain of a route configuration routes to.
pub fn routes_by_domain(rc: &RouteConfiguration) -> HashMap<String, Vec<Arc<str>>> {
    let mut out = HashMap::new();
    for vh in &rc.virtual_hosts {
        let mut clusters: Vec<Arc<str>> = Vec::new();
        for route in &vh.routes {
            if let Some(Action::Route(action)) = &route.action {
                match &action.cluster_specifier {
                    Some(ClusterSpecifier::Cluster(c)) => clusters.push(Arc::from(c.as_str())),
                    Some(ClusterSpecifier::WeightedClusters(w)) => {
                        clusters.extend(w.clusters.iter().map(|c| Arc::from(c.name.as_str())))
                    }
                    _ => {}
                }
            }
        }
        clusters.sort();
        clusters.dedup();
        for d in &vh.domains {
            out.insert(d.clone(), clusters.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mesh_api::envoy::envoy::config::{
        cluster::v3::cluster::EdsClusterConfig,
        listener::v3::ApiListener,
        route::v3::{Route, RouteAction, VirtualHost, WeightedCluster, weighted_cluster},
    };
    use mesh_api::envoy::envoy::extensions::filters::network::http_connection_manager::v3::Rds;

    fn any<M: Message>(type_url: &str, m: &M) -> Any {
        Any {
            type_url: type_url.into(),
            value: m.encode_to_vec(),
        }
    }

    #[test]
    fn eds_clusters_lead_to_their_service_name() {
        let eds = Cluster {
            name: "outbound|80||a".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                service_name: "outbound|80||a".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            derive(Kind::Cds, &any(CDS, &eds)),
            Derived::Names(vec![Arc::from("outbound|80||a")])
        );
        let unnamed = Cluster {
            eds_cluster_config: None,
            ..eds.clone()
        };
        assert_eq!(eds_name(&unnamed).as_deref(), Some("outbound|80||a"));
        let dns = Cluster {
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                DiscoveryType::StrictDns as i32,
            )),
            ..eds
        };
        assert_eq!(derive(Kind::Cds, &any(CDS, &dns)), Derived::Nothing);
    }

    #[test]
    fn listeners_lead_to_their_route_configuration() {
        let hcm = HttpConnectionManager {
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                route_config_name: "8080".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let l = Listener {
            name: "a:8080".into(),
            api_listener: Some(ApiListener {
                api_listener: Some(any(HCM, &hcm)),
            }),
            ..Default::default()
        };
        assert_eq!(
            derive(Kind::Lds, &any(LDS, &l)),
            Derived::Names(vec![Arc::from("8080")])
        );
    }

    #[test]
    fn routes_index_clusters_by_domain() {
        let rc = RouteConfiguration {
            name: "8080".into(),
            virtual_hosts: vec![VirtualHost {
                name: "a".into(),
                domains: vec!["a".into(), "a:8080".into()],
                routes: vec![
                    Route {
                        action: Some(Action::Route(RouteAction {
                            cluster_specifier: Some(ClusterSpecifier::WeightedClusters(
                                WeightedCluster {
                                    clusters: vec![
                                        weighted_cluster::ClusterWeight {
                                            name: "v1".into(),
                                            ..Default::default()
                                        },
                                        weighted_cluster::ClusterWeight {
                                            name: "v2".into(),
                                            ..Default::default()
                                        },
                                    ],
                                    ..Default::default()
                                },
                            )),
                            ..Default::default()
                        })),
                        ..Default::default()
                    },
                    Route {
                        action: Some(Action::Route(RouteAction {
                            cluster_specifier: Some(ClusterSpecifier::Cluster("v1".into())),
                            ..Default::default()
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut items = BTreeMap::new();
        items.insert(
            Arc::from("8080"),
            Held {
                version: Arc::from(""),
                derived: Arc::new(derive(Kind::Rds, &any(RDS, &rc))),
            },
        );
        let set = HeldSet::new(items);
        let clusters: Vec<String> = set
            .clusters_for(&["a:8080".into()])
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(clusters, ["v1", "v2"]);
        assert!(set.clusters_for(&["b:8080".into()]).is_empty());
    }

    #[test]
    fn store_shares_sets_by_version_and_drops_unused_ones() {
        let store = SetStore::new();
        assert!(store.get(Kind::Cds, "v1").is_none());
        let a = store.put(Kind::Cds, "v1", HeldSet::default());
        let b = store.put(Kind::Cds, "v1", HeldSet::default());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(store.get(Kind::Eds, "v1").is_none());
        assert!(
            store
                .put(Kind::Cds, "", HeldSet::default())
                .items
                .is_empty()
        );
        drop((a, b));
        for i in 0..STORE_SOFT_LIMIT + 1 {
            let _ = store.put(Kind::Eds, &i.to_string(), HeldSet::default());
        }
        assert!(store.len() < STORE_SOFT_LIMIT);
    }
}
