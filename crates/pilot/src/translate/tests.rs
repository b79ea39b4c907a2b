use mesh_api::envoy::envoy::{
    config::{
        cluster::v3::{
            Cluster,
            cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy},
        },
        core::v3::{address, socket_address::PortSpecifier},
        endpoint::v3::{ClusterLoadAssignment, lb_endpoint::HostIdentifier},
        listener::v3::Listener,
        route::v3::{
            Route, RouteConfiguration, route::Action, route_action::ClusterSpecifier,
            route_match::PathSpecifier,
        },
    },
    extensions::filters::{
        http::fault::v3::{HttpFault, fault_abort::ErrorType},
        network::http_connection_manager::v3::{
            HttpConnectionManager, http_connection_manager::RouteSpecifier,
        },
    },
};
use mesh_model::{ParseOptions, Resource, parse_document_set};
use proptest::prelude::*;
use prost::Message;

use super::*;

const BOOKINFO: [(&str, &str); 4] = [
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

const REVIEWS: &str = "reviews.bookinfo.svc.cluster.local";
const RATINGS: &str = "ratings.bookinfo.svc.cluster.local";

fn mk_resources(files: &[(&str, &str)]) -> Vec<Resource> {
    let mut out = Vec::new();
    for (name, text) in files {
        let set = parse_document_set(name, text, &ParseOptions::default());
        assert!(set.rejected.is_empty(), "{name}: {:?}", set.rejected);
        out.extend(set.accepted);
    }
    out
}

fn mk_translate(resources: &[Resource]) -> EnvoyResources {
    let refs: Vec<&Resource> = resources.iter().collect();
    translate(&refs)
}

/// Translates for a sidecar in `default` (Envoy accepts every cluster type and policy).
fn mk_translate_sidecar(resources: &[Resource]) -> EnvoyResources {
    let refs: Vec<&Resource> = resources.iter().collect();
    let registry = ServiceEntryRegistry::from_resources(&refs);
    let proxy = Proxy::new(ProxyKind::Sidecar, DEFAULT_NAMESPACE, Labels::new());
    translate_for(&registry, &refs, &proxy)
}

fn mk_bookinfo() -> Vec<Resource> {
    mk_resources(&BOOKINFO)
}

fn mk_yaml(text: &str) -> Vec<Resource> {
    mk_resources(&[("t.yaml", text)])
}

/// A ServiceEntry in `ns` with one HTTP port 80 named `http` and the given endpoint
/// YAML lines (already indented as list items).
fn mk_service_entry(ns: &str, name: &str, host: &str, resolution: &str, endpoints: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: {resolution}\n  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n{endpoints}---\n"
    )
}

fn decode<M: Message + Default>(list: &[NamedResource], name: &str) -> M {
    let (_, any) = list
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no resource {name}"));
    M::decode(any.value.as_slice()).expect("decodes")
}

fn names(list: &[NamedResource]) -> Vec<&str> {
    list.iter().map(|(n, _)| n.as_str()).collect()
}

fn vhost_routes(rc: &RouteConfiguration, vhost: &str) -> Vec<Route> {
    rc.virtual_hosts
        .iter()
        .find(|v| v.name == vhost)
        .unwrap_or_else(|| panic!("no vhost {vhost}"))
        .routes
        .clone()
}

fn route_action(route: &Route) -> &mesh_api::envoy::envoy::config::route::v3::RouteAction {
    match &route.action {
        Some(Action::Route(ra)) => ra,
        other => panic!("not a route action: {other:?}"),
    }
}

#[test]
fn bookinfo_cluster_names() {
    let out = mk_translate(&mk_bookinfo());
    let expected = [
        "outbound|9080||details.bookinfo.svc.cluster.local",
        "outbound|9080||productpage.bookinfo.svc.cluster.local",
        "outbound|9080||ratings.bookinfo.svc.cluster.local",
        "outbound|9080||reviews.bookinfo.svc.cluster.local",
        "outbound|9080|v1|reviews.bookinfo.svc.cluster.local",
        "outbound|9080|v2|reviews.bookinfo.svc.cluster.local",
        "outbound|9080|v3|reviews.bookinfo.svc.cluster.local",
    ];
    // Byte order: `|` sorts after letters, so subset clusters come first.
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(names(&out.clusters), expected);
    assert_eq!(names(&out.endpoints), expected);
    assert_eq!(names(&out.routes), ["9080"]);
    assert_eq!(
        names(&out.listeners),
        [
            "details.bookinfo.svc.cluster.local:9080",
            "productpage.bookinfo.svc.cluster.local:9080",
            "ratings.bookinfo.svc.cluster.local:9080",
            "reviews.bookinfo.svc.cluster.local:9080",
        ]
    );
}

#[test]
fn bookinfo_clusters_are_eds_over_ads_with_policies() {
    let out = mk_translate(&mk_bookinfo());
    let reviews: Cluster = decode(
        &out.clusters,
        "outbound|9080|v1|reviews.bookinfo.svc.cluster.local",
    );
    assert_eq!(
        reviews.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
    );
    let eds = reviews.eds_cluster_config.expect("eds config");
    assert_eq!(eds.service_name, reviews.name);
    assert_eq!(eds.eds_config, Some(ads_config_source()));
    assert_eq!(reviews.connect_timeout.map(|d| d.seconds), Some(10));
    assert_eq!(reviews.lb_policy, LbPolicy::RoundRobin as i32);

    let ratings: Cluster = decode(
        &out.clusters,
        "outbound|9080||ratings.bookinfo.svc.cluster.local",
    );
    let t = &ratings
        .circuit_breakers
        .expect("circuit breakers")
        .thresholds[0];
    assert_eq!(t.max_connections.map(|v| v.value), Some(100));
    assert_eq!(t.max_pending_requests.map(|v| v.value), Some(10));
    let od = ratings.outlier_detection.expect("outlier detection");
    assert_eq!(od.consecutive_5xx.map(|v| v.value), Some(5));
    assert_eq!(od.interval.map(|d| d.seconds), Some(10));
    assert_eq!(od.base_ejection_time.map(|d| d.seconds), Some(30));
    assert_eq!(od.max_ejection_percent.map(|v| v.value), Some(50));
}

#[test]
fn bookinfo_endpoints_have_locality_weight_and_subset_filtering() {
    let out = mk_translate(&mk_bookinfo());
    for (name, _) in &out.endpoints {
        let cla: ClusterLoadAssignment = decode(&out.endpoints, name);
        assert!(!cla.endpoints.is_empty(), "{name}");
        for l in &cla.endpoints {
            assert!(l.locality.is_some(), "{name}");
            assert!(
                l.load_balancing_weight.is_some_and(|w| w.value >= 1),
                "{name}"
            );
            for e in &l.lb_endpoints {
                assert_eq!(e.load_balancing_weight.map(|w| w.value), Some(1));
            }
        }
    }
    let all: ClusterLoadAssignment = decode(&out.endpoints, &cluster_name(9080, "", REVIEWS));
    assert_eq!(all.endpoints[0].lb_endpoints.len(), 3);
    let v3: ClusterLoadAssignment = decode(&out.endpoints, &cluster_name(9080, "v3", REVIEWS));
    let eps = &v3.endpoints[0].lb_endpoints;
    assert_eq!(eps.len(), 1);
    let Some(HostIdentifier::Endpoint(ep)) = &eps[0].host_identifier else {
        panic!("no endpoint")
    };
    let Some(address::Address::SocketAddress(sa)) =
        ep.address.as_ref().and_then(|a| a.address.clone())
    else {
        panic!("no socket address")
    };
    assert_eq!(sa.address, "127.0.0.3");
    assert_eq!(sa.port_specifier, Some(PortSpecifier::PortValue(19081)));
}

#[test]
fn bookinfo_reviews_route_splits_90_10() {
    let out = mk_translate(&mk_bookinfo());
    let rc: RouteConfiguration = decode(&out.routes, "9080");
    let routes = vhost_routes(&rc, &format!("{REVIEWS}:9080"));
    assert_eq!(routes.len(), 2);
    // First: end-user: jason goes to v2.
    let m = routes[0].r#match.as_ref().expect("match");
    assert_eq!(m.headers[0].name, "end-user");
    assert_eq!(
        route_action(&routes[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster(cluster_name(9080, "v2", REVIEWS)))
    );
    // Then the canary split.
    let Some(ClusterSpecifier::WeightedClusters(wc)) = &route_action(&routes[1]).cluster_specifier
    else {
        panic!("not weighted")
    };
    let split: Vec<(String, u32)> = wc
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.weight.map_or(0, |w| w.value)))
        .collect();
    assert_eq!(
        split,
        [
            (cluster_name(9080, "v1", REVIEWS), 90),
            (cluster_name(9080, "v3", REVIEWS), 10)
        ]
    );
}

#[test]
fn bookinfo_ratings_route_has_timeout_and_retries() {
    let out = mk_translate(&mk_bookinfo());
    let rc: RouteConfiguration = decode(&out.routes, "9080");
    let routes = vhost_routes(&rc, &format!("{RATINGS}:9080"));
    let ra = route_action(&routes[0]);
    assert_eq!(ra.timeout.map(|d| (d.seconds, d.nanos)), Some((2, 0)));
    assert_eq!(
        ra.max_stream_duration
            .as_ref()
            .and_then(|m| m.max_stream_duration)
            .map(|d| d.seconds),
        Some(2)
    );
    let retry = ra.retry_policy.as_ref().expect("retry policy");
    assert_eq!(retry.num_retries.map(|n| n.value), Some(3));
    assert_eq!(retry.retry_on, "5xx,connect-failure");
    assert_eq!(retry.per_try_timeout.map(|d| d.nanos), Some(500_000_000));
}

#[test]
fn bookinfo_gateway_virtual_service_is_not_applied_to_the_mesh() {
    let out = mk_translate(&mk_bookinfo());
    let rc: RouteConfiguration = decode(&out.routes, "9080");
    let host = "productpage.bookinfo.svc.cluster.local";
    let routes = vhost_routes(&rc, &format!("{host}:9080"));
    assert_eq!(routes, [routes::default_route(host, 9080)]);
}

#[test]
fn listener_is_an_api_listener_with_rds_over_ads_and_router() {
    let out = mk_translate(&mk_bookinfo());
    let name = format!("{REVIEWS}:9080");
    let l: Listener = decode(&out.listeners, &name);
    let any = l
        .api_listener
        .and_then(|a| a.api_listener)
        .expect("api listener");
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    );
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
    let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
        panic!("no rds")
    };
    assert_eq!(rds.route_config_name, "9080");
    assert_eq!(rds.config_source, Some(ads_config_source()));
    let router = hcm.http_filters.last().expect("filters");
    assert_eq!(router.name, "envoy.filters.http.router");
    let Some(
        mesh_api::envoy::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(cfg),
    ) = &router.config_type
    else {
        panic!("no typed config")
    };
    assert_eq!(
        cfg.type_url,
        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    );
    // The route configuration has a virtual host answering to the listener's name.
    let rc: RouteConfiguration = decode(&out.routes, "9080");
    assert!(rc.virtual_hosts.iter().any(|v| v.domains.contains(&name)));
    let reviews = rc
        .virtual_hosts
        .iter()
        .find(|v| v.name == name)
        .expect("vhost");
    for d in [
        "reviews",
        "reviews:9080",
        "reviews.bookinfo",
        "reviews.bookinfo.svc:9080",
    ] {
        assert!(reviews.domains.iter().any(|x| x == d), "{d}");
    }
}

#[test]
fn every_resource_decodes_and_passes_envoy_rules() {
    let out = mk_translate(&mk_bookinfo());
    for (url, list) in [
        (type_url::CLUSTER, &out.clusters),
        (type_url::ENDPOINT, &out.endpoints),
        (type_url::LISTENER, &out.listeners),
        (type_url::ROUTE, &out.routes),
    ] {
        for (name, any) in list {
            assert_eq!(any.type_url, url, "{name}");
        }
    }
    assert_eq!(validate::check(&out), Vec::new());
    assert_eq!(validate::check(&mk_translate(&mk_features())), Vec::new());
}

#[test]
fn validator_catches_broken_resources() {
    let mut out = mk_translate(&mk_bookinfo());
    out.endpoints.remove(0);
    let dup = out.clusters[0].clone();
    out.clusters.push(dup);
    out.routes.clear();
    let v = validate::check(&out);
    assert!(
        v.iter()
            .any(|v| matches!(v, validate::Violation::MissingAssignment { .. }))
    );
    assert!(
        v.iter()
            .any(|v| matches!(v, validate::Violation::DuplicateName { .. }))
    );
    assert!(
        v.iter()
            .any(|v| matches!(v, validate::Violation::MissingRouteConfig { .. }))
    );
}

#[test]
fn output_is_deterministic_and_order_independent() {
    let resources = mk_bookinfo();
    let a = mk_translate(&resources);
    let b = mk_translate(&resources);
    assert_eq!(a, b);
    let mut reversed = resources.clone();
    reversed.reverse();
    assert_eq!(a, mk_translate(&reversed));
}

#[test]
fn weight_change_touches_only_rds() {
    let before = mk_translate(&mk_bookinfo());
    let files: Vec<(&str, String)> = BOOKINFO
        .iter()
        .map(|(n, t)| {
            (
                *n,
                t.replace("weight: 90", "weight: 50")
                    .replace("weight: 10", "weight: 50"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let after = mk_translate(&mk_resources(&refs));
    assert_ne!(before.routes, after.routes);
    assert_eq!(before.clusters, after.clusters);
    assert_eq!(before.endpoints, after.endpoints);
    assert_eq!(before.listeners, after.listeners);
}

#[test]
fn endpoint_change_touches_only_eds() {
    let before = mk_translate(&mk_bookinfo());
    let files: Vec<(&str, String)> = BOOKINFO
        .iter()
        .map(|(n, t)| (*n, t.replace("address: 127.0.0.3", "address: 127.0.0.9")))
        .collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let after = mk_translate(&mk_resources(&refs));
    assert_ne!(before.endpoints, after.endpoints);
    assert_eq!(before.clusters, after.clusters);
    assert_eq!(before.routes, after.routes);
    assert_eq!(before.listeners, after.listeners);
}

#[test]
fn dns_resolutions_use_inline_endpoints() {
    let yaml = mk_service_entry(
        "ext",
        "a",
        "api.example.com",
        "DNS",
        "  endpoints:\n  - address: a1.example.com\n  - address: a2.example.com\n",
    ) + &mk_service_entry("ext", "b", "rr.example.com", "DNS_ROUND_ROBIN", "")
        + &mk_service_entry(
            "ext",
            "c",
            "rr2.example.com",
            "DNS_ROUND_ROBIN",
            "  endpoints:\n  - address: x.example.com\n",
        );
    let mut resources = mk_yaml(&yaml);
    // Past validation: a round-robin entry with two endpoints still gets one.
    for r in &mut resources {
        if let mesh_model::Spec::ServiceEntry(se) = &mut r.spec
            && se.hosts == ["rr2.example.com"]
        {
            let mut second = se.endpoints[0].clone();
            second.address = "y.example.com".into();
            se.endpoints.push(second);
        }
    }
    let out = mk_translate_sidecar(&resources);
    let rr2: Cluster = decode(&out.clusters, "outbound|80||rr2.example.com");
    assert_eq!(
        rr2.load_assignment.expect("one").endpoints[0]
            .lb_endpoints
            .len(),
        1
    );
    assert!(out.endpoints.is_empty());
    let strict: Cluster = decode(&out.clusters, "outbound|80||api.example.com");
    assert_eq!(
        strict.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32))
    );
    let la = strict.load_assignment.expect("inline endpoints");
    assert_eq!(la.endpoints[0].lb_endpoints.len(), 2);
    let logical: Cluster = decode(&out.clusters, "outbound|80||rr.example.com");
    assert_eq!(
        logical.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::LogicalDns as i32))
    );
    assert_eq!(
        logical.load_assignment.expect("host").endpoints[0]
            .lb_endpoints
            .len(),
        1
    );
    assert_eq!(validate::check(&out), Vec::new());
}

#[test]
fn endpoints_group_by_locality_with_summed_weights() {
    let yaml = mk_service_entry(
        "ns",
        "a",
        "svc",
        "STATIC",
        "  endpoints:\n  - address: 10.0.0.1\n    locality: r1/z1\n    weight: 3\n  - address: 10.0.0.2\n    locality: r1/z1\n  - address: 10.0.0.3\n    locality: r1/z2/s\n",
    );
    let out = mk_translate(&mk_yaml(&yaml));
    let cla: ClusterLoadAssignment =
        decode(&out.endpoints, "outbound|80||svc.ns.svc.cluster.local");
    let summary: Vec<(String, String, String, u32, usize)> = cla
        .endpoints
        .iter()
        .map(|l| {
            let loc = l.locality.clone().expect("locality");
            (
                loc.region,
                loc.zone,
                loc.sub_zone,
                l.load_balancing_weight.map_or(0, |w| w.value),
                l.lb_endpoints.len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("r1".into(), "z1".into(), String::new(), 4, 2),
            ("r1".into(), "z2".into(), "s".into(), 1, 1)
        ]
    );
}

/// A service with a DestinationRule and a VirtualService exercising most features.
fn mk_features() -> Vec<Resource> {
    let yaml = mk_service_entry(
        "shop",
        "cart",
        "cart",
        "STATIC",
        "  endpoints:\n  - address: 10.0.0.1\n    labels: {version: v1}\n  - address: 10.0.0.2\n    labels: {version: v2}\n",
    ) + &mk_service_entry(
        "shop",
        "mirror",
        "mirror",
        "STATIC",
        "  endpoints:\n  - address: 10.0.1.1\n",
    ) + r#"apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: cart
  namespace: shop
spec:
  host: cart
  trafficPolicy:
    loadBalancer:
      simple: RANDOM
    connectionPool:
      tcp:
        connectTimeout: 3s
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        simple: LEAST_REQUEST
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer:
        consistentHash:
          httpHeaderName: x-user
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: cart
  namespace: shop
spec:
  hosts: [cart]
  http:
  - name: regex
    match:
    - uri:
        regex: "/items/[0-9]+"
      method:
        exact: GET
    fault:
      delay:
        fixedDelay: 5s
        percentage:
          value: 12.5
      abort:
        grpcStatus: UNAVAILABLE
        percentage:
          value: 1
    route:
    - destination: {host: cart, subset: v1}
  - name: moved
    match:
    - uri:
        exact: /old
    redirect:
      uri: /new
      authority: new.example.com
      redirectCode: 302
  - name: split
    match:
    - uri:
        prefix: /api
    rewrite:
      uri: /v2/api
      authority: backend
    headers:
      request:
        set: {x-a: "1"}
        add: {x-b: "2"}
        remove: [x-c]
    mirror: {host: mirror}
    mirrorPercentage:
      value: 50
    route:
    - destination: {host: cart, subset: v1}
      weight: 50
    - destination: {host: cart, subset: v2}
      weight: 25
    - destination: {host: cart}
      weight: 25
"#;
    mk_yaml(&yaml)
}

#[test]
fn destination_rule_subset_policy_overrides_top_level() {
    let out = mk_translate_sidecar(&mk_features());
    let host = "cart.shop.svc.cluster.local";
    let top: Cluster = decode(&out.clusters, &cluster_name(80, "", host));
    assert_eq!(top.lb_policy, LbPolicy::Random as i32);
    assert_eq!(top.connect_timeout.map(|d| d.seconds), Some(3));
    let v1: Cluster = decode(&out.clusters, &cluster_name(80, "v1", host));
    assert_eq!(v1.lb_policy, LbPolicy::LeastRequest as i32);
    assert_eq!(v1.connect_timeout.map(|d| d.seconds), Some(3));
    let v2: Cluster = decode(&out.clusters, &cluster_name(80, "v2", host));
    assert_eq!(v2.lb_policy, LbPolicy::RingHash as i32);
}

#[test]
fn virtual_service_features_translate() {
    let out = mk_translate(&mk_features());
    let host = "cart.shop.svc.cluster.local";
    let rc: RouteConfiguration = decode(&out.routes, "80");
    let routes = vhost_routes(&rc, &format!("{host}:80"));
    assert_eq!(routes.len(), 3);

    // Regex + method, with fault injection.
    let m = routes[0].r#match.as_ref().expect("match");
    assert!(
        matches!(&m.path_specifier, Some(PathSpecifier::SafeRegex(r)) if r.regex == "/items/[0-9]+")
    );
    assert_eq!(m.headers[0].name, ":method");
    let fault = routes[0]
        .typed_per_filter_config
        .get(routes::FAULT_FILTER)
        .expect("fault config");
    assert_eq!(
        fault.type_url,
        "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
    );
    let fault = HttpFault::decode(fault.value.as_slice()).expect("fault");
    let delay = fault.delay.expect("delay");
    assert_eq!(delay.percentage.map(|p| p.numerator), Some(125_000));
    let abort = fault.abort.expect("abort");
    assert_eq!(abort.error_type, Some(ErrorType::GrpcStatus(14)));

    // Redirect.
    let Some(Action::Redirect(r)) = &routes[1].action else {
        panic!("not a redirect")
    };
    assert_eq!(r.host_redirect, "new.example.com");

    // Rewrite, headers, mirror and a weighted split.
    let ra = route_action(&routes[2]);
    assert_eq!(ra.prefix_rewrite, "/v2/api");
    assert_eq!(
        ra.request_mirror_policies[0].cluster,
        cluster_name(80, "", "mirror.shop.svc.cluster.local")
    );
    assert_eq!(routes[2].request_headers_to_add.len(), 2);
    assert_eq!(routes[2].request_headers_to_remove, ["x-c"]);
    let Some(ClusterSpecifier::WeightedClusters(wc)) = &ra.cluster_specifier else {
        panic!("not weighted")
    };
    let weights: Vec<u32> = wc
        .clusters
        .iter()
        .map(|c| c.weight.map_or(0, |w| w.value))
        .collect();
    assert_eq!(weights, [50, 25, 25]);
}

#[test]
fn unvalidated_weights_are_normalized_to_100() {
    let mut resources = mk_features();
    for r in &mut resources {
        if let mesh_model::Spec::VirtualService(vs) = &mut r.spec {
            for d in &mut vs.http[2].route {
                d.weight = Some(1);
            }
        }
    }
    let out = mk_translate(&resources);
    let rc: RouteConfiguration = decode(&out.routes, "80");
    let routes = vhost_routes(&rc, "cart.shop.svc.cluster.local:80");
    let Some(ClusterSpecifier::WeightedClusters(wc)) = &route_action(&routes[2]).cluster_specifier
    else {
        panic!("not weighted")
    };
    let weights: Vec<u32> = wc
        .clusters
        .iter()
        .map(|c| c.weight.map_or(0, |w| w.value))
        .collect();
    assert_eq!(weights, [34, 33, 33]);
    assert_eq!(validate::check(&out), Vec::new());
}

#[test]
fn colliding_short_names_are_left_out() {
    let ep = "  endpoints:\n  - address: 10.0.0.1\n";
    let yaml = mk_service_entry("ns1", "a", "a", "STATIC", ep)
        + &mk_service_entry("ns2", "a", "a", "STATIC", ep);
    let out = mk_translate(&mk_yaml(&yaml));
    let rc: RouteConfiguration = decode(&out.routes, "80");
    let all: Vec<&String> = rc.virtual_hosts.iter().flat_map(|v| &v.domains).collect();
    assert!(!all.iter().any(|d| *d == "a" || *d == "a:80"));
    assert!(all.iter().any(|d| *d == "a.ns1"));
    assert_eq!(validate::check(&out), Vec::new());
}

#[test]
fn a_service_keeps_its_own_names_over_short_names() {
    let ep = "  endpoints:\n  - address: 10.0.0.1\n";
    let yaml = mk_service_entry("ns", "a", "a", "STATIC", ep)
        + &mk_service_entry("other", "b", "a.ns", "STATIC", ep);
    let out = mk_translate(&mk_yaml(&yaml));
    let rc: RouteConfiguration = decode(&out.routes, "80");
    let b = rc
        .virtual_hosts
        .iter()
        .find(|v| v.name == "a.ns:80")
        .expect("vhost");
    assert_eq!(b.domains, ["a.ns", "a.ns:80"]);
    let a = rc
        .virtual_hosts
        .iter()
        .find(|v| v.name == "a.ns.svc.cluster.local:80")
        .expect("vhost");
    assert!(a.domains.iter().any(|d| d == "a"));
    assert!(!a.domains.iter().any(|d| d == "a.ns"));
    assert_eq!(validate::check(&out), Vec::new());
}

#[test]
fn consistent_hash_sets_route_hash_policy() {
    let out = mk_translate(&mk_features());
    let rc: RouteConfiguration = decode(&out.routes, "80");
    let routes = vhost_routes(&rc, "cart.shop.svc.cluster.local:80");
    // Route 0 goes to v1 (LEAST_REQUEST): no hashing. Route 2 mixes: none either.
    assert!(route_action(&routes[0]).hash_policy.is_empty());
    assert!(route_action(&routes[2]).hash_policy.is_empty());
    let mut resources = mk_features();
    for r in &mut resources {
        if let mesh_model::Spec::VirtualService(vs) = &mut r.spec {
            vs.http[0].route[0].destination.subset = "v2".into();
        }
    }
    let out = mk_translate(&resources);
    let rc: RouteConfiguration = decode(&out.routes, "80");
    let routes = vhost_routes(&rc, "cart.shop.svc.cluster.local:80");
    let hp = &route_action(&routes[0]).hash_policy;
    assert_eq!(hp.len(), 1);
}

#[test]
fn grpc_ports_get_http2_upstream_options() {
    use mesh_api::envoy::envoy::extensions::upstreams::http::v3::{
        HttpProtocolOptions,
        http_protocol_options::{UpstreamProtocolOptions, explicit_http_config::ProtocolConfig},
    };
    let yaml = mk_service_entry(
        "ns",
        "g",
        "greeter",
        "STATIC",
        "  endpoints:\n  - address: 10.0.0.1\n",
    )
    .replace("protocol: HTTP", "protocol: GRPC");
    let out = mk_translate(&mk_yaml(&yaml));
    let c: Cluster = decode(&out.clusters, "outbound|80||greeter.ns.svc.cluster.local");
    let any = c
        .typed_extension_protocol_options
        .get(clusters::HTTP_PROTOCOL_OPTIONS)
        .expect("protocol options");
    let opts = HttpProtocolOptions::decode(any.value.as_slice()).expect("decodes");
    let Some(UpstreamProtocolOptions::ExplicitHttpConfig(cfg)) = opts.upstream_protocol_options
    else {
        panic!("not explicit")
    };
    assert!(matches!(
        cfg.protocol_config,
        Some(ProtocolConfig::Http2ProtocolOptions(_))
    ));
    // Plain HTTP without pool settings gets none.
    let out = mk_translate(&mk_bookinfo());
    let c: Cluster = decode(&out.clusters, &cluster_name(9080, "", REVIEWS));
    assert!(c.typed_extension_protocol_options.is_empty());
}

#[test]
fn empty_input_gives_empty_output() {
    assert_eq!(translate(&[]), EnvoyResources::default());
}

proptest! {
    #[test]
    fn normalized_weights_sum_to_100(weights in proptest::collection::vec(0u32..100_000, 1..40)) {
        let mut w: Vec<(String, u32, ())> =
            weights.iter().enumerate().map(|(i, w)| (i.to_string(), *w, ())).collect();
        routes::normalize_weights(&mut w);
        prop_assert!(!w.is_empty());
        prop_assert_eq!(w.iter().map(|(_, w, _)| u64::from(*w)).sum::<u64>(), 100);
    }

    #[test]
    fn any_weights_give_a_valid_split(weights in proptest::collection::vec(0u32..1000, 1..6)) {
        let subsets: String = (0..weights.len())
            .map(|i| format!("  - name: s{i}\n    labels: {{v: \"{i}\"}}\n"))
            .collect();
        let dests: String = weights
            .iter()
            .enumerate()
            .map(|(i, w)| format!("    - destination: {{host: svc, subset: s{i}}}\n      weight: {w}\n"))
            .collect();
        let yaml = mk_service_entry("ns", "svc", "svc", "STATIC", "")
            + &format!("apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata:\n  name: svc\n  namespace: ns\nspec:\n  host: svc\n  subsets:\n{subsets}---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: svc\n  namespace: ns\nspec:\n  hosts: [svc]\n  http:\n  - route:\n{dests}");
        // Validation may refuse some weight sets; translate whatever is accepted.
        let set = parse_document_set("p.yaml", &yaml, &ParseOptions::default());
        let refs: Vec<&Resource> = set.accepted.iter().collect();
        let out = translate(&refs);
        prop_assert_eq!(validate::check(&out), Vec::new());
    }
}

fn mk_resource(ns: &str, name: &str, spec: mesh_model::Spec) -> Resource {
    Resource {
        api_version: "networking.istio.io/v1beta1".into(),
        meta: mesh_model::ObjectMeta {
            name: name.into(),
            namespace: ns.into(),
            ..Default::default()
        },
        spec,
        source: mesh_model::SourceLocation {
            file: "gen.yaml".into(),
            line: 0,
        },
    }
}

/// Specs no validation has seen: hosts, ports, weights, durations and percentages
/// drawn from ranges that include nonsense.
fn arb_resources() -> impl Strategy<Value = Vec<Resource>> {
    use mesh_model::networking::{
        ConsistentHashLb, DestinationRule, FaultAbort, FaultDelay, HttpFaultInjection, HttpRetry,
        HttpRoute, HttpRouteDestination, LoadBalancerSettings, Port, Resolution, ServiceEntry,
        Subset, TrafficPolicy, VirtualService, WorkloadEntry,
    };
    let host = prop::sample::select(vec!["a", "b", "*.ext.io", "c.example.com", "a.ns1"]);
    let addr = prop::sample::select(vec![
        "10.0.0.1",
        "::1",
        "not an ip",
        "",
        "unix:///s",
        "h.io",
    ]);
    let dur = prop::sample::select(vec!["1s", "0s", "-1s", "banana", "1.5ms", "99999999999h"]);
    let resolution = prop::sample::select(vec![
        Resolution::None,
        Resolution::Static,
        Resolution::Dns,
        Resolution::DnsRoundRobin,
    ]);
    let entry = (
        host.clone(),
        prop::collection::vec(0u32..70_000, 0..3),
        resolution,
        prop::collection::vec((addr, any::<Option<u32>>(), "[a-z/]{0,6}"), 0..3),
    )
        .prop_map(|(h, ports, res, eps)| ServiceEntry {
            hosts: vec![h.to_string()],
            ports: ports
                .into_iter()
                .map(|n| Port {
                    number: n,
                    protocol: "GRPC".into(),
                    name: format!("p{n}"),
                    target_port: None,
                })
                .collect(),
            resolution: Some(res),
            endpoints: eps
                .into_iter()
                .map(|(a, w, loc)| WorkloadEntry {
                    address: a.to_string(),
                    weight: w,
                    locality: loc,
                    labels: [("v".to_string(), "1".to_string())].into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
    let rule = (
        host.clone(),
        dur.clone(),
        any::<bool>(),
        prop::collection::vec("[a-z]{0,2}", 0..3),
    )
        .prop_map(|(h, d, hash, subsets)| DestinationRule {
            host: h.to_string(),
            traffic_policy: Some(Box::new(TrafficPolicy {
                load_balancer: Some(LoadBalancerSettings {
                    consistent_hash: hash.then(|| ConsistentHashLb {
                        http_header_name: Some("x".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                connection_pool: Some(mesh_model::networking::ConnectionPoolSettings {
                    tcp: Some(mesh_model::networking::TcpSettings {
                        connect_timeout: Some(d.to_string()),
                        max_connections: Some(0),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            subsets: subsets
                .into_iter()
                .map(|name| Subset {
                    name,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
    let route = (
        prop::collection::vec((host.clone(), "[a-z]{0,2}", any::<Option<u32>>()), 1..4),
        dur.clone(),
        any::<f64>(),
        any::<Option<u32>>(),
        any::<Option<u32>>(),
    )
        .prop_map(|(dests, d, pct, status, attempts)| HttpRoute {
            route: dests
                .into_iter()
                .map(|(h, subset, weight)| HttpRouteDestination {
                    destination: mesh_model::networking::Destination {
                        host: h.to_string(),
                        subset,
                        port: None,
                    },
                    weight,
                    headers: None,
                })
                .collect(),
            timeout: Some(d.to_string()),
            retries: Some(HttpRetry {
                attempts,
                per_try_timeout: Some(d.to_string()),
                retry_on: "5xx,503,x".into(),
                ..Default::default()
            }),
            fault: Some(HttpFaultInjection {
                delay: Some(FaultDelay {
                    fixed_delay: Some(d.to_string()),
                    percentage: Some(mesh_model::networking::Percent { value: pct }),
                    ..Default::default()
                }),
                abort: Some(FaultAbort {
                    http_status: status,
                    grpc_status: Some("nope".into()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        });
    let vs = (host, prop::collection::vec(route, 0..3)).prop_map(|(h, http)| VirtualService {
        hosts: vec![h.to_string()],
        http,
        ..Default::default()
    });
    (
        prop::collection::vec(entry, 0..4),
        prop::collection::vec(rule, 0..3),
        prop::collection::vec(vs, 0..3),
    )
        .prop_map(|(entries, rules, vss)| {
            let mut out = Vec::new();
            for (i, se) in entries.into_iter().enumerate() {
                let ns = if i % 2 == 0 { "ns1" } else { "ns2" };
                out.push(mk_resource(
                    ns,
                    &format!("se{i}"),
                    mesh_model::Spec::ServiceEntry(se),
                ));
            }
            for (i, dr) in rules.into_iter().enumerate() {
                out.push(mk_resource(
                    "ns1",
                    &format!("dr{i}"),
                    mesh_model::Spec::DestinationRule(dr),
                ));
            }
            for (i, vs) in vss.into_iter().enumerate() {
                out.push(mk_resource(
                    "ns1",
                    &format!("vs{i}"),
                    mesh_model::Spec::VirtualService(vs),
                ));
            }
            out
        })
}

proptest! {
    /// Whatever the specs hold, translation never panics, is deterministic, and
    /// never produces what Envoy would refuse; the proxyless client it is for gets
    /// EDS clusters for services resolved NONE, never original destination ones.
    #[test]
    fn unvalidated_specs_translate_to_valid_envoy(resources in arb_resources()) {
        let out = mk_translate(&resources);
        prop_assert_eq!(validate::check(&out), Vec::new());
        for (name, any) in &out.clusters {
            let c = Cluster::decode(any.value.as_slice()).expect("decodes");
            prop_assert_ne!(
                c.cluster_discovery_type,
                Some(ClusterDiscoveryType::Type(DiscoveryType::OriginalDst as i32)),
                "{}", name
            );
        }
        let mut reversed = resources.clone();
        reversed.reverse();
        prop_assert_eq!(out, mk_translate(&reversed));
    }
}
