use crate::{
    kind::Kind,
    validation::test_support::{assert_clean, assert_error_at, assert_error_with, errors},
};

const SE: Kind = Kind::ServiceEntry;

#[test]
fn istio_docs_examples_are_clean() {
    assert_clean(
        SE,
        r#"
hosts:
- api.dropboxapi.com
- www.googleapis.com
ports:
- number: 443
  name: https
  protocol: TLS
resolution: DNS
location: MESH_EXTERNAL
"#,
    );
    assert_clean(
        SE,
        r#"
hosts:
- mymongodb.somedomain
addresses:
- 192.192.192.192/24
ports:
- number: 27018
  name: mongodb
  protocol: MONGO
location: MESH_INTERNAL
resolution: STATIC
endpoints:
- address: 2.2.2.2
- address: 3.3.3.3
  ports:
    mongodb: 27019
  labels:
    version: v2
  locality: us-east/zone1
  weight: 10
"#,
    );
    assert_clean(
        SE,
        "hosts: [\"*.bar.com\"]\nports:\n- number: 80\n  name: http\n  protocol: HTTP\nresolution: NONE\nexportTo: [\"~\"]\n",
    );
    assert_clean(
        SE,
        "hosts: [uds.example.internal]\nports:\n- number: 80\n  name: http\n  protocol: HTTP\nresolution: STATIC\nendpoints:\n- address: unix:///var/run/example/socket\n",
    );
    assert_clean(
        SE,
        "hosts: [details.bookinfo.com]\nports:\n- number: 9080\n  name: http\n  protocol: HTTP\nresolution: STATIC\nworkloadSelector:\n  labels:\n    app: details\n",
    );
}

#[test]
fn unknown_fields_and_bad_enums_are_refused() {
    let errs = errors(
        SE,
        "hosts: [a.com]\nports:\n- number: 80\n  name: http\nresolution: DNS\nendpoints:\n- adress: a.com\n",
    );
    assert!(
        errs[0].starts_with("spec.endpoints[0].adress: unknown field"),
        "{errs:?}"
    );
    let errs = errors(
        SE,
        "hosts: [a.com]\nports:\n- number: 80\n  name: http\nresolution: DYNAMIC\n",
    );
    assert!(
        errs[0].starts_with("spec.resolution: unknown variant `DYNAMIC`"),
        "{errs:?}"
    );
    assert!(errs[0].contains("DNS_ROUND_ROBIN"), "{errs:?}");
}

#[test]
fn hosts_are_required_and_valid() {
    let p = "ports:\n- number: 80\n  name: http\n";
    assert_error_at(SE, p, "spec.hosts");
    assert_error_at(SE, &format!("hosts: [\"*\"]\n{p}"), "spec.hosts[0]");
    assert_error_at(SE, &format!("hosts: [\"a.com:80\"]\n{p}"), "spec.hosts[0]");
    assert_error_with(
        SE,
        &format!("hosts: [\"*.a.com\"]\n{p}resolution: DNS\n"),
        "spec.hosts[0]",
        "DNS",
    );
    assert_error_at(
        SE,
        "hosts: [a.com, b.com]\nports:\n- number: 80\n  name: tcp\n  protocol: TCP\nresolution: DNS\n",
        "spec.hosts",
    );
}

#[test]
fn addresses_are_ips_or_cidrs() {
    let spec = |a: &str, r: &str| {
        format!(
            "hosts: [a.com]\naddresses: [\"{a}\"]\nports:\n- number: 80\n  name: http\nresolution: {r}\n"
        )
    };
    assert_error_at(SE, &spec("a.b.c.d", "NONE"), "spec.addresses[0]");
    assert_error_at(SE, &spec("10.0.0.0/8", "DNS"), "spec.addresses");
    assert_clean(SE, &spec("2001:db8::/32", "NONE"));
}

#[test]
fn ports_are_required_and_unique() {
    assert_error_at(SE, "hosts: [a.com]\n", "spec.ports");
    let two = |a: &str, b: &str| format!("hosts: [a.com]\nports:\n- {a}\n- {b}\n");
    assert_error_at(
        SE,
        &two("number: 80\n  name: http", "number: 81\n  name: http"),
        "spec.ports[1].name",
    );
    assert_error_at(
        SE,
        &two("number: 80\n  name: http", "number: 80\n  name: web"),
        "spec.ports[1].number",
    );
    assert_error_at(
        SE,
        "hosts: [a.com]\nports:\n- number: 80\n",
        "spec.ports[0].name",
    );
    assert_error_at(
        SE,
        "hosts: [a.com]\nports:\n- number: 80\n  name: http\n  protocol: SMTP\n",
        "spec.ports[0].protocol",
    );
    assert_error_at(
        SE,
        "hosts: [a.com]\nports:\n- number: 0\n  name: http\n",
        "spec.ports[0].number",
    );
}

#[test]
fn static_resolution_needs_ip_endpoints() {
    let base = "hosts: [a.internal]\nports:\n- number: 80\n  name: http\nresolution: STATIC\n";
    assert_error_at(SE, base, "spec.endpoints");
    assert_error_at(
        SE,
        &format!("{base}endpoints:\n- address: db.example.com\n"),
        "spec.endpoints[0].address",
    );
    assert_error_at(
        SE,
        &format!("{base}endpoints:\n- address: unix://relative\n"),
        "spec.endpoints[0].address",
    );
    assert_error_with(
        SE,
        &format!("{base}endpoints:\n- address: 10.0.0.1\n  ports:\n    grpc: 9000\n"),
        "spec.endpoints[0].ports.grpc",
        "not one of the ServiceEntry's port names",
    );
    assert_error_at(
        SE,
        &format!(
            "{base}endpoints:\n- address: 10.0.0.1\nworkloadSelector:\n  labels:\n    app: a\n"
        ),
        "spec.workloadSelector",
    );
}

#[test]
fn dns_endpoints_may_be_host_names() {
    let base = "hosts: [a.internal]\nports:\n- number: 80\n  name: http\nresolution: DNS\n";
    assert_clean(
        SE,
        &format!("{base}endpoints:\n- address: db.example.com\n- address: 10.0.0.2\n"),
    );
    assert_error_at(
        SE,
        &format!("{base}endpoints:\n- address: \"db example\"\n"),
        "spec.endpoints[0].address",
    );
    assert_error_at(
        SE,
        "hosts: [a.internal]\nports:\n- number: 80\n  name: http\nresolution: DNS_ROUND_ROBIN\nendpoints:\n- address: a.com\n- address: b.com\n",
        "spec.endpoints",
    );
}

#[test]
fn resolution_none_takes_no_endpoints() {
    assert_error_at(
        SE,
        "hosts: [a.com]\nports:\n- number: 80\n  name: http\nendpoints:\n- address: 1.1.1.1\n",
        "spec.endpoints",
    );
}
