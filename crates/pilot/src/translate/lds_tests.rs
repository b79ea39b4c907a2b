//! Sidecar LDS: outbound and inbound listeners, mutual TLS, and validation of whole
//! per-proxy translations.

use mesh_api::envoy::envoy::{
    config::{
        cluster::v3::{
            Cluster,
            cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy},
        },
        core::v3::{address, socket_address::PortSpecifier, transport_socket},
        endpoint::v3::lb_endpoint::HostIdentifier,
        listener::v3::{Filter, FilterChain, FilterChainMatch, Listener, filter},
        route::v3::{route::Action, route_action::ClusterSpecifier as RouteCluster},
    },
    extensions::{
        filters::network::{
            http_connection_manager::v3::{
                HttpConnectionManager, http_connection_manager::RouteSpecifier, http_filter,
            },
            tcp_proxy::v3::{TcpProxy, tcp_proxy::ClusterSpecifier},
        },
        transport_sockets::tls::v3::{
            DownstreamTlsContext, common_tls_context::ValidationContextType,
        },
    },
};
use mesh_model::{
    ParseOptions, Resource, networking::Labels, parse_document_set, security::MtlsMode,
};
use prost::Message;

use super::{
    chains::{BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER, TRANSPORT_RAW, TRANSPORT_TLS},
    inbound::{VIRTUAL_INBOUND, inbound_cluster_name},
    mtls::{Mode, resolve},
    sidecar::VIRTUAL_OUTBOUND,
    *,
};
use crate::{
    model::{ServiceEntryRegistry, ServiceRegistry},
    proxy::{Proxy, ProxyKind},
};

pub(super) const BOOKINFO: [(&str, &str); 4] = [
    (
        "services.yaml",
        include_str!("../../../../examples/bookinfo/services.yaml"),
    ),
    (
        "traffic.yaml",
        include_str!("../../../../examples/bookinfo/traffic.yaml"),
    ),
    (
        "security.yaml",
        include_str!("../../../../examples/bookinfo/security.yaml"),
    ),
    (
        "policy.yaml",
        include_str!("../../../../examples/bookinfo/policy.yaml"),
    ),
];

pub(super) fn mk_resources(files: &[(&str, &str)]) -> Vec<Resource> {
    let mut out = Vec::new();
    for (name, text) in files {
        let set = parse_document_set(name, text, &ParseOptions::default());
        assert!(set.rejected.is_empty(), "{name}: {:?}", set.rejected);
        out.extend(set.accepted);
    }
    out
}

pub(super) fn mk_yaml(text: &str) -> Vec<Resource> {
    mk_resources(&[("t.yaml", text)])
}

pub(super) fn mk_ctx(resources: &[Resource]) -> MeshContext {
    let refs: Vec<&Resource> = resources.iter().collect();
    MeshContext::new(
        ServiceEntryRegistry::from_resources(&refs).services(),
        &refs,
    )
}

pub(super) fn mk_labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn mk_proxy(kind: ProxyKind, ns: &str, labels: &[(&str, &str)]) -> Proxy {
    Proxy::new(kind, ns, mk_labels(labels))
}

/// The mesh-wide translation merged with `proxy`'s own resources, as served to it.
pub(super) fn mk_full(resources: &[Resource], proxy: &Proxy) -> EnvoyResources {
    let refs: Vec<&Resource> = resources.iter().collect();
    let mut out = translate(&refs);
    let own = proxy_resources(&mk_ctx(resources), proxy);
    out.listeners = own.listeners;
    out.clusters.extend(own.clusters);
    out.routes.extend(own.routes);
    out.clusters.sort_by(|a, b| a.0.cmp(&b.0));
    out.routes.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub(super) fn decode<M: Message + Default>(list: &[NamedResource], name: &str) -> M {
    let (_, any) = list
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no resource {name} in {:?}", names(list)));
    M::decode(any.value.as_slice()).expect("decodes")
}

pub(super) fn names(list: &[NamedResource]) -> Vec<&str> {
    list.iter().map(|(n, _)| n.as_str()).collect()
}

pub(super) fn listener(resources: &[Resource], proxy: &Proxy, name: &str) -> Listener {
    decode(&proxy_resources(&mk_ctx(resources), proxy).listeners, name)
}

fn typed(f: &Filter) -> &mesh_api::envoy::google::protobuf::Any {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => any,
        other => panic!("untyped filter {other:?}"),
    }
}

pub(super) fn hcm_of(chain: &FilterChain) -> HttpConnectionManager {
    let f = chain
        .filters
        .iter()
        .find(|f| f.name == "envoy.filters.network.http_connection_manager")
        .expect("hcm filter");
    HttpConnectionManager::decode(typed(f).value.as_slice()).expect("hcm")
}

pub(super) fn tcp_proxy_of(chain: &FilterChain) -> TcpProxy {
    let f = chain.filters.last().expect("filters");
    assert_eq!(f.name, "envoy.filters.network.tcp_proxy");
    TcpProxy::decode(typed(f).value.as_slice()).expect("tcp proxy")
}

pub(super) fn tcp_cluster(chain: &FilterChain) -> String {
    match tcp_proxy_of(chain).cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => c,
        other => panic!("not a single cluster: {other:?}"),
    }
}

pub(super) fn tls_context(chain: &FilterChain) -> DownstreamTlsContext {
    let ts = chain.transport_socket.as_ref().expect("transport socket");
    assert_eq!(ts.name, "envoy.transport_sockets.tls");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        panic!("untyped transport socket")
    };
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
    );
    DownstreamTlsContext::decode(any.value.as_slice()).expect("tls context")
}

pub(super) fn http_filter_names(hcm: &HttpConnectionManager) -> Vec<&str> {
    hcm.http_filters.iter().map(|f| f.name.as_str()).collect()
}

fn port_of(l: &Listener) -> u32 {
    match l.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => match sa.port_specifier {
            Some(PortSpecifier::PortValue(p)) => p,
            _ => 0,
        },
        _ => 0,
    }
}

fn chain_for_port(l: &Listener, port: u32, transport: &str) -> FilterChain {
    l.filter_chains
        .iter()
        .find(|c| {
            c.filter_chain_match.as_ref().is_some_and(|m| {
                m.destination_port.as_ref().map(|p| p.value) == Some(port)
                    && m.transport_protocol == transport
            })
        })
        .cloned()
        .unwrap_or_else(|| panic!("no chain for {port}/{transport:?}"))
}

fn chains_for_port(l: &Listener, port: u32) -> Vec<&FilterChain> {
    l.filter_chains
        .iter()
        .filter(|c| {
            c.filter_chain_match
                .as_ref()
                .and_then(|m| m.destination_port.as_ref())
                .map(|p| p.value)
                == Some(port)
        })
        .collect()
}

fn sidecar() -> Proxy {
    mk_proxy(ProxyKind::Sidecar, "bookinfo", &[("app", "productpage")])
}

const TCP_ENTRIES: &str = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: db-a\n  namespace: data\nspec:\n  hosts: [a.db.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports:\n  - number: 3306\n    name: tcp\n    protocol: TCP\n---\napiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: db-b\n  namespace: data\nspec:\n  hosts: [b.db.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports:\n  - number: 3306\n    name: tcp\n    protocol: TCP\n";

#[test]
fn virtual_outbound_passes_through_unless_registry_only() {
    let resources = mk_resources(&BOOKINFO);
    let l = listener(&resources, &sidecar(), VIRTUAL_OUTBOUND);
    assert_eq!(port_of(&l), 15001);
    assert_eq!(l.use_original_dst.map(|b| b.value), Some(true));
    let default = l.default_filter_chain.as_ref().expect("default chain");
    assert_eq!(tcp_cluster(default), PASSTHROUGH_CLUSTER);

    let mut with_policy = resources.clone();
    with_policy.extend(mk_yaml(
        "apiVersion: networking.istio.io/v1beta1\nkind: Sidecar\nmetadata:\n  name: default\n  namespace: bookinfo\nspec:\n  egress:\n  - hosts: [\"*/*\"]\n  outboundTrafficPolicy:\n    mode: REGISTRY_ONLY\n",
    ));
    let l = listener(&with_policy, &sidecar(), VIRTUAL_OUTBOUND);
    let default = l.default_filter_chain.as_ref().expect("default chain");
    assert_eq!(tcp_cluster(default), BLACKHOLE_CLUSTER);
    // Another namespace is not covered by bookinfo's Sidecar.
    let other = mk_proxy(ProxyKind::Sidecar, "shop", &[]);
    let l = listener(&with_policy, &other, VIRTUAL_OUTBOUND);
    assert_eq!(
        tcp_cluster(l.default_filter_chain.as_ref().expect("default")),
        PASSTHROUGH_CLUSTER
    );
}

#[test]
fn passthrough_and_blackhole_clusters() {
    let out = proxy_resources(&mk_ctx(&mk_resources(&BOOKINFO)), &sidecar());
    let pass: Cluster = decode(&out.clusters, PASSTHROUGH_CLUSTER);
    assert_eq!(
        pass.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32
        ))
    );
    assert_eq!(pass.lb_policy, LbPolicy::ClusterProvided as i32);
    let hole: Cluster = decode(&out.clusters, BLACKHOLE_CLUSTER);
    assert_eq!(
        hole.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32))
    );
    assert!(
        hole.load_assignment
            .as_ref()
            .is_none_or(|la| la.endpoints.is_empty())
    );
}

#[test]
fn http_port_listener_reads_rds_with_fault_cors_router() {
    let l = listener(&mk_resources(&BOOKINFO), &sidecar(), "0.0.0.0_9080");
    assert_eq!(port_of(&l), 9080);
    assert_eq!(l.bind_to_port.map(|b| b.value), Some(false));
    assert_eq!(l.filter_chains.len(), 1);
    let hcm = hcm_of(&l.filter_chains[0]);
    let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
        panic!("no rds")
    };
    assert_eq!(rds.route_config_name, "9080");
    assert_eq!(rds.config_source, Some(ads_config_source()));
    assert_eq!(
        http_filter_names(&hcm),
        [
            "envoy.filters.http.fault",
            "envoy.filters.http.cors",
            "envoy.filters.http.router"
        ]
    );
    let Some(http_filter::ConfigType::TypedConfig(cors)) = &hcm.http_filters[1].config_type else {
        panic!("untyped cors")
    };
    assert_eq!(
        cors.type_url,
        "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
    );
    // Proxyless clients keep the filters they know.
    let refs: Vec<Resource> = mk_resources(&BOOKINFO);
    let mesh = translate(&refs.iter().collect::<Vec<_>>());
    let api: Listener = decode(&mesh.listeners, "reviews.bookinfo.svc.cluster.local:9080");
    let any = api.api_listener.and_then(|a| a.api_listener).expect("api");
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
    assert_eq!(
        http_filter_names(&hcm),
        ["envoy.filters.http.fault", "envoy.filters.http.router"]
    );
}

#[test]
fn tcp_services_on_one_port_without_addresses_keep_the_first() {
    let resources = mk_yaml(TCP_ENTRIES);
    let l = listener(&resources, &sidecar(), "0.0.0.0_3306");
    assert_eq!(l.filter_chains.len(), 1);
    assert_eq!(
        tcp_cluster(&l.filter_chains[0]),
        "outbound|3306||a.db.example.com"
    );
    // The first chain catches everything, so no default chain is needed.
    assert!(l.default_filter_chain.is_none());
    let full = mk_full(&resources, &sidecar());
    assert_eq!(validate::check(&full), Vec::new());
    assert_eq!(validate::check_references(&full), Vec::new());
}

#[test]
fn tcp_services_with_addresses_match_by_destination_ip() {
    let text = TCP_ENTRIES
        .replace(
            "  hosts: [a.db.example.com]\n",
            "  hosts: [a.db.example.com]\n  addresses: [10.1.0.1]\n",
        )
        .replace(
            "  hosts: [b.db.example.com]\n",
            "  hosts: [b.db.example.com]\n  addresses: [10.2.0.0/16]\n",
        )
        .replace("resolution: DNS", "resolution: NONE");
    let resources = mk_yaml(&text);
    let l = listener(&resources, &sidecar(), "0.0.0.0_3306");
    assert_eq!(l.filter_chains.len(), 2);
    for (chain, (prefix, len, host)) in l.filter_chains.iter().zip([
        ("10.1.0.1", 32, "a.db.example.com"),
        ("10.2.0.0", 16, "b.db.example.com"),
    ]) {
        let m = chain.filter_chain_match.as_ref().expect("match");
        assert_eq!(m.prefix_ranges.len(), 1);
        assert_eq!(m.prefix_ranges[0].address_prefix, prefix);
        assert_eq!(
            m.prefix_ranges[0].prefix_len.as_ref().map(|l| l.value),
            Some(len)
        );
        assert_eq!(tcp_cluster(chain), format!("outbound|3306||{host}"));
    }
    // Other destinations on the port pass through.
    assert_eq!(
        tcp_cluster(l.default_filter_chain.as_ref().expect("default")),
        PASSTHROUGH_CLUSTER
    );
    assert_eq!(
        validate::check(&mk_full(&resources, &sidecar())),
        Vec::new()
    );
}

#[test]
fn tls_services_match_by_sni_and_tls_routes_split_by_weight() {
    let text = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: api\n  namespace: ext\nspec:\n  hosts: [api.example.com, web.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports:\n  - number: 443\n    name: tls\n    protocol: TLS\n---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata:\n  name: api\n  namespace: ext\nspec:\n  host: api.example.com\n  subsets:\n  - name: a\n    labels: {v: a}\n  - name: b\n    labels: {v: b}\n---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: api\n  namespace: ext\nspec:\n  hosts: [api.example.com]\n  tls:\n  - match:\n    - port: 443\n      sniHosts: [api.example.com]\n    route:\n    - destination:\n        host: api.example.com\n        subset: a\n      weight: 75\n    - destination:\n        host: api.example.com\n        subset: b\n      weight: 25\n";
    let resources = mk_yaml(text);
    let l = listener(&resources, &sidecar(), "0.0.0.0_443");
    assert!(
        l.listener_filters
            .iter()
            .any(|f| f.name == "envoy.filters.listener.tls_inspector")
    );
    let by_sni = |name: &str| {
        l.filter_chains
            .iter()
            .find(|c| {
                c.filter_chain_match
                    .as_ref()
                    .is_some_and(|m| m.server_names == [name])
            })
            .unwrap_or_else(|| panic!("no chain for {name}"))
    };
    let Some(ClusterSpecifier::WeightedClusters(w)) =
        tcp_proxy_of(by_sni("api.example.com")).cluster_specifier
    else {
        panic!("not weighted")
    };
    let split: Vec<(&str, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight))
        .collect();
    assert_eq!(
        split,
        [
            ("outbound|443|a|api.example.com", 75),
            ("outbound|443|b|api.example.com", 25)
        ]
    );
    assert_eq!(
        tcp_cluster(by_sni("web.example.com")),
        "outbound|443||web.example.com"
    );
    // The VirtualService route took api.example.com: no second chain for it.
    assert_eq!(l.filter_chains.len(), 2);
    let full = mk_full(&resources, &sidecar());
    assert_eq!(validate::check(&full), Vec::new());
    assert_eq!(validate::check_references(&full), Vec::new());
}

#[test]
fn tcp_route_targets_weighted_subsets() {
    let text = format!(
        "{TCP_ENTRIES}---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: a\n  namespace: data\nspec:\n  hosts: [a.db.example.com]\n  tcp:\n  - match:\n    - port: 3306\n    route:\n    - destination:\n        host: a.db.example.com\n        subset: primary\n      weight: 80\n    - destination:\n        host: b.db.example.com\n      weight: 20\n"
    );
    let l = listener(&mk_yaml(&text), &sidecar(), "0.0.0.0_3306");
    let Some(ClusterSpecifier::WeightedClusters(w)) =
        tcp_proxy_of(&l.filter_chains[0]).cluster_specifier
    else {
        panic!("not weighted")
    };
    let split: Vec<(&str, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight))
        .collect();
    assert_eq!(
        split,
        [
            ("outbound|3306|primary|a.db.example.com", 80),
            ("outbound|3306||b.db.example.com", 20)
        ]
    );
}

#[test]
fn sidecar_egress_hosts_narrow_outbound_listeners() {
    let mut resources = mk_resources(&BOOKINFO);
    resources.extend(mk_yaml(TCP_ENTRIES));
    let all = proxy_resources(&mk_ctx(&resources), &sidecar());
    assert!(names(&all.listeners).contains(&"0.0.0.0_3306"));
    resources.extend(mk_yaml(
        "apiVersion: networking.istio.io/v1beta1\nkind: Sidecar\nmetadata:\n  name: default\n  namespace: bookinfo\nspec:\n  egress:\n  - hosts: [\"./*\"]\n",
    ));
    let narrowed = proxy_resources(&mk_ctx(&resources), &sidecar());
    assert_eq!(
        names(&narrowed.listeners),
        ["0.0.0.0_9080", VIRTUAL_INBOUND, VIRTUAL_OUTBOUND]
    );
}

const STRICT_NS: &str = "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: bookinfo\nspec:\n  mtls:\n    mode: STRICT\n";

fn ratings() -> Proxy {
    mk_proxy(
        ProxyKind::Sidecar,
        "bookinfo",
        &[("app", "ratings"), ("version", "v1")],
    )
}

#[test]
fn strict_namespace_policy_requires_client_certificates() {
    let mut resources = mk_resources(&BOOKINFO[..3]);
    resources.retain(|r| r.kind() != mesh_model::Kind::PeerAuthentication);
    resources.extend(mk_yaml(STRICT_NS));
    let l = listener(&resources, &ratings(), VIRTUAL_INBOUND);
    assert_eq!(port_of(&l), 15006);
    assert_eq!(l.use_original_dst.map(|b| b.value), Some(true));
    assert!(
        l.listener_filters
            .iter()
            .any(|f| f.name == "envoy.filters.listener.tls_inspector")
    );
    // Ratings' endpoint serves 9080 on 19082: traffic arrives there.
    let chains = chains_for_port(&l, 19082);
    assert_eq!(chains.len(), 1, "STRICT has no plain text chain");
    let chain = chains[0];
    assert_eq!(
        chain
            .filter_chain_match
            .as_ref()
            .map(|m| m.transport_protocol.as_str()),
        Some(TRANSPORT_TLS)
    );
    let tls = tls_context(chain);
    assert_eq!(tls.require_client_certificate.map(|b| b.value), Some(true));
    let common = tls.common_tls_context.expect("common");
    assert_eq!(common.tls_certificate_sds_secret_configs.len(), 1);
    let cert = &common.tls_certificate_sds_secret_configs[0];
    assert_eq!(cert.name, "default");
    assert_eq!(cert.sds_config, Some(ads_config_source()));
    let Some(ValidationContextType::ValidationContextSdsSecretConfig(ca)) =
        &common.validation_context_type
    else {
        panic!("no SDS validation context")
    };
    assert_eq!(ca.name, "ROOTCA");
    assert_eq!(ca.sds_config, Some(ads_config_source()));
    // HTTP: an inline route to the inbound cluster, router last.
    let hcm = hcm_of(chain);
    let Some(RouteSpecifier::RouteConfig(rc)) = &hcm.route_specifier else {
        panic!("no inline routes")
    };
    let Some(Action::Route(ra)) = &rc.virtual_hosts[0].routes[0].action else {
        panic!("no route action")
    };
    assert_eq!(
        ra.cluster_specifier,
        Some(RouteCluster::Cluster("inbound|9080||".to_string()))
    );
    assert_eq!(
        http_filter_names(&hcm).last(),
        Some(&"envoy.filters.http.router")
    );
    // Passthrough for undeclared ports also requires mutual TLS.
    let pass: Vec<&FilterChain> = l
        .filter_chains
        .iter()
        .filter(|c| {
            c.filter_chain_match
                .as_ref()
                .is_some_and(|m| m.destination_port.is_none())
        })
        .collect();
    assert_eq!(pass.len(), 1);
    assert!(pass[0].transport_socket.is_some());
}

#[test]
fn permissive_gives_tls_and_plaintext_chains_and_disable_plaintext_only() {
    let resources = mk_resources(&BOOKINFO);
    let l = listener(&resources, &ratings(), VIRTUAL_INBOUND);
    let tls = chain_for_port(&l, 19082, TRANSPORT_TLS);
    assert!(tls.transport_socket.is_some());
    let plain = chain_for_port(&l, 19082, TRANSPORT_RAW);
    assert!(plain.transport_socket.is_none());
    assert_eq!(chains_for_port(&l, 19082).len(), 2);

    let mut disabled = resources.clone();
    disabled.extend(mk_yaml(
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: ratings\n  namespace: bookinfo\nspec:\n  selector:\n    matchLabels: {app: ratings}\n  mtls:\n    mode: STRICT\n  portLevelMtls:\n    19082:\n      mode: DISABLE\n",
    ));
    let l = listener(&disabled, &ratings(), VIRTUAL_INBOUND);
    let chains = chains_for_port(&l, 19082);
    assert_eq!(chains.len(), 1);
    assert!(chains[0].transport_socket.is_none());
    assert_eq!(
        chains[0]
            .filter_chain_match
            .as_ref()
            .map(|m| m.transport_protocol.as_str()),
        Some("")
    );
}

#[test]
fn inbound_clusters_are_static_to_the_application_port() {
    let out = proxy_resources(&mk_ctx(&mk_resources(&BOOKINFO)), &ratings());
    let c: Cluster = decode(&out.clusters, &inbound_cluster_name(9080));
    assert_eq!(
        c.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32))
    );
    let la = c.load_assignment.expect("load assignment");
    let Some(HostIdentifier::Endpoint(ep)) = &la.endpoints[0].lb_endpoints[0].host_identifier
    else {
        panic!("no endpoint")
    };
    let Some(address::Address::SocketAddress(sa)) =
        ep.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        panic!("no socket address")
    };
    assert_eq!(sa.address, "127.0.0.1");
    assert_eq!(sa.port_specifier, Some(PortSpecifier::PortValue(19082)));
    // A workload that is no endpoint of any service serves nothing declared.
    let other = proxy_resources(&mk_ctx(&mk_resources(&BOOKINFO)), &sidecar());
    assert!(
        !names(&other.clusters)
            .iter()
            .any(|n| n.starts_with("inbound|"))
    );
}

#[test]
fn workload_selector_and_sidecar_ingress_declare_inbound_ports() {
    let text = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: vm\n  namespace: apps\nspec:\n  hosts: [vm.apps.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  workloadSelector:\n    labels: {app: vm}\n  ports:\n  - number: 5432\n    name: tcp-db\n    protocol: TCP\n    targetPort: 15432\n";
    let resources = mk_yaml(text);
    let vm = mk_proxy(ProxyKind::Sidecar, "apps", &[("app", "vm")]);
    let l = listener(&resources, &vm, VIRTUAL_INBOUND);
    let chain = chain_for_port(&l, 15432, TRANSPORT_RAW);
    assert_eq!(tcp_cluster(&chain), "inbound|5432||");

    let mut with_ingress = resources.clone();
    with_ingress.extend(mk_yaml(
        "apiVersion: networking.istio.io/v1beta1\nkind: Sidecar\nmetadata:\n  name: vm\n  namespace: apps\nspec:\n  workloadSelector:\n    labels: {app: vm}\n  ingress:\n  - port:\n      number: 8443\n      protocol: HTTP\n      name: http\n    defaultEndpoint: 127.0.0.1:8080\n  egress:\n  - hosts: [\"*/*\"]\n",
    ));
    let out = proxy_resources(&mk_ctx(&with_ingress), &vm);
    assert!(!names(&out.clusters).contains(&"inbound|5432||"));
    let c: Cluster = decode(&out.clusters, "inbound|8443||");
    let la = c.load_assignment.expect("la");
    let Some(HostIdentifier::Endpoint(ep)) = &la.endpoints[0].lb_endpoints[0].host_identifier
    else {
        panic!("no endpoint")
    };
    let Some(address::Address::SocketAddress(sa)) =
        ep.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        panic!("no socket address")
    };
    assert_eq!(sa.port_specifier, Some(PortSpecifier::PortValue(8080)));
    let l: Listener = decode(&out.listeners, VIRTUAL_INBOUND);
    hcm_of(&chain_for_port(&l, 8443, TRANSPORT_RAW));
}

fn mk_pa(
    ns: &str,
    name: &str,
    selector: Option<&str>,
    mode: Option<MtlsMode>,
) -> NamedSpec<mesh_model::security::PeerAuthentication> {
    use mesh_model::{security::*, selector::WorkloadSelector};
    NamedSpec {
        namespace: ns.to_string(),
        name: name.to_string(),
        spec: PeerAuthentication {
            selector: selector.map(|app| WorkloadSelector {
                match_labels: mk_labels(&[("app", app)]),
            }),
            mtls: Some(MutualTls { mode }),
            port_level_mtls: Default::default(),
        },
    }
}

#[test]
fn peer_authentication_precedence() {
    let proxy = mk_proxy(ProxyKind::Sidecar, "ns", &[("app", "a")]);
    let mesh = mk_pa(ROOT_NAMESPACE, "default", None, Some(MtlsMode::Strict));
    let ns = mk_pa("ns", "default", None, Some(MtlsMode::Disable));
    let workload = mk_pa("ns", "a", Some("a"), Some(MtlsMode::Permissive));
    let unset = mk_pa("ns", "a", Some("a"), Some(MtlsMode::Unset));
    let other = mk_pa("ns", "b", Some("b"), Some(MtlsMode::Strict));
    let elsewhere = mk_pa("other", "default", None, Some(MtlsMode::Disable));
    let mode = |list: Vec<&NamedSpec<_>>| {
        resolve(&list.into_iter().cloned().collect::<Vec<_>>(), &proxy).workload
    };
    assert_eq!(mode(vec![]), Mode::Permissive);
    assert_eq!(mode(vec![&mesh]), Mode::Strict);
    assert_eq!(mode(vec![&mesh, &ns]), Mode::Disable);
    assert_eq!(mode(vec![&mesh, &ns, &workload]), Mode::Permissive);
    assert_eq!(
        mode(vec![&mesh, &ns, &unset]),
        Mode::Disable,
        "UNSET inherits"
    );
    assert_eq!(
        mode(vec![&mesh, &other]),
        Mode::Strict,
        "selector not matching"
    );
    assert_eq!(
        mode(vec![&mesh, &elsewhere]),
        Mode::Strict,
        "other namespace"
    );

    let mut ports = mk_pa("ns", "a", Some("a"), Some(MtlsMode::Strict));
    ports.spec.port_level_mtls.insert(
        8080,
        mesh_model::security::MutualTls {
            mode: Some(MtlsMode::Disable),
        },
    );
    ports.spec.port_level_mtls.insert(
        9090,
        mesh_model::security::MutualTls {
            mode: Some(MtlsMode::Unset),
        },
    );
    let settings = resolve(&[ports], &proxy);
    assert_eq!(settings.for_port(8080), Mode::Disable);
    assert_eq!(settings.for_port(9090), Mode::Strict);
    assert_eq!(settings.for_port(1), Mode::Strict);
}

#[test]
fn bookinfo_translations_pass_envoy_rules_for_every_kind_of_proxy() {
    let resources = mk_resources(&BOOKINFO);
    for proxy in [
        sidecar(),
        ratings(),
        mk_proxy(
            ProxyKind::Sidecar,
            "bookinfo",
            &[("app", "reviews"), ("version", "v3")],
        ),
        mk_proxy(
            ProxyKind::Router,
            "istio-system",
            &[("istio", "ingressgateway")],
        ),
        mk_proxy(ProxyKind::Proxyless, "bookinfo", &[]),
    ] {
        let full = mk_full(&resources, &proxy);
        assert_eq!(validate::check(&full), Vec::new(), "{proxy:?}");
        assert_eq!(validate::check_references(&full), Vec::new(), "{proxy:?}");
    }
    assert_eq!(
        proxy_resources(
            &mk_ctx(&resources),
            &mk_proxy(ProxyKind::Proxyless, "bookinfo", &[])
        ),
        ProxyResources::default()
    );
}

#[test]
fn proxy_resources_are_deterministic_and_order_independent() {
    let mut resources = mk_resources(&BOOKINFO);
    resources.extend(mk_yaml(TCP_ENTRIES));
    for proxy in [
        ratings(),
        mk_proxy(
            ProxyKind::Router,
            "istio-system",
            &[("istio", "ingressgateway")],
        ),
    ] {
        let a = proxy_resources(&mk_ctx(&resources), &proxy);
        let b = proxy_resources(&mk_ctx(&resources), &proxy);
        assert_eq!(a, b);
        let mut reversed = resources.clone();
        reversed.reverse();
        assert_eq!(a, proxy_resources(&mk_ctx(&reversed), &proxy));
        for list in [&a.listeners, &a.clusters, &a.routes] {
            let mut sorted = names(list);
            sorted.sort();
            assert_eq!(names(list), sorted);
        }
    }
}

#[test]
fn validator_catches_overlapping_chains_bad_tls_and_missing_clusters() {
    let resources = mk_yaml(TCP_ENTRIES);
    let mut full = mk_full(&resources, &sidecar());
    let mut l: Listener = decode(&full.listeners, "0.0.0.0_3306");
    let mut dup = l.filter_chains[0].clone();
    dup.name = "dup".to_string();
    // Naming the missing cluster also breaks the reference rule.
    let mut tp = tcp_proxy_of(&dup);
    tp.cluster_specifier = Some(ClusterSpecifier::Cluster("outbound|1||nowhere".into()));
    dup.filters = vec![super::chains::tcp_proxy_filter(
        "x",
        tp.cluster_specifier.clone().expect("set"),
    )];
    let mut tls = super::mtls::istio_mutual_tls_context(&[]);
    if let Some(c) = tls.common_tls_context.as_mut() {
        c.tls_certificate_sds_secret_configs[0].name.clear();
    }
    dup.transport_socket = Some(super::chains::tls_transport_socket(&tls));
    l.filter_chains.push(dup);
    l.filter_chains.push(FilterChain {
        name: "no-terminal".into(),
        filter_chain_match: Some(FilterChainMatch {
            server_names: vec!["x.example.com".into()],
            ..Default::default()
        }),
        ..Default::default()
    });
    let idx = full
        .listeners
        .iter()
        .position(|(n, _)| n == "0.0.0.0_3306")
        .expect("listener");
    full.listeners[idx].1 = pack(type_url::LISTENER, &l);
    let v = validate::check(&full);
    assert!(v.iter().any(|v| matches!(v, validate::Violation::OverlappingFilterChains { chain, .. } if chain == "dup")), "{v:?}");
    assert!(
        v.iter()
            .any(|v| matches!(v, validate::Violation::InvalidTls { .. })),
        "{v:?}"
    );
    assert!(v.iter().any(|v| matches!(v, validate::Violation::InvalidFilter { chain, .. } if chain == "no-terminal")), "{v:?}");
    let r = validate::check_references(&full);
    assert_eq!(
        r,
        [validate::Violation::MissingCluster {
            resource: "0.0.0.0_3306".into(),
            cluster: "outbound|1||nowhere".into()
        }]
    );
}
