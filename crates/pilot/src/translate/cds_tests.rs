//! Per-proxy translation: DestinationRule TLS, locality load balancing, CORS and the
//! shapes proxyless gRPC clients accept. Every test decodes the produced protos.

use mesh_api::envoy::envoy::{
    config::{
        cluster::v3::{
            Cluster,
            cluster::{
                ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy,
                common_lb_config::LocalityConfigSpecifier,
            },
        },
        core::v3::transport_socket::ConfigType,
        endpoint::v3::ClusterLoadAssignment,
        route::v3::{Route, RouteConfiguration},
    },
    extensions::{
        filters::http::cors::v3::CorsPolicy,
        transport_sockets::tls::v3::{
            CertificateValidationContext, UpstreamTlsContext,
            common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType,
        },
    },
    r#type::matcher::v3::string_matcher::MatchPattern,
};
use mesh_model::{ParseOptions, Resource, parse_document_set};
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::proxy::{Proxy, ProxyKind};

const HOST: &str = "svc.ns.svc.cluster.local";

fn mk_yaml(text: &str) -> Vec<Resource> {
    let set = parse_document_set("t.yaml", text, &ParseOptions::default());
    assert!(set.rejected.is_empty(), "{:?}", set.rejected);
    set.accepted
}

fn mk_sidecar() -> Proxy {
    Proxy::new(ProxyKind::Sidecar, "ns", Labels::new())
}

fn mk_proxyless() -> Proxy {
    Proxy::new(ProxyKind::Proxyless, "ns", Labels::new())
}

fn mk_translate(resources: &[Resource], proxy: &Proxy) -> EnvoyResources {
    let refs: Vec<&Resource> = resources.iter().collect();
    let registry = ServiceEntryRegistry::from_resources(&refs);
    let out = translate_for(&registry, &refs, proxy);
    assert_eq!(validate::check(&out), Vec::new(), "for {proxy:?}");
    out
}

/// A ServiceEntry `svc` in `ns` with HTTP ports 80 and 81, the given resolution and
/// endpoint list items.
fn mk_service(resolution: &str, endpoints: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: svc\n  namespace: ns\nspec:\n  hosts: [svc]\n  location: MESH_INTERNAL\n  resolution: {resolution}\n  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n  - number: 81\n    name: grpc\n    protocol: GRPC\n  endpoints:\n{endpoints}---\n"
    )
}

/// A DestinationRule for `svc` with the given (indented) spec body after `host`.
fn mk_rule(body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata:\n  name: svc\n  namespace: ns\nspec:\n  host: svc\n{body}---\n"
    )
}

fn decode<M: Message + Default>(list: &[NamedResource], name: &str) -> M {
    let (_, any) = list
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no resource {name}"));
    M::decode(any.value.as_slice()).expect("decodes")
}

fn upstream_tls(c: &Cluster) -> Option<UpstreamTlsContext> {
    let ts = c.transport_socket.as_ref()?;
    assert_eq!(ts.name, clusters::tls::TLS_TRANSPORT_SOCKET);
    let Some(ConfigType::TypedConfig(any)) = &ts.config_type else {
        panic!("transport socket without typed config");
    };
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    );
    Some(UpstreamTlsContext::decode(any.value.as_slice()).expect("decodes"))
}

const ONE_ENDPOINT: &str = "  - address: 10.0.0.1\n    labels: {version: v1}\n";

fn mk_istio_mutual() -> Vec<Resource> {
    mk_yaml(
        &(mk_service("STATIC", ONE_ENDPOINT)
            + &mk_rule(
                "  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n      subjectAltNames: [\"spiffe://cluster.local/ns/ns/sa/svc\"]\n    portLevelSettings:\n    - port: {number: 81}\n      tls: {mode: DISABLE}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n",
            )),
    )
}

#[test]
fn istio_mutual_gives_envoy_sds_secrets_and_mesh_sni() {
    let out = mk_translate(&mk_istio_mutual(), &mk_sidecar());
    let c: Cluster = decode(&out.clusters, &cluster_name(80, "v1", HOST));
    let tls = upstream_tls(&c).expect("tls");
    assert_eq!(tls.sni, format!("outbound_.80_.v1_.{HOST}"));
    let common = tls.common_tls_context.expect("common");
    assert_eq!(common.alpn_protocols, ["istio-peer-exchange", "istio"]);
    let certs: Vec<(&str, bool)> = common
        .tls_certificate_sds_secret_configs
        .iter()
        .map(|s| (s.name.as_str(), s.sds_config == Some(ads_config_source())))
        .collect();
    assert_eq!(certs, [("default", true)]);
    assert!(common.tls_certificate_provider_instance.is_none());
    let Some(ValidationContextType::CombinedValidationContext(combined)) =
        common.validation_context_type
    else {
        panic!("SAN matching needs the combined validation context");
    };
    let root = combined
        .validation_context_sds_secret_config
        .expect("root over SDS");
    assert_eq!(root.name, "ROOTCA");
    assert_eq!(root.sds_config, Some(ads_config_source()));
    let sans = combined
        .default_validation_context
        .expect("default")
        .match_typed_subject_alt_names;
    assert_eq!(sans.len(), 1);
    assert_eq!(sans[0].san_type, SanType::Uri as i32);
    assert_eq!(
        sans[0]
            .matcher
            .as_ref()
            .and_then(|m| m.match_pattern.clone()),
        Some(MatchPattern::Exact(
            "spiffe://cluster.local/ns/ns/sa/svc".into()
        ))
    );
    // The service cluster gets the service SNI; port 81 turns TLS off.
    let c: Cluster = decode(&out.clusters, &cluster_name(80, "", HOST));
    assert_eq!(
        upstream_tls(&c).expect("tls").sni,
        format!("outbound_.80_._.{HOST}")
    );
    let c: Cluster = decode(&out.clusters, &cluster_name(81, "v1", HOST));
    assert!(c.transport_socket.is_none());
}

#[test]
fn istio_mutual_gives_proxyless_certificate_providers() {
    let out = mk_translate(&mk_istio_mutual(), &mk_proxyless());
    let c: Cluster = decode(&out.clusters, &cluster_name(80, "v1", HOST));
    let common = upstream_tls(&c)
        .expect("tls")
        .common_tls_context
        .expect("common");
    let identity = common
        .tls_certificate_provider_instance
        .expect("identity provider");
    assert_eq!(
        (
            identity.instance_name.as_str(),
            identity.certificate_name.as_str()
        ),
        ("default", "default")
    );
    // No SDS, no files, no ALPN: gRPC refuses or ignores them.
    assert!(common.tls_certificate_sds_secret_configs.is_empty());
    assert!(common.tls_certificates.is_empty());
    assert!(common.alpn_protocols.is_empty());
    let Some(ValidationContextType::ValidationContext(vc)) = common.validation_context_type else {
        panic!("plain validation context expected");
    };
    let root = vc.ca_certificate_provider_instance.clone().expect("root");
    assert_eq!(
        (root.instance_name.as_str(), root.certificate_name.as_str()),
        ("default", "ROOTCA")
    );
    #[allow(deprecated)] // The field gRPC reads.
    let sans = vc.match_subject_alt_names.clone();
    assert_eq!(sans.len(), 1);
    assert!(vc.match_typed_subject_alt_names.is_empty());
    assert!(vc.trusted_ca.is_none());
}

#[test]
fn simple_tls_verifies_with_files_and_typed_sans() {
    let rule = mk_rule(
        "  trafficPolicy:\n    tls:\n      mode: SIMPLE\n      caCertificates: /etc/certs/ca.pem\n      subjectAltNames: [api.example.com, 10.1.2.3]\n  subsets:\n  - name: open\n    trafficPolicy:\n      tls:\n        mode: SIMPLE\n        sni: other.example.com\n        insecureSkipVerify: true\n",
    );
    let resources = mk_yaml(&(mk_service("STATIC", ONE_ENDPOINT) + &rule));
    let out = mk_translate(&resources, &mk_sidecar());
    let c: Cluster = decode(&out.clusters, &cluster_name(80, "", HOST));
    let tls = upstream_tls(&c).expect("tls");
    assert_eq!(tls.sni, HOST);
    let common = tls.common_tls_context.expect("common");
    assert!(common.tls_certificates.is_empty());
    assert!(common.alpn_protocols.is_empty());
    let Some(ValidationContextType::ValidationContext(vc)) = common.validation_context_type else {
        panic!("file validation context expected");
    };
    let CertificateValidationContext {
        trusted_ca,
        match_typed_subject_alt_names: sans,
        ..
    } = vc;
    assert_eq!(
        trusted_ca.and_then(|d| d.specifier),
        Some(
            mesh_api::envoy::envoy::config::core::v3::data_source::Specifier::Filename(
                "/etc/certs/ca.pem".into()
            )
        )
    );
    let types: Vec<i32> = sans.iter().map(|s| s.san_type).collect();
    assert_eq!(types, [SanType::Dns as i32, SanType::IpAddress as i32]);
    // The subset's own TLS: its SNI, no verification.
    let c: Cluster = decode(&out.clusters, &cluster_name(80, "open", HOST));
    let tls = upstream_tls(&c).expect("tls");
    assert_eq!(tls.sni, "other.example.com");
    assert!(
        tls.common_tls_context
            .expect("common")
            .validation_context_type
            .is_none()
    );
    // Proxyless clients cannot load those files: plaintext.
    let out = mk_translate(&resources, &mk_proxyless());
    let c: Cluster = decode(&out.clusters, &cluster_name(80, "", HOST));
    assert!(c.transport_socket.is_none());
}

#[test]
fn mutual_tls_takes_client_certificates_from_files_or_secrets() {
    let rule = mk_rule(
        "  trafficPolicy:\n    tls:\n      mode: MUTUAL\n      clientCertificate: /c/cert.pem\n      privateKey: /c/key.pem\n      caCertificates: /c/ca.pem\n  subsets:\n  - name: cred\n    trafficPolicy:\n      tls:\n        mode: MUTUAL\n        credentialName: partner\n",
    );
    let out = mk_translate(
        &mk_yaml(&(mk_service("STATIC", ONE_ENDPOINT) + &rule)),
        &mk_sidecar(),
    );
    let c: Cluster = decode(&out.clusters, &cluster_name(80, "", HOST));
    let common = upstream_tls(&c)
        .expect("tls")
        .common_tls_context
        .expect("common");
    assert_eq!(common.tls_certificates.len(), 1);
    let cert = &common.tls_certificates[0];
    let filename = |d: &Option<mesh_api::envoy::envoy::config::core::v3::DataSource>| match d
        .as_ref()
        .and_then(|d| d.specifier.clone())
    {
        Some(mesh_api::envoy::envoy::config::core::v3::data_source::Specifier::Filename(f)) => f,
        other => panic!("not a file: {other:?}"),
    };
    assert_eq!(filename(&cert.certificate_chain), "/c/cert.pem");
    assert_eq!(filename(&cert.private_key), "/c/key.pem");

    let c: Cluster = decode(&out.clusters, &cluster_name(80, "cred", HOST));
    let common = upstream_tls(&c)
        .expect("tls")
        .common_tls_context
        .expect("common");
    let names: Vec<&str> = common
        .tls_certificate_sds_secret_configs
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["partner"]);
    let Some(ValidationContextType::ValidationContextSdsSecretConfig(ca)) =
        common.validation_context_type
    else {
        panic!("CA over SDS expected");
    };
    assert_eq!(ca.name, "partner-cacert");
    assert_eq!(ca.sds_config, Some(ads_config_source()));
}

/// Endpoints in three localities (two zones of `us-east`, one of `eu-west`) and one
/// in `ap-south`, each labelled with its network.
const SPREAD: &str = "  - address: 10.0.0.1\n    locality: us-east/zone-a\n    labels: {net: n1}\n  - address: 10.0.0.2\n    locality: us-east/zone-b\n    labels: {net: n1}\n  - address: 10.0.0.3\n    locality: eu-west/zone-c\n    labels: {net: n2}\n    weight: 3\n  - address: 10.0.0.4\n    locality: ap-south/zone-d\n    labels: {net: n2}\n";

fn mk_east() -> Proxy {
    Proxy::new(
        ProxyKind::Sidecar,
        "ns",
        [("net".to_string(), "n2".to_string())].into(),
    )
    .with_locality("us-east/zone-a/")
}

/// (region, zone, priority, weight) of each LocalityLbEndpoints.
fn priorities(cla: &ClusterLoadAssignment) -> Vec<(String, String, u32, u32)> {
    cla.endpoints
        .iter()
        .map(|l| {
            let loc = l.locality.clone().expect("locality");
            (
                loc.region,
                loc.zone,
                l.priority,
                l.load_balancing_weight.map_or(0, |w| w.value),
            )
        })
        .collect()
}

fn row(region: &str, zone: &str, priority: u32, weight: u32) -> (String, String, u32, u32) {
    (region.into(), zone.into(), priority, weight)
}

const OUTLIER: &str = "    outlierDetection:\n      consecutive5xxErrors: 5\n      interval: 10s\n";

#[test]
fn locality_failover_orders_by_closeness_with_contiguous_priorities() {
    let rule = mk_rule(&format!(
        "  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        enabled: true\n{OUTLIER}"
    ));
    let resources = mk_yaml(&(mk_service("STATIC", SPREAD) + &rule));
    let out = mk_translate(&resources, &mk_east());
    let cla: ClusterLoadAssignment = decode(&out.endpoints, &cluster_name(80, "", HOST));
    let mut got = priorities(&cla);
    got.sort_by_key(|r| r.2);
    // Raw ranks 0 (zone), 2 (region), 3 (elsewhere) become 0, 1, 2.
    assert_eq!(
        got,
        [
            row("us-east", "zone-a", 0, 1),
            row("us-east", "zone-b", 1, 1),
            row("ap-south", "zone-d", 2, 1),
            row("eu-west", "zone-c", 2, 3),
        ]
    );

    // Failover names eu-west: it comes right after the proxy's region.
    let rule = mk_rule(&format!(
        "  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        failover:\n        - from: us-east\n          to: eu-west\n{OUTLIER}"
    ));
    let out = mk_translate(
        &mk_yaml(&(mk_service("STATIC", SPREAD) + &rule)),
        &mk_east(),
    );
    let cla: ClusterLoadAssignment = decode(&out.endpoints, &cluster_name(80, "", HOST));
    let mut got = priorities(&cla);
    got.sort_by_key(|r| r.2);
    assert_eq!(
        got,
        [
            row("us-east", "zone-a", 0, 1),
            row("us-east", "zone-b", 1, 1),
            row("eu-west", "zone-c", 2, 3),
            row("ap-south", "zone-d", 3, 1),
        ]
    );

    // Without outlier detection nothing would ever fail over: one priority.
    let rule = mk_rule(
        "  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        enabled: true\n",
    );
    let out = mk_translate(
        &mk_yaml(&(mk_service("STATIC", SPREAD) + &rule)),
        &mk_east(),
    );
    let cla: ClusterLoadAssignment = decode(&out.endpoints, &cluster_name(80, "", HOST));
    assert!(cla.endpoints.iter().all(|l| l.priority == 0));

    // Without a rule setting it, locality load balancing stays off.
    let out = mk_translate(&mk_yaml(&mk_service("STATIC", SPREAD)), &mk_east());
    let cla: ClusterLoadAssignment = decode(&out.endpoints, &cluster_name(80, "", HOST));
    assert!(cla.endpoints.iter().all(|l| l.priority == 0));
}

#[test]
fn failover_priority_labels_rank_before_closeness() {
    let rule = mk_rule(&format!(
        "  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        failoverPriority: [net]\n{OUTLIER}"
    ));
    let out = mk_translate(
        &mk_yaml(&(mk_service("STATIC", SPREAD) + &rule)),
        &mk_east(),
    );
    let cla: ClusterLoadAssignment = decode(&out.endpoints, &cluster_name(80, "", HOST));
    let mut got = priorities(&cla);
    got.sort_by_key(|r| (r.2, r.0.clone()));
    // The proxy is on network n2: n2 endpoints first (both far away, same rank),
    // then n1 endpoints by closeness.
    assert_eq!(
        got,
        [
            row("ap-south", "zone-d", 0, 1),
            row("eu-west", "zone-c", 0, 3),
            row("us-east", "zone-a", 1, 1),
            row("us-east", "zone-b", 2, 1),
        ]
    );
}

#[test]
fn distribute_sets_locality_weights_for_proxies_in_the_from_locality() {
    let rule = mk_rule(
        "  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        distribute:\n        - from: us-east/zone-a/*\n          to:\n            \"us-east/zone-a/*\": 70\n            \"eu-west/*\": 30\n",
    );
    let resources = mk_yaml(&(mk_service("STATIC", SPREAD) + &rule));
    let out = mk_translate(&resources, &mk_east());
    let cla: ClusterLoadAssignment = decode(&out.endpoints, &cluster_name(80, "", HOST));
    // Localities no `to` covers get no traffic.
    assert_eq!(
        priorities(&cla),
        [
            row("eu-west", "zone-c", 0, 30),
            row("us-east", "zone-a", 0, 70)
        ]
    );
    let c: Cluster = decode(&out.clusters, &cluster_name(80, "", HOST));
    assert!(matches!(
        c.common_lb_config.and_then(|l| l.locality_config_specifier),
        Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
    ));

    // A proxy elsewhere is not covered by `from`: endpoint weights as usual.
    let west = mk_sidecar().with_locality("eu-west/zone-c/");
    let out = mk_translate(&resources, &west);
    let cla: ClusterLoadAssignment = decode(&out.endpoints, &cluster_name(80, "", HOST));
    assert_eq!(cla.endpoints.len(), 4);
    let c: Cluster = decode(&out.clusters, &cluster_name(80, "", HOST));
    assert!(c.common_lb_config.is_none());
}

fn mk_cors() -> Vec<Resource> {
    mk_yaml(
        &(mk_service("STATIC", ONE_ENDPOINT)
            + "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: svc\n  namespace: ns\nspec:\n  hosts: [svc]\n  http:\n  - name: web\n    corsPolicy:\n      allowOrigins:\n      - exact: https://a.example.com\n      - prefix: https://b.\n      - regex: \"https://.*\\\\.c\\\\.com\"\n      allowMethods: [GET, POST]\n      allowHeaders: [x-a, x-b]\n      exposeHeaders: [x-c]\n      maxAge: 24h\n      allowCredentials: true\n      unmatchedPreflights: IGNORE\n    route:\n    - destination: {host: svc}\n"),
    )
}

fn web_route(out: &EnvoyResources) -> Route {
    let rc: RouteConfiguration = decode(&out.routes, "80");
    rc.virtual_hosts
        .iter()
        .flat_map(|v| v.routes.iter())
        .find(|r| r.name == "web")
        .cloned()
        .expect("route web")
}

#[test]
fn cors_policies_go_to_envoy_only() {
    let resources = mk_cors();
    let route = web_route(&mk_translate(&resources, &mk_sidecar()));
    let any = route
        .typed_per_filter_config
        .get(routes::CORS_FILTER)
        .expect("cors config");
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
    );
    let cors = CorsPolicy::decode(any.value.as_slice()).expect("decodes");
    let origins: Vec<MatchPattern> = cors
        .allow_origin_string_match
        .iter()
        .filter_map(|m| m.match_pattern.clone())
        .collect();
    assert_eq!(origins.len(), 3);
    assert_eq!(
        origins[0],
        MatchPattern::Exact("https://a.example.com".into())
    );
    assert_eq!(origins[1], MatchPattern::Prefix("https://b.".into()));
    assert!(matches!(&origins[2], MatchPattern::SafeRegex(r) if r.regex == "https://.*\\.c\\.com"));
    assert_eq!(cors.allow_methods, "GET,POST");
    assert_eq!(cors.allow_headers, "x-a,x-b");
    assert_eq!(cors.expose_headers, "x-c");
    assert_eq!(cors.max_age, "86400");
    assert_eq!(cors.allow_credentials.map(|b| b.value), Some(true));
    assert_eq!(
        cors.forward_not_matching_preflights.map(|b| b.value),
        Some(false)
    );

    let route = web_route(&mk_translate(&resources, &mk_proxyless()));
    assert!(route.typed_per_filter_config.is_empty());
}

#[test]
fn proxyless_clients_get_only_lb_policies_and_cluster_types_grpc_knows() {
    let rule = mk_rule(
        "  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpHeaderName: x-user\n        maglev: {tableSize: 65537}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy:\n      loadBalancer: {simple: RANDOM}\n  - name: v2\n    labels: {version: v2}\n    trafficPolicy:\n      loadBalancer: {simple: LEAST_REQUEST}\n",
    );
    let resources = mk_yaml(&(mk_service("STATIC", ONE_ENDPOINT) + &rule));
    let out = mk_translate(&resources, &mk_proxyless());
    let c: Cluster = decode(&out.clusters, &cluster_name(80, "", HOST));
    assert_eq!(c.lb_policy, LbPolicy::RingHash as i32);
    let Some(LbConfig::RingHashLbConfig(ring)) = c.lb_config else {
        panic!("ring hash config expected");
    };
    assert_eq!(ring.minimum_ring_size.map(|v| v.value), Some(65537));
    let c: Cluster = decode(&out.clusters, &cluster_name(80, "v1", HOST));
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin as i32);
    // C-core refuses LEAST_REQUEST.
    let c: Cluster = decode(&out.clusters, &cluster_name(80, "v2", HOST));
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin as i32);
    // Envoy keeps what the rule says.
    let out = mk_translate(&resources, &mk_sidecar());
    let c: Cluster = decode(&out.clusters, &cluster_name(80, "", HOST));
    assert_eq!(c.lb_policy, LbPolicy::Maglev as i32);
    let c: Cluster = decode(&out.clusters, &cluster_name(80, "v1", HOST));
    assert_eq!(c.lb_policy, LbPolicy::Random as i32);
    let c: Cluster = decode(&out.clusters, &cluster_name(80, "v2", HOST));
    assert_eq!(c.lb_policy, LbPolicy::LeastRequest as i32);

    // DNS: Envoy resolves every name, gRPC the first one only.
    let dns = mk_yaml(&mk_service(
        "DNS",
        "  - address: a.example.com\n  - address: b.example.com\n",
    ));
    let kind = |c: &Cluster| c.cluster_discovery_type.clone();
    let c: Cluster = decode(
        &mk_translate(&dns, &mk_sidecar()).clusters,
        &cluster_name(80, "", HOST),
    );
    assert_eq!(
        kind(&c),
        Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32))
    );
    let c: Cluster = decode(
        &mk_translate(&dns, &mk_proxyless()).clusters,
        &cluster_name(80, "", HOST),
    );
    assert_eq!(
        kind(&c),
        Some(ClusterDiscoveryType::Type(DiscoveryType::LogicalDns as i32))
    );
    let la = c.load_assignment.expect("inline endpoint");
    assert_eq!(la.endpoints.len(), 1);
    assert_eq!(la.endpoints[0].lb_endpoints.len(), 1);
}

#[test]
fn routes_match_on_the_calling_workload() {
    let vs = "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: svc\n  namespace: ns\nspec:\n  hosts: [svc]\n  http:\n  - name: canary\n    match:\n    - sourceLabels: {app: tester}\n      sourceNamespace: ns\n    route:\n    - destination: {host: svc, subset: v1}\n  - name: rest\n    route:\n    - destination: {host: svc}\n";
    let resources = mk_yaml(
        &(mk_service("STATIC", ONE_ENDPOINT)
            + &mk_rule("  subsets:\n  - name: v1\n    labels: {version: v1}\n")
            + vs),
    );
    let names = |proxy: &Proxy| -> Vec<String> {
        let rc: RouteConfiguration = decode(&mk_translate(&resources, proxy).routes, "80");
        rc.virtual_hosts
            .iter()
            .flat_map(|v| v.routes.iter().map(|r| r.name.clone()))
            .collect()
    };
    let tester = Proxy::new(
        ProxyKind::Sidecar,
        "ns",
        [("app".to_string(), "tester".to_string())].into(),
    );
    assert_eq!(names(&tester), ["canary", "rest"]);
    assert_eq!(names(&mk_sidecar()), ["rest"]);
    let elsewhere = Proxy {
        namespace: "other".into(),
        ..tester
    };
    assert_eq!(names(&elsewhere), ["rest"]);
}

fn mk_resource(name: &str, spec: mesh_model::Spec) -> Resource {
    Resource {
        api_version: "networking.istio.io/v1beta1".into(),
        meta: mesh_model::ObjectMeta {
            name: name.into(),
            namespace: "ns".into(),
            ..Default::default()
        },
        spec,
        source: mesh_model::SourceLocation {
            file: "gen.yaml".into(),
            line: 0,
        },
    }
}

/// Services with endpoints scattered over a few localities, DestinationRules with
/// any mix of locality settings, TLS modes and load balancers (unvalidated), and
/// the proxy that receives the translation.
fn arb_mesh() -> impl Strategy<Value = (Vec<Resource>, Proxy)> {
    use mesh_model::networking::{
        ClientTlsMode, ClientTlsSettings, ConsistentHashLb, DestinationRule, LoadBalancerSettings,
        LocalityDistribute, LocalityFailover, LocalityLbSetting, Maglev, OutlierDetection, Port,
        Resolution, ServiceEntry, SimpleLb, Subset, TrafficPolicy, WorkloadEntry,
    };
    let locality = prop::sample::select(vec![
        "", "r1", "r1/z1", "r1/z1/", "r1/z1/s1", "r1/z2", "r2/z1", "r3/z3/s3", "*", "r1/*",
    ]);
    let host = prop::sample::select(vec!["a", "b", "*.ext.io"]);
    let resolution = prop::sample::select(vec![
        Resolution::None,
        Resolution::Static,
        Resolution::Static,
        Resolution::Static,
        Resolution::Dns,
        Resolution::DnsRoundRobin,
    ]);
    let addr = prop::sample::select(vec![
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "10.0.0.4",
        "h.io",
        "unix:///s",
    ]);
    let account = prop::sample::select(vec!["", "a", "b"]);
    let endpoint = (
        addr,
        locality.clone(),
        0u32..3,
        any::<Option<u32>>(),
        account,
    )
        .prop_map(|(a, loc, net, weight, sa)| WorkloadEntry {
            address: a.to_string(),
            locality: loc.to_string(),
            labels: [("net".to_string(), net.to_string())].into(),
            weight,
            service_account: sa.to_string(),
            ..Default::default()
        });
    let entry = (
        host.clone(),
        resolution,
        prop::collection::vec(endpoint, 0..8),
    )
        .prop_map(|(h, res, endpoints)| ServiceEntry {
            hosts: vec![h.to_string()],
            ports: vec![Port {
                number: 80,
                protocol: "GRPC".into(),
                name: "grpc".into(),
                target_port: None,
            }],
            resolution: Some(res),
            endpoints,
            ..Default::default()
        });
    let distribute = prop::collection::vec(
        (
            locality.clone(),
            prop::collection::btree_map(locality.clone().prop_map(str::to_string), 0u32..101, 0..3),
        ),
        0..2,
    )
    .prop_map(|d| {
        // Mostly none, so failover gets its turn.
        let d = if d.len() == 1 && d[0].1.len() == 2 {
            d
        } else {
            Vec::new()
        };
        d.into_iter()
            .map(|(from, to)| LocalityDistribute {
                from: from.to_string(),
                to,
            })
            .collect::<Vec<_>>()
    });
    let failover =
        prop::collection::vec((locality.clone(), locality.clone()), 0..3).prop_map(|f| {
            f.into_iter()
                .map(|(from, to)| LocalityFailover {
                    from: from.to_string(),
                    to: to.to_string(),
                })
                .collect::<Vec<_>>()
        });
    let setting = (
        any::<Option<bool>>(),
        distribute,
        failover,
        prop::sample::subsequence(
            vec![
                "net".to_string(),
                "topology.kubernetes.io/region".to_string(),
                "net=1".to_string(),
            ],
            0..3,
        ),
    )
        .prop_map(
            |(enabled, distribute, failover, failover_priority)| LocalityLbSetting {
                distribute,
                failover,
                failover_priority,
                enabled,
            },
        );
    let lb = (
        prop::option::weighted(0.8, setting),
        prop::option::of(prop::sample::select(vec![
            SimpleLb::Unspecified,
            SimpleLb::LeastConn,
            SimpleLb::Random,
            SimpleLb::Passthrough,
            SimpleLb::RoundRobin,
            SimpleLb::LeastRequest,
        ])),
        prop::option::of(prop::option::of(0u64..20_000_000)),
    )
        .prop_map(|(locality_lb_setting, simple, hash)| LoadBalancerSettings {
            simple,
            consistent_hash: hash.map(|maglev| ConsistentHashLb {
                http_header_name: Some("x".into()),
                maglev: maglev.map(|table_size| Maglev { table_size }),
                minimum_ring_size: Some(1 << 30),
                ..Default::default()
            }),
            locality_lb_setting,
            ..Default::default()
        });
    let tls = (
        prop::sample::select(vec![
            None,
            Some(ClientTlsMode::Disable),
            Some(ClientTlsMode::Simple),
            Some(ClientTlsMode::Mutual),
            Some(ClientTlsMode::IstioMutual),
        ]),
        prop::sample::select(vec!["", "/ca.pem"]),
        prop::sample::select(vec!["", "cred"]),
        prop::collection::vec(prop::sample::select(vec!["", "a.io", "spiffe://x/y"]), 0..2),
    )
        .prop_map(|(mode, ca, cred, sans)| ClientTlsSettings {
            mode,
            ca_certificates: ca.to_string(),
            credential_name: cred.to_string(),
            subject_alt_names: sans.into_iter().map(str::to_string).collect(),
            ..Default::default()
        });
    let policy = (
        prop::option::weighted(0.9, lb),
        prop::bool::weighted(0.8),
        prop::option::weighted(0.5, tls),
    )
        .prop_map(|(load_balancer, outlier, tls)| TrafficPolicy {
            load_balancer,
            outlier_detection: outlier.then(OutlierDetection::default),
            tls,
            ..Default::default()
        });
    let rule = (
        host,
        prop::option::weighted(0.9, policy.clone()),
        prop::option::of(policy),
    )
        .prop_map(|(h, top, subset)| DestinationRule {
            host: h.to_string(),
            traffic_policy: top.map(Box::new),
            subsets: vec![Subset {
                name: "s".into(),
                labels: [("net".to_string(), "1".to_string())].into(),
                traffic_policy: subset.map(Box::new),
            }],
            ..Default::default()
        });
    let proxy = (
        prop::sample::select(vec![
            ProxyKind::Sidecar,
            ProxyKind::Router,
            ProxyKind::Proxyless,
        ]),
        locality,
        0u32..3,
    )
        .prop_map(|(kind, loc, net)| {
            Proxy::new(kind, "ns", [("net".to_string(), net.to_string())].into()).with_locality(loc)
        });
    (
        prop::collection::vec(entry, 0..4),
        prop::collection::vec(rule, 1..3),
        proxy,
    )
        .prop_map(|(entries, rules, proxy)| {
            let mut out = Vec::new();
            for (i, se) in entries.into_iter().enumerate() {
                out.push(mk_resource(
                    &format!("se{i}"),
                    mesh_model::Spec::ServiceEntry(se),
                ));
            }
            for (i, dr) in rules.into_iter().enumerate() {
                out.push(mk_resource(
                    &format!("dr{i}"),
                    mesh_model::Spec::DestinationRule(dr),
                ));
            }
            (out, proxy)
        })
}

/// Whether an assignment's priorities are exactly 0..n, each used, and no locality
/// appears twice in one priority (gRPC refuses that).
fn contiguous(cla: &ClusterLoadAssignment) -> bool {
    let used: std::collections::BTreeSet<u32> = cla.endpoints.iter().map(|l| l.priority).collect();
    let mut seen = std::collections::BTreeSet::new();
    let unique = cla.endpoints.iter().all(|l| {
        let loc = l.locality.clone().unwrap_or_default();
        seen.insert((l.priority, loc.region, loc.zone, loc.sub_zone))
    });
    unique
        && used
            .iter()
            .copied()
            .eq(0..u32::try_from(used.len()).unwrap_or(u32::MAX))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the rules say, priorities are contiguous from 0, Envoy's rules hold,
    /// services resolved NONE are original destination clusters for sidecars only,
    /// and a proxyless client only sees what gRPC accepts.
    #[test]
    fn any_rule_gives_contiguous_priorities_and_grpc_acceptable_clusters(
        (resources, proxy) in arb_mesh()
    ) {
        let refs: Vec<&Resource> = resources.iter().collect();
        let registry = ServiceEntryRegistry::from_resources(&refs);
        let out = translate_for(&registry, &refs, &proxy);
        prop_assert_eq!(validate::check(&out), Vec::new());
        let none: std::collections::BTreeSet<String> = registry
            .services()
            .into_iter()
            .filter(|s| s.resolution == mesh_model::networking::Resolution::None)
            .map(|s| s.host)
            .collect();
        for (name, any) in &out.clusters {
            let c = Cluster::decode(any.value.as_slice()).expect("decodes");
            let host = name.rsplit('|').next().unwrap_or_default();
            let original_dst = c.cluster_discovery_type
                == Some(ClusterDiscoveryType::Type(DiscoveryType::OriginalDst as i32));
            prop_assert_eq!(
                original_dst,
                proxy.kind == ProxyKind::Sidecar && none.contains(host),
                "{}", name
            );
            prop_assert!(!original_dst || !out.endpoints.iter().any(|(n, _)| n == name));
        }
        for (name, any) in &out.endpoints {
            let cla = ClusterLoadAssignment::decode(any.value.as_slice()).expect("decodes");
            prop_assert!(contiguous(&cla), "{}: {:?}", name, cla);
        }
        for (name, any) in &out.clusters {
            let c = Cluster::decode(any.value.as_slice()).expect("decodes");
            if let Some(la) = &c.load_assignment {
                prop_assert!(contiguous(la), "{}: {:?}", name, la);
            }
            if let Some(LbConfig::RingHashLbConfig(r)) = &c.lb_config {
                prop_assert!(r.minimum_ring_size.is_none_or(|v| v.value <= clusters::MAX_RING_SIZE));
            }
            if proxy.kind != ProxyKind::Proxyless {
                continue;
            }
            let kind = match c.cluster_discovery_type {
                Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t).ok(),
                _ => None,
            };
            prop_assert!(
                matches!(kind, Some(DiscoveryType::Eds | DiscoveryType::LogicalDns)),
                "{}: {:?}", name, kind
            );
            prop_assert!(
                [LbPolicy::RoundRobin, LbPolicy::RingHash]
                    .iter()
                    .any(|p| *p as i32 == c.lb_policy),
                "{}: lb policy {}", name, c.lb_policy
            );
            if let Some(tls) = upstream_tls(&c) {
                let common = tls.common_tls_context.expect("common");
                prop_assert!(common.tls_certificate_sds_secret_configs.is_empty());
                prop_assert!(common.tls_certificates.is_empty());
                prop_assert!(common.tls_certificate_provider_instance.is_some());
            }
        }
    }
}

#[test]
fn full_translations_pass_validation_for_every_proxy_kind() {
    let files = [
        include_str!("../../../../examples/bookinfo/services.yaml"),
        include_str!("../../../../examples/bookinfo/traffic.yaml"),
        include_str!("../../../../examples/bookinfo/security.yaml"),
        include_str!("../../../../examples/bookinfo/policy.yaml"),
    ];
    let mut resources: Vec<Resource> = files.iter().flat_map(|f| mk_yaml(f)).collect();
    resources.extend(mk_istio_mutual());
    resources.extend(mk_cors());
    for kind in [ProxyKind::Sidecar, ProxyKind::Router, ProxyKind::Proxyless] {
        for locality in ["", "us-east/zone-a/", "eu-west/zone-c/x"] {
            let proxy = Proxy::new(kind, "bookinfo", Labels::new()).with_locality(locality);
            // `mk_translate` checks Envoy's rules.
            let out = mk_translate(&resources, &proxy);
            assert!(out.clusters.len() > 5);
        }
    }
}
