//! From configuration to per-proxy snapshots, computing as little as possible.
//!
//! Streams are grouped by [`Proxy::group_key`] (kind, namespace, locality, labels).
//! Each group belongs to a [`ScopeKey`]: the proxies of a scope see the same
//! services and rules, so the scope's translation (clusters, endpoints, routes,
//! proxyless listeners) is computed once and its sets are shared by every group of
//! the scope. Groups add what is theirs alone (a sidecar's inbound listener and
//! clusters, a gateway's listeners); groups whose additions are equal share one
//! snapshot. Only groups some stream watches are built: a new group is built when
//! its first stream arrives, and groups nobody watches are forgotten.
//!
//! A change that moves only endpoints (the services' shape and every rule are as
//! before) recomputes only EDS: the other sets of every snapshot are kept as they
//! are, so nothing else is re-sent or even re-encoded. An endpoint whose service
//! account is new to its service changes the clusters (their SAN matchers), and an
//! endpoint of a headless service coming or going changes sidecar listeners (which
//! match those endpoints' addresses): both are full pushes.
//!
//! Resources are interned by name and content across scopes and pushes: an unchanged
//! cluster is the same shared, already-encoded resource in every snapshot.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use mesh_mcp::McpView;
use mesh_model::{Kind, Resource, networking::Resolution};
use mesh_xds::{Snapshot, SnapshotCache, TypedResources, XdsResource, type_url};

use crate::{
    NamedResource, ServiceEntryRegistry, ServiceRegistry,
    model::{Service, merge_registries},
    proxy::{Proxy, ProxyKind},
    scope::{ScopeKey, scope_key, visible},
    translate::{self, MeshContext},
};

/// What a push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushStats {
    /// True when only endpoints changed and only EDS was recomputed.
    pub endpoints_only: bool,
    /// Scopes translated.
    pub scopes: usize,
    /// Groups whose snapshot was published.
    pub groups: usize,
}

/// The configuration being served, as translation reads it.
#[derive(Debug, Default)]
pub struct Inputs {
    /// The configuration view it came from.
    pub view: Arc<McpView>,
    /// Every resource, in key order.
    pub resources: Vec<Arc<Resource>>,
    /// Every service of the merged registries, by host; shared by every scope's
    /// translation context.
    pub services: Vec<Arc<Service>>,
}

impl Inputs {
    /// Reads a view: resources in key order and services from its ServiceEntries.
    pub fn from_view(view: Arc<McpView>) -> Self {
        Self::from_view_and(view, &[])
    }

    /// Reads a view, merging `services` (another registry's, sorted by host) before
    /// the view's ServiceEntries: for a host both declare, `services` wins.
    pub fn from_view_and(view: Arc<McpView>, services: &[Service]) -> Self {
        let resources: Vec<Arc<Resource>> = view.resources.values().cloned().collect();
        let refs: Vec<&Resource> = resources.iter().map(|r| r.as_ref()).collect();
        let entries = ServiceEntryRegistry::from_resources(&refs);
        let services = if services.is_empty() {
            entries.services()
        } else {
            let first = Fixed(services);
            merge_registries(&[&first, &entries])
        };
        Self {
            view,
            resources,
            services: services.into_iter().map(Arc::new).collect(),
        }
    }

    /// Whether `self` differs from `before` in endpoints of EDS services only.
    fn endpoints_only_change(&self, before: &Inputs) -> bool {
        let rules = |inputs: &Inputs| {
            inputs
                .resources
                .iter()
                .filter(|r| !matches!(r.kind(), Kind::ServiceEntry))
                .cloned()
                .collect::<Vec<_>>()
        };
        let (a, b) = (rules(self), rules(before));
        let same_rules =
            a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| Arc::ptr_eq(x, y) || x == y);
        same_rules && shape(&self.services) == shape(&before.services)
    }
}

/// A registry of services already read.
struct Fixed<'a>(&'a [Service]);

impl ServiceRegistry for Fixed<'_> {
    fn services(&self) -> Vec<Service> {
        self.0.to_vec()
    }
}

/// What clusters, routes and listeners read of a service: all of it but the
/// endpoints of services resolved STATIC or NONE, of which only the service
/// accounts count (clusters verify their identities) and, for NONE, the addresses
/// (a sidecar's listeners match a headless service's endpoints by address).
#[derive(Debug, PartialEq)]
struct Shape {
    service: Service,
    accounts: BTreeSet<String>,
    addresses: BTreeSet<String>,
}

fn shape(services: &[Arc<Service>]) -> Vec<Shape> {
    services
        .iter()
        .map(|s| {
            let mut service = Service::clone(s);
            let (accounts, addresses) = match s.resolution {
                Resolution::Static | Resolution::None => {
                    service.endpoints.clear();
                    let accounts = s.service_accounts().into_iter().map(String::from).collect();
                    let addresses = if s.resolution == Resolution::None {
                        s.endpoints.iter().map(|e| e.address.clone()).collect()
                    } else {
                        BTreeSet::new()
                    };
                    (accounts, addresses)
                }
                Resolution::Dns | Resolution::DnsRoundRobin => (BTreeSet::new(), BTreeSet::new()),
            };
            Shape {
                service,
                accounts,
                addresses,
            }
        })
        .collect()
}

/// A scope's translation.
struct ScopeOutput {
    /// The first proxy seen in the scope (its labels chose the scope's Sidecar).
    proxy: Proxy,
    ctx: MeshContext,
    sets: BTreeMap<&'static str, Arc<TypedResources>>,
    /// Some VirtualService matches on `sourceLabels`: routes differ by proxy labels
    /// and are built per group.
    routes_by_labels: bool,
}

/// A snapshot shared by the groups of a scope whose additions are equal.
struct Variant {
    snapshot: Arc<Snapshot>,
}

struct GroupEntry {
    scope: ScopeKey,
    variant: String,
}

/// Builds and publishes the snapshot of every watched group.
pub struct PushEngine {
    cache: SnapshotCache,
    inputs: Arc<Inputs>,
    scopes: HashMap<ScopeKey, ScopeOutput>,
    variants: HashMap<(ScopeKey, String), Variant>,
    groups: HashMap<String, GroupEntry>,
    interner: Interner,
    trust_domain: String,
}

impl PushEngine {
    /// An engine publishing to `cache`, with no configuration yet.
    pub fn new(cache: SnapshotCache) -> Self {
        Self {
            cache,
            inputs: Arc::new(Inputs::default()),
            scopes: HashMap::new(),
            variants: HashMap::new(),
            groups: HashMap::new(),
            interner: Interner::default(),
            trust_domain: crate::model::DEFAULT_TRUST_DOMAIN.to_string(),
        }
    }

    /// The same engine naming workload identities under `trust_domain`.
    pub fn with_trust_domain(mut self, trust_domain: &str) -> Self {
        self.trust_domain = trust_domain.to_string();
        self
    }

    /// The trust domain of workload identities.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The configuration served now.
    pub fn inputs(&self) -> Arc<Inputs> {
        self.inputs.clone()
    }

    /// Scopes translated for the current configuration.
    pub fn scope_count(&self) -> usize {
        self.scopes.len()
    }

    /// Groups with a published snapshot.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Serves `view` to every watched group.
    pub fn update(&mut self, view: Arc<McpView>) -> PushStats {
        self.update_inputs(Inputs::from_view(view))
    }

    /// Serves `inputs` to every watched group: only EDS is recomputed when they
    /// differ from the last ones in endpoints of EDS services only.
    pub fn update_inputs(&mut self, inputs: Inputs) -> PushStats {
        let inputs = Arc::new(inputs);
        let endpoints_only = !self.groups.is_empty() && inputs.endpoints_only_change(&self.inputs);
        self.inputs = inputs;
        self.cache.prune();
        if endpoints_only {
            return self.update_endpoints();
        }
        self.scopes.clear();
        self.variants.clear();
        self.groups.clear();
        self.interner.start_generation();
        let watched: Vec<String> = self.cache.watched().into_iter().map(|(g, _)| g).collect();
        let mut stats = PushStats::default();
        for group in watched {
            if self.build_group(&group) {
                stats.groups += 1;
            }
        }
        self.interner.end_generation();
        stats.scopes = self.scopes.len();
        stats
    }

    /// Builds the groups streams started watching since the last call.
    pub fn serve_new_groups(&mut self) -> usize {
        let mut built = 0;
        for (group, has_snapshot) in self.cache.watched() {
            if !has_snapshot && self.build_group(&group) {
                built += 1;
            }
        }
        built
    }

    /// Recomputes EDS of every scope and swaps it into every snapshot.
    fn update_endpoints(&mut self) -> PushStats {
        let inputs = self.inputs.clone();
        self.interner.start_type(type_url::ENDPOINT);
        for scope in self.scopes.values_mut() {
            let proxy = &scope.proxy;
            let (services, resources) = visible(proxy, &inputs.services, &inputs.resources);
            scope.ctx = MeshContext::from_shared(services, &resources)
                .with_trust_domain(&self.trust_domain);
            let endpoints = translate::endpoints::build_endpoints(&scope.ctx, proxy);
            let set = self.interner.set(type_url::ENDPOINT, endpoints);
            scope.sets.insert(type_url::ENDPOINT, set);
        }
        self.interner.end_generation();
        for ((key, _), variant) in &mut self.variants {
            let Some(scope) = self.scopes.get(key) else {
                continue;
            };
            let mut snapshot = (*variant.snapshot).clone();
            if let Some(set) = scope.sets.get(type_url::ENDPOINT) {
                snapshot.insert(type_url::ENDPOINT, set.clone());
            }
            variant.snapshot = Arc::new(snapshot);
        }
        let mut stats = PushStats {
            endpoints_only: true,
            scopes: self.scopes.len(),
            groups: 0,
        };
        let watched: Vec<String> = self.cache.watched().into_iter().map(|(g, _)| g).collect();
        self.groups.retain(|g, _| watched.contains(g));
        for (group, entry) in &self.groups {
            if let Some(v) = self
                .variants
                .get(&(entry.scope.clone(), entry.variant.clone()))
            {
                self.cache.set_shared(group, v.snapshot.clone());
                stats.groups += 1;
            }
        }
        // Groups that arrived meanwhile get a full build.
        for group in watched {
            if !self.groups.contains_key(&group) && self.build_group(&group) {
                stats.groups += 1;
            }
        }
        stats
    }

    /// Builds and publishes one group's snapshot; false when the key is not a group.
    fn build_group(&mut self, group: &str) -> bool {
        let Some(proxy) = Proxy::from_group_key(group) else {
            tracing::warn!(%group, "not a proxy group key; serving it nothing");
            self.cache.set(group, Snapshot::new());
            return false;
        };
        let key = scope_key(&proxy, &self.inputs.resources);
        if !self.scopes.contains_key(&key) {
            let scope = self.translate_scope(&proxy);
            self.scopes.insert(key.clone(), scope);
        }
        let Some(scope) = self.scopes.get(&key) else {
            return false;
        };
        let mut extras = proxy_extras(&scope.ctx, &proxy);
        if scope.routes_by_labels {
            extras.push((
                type_url::ROUTE,
                translate::routes::build_routes(&scope.ctx, &proxy),
            ));
        }
        let mut merged: BTreeMap<&'static str, Vec<Arc<XdsResource>>> = BTreeMap::new();
        for (t, items) in extras {
            let items = self.interner.resources(t, items);
            merged.entry(t).or_default().extend(items);
        }
        let extras = merged;
        let variant_id = variant_id(&extras);
        let variant_key = (key.clone(), variant_id.clone());
        let snapshot = match self.variants.get(&variant_key) {
            Some(v) => v.snapshot.clone(),
            None => {
                let snapshot = Arc::new(compose(
                    &scope.sets,
                    &extras,
                    scope.routes_by_labels,
                    &mut self.interner,
                ));
                self.variants.insert(
                    variant_key,
                    Variant {
                        snapshot: snapshot.clone(),
                    },
                );
                snapshot
            }
        };
        self.cache.set_shared(group, snapshot);
        self.groups.insert(
            group.to_string(),
            GroupEntry {
                scope: key,
                variant: variant_id,
            },
        );
        true
    }

    /// Translates the scope of `proxy`: what every proxy of the scope shares.
    fn translate_scope(&mut self, proxy: &Proxy) -> ScopeOutput {
        let (services, resources) = visible(proxy, &self.inputs.services, &self.inputs.resources);
        let routes_by_labels = resources.iter().any(|r| match &r.spec {
            mesh_model::Spec::VirtualService(vs) => vs
                .http
                .iter()
                .flat_map(|h| &h.matches)
                .any(|m| !m.source_labels.is_empty()),
            _ => false,
        });
        let ctx =
            MeshContext::from_shared(services, &resources).with_trust_domain(&self.trust_domain);
        let mut sets = BTreeMap::new();
        let mut clusters = translate::clusters::build_clusters(&ctx, proxy);
        let endpoints = translate::endpoints::build_endpoints(&ctx, proxy);
        let routes = if routes_by_labels {
            Vec::new()
        } else {
            translate::routes::build_routes(&ctx, proxy)
        };
        let listeners = match proxy.kind {
            ProxyKind::Proxyless => translate::listeners::build_listeners(&ctx),
            // Outbound listeners depend on the services seen and the Sidecar only.
            ProxyKind::Sidecar => {
                clusters.extend(translate::sidecar::passthrough_clusters());
                clusters.sort_by(|a, b| a.0.cmp(&b.0));
                translate::sidecar::outbound_listeners(&ctx, proxy)
            }
            ProxyKind::Router => Vec::new(),
        };
        for (t, items) in [
            (type_url::CLUSTER, clusters),
            (type_url::ENDPOINT, endpoints),
            (type_url::LISTENER, listeners),
            (type_url::ROUTE, routes),
        ] {
            sets.insert(t, self.interner.set(t, items));
        }
        ScopeOutput {
            proxy: proxy.clone(),
            ctx,
            sets,
            routes_by_labels,
        }
    }

    /// Every published group with its proxy and the snapshot it is served.
    pub fn group_snapshots(&self) -> Vec<(String, Arc<Snapshot>)> {
        let mut out: Vec<(String, Arc<Snapshot>)> = self
            .groups
            .keys()
            .filter_map(|g| self.cache.get(g).map(|s| (g.clone(), s)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// What a proxy gets beyond its scope's shared sets, by type URL: a sidecar's
/// inbound listener and clusters, a gateway's listeners and route configurations.
fn proxy_extras(ctx: &MeshContext, proxy: &Proxy) -> Vec<(&'static str, Vec<NamedResource>)> {
    match proxy.kind {
        ProxyKind::Proxyless => Vec::new(),
        ProxyKind::Sidecar => {
            let inbound = translate::inbound::inbound_listener(ctx, proxy);
            vec![
                (
                    type_url::CLUSTER,
                    translate::inbound::inbound_clusters(ctx, proxy),
                ),
                (
                    type_url::LISTENER,
                    vec![(inbound.name.clone(), translate::pack_listener(&inbound))],
                ),
            ]
        }
        ProxyKind::Router => {
            let (listeners, routes) = translate::gateway::gateway_resources(ctx, proxy);
            vec![(type_url::LISTENER, listeners), (type_url::ROUTE, routes)]
        }
    }
}

/// Identifies a group's additions by content, so equal additions share a snapshot.
fn variant_id(extras: &BTreeMap<&'static str, Vec<Arc<XdsResource>>>) -> String {
    let pairs: Vec<(String, String)> = extras
        .iter()
        .flat_map(|(t, items)| {
            items
                .iter()
                .map(move |r| (format!("{t}\u{0}{}", r.name), r.version.clone()))
        })
        .collect();
    mesh_xds::resource::set_version(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))
}

/// The scope's sets with a group's additions (routes replaced rather than added
/// when they are built per group).
fn compose(
    sets: &BTreeMap<&'static str, Arc<TypedResources>>,
    extras: &BTreeMap<&'static str, Vec<Arc<XdsResource>>>,
    own_routes: bool,
    interner: &mut Interner,
) -> Snapshot {
    let mut snapshot = Snapshot::new();
    for (t, set) in sets {
        if own_routes && *t == type_url::ROUTE {
            let items = extras.get(t).cloned().unwrap_or_default();
            snapshot.insert(*t, interner.shared_set(t, items));
            continue;
        }
        match extras.get(t).filter(|e| !e.is_empty()) {
            None => snapshot.insert(*t, set.clone()),
            Some(extra) => {
                let items = set.items.values().cloned().chain(extra.iter().cloned());
                snapshot.insert(*t, interner.shared_set(t, items));
            }
        }
    }
    for (t, extra) in extras {
        if !sets.contains_key(t) && !extra.is_empty() {
            snapshot.insert(*t, interner.shared_set(t, extra.iter().cloned()));
        }
    }
    snapshot
}

/// Shares resources equal by type, name and content across scopes and pushes,
/// and whole sets equal by type and content across scopes and variants: scopes
/// that see the same services (namespaces without a Sidecar of their own) then
/// hold one set, whose encoded response bodies are built and kept once.
#[derive(Default)]
struct Interner {
    current: HashMap<(&'static str, String), Vec<Arc<XdsResource>>>,
    previous: HashMap<(&'static str, String), Vec<Arc<XdsResource>>>,
    /// Sets by type URL and version.
    sets: HashMap<(&'static str, String), Arc<TypedResources>>,
    previous_sets: HashMap<(&'static str, String), Arc<TypedResources>>,
}

impl Interner {
    /// Starts a full push: resources and sets of the last push stay reusable
    /// until it ends.
    fn start_generation(&mut self) {
        let current = std::mem::take(&mut self.current);
        self.previous.extend(current);
        let sets = std::mem::take(&mut self.sets);
        self.previous_sets.extend(sets);
    }

    /// Starts recomputing one type only: its resources and sets of the last push
    /// stay reusable until the push ends.
    fn start_type(&mut self, type_url: &'static str) {
        move_type(&mut self.current, &mut self.previous, type_url);
        move_type(&mut self.sets, &mut self.previous_sets, type_url);
    }

    /// Ends a push: what it did not use is forgotten.
    fn end_generation(&mut self) {
        self.previous.clear();
        self.previous_sets.clear();
    }

    fn intern(
        &mut self,
        type_url: &'static str,
        name: String,
        body: mesh_xds::Any,
    ) -> Arc<XdsResource> {
        let key = (type_url, name);
        if let Some(found) = self
            .current
            .get(&key)
            .and_then(|v| v.iter().find(|r| r.body == body))
        {
            return found.clone();
        }
        let reused = self
            .previous
            .get(&key)
            .and_then(|v| v.iter().find(|r| r.body == body))
            .cloned();
        let resource = reused.unwrap_or_else(|| Arc::new(XdsResource::new(key.1.clone(), body)));
        self.current.entry(key).or_default().push(resource.clone());
        resource
    }

    fn resources(
        &mut self,
        type_url: &'static str,
        items: Vec<NamedResource>,
    ) -> Vec<Arc<XdsResource>> {
        items
            .into_iter()
            .map(|(name, body)| self.intern(type_url, name, body))
            .collect()
    }

    /// The set of `items` (encoded and interned), shared with an equal one.
    fn set(&mut self, type_url: &'static str, items: Vec<NamedResource>) -> Arc<TypedResources> {
        let items = self.resources(type_url, items);
        self.shared_set(type_url, items)
    }

    /// The set of `items`: one built already (this push or the last) when it
    /// holds the same resources, else a new one, remembered for the next caller.
    fn shared_set(
        &mut self,
        type_url: &'static str,
        items: impl IntoIterator<Item = Arc<XdsResource>>,
    ) -> Arc<TypedResources> {
        let set = TypedResources::from_shared(items);
        let key = (type_url, set.version.clone());
        // The version is a hash: equal versions are checked item by item.
        let same = |found: &&Arc<TypedResources>| {
            found.items.len() == set.items.len()
                && found
                    .items
                    .values()
                    .zip(set.items.values())
                    .all(|(a, b)| Arc::ptr_eq(a, b) || a == b)
        };
        if let Some(found) = self.sets.get(&key).filter(same) {
            return found.clone();
        }
        if let Some(found) = self.previous_sets.get(&key).filter(same).cloned() {
            self.sets.insert(key, found.clone());
            return found;
        }
        let set = Arc::new(set);
        self.sets.insert(key, set.clone());
        set
    }
}

/// Moves the entries of `type_url` from `from` to `to`.
fn move_type<V>(
    from: &mut HashMap<(&'static str, String), V>,
    to: &mut HashMap<(&'static str, String), V>,
    type_url: &'static str,
) {
    to.extend(from.extract_if(|(t, _), _| *t == type_url));
}

#[cfg(test)]
mod tests;
