//! Server identities under `ISTIO_MUTUAL`: the SPIFFE ids of a service's endpoint
//! service accounts and a ServiceEntry's `subjectAltNames`, unless the
//! DestinationRule names its own.

use mesh_api::envoy::envoy::{
    config::{cluster::v3::Cluster, core::v3::transport_socket::ConfigType},
    extensions::transport_sockets::tls::v3::{
        UpstreamTlsContext, common_tls_context::ValidationContextType,
        subject_alt_name_matcher::SanType,
    },
    r#type::matcher::v3::string_matcher::MatchPattern,
};
use mesh_model::Resource;
use prost::Message;

use super::{
    lds_tests::{decode, mk_proxy, mk_yaml},
    *,
};
use crate::{
    model::{ServiceEntryRegistry, ServiceRegistry},
    proxy::ProxyKind,
};

const HOST: &str = "db.ns.svc.cluster.local";

/// A ServiceEntry `db` in `ns` on TCP port 5432 with endpoints running as `a`,
/// `b`, `a` again and nobody, declaring `subjectAltNames` of its own (one a
/// duplicate of an endpoint's identity), and a DestinationRule with `ISTIO_MUTUAL`
/// and `sans` (YAML list) and a subset.
fn mk_mesh(sans: &str) -> Vec<Resource> {
    mk_yaml(&format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: ns}}
spec:
  hosts: [db]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 5432, name: tcp, protocol: TCP}}]
  subjectAltNames: [spiffe://partner.example/ns/p/sa/q, spiffe://cluster.local/ns/ns/sa/a]
  endpoints:
  - {{address: 10.0.0.1, serviceAccount: b, labels: {{v: '1'}}}}
  - {{address: 10.0.0.2, serviceAccount: a}}
  - {{address: 10.0.0.3, serviceAccount: a}}
  - {{address: 10.0.0.4}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: db, namespace: ns}}
spec:
  host: db
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL, subjectAltNames: {sans}}}}}
  subsets: [{{name: v1, labels: {{v: '1'}}}}]
"
    ))
}

fn clusters_for(resources: &[Resource], kind: ProxyKind, trust_domain: &str) -> Vec<NamedResource> {
    let refs: Vec<&Resource> = resources.iter().collect();
    let services = ServiceEntryRegistry::from_resources(&refs).services();
    let ctx = MeshContext::new(services, &refs).with_trust_domain(trust_domain);
    clusters::build_clusters(&ctx, &mk_proxy(kind, "ns", &[]))
}

fn upstream_tls(c: &Cluster) -> UpstreamTlsContext {
    let Some(ConfigType::TypedConfig(any)) = c
        .transport_socket
        .as_ref()
        .and_then(|t| t.config_type.as_ref())
    else {
        panic!("{}: no TLS", c.name);
    };
    UpstreamTlsContext::decode(any.value.as_slice()).expect("decodes")
}

/// `(type, exact value)` of the typed SAN matchers Envoy gets.
fn envoy_sans(c: &Cluster) -> Vec<(i32, String)> {
    let common = upstream_tls(c).common_tls_context.expect("common");
    let Some(ValidationContextType::CombinedValidationContext(combined)) =
        common.validation_context_type
    else {
        return Vec::new();
    };
    combined
        .default_validation_context
        .expect("default context")
        .match_typed_subject_alt_names
        .into_iter()
        .map(|m| {
            let value = match m.matcher.and_then(|m| m.match_pattern) {
                Some(MatchPattern::Exact(v)) => v,
                other => panic!("not exact: {other:?}"),
            };
            (m.san_type, value)
        })
        .collect()
}

/// The untyped SAN matchers proxyless gRPC reads.
fn grpc_sans(c: &Cluster) -> Vec<String> {
    let common = upstream_tls(c).common_tls_context.expect("common");
    let Some(ValidationContextType::ValidationContext(v)) = common.validation_context_type else {
        panic!("no validation context");
    };
    #[allow(deprecated)]
    v.match_subject_alt_names
        .into_iter()
        .map(|m| match m.match_pattern {
            Some(MatchPattern::Exact(v)) => v,
            other => panic!("not exact: {other:?}"),
        })
        .collect()
}

const WANT: [&str; 3] = [
    "spiffe://cluster.local/ns/ns/sa/a",
    "spiffe://cluster.local/ns/ns/sa/b",
    "spiffe://partner.example/ns/p/sa/q",
];

#[test]
fn istio_mutual_verifies_endpoint_service_accounts_and_declared_names() {
    let resources = mk_mesh("[]");
    let sidecar = clusters_for(&resources, ProxyKind::Sidecar, "cluster.local");
    for name in [cluster_name(5432, "", HOST), cluster_name(5432, "v1", HOST)] {
        let c: Cluster = decode(&sidecar, &name);
        let want: Vec<(i32, String)> = WANT
            .iter()
            .map(|s| (SanType::Uri as i32, s.to_string()))
            .collect();
        assert_eq!(
            envoy_sans(&c),
            want,
            "{name}: sorted, each once, every subset the service's list"
        );
    }
    let proxyless = clusters_for(&resources, ProxyKind::Proxyless, "cluster.local");
    let c: Cluster = decode(&proxyless, &cluster_name(5432, "", HOST));
    assert_eq!(grpc_sans(&c), WANT);
}

#[test]
fn identities_follow_the_trust_domain() {
    let resources = mk_mesh("[]");
    let clusters = clusters_for(&resources, ProxyKind::Sidecar, "corp.example");
    let c: Cluster = decode(&clusters, &cluster_name(5432, "", HOST));
    let sans: Vec<String> = envoy_sans(&c).into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        sans,
        [
            "spiffe://cluster.local/ns/ns/sa/a",
            "spiffe://corp.example/ns/ns/sa/a",
            "spiffe://corp.example/ns/ns/sa/b",
            "spiffe://partner.example/ns/p/sa/q",
        ],
        "declared names are kept as written"
    );
}

#[test]
fn the_rules_subject_alt_names_replace_the_services_identities() {
    let resources = mk_mesh("[spiffe://cluster.local/ns/ns/sa/pinned]");
    let clusters = clusters_for(&resources, ProxyKind::Sidecar, "cluster.local");
    let c: Cluster = decode(&clusters, &cluster_name(5432, "", HOST));
    assert_eq!(
        envoy_sans(&c),
        [(
            SanType::Uri as i32,
            "spiffe://cluster.local/ns/ns/sa/pinned".to_string()
        )]
    );
}

#[test]
fn a_service_without_identities_accepts_any_mesh_certificate() {
    let resources = mk_yaml(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: ns}
spec:
  hosts: [db]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: ns}
spec:
  host: db
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
",
    );
    let clusters = clusters_for(&resources, ProxyKind::Sidecar, "cluster.local");
    let c: Cluster = decode(&clusters, &cluster_name(5432, "", HOST));
    let common = upstream_tls(&c).common_tls_context.expect("common");
    assert!(
        matches!(
            common.validation_context_type,
            Some(ValidationContextType::ValidationContextSdsSecretConfig(_))
        ),
        "the mesh root only, no SAN matching"
    );
}
