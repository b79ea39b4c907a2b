use crate::{
    kind::Kind,
    validation::test_support::{assert_clean, assert_error_at, assert_error_with, errors},
};

const DR: Kind = Kind::DestinationRule;

/// A rule for `reviews` with the given traffic policy lines.
fn mk_policy(policy: &str) -> String {
    let mut s = String::from("host: reviews\ntrafficPolicy:\n");
    for line in policy.lines() {
        s.push_str("  ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

#[test]
fn istio_docs_example_is_clean() {
    assert_clean(
        DR,
        r#"
host: reviews.prod.svc.cluster.local
trafficPolicy:
  loadBalancer:
    simple: LEAST_REQUEST
    localityLbSetting:
      enabled: true
      distribute:
      - from: us-west/zone1/*
        to:
          "us-west/zone1/*": 80
          "us-west/zone2/*": 20
  connectionPool:
    tcp:
      maxConnections: 100
      connectTimeout: 30ms
      tcpKeepalive:
        time: 7200s
        interval: 75s
    http:
      http1MaxPendingRequests: 100
      http2MaxRequests: 1000
      maxRequestsPerConnection: 10
      maxRetries: 3
      idleTimeout: 1h
      h2UpgradePolicy: UPGRADE
  outlierDetection:
    consecutive5xxErrors: 7
    consecutiveGatewayErrors: 5
    interval: 5m
    baseEjectionTime: 15m
    maxEjectionPercent: 100
    minHealthPercent: 50
  tls:
    mode: ISTIO_MUTUAL
  portLevelSettings:
  - port:
      number: 80
    loadBalancer:
      simple: ROUND_ROBIN
  - port:
      number: 443
    tls:
      mode: MUTUAL
      clientCertificate: /etc/certs/client.pem
      privateKey: /etc/certs/key.pem
      caCertificates: /etc/certs/ca.pem
      sni: reviews.example.com
      subjectAltNames: [reviews.example.com]
subsets:
- name: v1
  labels:
    version: v1
- name: v2
  labels:
    version: v2
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie:
          name: user
          ttl: 0s
        minimumRingSize: 1024
exportTo: ["."]
"#,
    );
}

#[test]
fn workload_selector_rules_are_clean() {
    assert_clean(
        DR,
        "host: ratings\nworkloadSelector:\n  matchLabels:\n    app: productpage\ntrafficPolicy:\n  tls:\n    mode: SIMPLE\n    credentialName: ratings-cert\n",
    );
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    let errs = errors(DR, &mk_policy("loadBalancer:\n  simpel: RANDOM"));
    assert!(
        errs[0].starts_with("spec.trafficPolicy.loadBalancer.simpel: unknown field"),
        "{errs:?}"
    );
}

#[test]
fn bad_enum_values_name_the_allowed_ones() {
    let errs = errors(DR, &mk_policy("tls:\n  mode: TLS"));
    assert!(
        errs[0].starts_with("spec.trafficPolicy.tls.mode: unknown variant `TLS`"),
        "{errs:?}"
    );
    assert!(errs[0].contains("ISTIO_MUTUAL"), "{errs:?}");
}

#[test]
fn host_is_required_and_valid() {
    assert_error_at(DR, "subsets:\n- name: v1\n", "spec.host");
    assert_error_at(DR, "host: \"reviews:9080\"\n", "spec.host");
}

#[test]
fn subsets_are_checked() {
    assert_error_at(
        DR,
        "host: a\nsubsets:\n- labels:\n    v: \"1\"\n",
        "spec.subsets[0].name",
    );
    assert_error_at(
        DR,
        "host: a\nsubsets:\n- name: v_1\n",
        "spec.subsets[0].name",
    );
    assert_error_with(
        DR,
        "host: a\nsubsets:\n- name: v1\n- name: v1\n",
        "spec.subsets[1].name",
        "duplicate",
    );
    assert_error_at(
        DR,
        "host: a\nsubsets:\n- name: v1\n  labels:\n    \"-bad\": x\n",
        "spec.subsets[0].labels.-bad",
    );
    assert_error_at(
        DR,
        "host: a\nsubsets:\n- name: v1\n  trafficPolicy: {}\n",
        "spec.subsets[0].trafficPolicy",
    );
}

#[test]
fn load_balancer_is_simple_or_consistent_hash() {
    assert_error_at(
        DR,
        &mk_policy("loadBalancer:\n  simple: RANDOM\n  consistentHash:\n    useSourceIp: true"),
        "spec.trafficPolicy.loadBalancer",
    );
    assert_error_at(
        DR,
        &mk_policy(
            "loadBalancer:\n  consistentHash:\n    useSourceIp: true\n    httpHeaderName: x-user",
        ),
        "spec.trafficPolicy.loadBalancer.consistentHash",
    );
    assert_error_at(
        DR,
        &mk_policy("loadBalancer:\n  consistentHash:\n    httpCookie:\n      ttl: 10s"),
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
    );
    assert_error_at(
        DR,
        &mk_policy(
            "loadBalancer:\n  consistentHash:\n    useSourceIp: true\n    maglev:\n      tableSize: 1000",
        ),
        "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
    );
    assert_error_at(
        DR,
        &mk_policy("loadBalancer:\n  warmupDurationSecs: 0s"),
        "spec.trafficPolicy.loadBalancer.warmupDurationSecs",
    );
}

#[test]
fn locality_settings_are_checked() {
    let lb = |body: &str| mk_policy(&format!("loadBalancer:\n  localityLbSetting:\n{body}"));
    assert_error_with(
        DR,
        &lb("    distribute:\n    - from: us-west/*\n      to:\n        us-east/*: 70\n"),
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
        "add up to 70",
    );
    assert_error_at(
        DR,
        &lb("    failover:\n    - from: us-east\n      to: us-east\n"),
        "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
    );
    assert_error_at(
        DR,
        &lb(
            "    distribute:\n    - from: us-west/*\n      to:\n        us-east: 100\n    failover:\n    - from: a\n      to: b\n",
        ),
        "spec.trafficPolicy.loadBalancer.localityLbSetting",
    );
}

#[test]
fn connection_pools_are_checked() {
    assert_error_at(
        DR,
        &mk_policy("connectionPool: {}"),
        "spec.trafficPolicy.connectionPool",
    );
    assert_error_at(
        DR,
        &mk_policy("connectionPool:\n  tcp:\n    connectTimeout: 0.5ms"),
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
    );
    assert_clean(
        DR,
        &mk_policy("connectionPool:\n  tcp:\n    idleTimeout: 0s"),
    );
    assert_error_at(
        DR,
        &mk_policy(
            "connectionPool:\n  http:\n    h2UpgradePolicy: UPGRADE\n    useClientProtocol: true",
        ),
        "spec.trafficPolicy.connectionPool.http.useClientProtocol",
    );
    assert_error_at(
        DR,
        &mk_policy("connectionPool:\n  http:\n    maxRetries: -1"),
        "spec.trafficPolicy.connectionPool.http.maxRetries",
    );
}

#[test]
fn outlier_detection_is_checked() {
    assert_error_at(
        DR,
        &mk_policy("outlierDetection:\n  maxEjectionPercent: 101"),
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
    );
    assert_error_at(
        DR,
        &mk_policy("outlierDetection:\n  minHealthPercent: 200"),
        "spec.trafficPolicy.outlierDetection.minHealthPercent",
    );
    assert_error_at(
        DR,
        &mk_policy("outlierDetection:\n  interval: 5"),
        "spec.trafficPolicy.outlierDetection.interval",
    );
    assert_error_at(
        DR,
        &mk_policy("outlierDetection:\n  consecutiveLocalOriginFailures: 3"),
        "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
    );
}

#[test]
fn mutual_tls_needs_certificates_or_a_credential() {
    assert_error_at(
        DR,
        &mk_policy("tls:\n  mode: MUTUAL\n  privateKey: /k"),
        "spec.trafficPolicy.tls.clientCertificate",
    );
    assert_error_at(
        DR,
        &mk_policy("tls:\n  mode: MUTUAL\n  clientCertificate: /c"),
        "spec.trafficPolicy.tls.privateKey",
    );
    assert_clean(
        DR,
        &mk_policy("tls:\n  mode: MUTUAL\n  credentialName: client-cred"),
    );
    assert_error_at(
        DR,
        &mk_policy("tls:\n  mode: SIMPLE\n  credentialName: c\n  caCertificates: /ca"),
        "spec.trafficPolicy.tls.credentialName",
    );
    assert_error_at(
        DR,
        &mk_policy("tls:\n  mode: SIMPLE\n  insecureSkipVerify: true\n  caCertificates: /ca"),
        "spec.trafficPolicy.tls.insecureSkipVerify",
    );
}

#[test]
fn port_level_settings_need_a_port() {
    assert_error_at(
        DR,
        &mk_policy("portLevelSettings:\n- tls:\n    mode: DISABLE"),
        "spec.trafficPolicy.portLevelSettings[0].port",
    );
    assert_error_at(
        DR,
        &mk_policy("portLevelSettings:\n- port:\n    number: 0\n  tls:\n    mode: DISABLE"),
        "spec.trafficPolicy.portLevelSettings[0].port.number",
    );
    assert_error_at(
        DR,
        &mk_policy("portLevelSettings:\n- port:\n    number: 80"),
        "spec.trafficPolicy.portLevelSettings[0]",
    );
}

#[test]
fn traffic_policy_is_not_empty() {
    assert_error_at(DR, "host: a\ntrafficPolicy: {}\n", "spec.trafficPolicy");
    assert_error_at(
        DR,
        &mk_policy("tunnel:\n  targetHost: proxy.example.com\n  targetPort: 0"),
        "spec.trafficPolicy.tunnel.targetPort",
    );
}

#[test]
fn workload_selector_rules_stay_in_their_namespace() {
    assert_error_at(
        DR,
        "host: a\nworkloadSelector:\n  matchLabels:\n    app: x\nexportTo: [\"*\"]\n",
        "spec.exportTo",
    );
    assert_error_at(
        DR,
        "host: a\nworkloadSelector:\n  matchLabels:\n    app: \"*\"\n",
        "spec.workloadSelector.matchLabels.app",
    );
}
