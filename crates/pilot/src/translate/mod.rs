//! Pure translation of the service model and traffic rules into Envoy v3 resources.
//!
//! [`translate`] takes configuration resources (ServiceEntry, VirtualService,
//! DestinationRule) and returns clusters (CDS), cluster load assignments (EDS), route
//! configurations (RDS) and listeners (LDS), each as `(name, Any)` sorted by name.
//! The same input always yields the same bytes. Invalid pieces of input (a duration
//! that does not parse, an endpoint that is not an IP) are left out rather than
//! failing the whole translation.
//!
//! That mesh-wide part is what every proxy shares. [`proxy_resources()`] adds what
//! depends on the proxy asking (see [`proxy_resources`](mod@proxy_resources) for what
//! each kind gets): Envoy sidecars' outbound and inbound listeners (with
//! PeerAuthentication mutual TLS and AuthorizationPolicy RBAC) and ingress gateways'
//! listeners and route configurations.

pub mod authz;
pub mod canonical;
mod chains;
pub mod clusters;
pub mod endpoints;
pub mod gateway;
pub mod inbound;
mod listener_rules;
pub mod listeners;
pub mod mtls;
pub mod proxy_resources;
mod rbac_matchers;
mod route_match;
mod route_policies;
pub mod routes;
pub mod sidecar;
pub mod validate;

pub use proxy_resources::{ProxyResources, proxy_resources};

#[cfg(test)]
mod authz_tests;
#[cfg(test)]
mod cds_tests;
#[cfg(test)]
mod gateway_tests;
#[cfg(test)]
mod headless_tests;
#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod lds_props;
#[cfg(test)]
mod lds_tests;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, sync::Arc};

use mesh_api::envoy::{
    envoy::config::core::v3::{
        AggregatedConfigSource, ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
    },
    google::protobuf::{Any, Duration as PbDuration},
};
use mesh_model::{
    Resource, Spec,
    host::{fqdn, host_covered_by},
    networking::{DestinationRule, Gateway, Labels, Sidecar, VirtualService},
    security::{AuthorizationPolicy, PeerAuthentication},
};

use crate::model::{Service, ServiceEntryRegistry, ServiceRegistry};
use crate::proxy::{DEFAULT_NAMESPACE, Proxy, ProxyKind};

/// Envoy type URLs of the four resource types pilot produces (as in `mesh-xds`).
pub mod type_url {
    /// CDS.
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// EDS.
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// LDS.
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// RDS.
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
}

/// A resource name and the resource packed into `Any`.
pub type NamedResource = (String, Any);

/// Everything pilot sends to a proxy, by xDS type, each list sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvoyResources {
    /// CDS: `Cluster`s.
    pub clusters: Vec<NamedResource>,
    /// EDS: `ClusterLoadAssignment`s.
    pub endpoints: Vec<NamedResource>,
    /// LDS: `Listener`s.
    pub listeners: Vec<NamedResource>,
    /// RDS: `RouteConfiguration`s.
    pub routes: Vec<NamedResource>,
}

/// Translates configuration resources, with services from their ServiceEntries, for
/// a proxyless gRPC client in namespace `default`.
pub fn translate(resources: &[&Resource]) -> EnvoyResources {
    let registry = ServiceEntryRegistry::from_resources(resources);
    translate_registry(&registry, resources)
}

/// Translates with services from `registry` and traffic rules from `resources`, for
/// a proxyless gRPC client in namespace `default`.
pub fn translate_registry(
    registry: &dyn ServiceRegistry,
    resources: &[&Resource],
) -> EnvoyResources {
    let proxy = Proxy::new(ProxyKind::Proxyless, DEFAULT_NAMESPACE, Labels::new());
    translate_for(registry, resources, &proxy)
}

/// Translates with services from `registry` and traffic rules from `resources`, for
/// `proxy`: its kind decides what the output may use, its locality the endpoint
/// priorities and weights, its labels and namespace which routes apply.
pub fn translate_for(
    registry: &dyn ServiceRegistry,
    resources: &[&Resource],
    proxy: &Proxy,
) -> EnvoyResources {
    let ctx = MeshContext::new(registry.services(), resources);
    EnvoyResources {
        clusters: clusters::build_clusters(&ctx, proxy),
        endpoints: endpoints::build_endpoints(&ctx, proxy),
        listeners: listeners::build_listeners(&ctx),
        routes: routes::build_routes(&ctx, proxy),
    }
}

/// The inputs of translation, indexed: services by host and the rules that apply.
#[derive(Debug, Clone, Default)]
pub struct MeshContext {
    /// Services by host, shared with the configuration they were read from (every
    /// scope of a mesh holds the same services: one copy, not one per scope).
    pub services: BTreeMap<String, Arc<Service>>,
    /// The DestinationRule in force for each host (first in key order), shared
    /// with the configuration (see [`MeshContext::destination_rule`]).
    destination_rules: BTreeMap<String, Arc<Resource>>,
    /// VirtualServices bound to the mesh, in key order, shared with the
    /// configuration (see [`MeshContext::virtual_service_for`]).
    virtual_services: Vec<Arc<Resource>>,
    /// VirtualServices bound to at least one Gateway, in key order.
    pub gateway_virtual_services: Vec<NamedSpec<VirtualService>>,
    /// Gateways, in key order.
    pub gateways: Vec<NamedSpec<Gateway>>,
    /// Sidecar resources, in key order.
    pub sidecars: Vec<NamedSpec<Sidecar>>,
    /// PeerAuthentications, in key order.
    pub peer_authentications: Vec<NamedSpec<PeerAuthentication>>,
    /// AuthorizationPolicies, in key order.
    pub authorization_policies: Vec<NamedSpec<AuthorizationPolicy>>,
    /// Index of `virtual_services` by exact (qualified) host: the first in key order.
    vs_exact: std::collections::HashMap<String, usize>,
    /// Wildcard hosts of `virtual_services`, in key order.
    vs_wildcard: Vec<(String, usize)>,
    /// Trust domain of workload identities (`spiffe://<trust domain>/ns/..`).
    pub trust_domain: String,
}

pub use mesh_model::security::ROOT_NAMESPACE;

/// A resource's spec with the namespace and name it was declared under.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedSpec<T> {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The spec.
    pub spec: T,
}

impl<T: Clone> NamedSpec<T> {
    fn of(r: &Resource, spec: &T) -> Self {
        Self {
            namespace: r.meta.namespace.clone(),
            name: r.meta.name.clone(),
            spec: spec.clone(),
        }
    }
}

impl MeshContext {
    /// Indexes `services` and the DestinationRules and VirtualServices in `resources`.
    pub fn new(services: Vec<Service>, resources: &[&Resource]) -> Self {
        let resources: Vec<Arc<Resource>> =
            resources.iter().map(|r| Arc::new((*r).clone())).collect();
        let refs: Vec<&Arc<Resource>> = resources.iter().collect();
        Self::from_shared(services.into_iter().map(Arc::new).collect(), &refs)
    }

    /// As [`MeshContext::new`], with services and rules shared with the
    /// configuration rather than copied: every scope of a mesh holds the same ones.
    pub fn from_shared(services: Vec<Arc<Service>>, resources: &[&Arc<Resource>]) -> Self {
        let mut sorted: Vec<&Arc<Resource>> = resources.to_vec();
        sorted.sort_by(|a, b| {
            (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name))
        });
        let mut ctx = Self {
            trust_domain: crate::model::DEFAULT_TRUST_DOMAIN.to_string(),
            ..Self::default()
        };
        for r in sorted {
            match &r.spec {
                Spec::DestinationRule(dr) => {
                    let host = fqdn(&dr.host, &r.meta.namespace).into_owned();
                    ctx.destination_rules
                        .entry(host)
                        .or_insert_with(|| Arc::clone(r));
                }
                Spec::VirtualService(vs) => {
                    if vs.bound_gateways().any(|g| g == "mesh") {
                        ctx.virtual_services.push(Arc::clone(r));
                    }
                    if vs.bound_gateways().any(|g| g != "mesh") {
                        ctx.gateway_virtual_services.push(NamedSpec::of(r, vs));
                    }
                }
                Spec::Gateway(g) => ctx.gateways.push(NamedSpec::of(r, g)),
                Spec::Sidecar(s) => ctx.sidecars.push(NamedSpec::of(r, s)),
                Spec::PeerAuthentication(p) => ctx.peer_authentications.push(NamedSpec::of(r, p)),
                Spec::AuthorizationPolicy(p) => {
                    ctx.authorization_policies.push(NamedSpec::of(r, p));
                }
                _ => {}
            }
        }
        ctx.services = services.into_iter().map(|s| (s.host.clone(), s)).collect();
        for (i, r) in ctx.virtual_services.iter().enumerate() {
            let Spec::VirtualService(vs) = &r.spec else {
                continue;
            };
            let ns = &r.meta.namespace;
            for h in &vs.hosts {
                let h = fqdn(h, ns).into_owned();
                if mesh_model::host::is_wildcard(&h) {
                    ctx.vs_wildcard.push((h, i));
                } else {
                    ctx.vs_exact.entry(h).or_insert(i);
                }
            }
        }
        ctx
    }

    /// The same context with workload identities under `trust_domain`.
    pub fn with_trust_domain(mut self, trust_domain: &str) -> Self {
        self.trust_domain = trust_domain.to_string();
        self
    }

    /// The first mesh VirtualService (in key order) with a host covering `host`,
    /// with its namespace; an exact host match is preferred over a wildcard.
    pub fn virtual_service_for(&self, host: &str) -> Option<(&str, &VirtualService)> {
        let index = self.vs_exact.get(host).copied().or_else(|| {
            self.vs_wildcard
                .iter()
                .filter(|(pattern, _)| host_covered_by(host, pattern))
                .map(|(_, i)| *i)
                .min()
        })?;
        let r = self.virtual_services.get(index)?;
        match &r.spec {
            Spec::VirtualService(vs) => Some((r.meta.namespace.as_str(), vs)),
            _ => None,
        }
    }

    /// The DestinationRule in force for `host` (the first in key order).
    pub fn destination_rule(&self, host: &str) -> Option<&DestinationRule> {
        match &self.destination_rules.get(host)?.spec {
            Spec::DestinationRule(dr) => Some(dr),
            _ => None,
        }
    }
}

/// `outbound|<port>|<subset>|<host>`, Istio's outbound cluster name.
pub fn cluster_name(port: u32, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// Packs a listener into `Any`.
pub fn pack_listener(listener: &mesh_api::envoy::envoy::config::listener::v3::Listener) -> Any {
    pack(type_url::LISTENER, listener)
}

/// Packs a message into `Any` with the given type URL.
pub(crate) fn pack<M: prost::Message>(type_url: &str, message: &M) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: message.encode_to_vec(),
    }
}

/// Packs a message into `Any` with its own type URL.
pub(crate) fn pack_named<M: prost::Message + prost::Name>(message: &M) -> Any {
    pack(&M::type_url(), message)
}

/// A config source that says "over the same ADS stream, v3".
pub(crate) fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// The largest duration protobuf allows (10,000 years); Envoy and gRPC refuse more.
pub const MAX_PB_DURATION_SECONDS: i64 = 315_576_000_000;

/// Converts a std duration to protobuf's, saturating at protobuf's maximum.
pub(crate) fn pb_duration(d: std::time::Duration) -> PbDuration {
    let seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if seconds >= MAX_PB_DURATION_SECONDS {
        return PbDuration {
            seconds: MAX_PB_DURATION_SECONDS,
            nanos: 0,
        };
    }
    PbDuration {
        seconds,
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Parses an Istio duration string into protobuf's, `None` when it does not parse.
pub(crate) fn parse_pb_duration(text: &str) -> Option<PbDuration> {
    mesh_model::parse_duration(text).ok().map(pb_duration)
}

#[cfg(test)]
#[test]
fn durations_saturate_at_protobufs_limit() {
    let huge = pb_duration(std::time::Duration::from_secs(u64::MAX));
    assert_eq!((huge.seconds, huge.nanos), (MAX_PB_DURATION_SECONDS, 0));
    let d = pb_duration(std::time::Duration::from_millis(1500));
    assert_eq!((d.seconds, d.nanos), (1, 500_000_000));
}

/// Turns a map into a name-sorted list.
pub(crate) fn into_sorted(map: BTreeMap<String, Any>) -> Vec<NamedResource> {
    map.into_iter().collect()
}
