//! Gateway LDS and RDS.

use mesh_api::envoy::envoy::{
    config::{
        listener::v3::Listener,
        route::v3::{
            RouteConfiguration, route::Action, route_action::ClusterSpecifier as RouteCluster,
            virtual_host::TlsRequirementType,
        },
    },
    extensions::{
        filters::network::{
            http_connection_manager::v3::http_connection_manager::RouteSpecifier,
            tcp_proxy::v3::tcp_proxy::ClusterSpecifier,
        },
        transport_sockets::tls::v3::{
            common_tls_context::ValidationContextType, tls_parameters::TlsProtocol,
        },
    },
};

use super::{
    lds_tests::{
        BOOKINFO, decode, hcm_of, http_filter_names, mk_full, mk_proxy, mk_resources, mk_yaml,
        names, tcp_proxy_of, tls_context,
    },
    *,
};
use crate::proxy::{Proxy, ProxyKind};

fn ingress() -> Proxy {
    mk_proxy(
        ProxyKind::Router,
        "istio-system",
        &[("istio", "ingressgateway")],
    )
}

fn gateway(servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: bookinfo\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n{servers}---\n"
    )
}

fn vs(name: &str, hosts: &str, body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: bookinfo\nspec:\n  hosts: {hosts}\n  gateways: [gw]\n{body}---\n"
    )
}

const TO_PRODUCTPAGE: &str = "  http:\n  - route:\n    - destination:\n        host: productpage\n        port:\n          number: 9080\n";

fn with_bookinfo(extra: &str) -> Vec<Resource> {
    let mut r = mk_resources(&BOOKINFO);
    r.extend(mk_yaml(extra));
    r
}

fn resources_for(r: &[Resource]) -> ProxyResources {
    proxy_resources(&lds_tests_ctx(r), &ingress())
}

fn lds_tests_ctx(r: &[Resource]) -> MeshContext {
    super::lds_tests::mk_ctx(r)
}

#[test]
fn bookinfo_gateway_serves_http_through_rds() {
    let resources = mk_resources(&BOOKINFO);
    let out = resources_for(&resources);
    assert_eq!(names(&out.listeners), ["0.0.0.0_8080"]);
    assert_eq!(names(&out.routes), ["http.8080"]);
    let l: Listener = decode(&out.listeners, "0.0.0.0_8080");
    assert_eq!(l.bind_to_port.map(|b| b.value), Some(true));
    let hcm = hcm_of(&l.filter_chains[0]);
    let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
        panic!("no rds")
    };
    assert_eq!(rds.route_config_name, "http.8080");
    assert_eq!(
        http_filter_names(&hcm),
        [
            "envoy.filters.http.fault",
            "envoy.filters.http.cors",
            "envoy.filters.http.router"
        ]
    );
    let rc: RouteConfiguration = decode(&out.routes, "http.8080");
    assert_eq!(rc.virtual_hosts.len(), 1);
    let vh = &rc.virtual_hosts[0];
    assert_eq!(vh.name, "bookinfo/bookinfo");
    assert_eq!(vh.domains, ["*"]);
    assert_eq!(vh.routes.len(), 3, "one route per uri match");
    let Some(Action::Route(ra)) = &vh.routes[0].action else {
        panic!("no route")
    };
    assert_eq!(
        ra.cluster_specifier,
        Some(RouteCluster::Cluster(
            "outbound|9080||productpage.bookinfo.svc.cluster.local".into()
        ))
    );
    // Other gateway selectors and sidecars get none of it.
    let other = mk_proxy(ProxyKind::Router, "istio-system", &[("istio", "egress")]);
    assert_eq!(
        proxy_resources(&lds_tests_ctx(&resources), &other),
        ProxyResources::default()
    );
}

#[test]
fn credential_name_gives_sds_secret_and_sni_from_hosts() {
    let text = gateway(
        "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"bookinfo/bookinfo.example.com\", \"shop.example.com\"]\n    tls:\n      mode: SIMPLE\n      credentialName: bookinfo-cert\n      minProtocolVersion: TLSV1_2\n      maxProtocolVersion: TLSV1_3\n      cipherSuites: [ECDHE-RSA-AES256-GCM-SHA384]\n  - port: {number: 443, name: https-mtls, protocol: HTTPS}\n    hosts: [\"partners.example.com\"]\n    tls:\n      mode: MUTUAL\n      credentialName: partner-cert\n  - port: {number: 443, name: https-mesh, protocol: HTTPS}\n    hosts: [\"internal.example.com\"]\n    tls:\n      mode: ISTIO_MUTUAL\n",
    ) + &vs("bookinfo-tls", "[bookinfo.example.com]", TO_PRODUCTPAGE);
    let resources = with_bookinfo(&text);
    let out = resources_for(&resources);
    let l: Listener = decode(&out.listeners, "0.0.0.0_443");
    assert!(
        l.listener_filters
            .iter()
            .any(|f| f.name == "envoy.filters.listener.tls_inspector")
    );
    assert_eq!(l.filter_chains.len(), 3);
    let simple = &l.filter_chains[0];
    let m = simple.filter_chain_match.as_ref().expect("match");
    assert_eq!(m.server_names, ["bookinfo.example.com", "shop.example.com"]);
    let ctx = tls_context(simple);
    let common = ctx.common_tls_context.expect("common");
    assert_eq!(
        common.tls_certificate_sds_secret_configs[0].name,
        "bookinfo-cert"
    );
    assert_eq!(
        common.tls_certificate_sds_secret_configs[0].sds_config,
        Some(ads_config_source())
    );
    assert!(common.validation_context_type.is_none());
    let params = common.tls_params.expect("params");
    assert_eq!(
        params.tls_minimum_protocol_version,
        TlsProtocol::TlSv12 as i32
    );
    assert_eq!(
        params.tls_maximum_protocol_version,
        TlsProtocol::TlSv13 as i32
    );
    assert_eq!(params.cipher_suites, ["ECDHE-RSA-AES256-GCM-SHA384"]);
    let hcm = hcm_of(simple);
    let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
        panic!("no rds")
    };
    assert_eq!(rds.route_config_name, "https.443.https.gw.bookinfo");
    let rc: RouteConfiguration = decode(&out.routes, "https.443.https.gw.bookinfo");
    assert_eq!(rc.virtual_hosts[0].domains, ["bookinfo.example.com"]);

    let mutual = tls_context(&l.filter_chains[1]);
    assert_eq!(
        mutual.require_client_certificate.map(|b| b.value),
        Some(true)
    );
    let Some(ValidationContextType::ValidationContextSdsSecretConfig(ca)) = mutual
        .common_tls_context
        .expect("common")
        .validation_context_type
    else {
        panic!("no validation SDS")
    };
    assert_eq!(ca.name, "partner-cert-cacert");

    let mesh = tls_context(&l.filter_chains[2])
        .common_tls_context
        .expect("common");
    assert_eq!(mesh.tls_certificate_sds_secret_configs[0].name, "default");
    let Some(ValidationContextType::ValidationContextSdsSecretConfig(root)) =
        mesh.validation_context_type
    else {
        panic!("no validation SDS")
    };
    assert_eq!(root.name, "ROOTCA");
    let full = mk_full(&resources, &ingress());
    assert_eq!(validate::check(&full), Vec::new());
    assert_eq!(validate::check_references(&full), Vec::new());
}

#[test]
fn https_redirect_requires_tls_and_domains_are_not_shared() {
    let text = gateway(
        "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n    tls:\n      httpsRedirect: true\n",
    ) + &vs("a", "[shop.example.com]", TO_PRODUCTPAGE)
        + &vs("b", "[shop.example.com, api.example.com]", TO_PRODUCTPAGE);
    let resources = with_bookinfo(&text);
    let out = resources_for(&resources);
    let rc: RouteConfiguration = decode(&out.routes, "http.80");
    let vhosts: Vec<(&str, Vec<&str>)> = rc
        .virtual_hosts
        .iter()
        .map(|v| {
            (
                v.name.as_str(),
                v.domains.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        vhosts,
        [
            ("bookinfo/a", vec!["shop.example.com"]),
            ("bookinfo/b", vec!["api.example.com"]),
        ]
    );
    assert!(
        rc.virtual_hosts
            .iter()
            .all(|v| v.require_tls == TlsRequirementType::All as i32)
    );
    assert_eq!(
        validate::check(&mk_full(&resources, &ingress())),
        Vec::new()
    );
}

#[test]
fn passthrough_routes_by_sni_and_tcp_servers_follow_tcp_routes() {
    let text = gateway(
        "  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [\"*.example.com\"]\n    tls:\n      mode: PASSTHROUGH\n  - port: {number: 27017, name: mongo, protocol: MONGO}\n    hosts: [\"*\"]\n",
    ) + &vs(
        "sni",
        "[\"*.example.com\"]",
        "  tls:\n  - match:\n    - port: 443\n      sniHosts: [a.example.com]\n    route:\n    - destination:\n        host: reviews\n        port: {number: 9080}\n  - match:\n    - sniHosts: [b.example.com]\n    route:\n    - destination:\n        host: ratings\n        port: {number: 9080}\n      weight: 50\n    - destination:\n        host: details\n        port: {number: 9080}\n      weight: 50\n",
    ) + &vs(
        "db",
        "[\"*\"]",
        "  tcp:\n  - match:\n    - port: 27017\n    route:\n    - destination:\n        host: details\n        port: {number: 9080}\n",
    );
    let resources = with_bookinfo(&text);
    let out = resources_for(&resources);
    let l: Listener = decode(&out.listeners, "0.0.0.0_443");
    assert_eq!(l.filter_chains.len(), 2);
    let a = &l.filter_chains[0];
    assert_eq!(
        a.filter_chain_match.as_ref().expect("match").server_names,
        ["a.example.com"]
    );
    assert!(a.transport_socket.is_none(), "passthrough keeps TLS intact");
    assert_eq!(
        tcp_proxy_of(a).cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|9080||reviews.bookinfo.svc.cluster.local".into()
        ))
    );
    let Some(ClusterSpecifier::WeightedClusters(w)) =
        tcp_proxy_of(&l.filter_chains[1]).cluster_specifier
    else {
        panic!("not weighted")
    };
    assert_eq!(w.clusters.len(), 2);
    let mongo: Listener = decode(&out.listeners, "0.0.0.0_27017");
    assert_eq!(
        tcp_proxy_of(&mongo.filter_chains[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|9080||details.bookinfo.svc.cluster.local".into()
        ))
    );
    let full = mk_full(&resources, &ingress());
    assert_eq!(validate::check(&full), Vec::new());
    assert_eq!(validate::check_references(&full), Vec::new());
}

#[test]
fn colliding_servers_keep_the_first_and_bad_servers_are_skipped() {
    let text = gateway(
        "  - port: {number: 443, name: a, protocol: HTTPS}\n    hosts: [\"a.example.com\"]\n    tls: {mode: SIMPLE, credentialName: a-cert}\n  - port: {number: 443, name: b, protocol: HTTPS}\n    hosts: [\"a.example.com\", \"b.example.com\"]\n    tls: {mode: SIMPLE, credentialName: b-cert}\n",
    );
    let resources = with_bookinfo(&text);
    // Validation refuses SIMPLE without a certificate; unvalidated input may have it.
    let mut ctx = lds_tests_ctx(&resources);
    let gw = ctx
        .gateways
        .iter_mut()
        .find(|g| g.name == "gw")
        .expect("gateway");
    let mut bad = gw.spec.servers[0].clone();
    if let Some(p) = bad.port.as_mut() {
        p.number = 8443;
    }
    if let Some(t) = bad.tls.as_mut() {
        t.credential_name.clear();
    }
    gw.spec.servers.push(bad);
    let out = proxy_resources(&ctx, &ingress());
    assert!(
        !names(&out.listeners).contains(&"0.0.0.0_8443"),
        "no certificate"
    );
    let l: Listener = decode(&out.listeners, "0.0.0.0_443");
    let sni: Vec<Vec<String>> = l
        .filter_chains
        .iter()
        .map(|c| c.filter_chain_match.clone().expect("match").server_names)
        .collect();
    assert_eq!(
        sni,
        [
            vec!["a.example.com".to_string()],
            vec!["b.example.com".to_string()]
        ]
    );
    assert_eq!(
        validate::check(&mk_full(&resources, &ingress())),
        Vec::new()
    );
}
