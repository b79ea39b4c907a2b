use crate::{
    kind::Kind,
    parse::{ParseOptions, parse_document_set},
    validation::test_support::{assert_clean, assert_error_at, assert_error_with, errors, mk_doc},
};

const GW: Kind = Kind::Gateway;

#[test]
fn istio_docs_example_is_clean() {
    assert_clean(
        GW,
        r#"
selector:
  app: my-gateway-controller
servers:
- port:
    number: 80
    name: http
    protocol: HTTP
  hosts:
  - uk.bookinfo.com
  - eu.bookinfo.com
  tls:
    httpsRedirect: true
- port:
    number: 443
    name: https-443
    protocol: HTTPS
  hosts:
  - uk.bookinfo.com
  - eu.bookinfo.com
  tls:
    mode: SIMPLE
    serverCertificate: /etc/certs/servercert.pem
    privateKey: /etc/certs/privatekey.pem
- port:
    number: 9443
    name: https-9443
    protocol: HTTPS
  hosts:
  - "bookinfo-namespace/*.bookinfo.com"
  tls:
    mode: SIMPLE
    credentialName: bookinfo-secret
- port:
    number: 9080
    name: http-wildcard
    protocol: HTTP
  hosts:
  - "*"
- port:
    number: 2379
    name: mongo
    protocol: MONGO
  hosts:
  - "*"
- port:
    number: 8443
    name: mtls
    protocol: HTTPS
  hosts:
  - "./*.example.com"
  tls:
    mode: MUTUAL
    serverCertificate: /c
    privateKey: /k
    caCertificates: /ca
    minProtocolVersion: TLSV1_2
    cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]
"#,
    );
}

#[test]
fn unknown_fields_and_bad_enums_are_refused() {
    let errs = errors(
        GW,
        "servers:\n- port:\n    number: 80\n    name: http\n    protocol: HTTP\n    nmae: x\n  hosts: [\"*\"]\n",
    );
    assert!(
        errs[0].starts_with("spec.servers[0].port.nmae: unknown field"),
        "{errs:?}"
    );
    let errs = errors(
        GW,
        "servers:\n- port:\n    number: 443\n    name: https\n    protocol: HTTPS\n  hosts: [\"*\"]\n  tls:\n    mode: STRICT\n",
    );
    assert!(
        errs[0].contains("PASSTHROUGH") && errs[0].starts_with("spec.servers[0].tls.mode"),
        "{errs:?}"
    );
}

#[test]
fn gateway_names_are_dns_labels() {
    let doc = mk_doc(
        GW,
        "default",
        "my.gateway",
        "servers:\n- port:\n    number: 80\n    name: http\n    protocol: HTTP\n  hosts: [\"*\"]\n",
    );
    let set = parse_document_set("t.yaml", &doc, &ParseOptions::default());
    assert_eq!(
        set.errors().next().and_then(|e| e.field.as_deref()),
        Some("metadata.name")
    );
}

#[test]
fn a_server_is_required() {
    assert_error_at(GW, "selector:\n  istio: ingressgateway\n", "spec.servers");
}

#[test]
fn server_hosts_are_checked() {
    let srv = |hosts: &str| {
        format!(
            "servers:\n- port:\n    number: 80\n    name: http\n    protocol: HTTP\n  hosts: {hosts}\n"
        )
    };
    assert_error_at(GW, &srv("[]"), "spec.servers[0].hosts");
    assert_error_with(
        GW,
        &srv("[reviews]"),
        "spec.servers[0].hosts[0]",
        "short names",
    );
    assert_error_at(GW, &srv("[\"ns/\"]"), "spec.servers[0].hosts[0]");
    assert_error_at(
        GW,
        &srv("[\"Bad_NS/a.example.com\"]"),
        "spec.servers[0].hosts[0]",
    );
    assert_error_at(GW, &srv("[\"*.exam*ple.com\"]"), "spec.servers[0].hosts[0]");
    assert_clean(GW, &srv("[\"10.0.0.1\", \"*/*\", \"./a.example.com\"]"));
}

#[test]
fn ports_and_protocols_are_checked() {
    let srv = |port: &str| format!("servers:\n- port:\n{port}  hosts: [\"*\"]\n");
    assert_error_with(
        GW,
        &srv("    number: 80\n    name: http\n    protocol: HTTP3\n"),
        "spec.servers[0].port.protocol",
        "GRPC-WEB",
    );
    assert_error_at(
        GW,
        &srv("    number: 0\n    name: http\n    protocol: HTTP\n"),
        "spec.servers[0].port.number",
    );
    assert_error_at(
        GW,
        &srv("    number: 80\n    protocol: HTTP\n"),
        "spec.servers[0].port.name",
    );
    assert_error_at(
        GW,
        &srv("    number: 80\n    name: h\n    protocol: HTTP\n    targetPort: 8080\n"),
        "spec.servers[0].port.targetPort",
    );
    assert_error_at(GW, "servers:\n- hosts: [\"*\"]\n", "spec.servers[0].port");
    assert_clean(
        GW,
        &srv("    number: 80\n    name: grpc\n    protocol: grpc-web\n"),
    );
}

#[test]
fn port_names_are_unique_across_servers() {
    let spec = "servers:\n- port:\n    number: 80\n    name: web\n    protocol: HTTP\n  hosts: [\"*\"]\n- port:\n    number: 8080\n    name: web\n    protocol: HTTP\n  hosts: [\"*\"]\n";
    assert_error_with(GW, spec, "spec.servers[1].port.name", "unique");
}

#[test]
fn tls_servers_need_certificates() {
    let https = |tls: &str| {
        format!(
            "servers:\n- port:\n    number: 443\n    name: https\n    protocol: HTTPS\n  hosts: [\"*\"]\n{tls}"
        )
    };
    assert_error_at(GW, &https(""), "spec.servers[0].tls");
    assert_error_at(
        GW,
        &https("  tls:\n    mode: SIMPLE\n    privateKey: /k\n"),
        "spec.servers[0].tls.serverCertificate",
    );
    assert_error_at(
        GW,
        &https("  tls:\n    mode: SIMPLE\n    serverCertificate: /c\n"),
        "spec.servers[0].tls.privateKey",
    );
    assert_error_at(
        GW,
        &https("  tls:\n    mode: MUTUAL\n    serverCertificate: /c\n    privateKey: /k\n"),
        "spec.servers[0].tls.caCertificates",
    );
    assert_error_at(
        GW,
        &https(
            "  tls:\n    mode: SIMPLE\n    credentialName: c\n    serverCertificate: /c\n    privateKey: /k\n",
        ),
        "spec.servers[0].tls.credentialName",
    );
    assert_error_at(
        GW,
        &https("  tls:\n    mode: ISTIO_MUTUAL\n    privateKey: /k\n"),
        "spec.servers[0].tls.privateKey",
    );
    assert_clean(GW, &https("  tls:\n    mode: PASSTHROUGH\n"));
}

#[test]
fn plain_servers_take_only_https_redirect() {
    let srv = |proto: &str, tls: &str| {
        format!(
            "servers:\n- port:\n    number: 80\n    name: p\n    protocol: {proto}\n  hosts: [\"*\"]\n  tls:\n{tls}"
        )
    };
    assert_error_at(
        GW,
        &srv("HTTP", "    mode: SIMPLE\n    credentialName: c\n"),
        "spec.servers[0].tls",
    );
    assert_error_at(
        GW,
        &srv("TCP", "    httpsRedirect: true\n"),
        "spec.servers[0].tls",
    );
}

#[test]
fn binds_are_checked() {
    let srv = |bind: &str, number: u32| {
        format!(
            "servers:\n- port:\n    number: {number}\n    name: p\n    protocol: HTTP\n  bind: {bind}\n  hosts: [\"*\"]\n"
        )
    };
    assert_error_at(GW, &srv("not-an-ip", 80), "spec.servers[0].bind");
    assert_error_at(
        GW,
        &srv("unix:///var/run/gw.sock", 80),
        "spec.servers[0].port.number",
    );
    assert_clean(GW, &srv("unix:///var/run/gw.sock", 0));
    assert_clean(GW, &srv("0.0.0.0", 80));
}
