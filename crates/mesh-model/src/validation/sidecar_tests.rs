use crate::{
    kind::Kind,
    validation::test_support::{assert_clean, assert_error_at, assert_error_with, errors},
};

const SC: Kind = Kind::Sidecar;

#[test]
fn istio_docs_example_is_clean() {
    assert_clean(
        SC,
        r#"
workloadSelector:
  labels:
    app: ratings
ingress:
- port:
    number: 9080
    protocol: HTTP
    name: somename
  defaultEndpoint: unix:///var/run/someuds.sock
- port:
    number: 9443
    protocol: HTTPS
    name: secure
  defaultEndpoint: 127.0.0.1:9443
  tls:
    mode: SIMPLE
    privateKey: /etc/istio/key.pem
    serverCertificate: /etc/istio/cert.pem
egress:
- port:
    number: 9080
    protocol: HTTP
    name: egresshttp
  hosts:
  - "prod-us1/*"
- hosts:
  - "istio-system/*"
  - "./*"
  - "~/*.example.com"
outboundTrafficPolicy:
  mode: REGISTRY_ONLY
"#,
    );
}

#[test]
fn unknown_fields_are_refused() {
    let errs = errors(SC, "egress:\n- hosts: [\"./*\"]\n  capture: NONE\n");
    assert!(
        errs[0].starts_with("spec.egress[0].capture: unknown field"),
        "{errs:?}"
    );
}

#[test]
fn egress_is_required() {
    assert_error_at(
        SC,
        "outboundTrafficPolicy:\n  mode: ALLOW_ANY\n",
        "spec.egress",
    );
}

#[test]
fn egress_hosts_are_namespace_slash_host() {
    let eg = |h: &str| format!("egress:\n- hosts: [\"{h}\"]\n");
    assert_error_with(
        SC,
        &eg("reviews.default.svc.cluster.local"),
        "spec.egress[0].hosts[0]",
        "<namespace>/<host>",
    );
    assert_error_at(SC, &eg("Bad_NS/*"), "spec.egress[0].hosts[0]");
    assert_error_at(SC, &eg("ns/reviews"), "spec.egress[0].hosts[0]");
    assert_error_at(SC, &eg("ns/foo*.com"), "spec.egress[0].hosts[0]");
    assert_error_at(
        SC,
        "egress:\n- port:\n    number: 80\n    protocol: HTTP\n",
        "spec.egress[0].hosts",
    );
    assert_clean(SC, &eg("*/*"));
    assert_clean(SC, &eg("~prod/*.example.com"));
}

#[test]
fn egress_ports_are_checked() {
    assert_error_at(
        SC,
        "egress:\n- port:\n    number: 70000\n  hosts: [\"./*\"]\n",
        "spec.egress[0].port.number",
    );
    assert_error_at(
        SC,
        "egress:\n- port:\n    number: 80\n    protocol: FTP\n  hosts: [\"./*\"]\n",
        "spec.egress[0].port.protocol",
    );
    assert_error_at(
        SC,
        "egress:\n- port:\n    number: 0\n  hosts: [\"./*\"]\n",
        "spec.egress[0].bind",
    );
    assert_error_with(
        SC,
        "egress:\n- hosts: [\"./*\"]\n- port:\n    number: 80\n  hosts: [\"./*\"]\n",
        "spec.egress[0]",
        "catch-all",
    );
    assert_error_at(
        SC,
        "egress:\n- port:\n    number: 80\n  hosts: [\"./*\"]\n- port:\n    number: 80\n  hosts: [\"*/*\"]\n",
        "spec.egress[1].port.number",
    );
}

#[test]
fn ingress_needs_port_and_default_endpoint() {
    assert_error_at(
        SC,
        "ingress:\n- defaultEndpoint: 127.0.0.1:8080\negress:\n- hosts: [\"./*\"]\n",
        "spec.ingress[0].port",
    );
    assert_error_at(
        SC,
        "ingress:\n- port:\n    number: 8080\n    protocol: HTTP\n    name: http\negress:\n- hosts: [\"./*\"]\n",
        "spec.ingress[0].defaultEndpoint",
    );
    assert_error_at(
        SC,
        "ingress:\n- port:\n    number: 8080\n  defaultEndpoint: 10.0.0.1:8080\negress:\n- hosts: [\"./*\"]\n",
        "spec.ingress[0].defaultEndpoint",
    );
    assert_error_at(
        SC,
        "ingress:\n- port:\n    number: 8080\n  defaultEndpoint: 127.0.0.1:http\negress:\n- hosts: [\"./*\"]\n",
        "spec.ingress[0].defaultEndpoint",
    );
    assert_error_at(
        SC,
        "ingress:\n- port:\n    number: 8080\n  defaultEndpoint: 127.0.0.1:1\n- port:\n    number: 8080\n  defaultEndpoint: 127.0.0.1:2\negress:\n- hosts: [\"./*\"]\n",
        "spec.ingress[1].port.number",
    );
}

#[test]
fn ingress_tls_is_checked() {
    let spec = "ingress:\n- port:\n    number: 8443\n    protocol: HTTP\n  defaultEndpoint: 127.0.0.1:8443\n  tls:\n    mode: ISTIO_MUTUAL\negress:\n- hosts: [\"./*\"]\n";
    assert_error_at(SC, spec, "spec.ingress[0].tls.mode");
    assert_error_at(SC, spec, "spec.ingress[0].tls");
}

#[test]
fn outbound_policy_and_selector_are_checked() {
    assert_error_at(
        SC,
        "egress:\n- hosts: [\"./*\"]\noutboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n  egressProxy:\n    host: proxy.example.com\n    port:\n      number: 3128\n",
        "spec.outboundTrafficPolicy.egressProxy",
    );
    assert_error_at(
        SC,
        "workloadSelector:\n  labels:\n    app: \"*\"\negress:\n- hosts: [\"./*\"]\n",
        "spec.workloadSelector.labels.app",
    );
}
