//! Services resolved `NONE`: original destination clusters for sidecars, EDS for
//! gateways and proxyless clients, and sidecar listener chains matching a headless
//! service's endpoint addresses.

use mesh_api::envoy::envoy::config::{
    cluster::v3::{
        Cluster,
        cluster::{ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy},
    },
    listener::v3::{FilterChain, Listener},
    route::v3::{RouteConfiguration, route::Action, route_action::ClusterSpecifier},
};
use mesh_model::{
    Resource,
    networking::{Location, Resolution},
    protocol::Protocol,
};

use super::{
    chains::PASSTHROUGH_CLUSTER,
    lds_tests::{decode, mk_proxy, mk_yaml, names, tcp_cluster},
    *,
};
use crate::{
    model::{Endpoint, RegistryKind, Service, ServiceEntryRegistry, ServicePort, ServiceRegistry},
    proxy::ProxyKind,
};

/// A Kubernetes service in `shop` on TCP port 5432 and HTTP port 8080, headless
/// (resolved NONE, no addresses) unless `addresses` are given.
fn mk_kube(name: &str, addresses: &[&str], endpoints: &[&str]) -> Service {
    Service {
        host: format!("{name}.shop.svc.cluster.local"),
        namespace: "shop".into(),
        ports: vec![
            ServicePort {
                number: 5432,
                name: "tcp-db".into(),
                protocol: Some(Protocol::Tcp),
                target_port: Some(5433),
            },
            ServicePort {
                number: 8080,
                name: "http".into(),
                protocol: Some(Protocol::Http),
                target_port: None,
            },
        ],
        resolution: if addresses.is_empty() {
            Resolution::None
        } else {
            Resolution::Static
        },
        location: Location::MeshInternal,
        endpoints: endpoints
            .iter()
            .map(|a| Endpoint {
                address: a.to_string(),
                ports: Default::default(),
                labels: Default::default(),
                locality: String::new(),
                weight: None,
                service_account: "db".into(),
            })
            .collect(),
        export_to: Vec::new(),
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
        workload_selector: None,
        subject_alt_names: Vec::new(),
        registry: RegistryKind::Kubernetes,
    }
}

fn cluster_kind(c: &Cluster) -> Option<DiscoveryType> {
    match c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t).ok(),
        _ => None,
    }
}

/// Everything `kind` is served for `services` and `resources`, checked against
/// Envoy's rules.
fn mk_served(services: Vec<Service>, resources: &[Resource], kind: ProxyKind) -> EnvoyResources {
    let refs: Vec<&Resource> = resources.iter().collect();
    let ctx = MeshContext::new(services, &refs);
    let proxy = mk_proxy(kind, "shop", &[]);
    let own = proxy_resources(&ctx, &proxy);
    let mut clusters = clusters::build_clusters(&ctx, &proxy);
    clusters.extend(own.clusters);
    clusters.sort_by(|a, b| a.0.cmp(&b.0));
    let mut listeners = own.listeners;
    if kind == ProxyKind::Proxyless {
        listeners = listeners::build_listeners(&ctx);
    }
    let out = EnvoyResources {
        clusters,
        endpoints: endpoints::build_endpoints(&ctx, &proxy),
        listeners,
        routes: routes::build_routes(&ctx, &proxy),
    };
    assert_eq!(validate::check(&out), Vec::new(), "{kind:?}");
    assert_eq!(validate::check_references(&out), Vec::new(), "{kind:?}");
    out
}

const DB: &str = "outbound|5432||db.shop.svc.cluster.local";

/// A DestinationRule asking for load balancing and locality settings, which an
/// original destination cluster cannot honour.
const LEAST_REQUEST: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec:
  host: db.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
      localityLbSetting: {enabled: true}
    outlierDetection: {consecutive5xxErrors: 3}
  subsets: [{name: v1, labels: {v: '1'}}]
";

#[test]
fn headless_services_give_sidecars_original_destination_clusters() {
    let services = vec![mk_kube("db", &[], &["10.1.0.5"])];
    let rules = mk_yaml(LEAST_REQUEST);
    let out = mk_served(services, &rules, ProxyKind::Sidecar);
    for name in [DB, "outbound|5432|v1|db.shop.svc.cluster.local"] {
        let c: Cluster = decode(&out.clusters, name);
        assert_eq!(cluster_kind(&c), Some(DiscoveryType::OriginalDst), "{name}");
        assert_eq!(c.lb_policy, LbPolicy::ClusterProvided as i32, "{name}");
        assert!(c.eds_cluster_config.is_none() && c.load_assignment.is_none());
        assert!(
            c.lb_config.is_none(),
            "a Kubernetes port's targetPort is no override"
        );
        assert!(
            c.common_lb_config
                .as_ref()
                .is_none_or(|l| l.locality_config_specifier.is_none()),
            "no locality weighting"
        );
        assert!(
            c.outlier_detection.is_some(),
            "outlier detection still applies"
        );
    }
    assert!(
        !names(&out.endpoints)
            .iter()
            .any(|n| n.ends_with("|db.shop.svc.cluster.local")),
        "no EDS for original destination clusters: {:?}",
        names(&out.endpoints)
    );
}

#[test]
fn headless_services_stay_eds_for_gateways_and_proxyless_clients() {
    for kind in [ProxyKind::Router, ProxyKind::Proxyless] {
        let services = vec![mk_kube("db", &[], &["10.1.0.5"])];
        let out = mk_served(services, &mk_yaml(LEAST_REQUEST), kind);
        let c: Cluster = decode(&out.clusters, DB);
        assert_eq!(cluster_kind(&c), Some(DiscoveryType::Eds), "{kind:?}");
        assert_ne!(c.lb_policy, LbPolicy::ClusterProvided as i32);
        assert!(names(&out.endpoints).contains(&DB), "{kind:?}");
    }
}

#[test]
fn a_service_entry_resolved_none_overrides_the_upstream_port() {
    let resources = mk_yaml(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec:
  hosts: ['*.ext.example.com']
  location: MESH_EXTERNAL
  resolution: NONE
  ports: [{number: 9000, name: tcp, protocol: TCP, targetPort: 9443}, {number: 9001, name: tcp2, protocol: TCP}]
",
    );
    let refs: Vec<&Resource> = resources.iter().collect();
    let services = ServiceEntryRegistry::from_resources(&refs).services();
    let out = mk_served(services, &resources, ProxyKind::Sidecar);
    let c: Cluster = decode(&out.clusters, "outbound|9000||*.ext.example.com");
    assert_eq!(cluster_kind(&c), Some(DiscoveryType::OriginalDst));
    let Some(LbConfig::OriginalDstLbConfig(lb)) = &c.lb_config else {
        panic!("no original destination config: {:?}", c.lb_config);
    };
    assert_eq!(
        lb.upstream_port_override.as_ref().map(|p| p.value),
        Some(9443)
    );
    let c: Cluster = decode(&out.clusters, "outbound|9001||*.ext.example.com");
    assert!(c.lb_config.is_none());
    // Without endpoints the entry keeps the whole port.
    let l: Listener = decode(&out.listeners, "0.0.0.0_9000");
    assert_eq!(l.filter_chains.len(), 1);
    assert!(l.filter_chains[0].filter_chain_match.is_none());
    assert_eq!(
        tcp_cluster(&l.filter_chains[0]),
        "outbound|9000||*.ext.example.com"
    );
    assert!(l.default_filter_chain.is_none());
}

/// `(prefixes, cluster)` of a listener's chains.
fn chains(l: &Listener) -> Vec<(Vec<String>, String)> {
    let prefixes = |c: &FilterChain| {
        c.filter_chain_match
            .iter()
            .flat_map(|m| &m.prefix_ranges)
            .map(|r| {
                format!(
                    "{}/{}",
                    r.address_prefix,
                    r.prefix_len.as_ref().map_or(0, |l| l.value)
                )
            })
            .collect()
    };
    l.filter_chains
        .iter()
        .map(|c| (prefixes(c), tcp_cluster(c)))
        .collect()
}

#[test]
fn headless_tcp_ports_match_their_endpoints_addresses() {
    let services = vec![
        // Shares 10.1.0.6 with db: the first in host order keeps it.
        mk_kube("cache", &[], &["10.1.0.6", "10.1.0.7"]),
        mk_kube(
            "db",
            &[],
            &["10.1.0.6", "fd00::5", "10.1.0.5", "db.example"],
        ),
        mk_kube("empty", &[], &[]),
        mk_kube("web", &["10.96.0.9"], &["10.1.0.9"]),
    ];
    let out = mk_served(services, &[], ProxyKind::Sidecar);
    let l: Listener = decode(&out.listeners, "0.0.0.0_5432");
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        chains(&l),
        [
            (
                s(&["10.1.0.6/32", "10.1.0.7/32"]),
                "outbound|5432||cache.shop.svc.cluster.local".to_string()
            ),
            (s(&["10.1.0.5/32", "fd00::5/128"]), DB.to_string()),
            (
                s(&["10.96.0.9/32"]),
                "outbound|5432||web.shop.svc.cluster.local".to_string()
            ),
        ],
        "endpoint IPs sorted, a shared one kept by the first, none for a service without endpoints"
    );
    let default = l.default_filter_chain.as_ref().expect("default chain");
    assert_eq!(tcp_cluster(default), PASSTHROUGH_CLUSTER);
}

#[test]
fn headless_http_ports_route_by_host_to_the_original_destination_cluster() {
    let out = mk_served(
        vec![mk_kube("db", &[], &["10.1.0.5"])],
        &[],
        ProxyKind::Sidecar,
    );
    let rc: RouteConfiguration = decode(&out.routes, "8080");
    let vh = rc
        .virtual_hosts
        .iter()
        .find(|v| v.domains.iter().any(|d| d == "db.shop.svc.cluster.local"))
        .expect("virtual host");
    let Some(Action::Route(ra)) = &vh.routes[0].action else {
        panic!("no route action");
    };
    let cluster = "outbound|8080||db.shop.svc.cluster.local";
    assert_eq!(
        ra.cluster_specifier,
        Some(ClusterSpecifier::Cluster(cluster.into()))
    );
    let c: Cluster = decode(&out.clusters, cluster);
    assert_eq!(cluster_kind(&c), Some(DiscoveryType::OriginalDst));
}

#[test]
fn validation_refuses_misshapen_original_destination_clusters() {
    let pack_cluster = |c: &Cluster| (c.name.clone(), pack(type_url::CLUSTER, c));
    let ok = Cluster {
        name: "od".into(),
        connect_timeout: Some(clusters::DEFAULT_CONNECT_TIMEOUT),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        ..Default::default()
    };
    let round_robin = Cluster {
        lb_policy: LbPolicy::RoundRobin as i32,
        ..ok.clone()
    };
    let with_assignment = Cluster {
        load_assignment: Some(Default::default()),
        ..ok.clone()
    };
    let eds_provided = Cluster {
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(Default::default()),
        ..ok.clone()
    };
    let check = |c: &Cluster| {
        validate::check(&EnvoyResources {
            clusters: vec![pack_cluster(c)],
            ..Default::default()
        })
        .into_iter()
        .filter(|v| matches!(v, validate::Violation::InvalidCluster { .. }))
        .count()
    };
    assert_eq!(check(&ok), 0);
    assert_eq!(check(&round_robin), 1);
    assert_eq!(check(&with_assignment), 1);
    assert_eq!(check(&eds_provided), 1);
}
