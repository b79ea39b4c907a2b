use super::http_url;
use crate::{
    kind::Kind,
    validation::test_support::{assert_clean, assert_error_at, assert_error_with, errors},
};

const PA: Kind = Kind::PeerAuthentication;
const AP: Kind = Kind::AuthorizationPolicy;
const RA: Kind = Kind::RequestAuthentication;

#[test]
fn peer_authentication_docs_examples_are_clean() {
    assert_clean(PA, "mtls:\n  mode: STRICT\n");
    assert_clean(
        PA,
        "selector:\n  matchLabels:\n    app: finance\nmtls:\n  mode: STRICT\nportLevelMtls:\n  8080:\n    mode: DISABLE\n  \"9090\":\n    mode: PERMISSIVE\n",
    );
}

#[test]
fn peer_authentication_rules() {
    assert_error_at(
        PA,
        "mtls:\n  mode: STRICT\nportLevelMtls:\n  8080:\n    mode: DISABLE\n",
        "spec.portLevelMtls",
    );
    assert_error_at(
        PA,
        "selector:\n  matchLabels:\n    app: a\nportLevelMtls:\n  0:\n    mode: DISABLE\n",
        "spec.portLevelMtls.0",
    );
    let errs = errors(PA, "mtls:\n  mode: MAYBE\n");
    assert!(
        errs[0].starts_with("spec.mtls.mode: unknown variant `MAYBE`")
            && errs[0].contains("PERMISSIVE"),
        "{errs:?}"
    );
    let errs = errors(
        PA,
        "selector:\n  matchLabels:\n    app: a\nportLevelMtls:\n  http:\n    mode: DISABLE\n",
    );
    assert!(errs[0].starts_with("spec.portLevelMtls"), "{errs:?}");
}

#[test]
fn authorization_policy_docs_examples_are_clean() {
    assert_clean(
        AP,
        r#"
selector:
  matchLabels:
    app: httpbin
    version: v1
action: ALLOW
rules:
- from:
  - source:
      principals: ["cluster.local/ns/default/sa/sleep"]
  - source:
      namespaces: ["test"]
      ipBlocks: ["10.0.0.0/8", "192.168.1.1"]
  to:
  - operation:
      methods: ["GET"]
      paths: ["/info*"]
  - operation:
      methods: ["POST"]
      paths: ["/data"]
      ports: ["8080"]
  when:
  - key: request.auth.claims[iss]
    values: ["https://accounts.google.com"]
  - key: source.ip
    notValues: ["10.1.2.3/32"]
  - key: destination.port
    values: ["443"]
  - key: request.headers[User-Agent]
    values: ["curl/*"]
"#,
    );
    assert_clean(AP, "action: DENY\nrules:\n- {}\n");
    assert_clean(
        AP,
        "action: CUSTOM\nprovider:\n  name: my-ext-authz\nrules:\n- to:\n  - operation:\n      paths: [\"/admin/*\"]\n",
    );
    assert_clean(AP, "{}\n");
}

#[test]
fn custom_action_and_provider_go_together() {
    assert_error_at(AP, "action: CUSTOM\nrules:\n- {}\n", "spec.provider");
    assert_error_at(
        AP,
        "action: CUSTOM\nprovider: {}\nrules:\n- {}\n",
        "spec.provider.name",
    );
    assert_error_at(AP, "action: ALLOW\nprovider:\n  name: x\n", "spec.provider");
    assert_error_at(AP, "action: DENY\n", "spec.rules");
}

#[test]
fn sources_and_operations_are_checked() {
    assert_error_at(
        AP,
        "rules:\n- from:\n  - source:\n      ipBlocks: [\"10.0.0.0/33\"]\n",
        "spec.rules[0].from[0].source.ipBlocks[0]",
    );
    assert_error_at(
        AP,
        "rules:\n- from:\n  - source:\n      notRemoteIpBlocks: [host]\n",
        "spec.rules[0].from[0].source.notRemoteIpBlocks[0]",
    );
    assert_error_at(
        AP,
        "rules:\n- from:\n  - source: {}\n",
        "spec.rules[0].from[0].source",
    );
    assert_error_at(
        AP,
        "rules:\n- from:\n  - {}\n",
        "spec.rules[0].from[0].source",
    );
    assert_error_at(
        AP,
        "rules:\n- from:\n  - source:\n      principals: [\"\"]\n",
        "spec.rules[0].from[0].source.principals[0]",
    );
    assert_error_at(
        AP,
        "rules:\n- to:\n  - operation:\n      ports: [\"http\"]\n",
        "spec.rules[0].to[0].operation.ports[0]",
    );
    assert_error_at(
        AP,
        "rules:\n- to:\n  - operation:\n      notPorts: [\"70000\"]\n",
        "spec.rules[0].to[0].operation.notPorts[0]",
    );
    assert_error_at(
        AP,
        "rules:\n- to:\n  - operation: {}\n",
        "spec.rules[0].to[0].operation",
    );
}

#[test]
fn conditions_use_known_keys() {
    let when = |w: &str| format!("rules:\n- when:\n  - {w}\n");
    assert_error_with(
        AP,
        &when("key: source.color\n    values: [red]"),
        "spec.rules[0].when[0].key",
        "unknown condition key",
    );
    assert_error_at(
        AP,
        &when("key: request.headers\n    values: [x]"),
        "spec.rules[0].when[0].key",
    );
    assert_error_at(
        AP,
        &when("key: destination.labels[app]\n    values: [x]"),
        "spec.rules[0].when[0].key",
    );
    assert_error_with(
        AP,
        &when("key: source.namespace"),
        "spec.rules[0].when[0]",
        "values or notValues",
    );
    assert_error_at(
        AP,
        &when("key: source.ip\n    values: [somewhere]"),
        "spec.rules[0].when[0].values[0]",
    );
    assert_error_at(
        AP,
        &when("key: destination.port\n    notValues: [\"-1\"]"),
        "spec.rules[0].when[0].notValues[0]",
    );
    assert_error_at(AP, &when("values: [x]"), "spec.rules[0].when[0].key");
    assert_clean(
        AP,
        &when(
            "key: experimental.envoy.filters.network.mysql_proxy[db.table]\n    values: [\"[update]\"]",
        ),
    );
    assert_clean(
        AP,
        &when("key: connection.sni\n    values: [\"*.example.com\"]"),
    );
}

#[test]
fn selector_and_target_refs_are_exclusive() {
    assert_error_at(
        AP,
        "selector:\n  matchLabels:\n    app: a\ntargetRef:\n  kind: Gateway\n  name: gw\n",
        "spec",
    );
    assert_error_at(AP, "targetRef:\n  kind: Gateway\n", "spec.targetRef.name");
}

#[test]
fn request_authentication_docs_example_is_clean() {
    assert_clean(
        RA,
        r#"
selector:
  matchLabels:
    app: httpbin
jwtRules:
- issuer: "issuer-foo"
  jwksUri: https://example.com/.well-known/jwks.json
  audiences: [bookstore_android.apps.example.com]
  fromHeaders:
  - name: x-jwt-assertion
    prefix: "Bearer "
  fromParams: [my_token]
  outputPayloadToHeader: x-jwt-payload
  forwardOriginalToken: true
- issuer: "issuer-bar"
  jwks: '{ "keys": [] }'
"#,
    );
}

#[test]
fn jwt_rules_are_checked() {
    assert_error_at(
        RA,
        "jwtRules:\n- jwksUri: https://a.com/jwks\n",
        "spec.jwtRules[0].issuer",
    );
    assert_error_at(
        RA,
        "jwtRules:\n- issuer: a\n  jwksUri: https://a.com/k\n  jwks: '{}'\n",
        "spec.jwtRules[0].jwks",
    );
    assert_error_at(
        RA,
        "jwtRules:\n- issuer: a\n  jwksUri: ftp://a.com/k\n",
        "spec.jwtRules[0].jwksUri",
    );
    assert_error_at(
        RA,
        "jwtRules:\n- issuer: a\n  jwks: not json\n",
        "spec.jwtRules[0].jwks",
    );
    assert_error_at(
        RA,
        "jwtRules:\n- issuer: a\n  fromHeaders:\n  - prefix: x\n",
        "spec.jwtRules[0].fromHeaders[0].name",
    );
    assert_error_at(
        RA,
        "jwtRules:\n- issuer: a\n  audiences: [\"\"]\n",
        "spec.jwtRules[0].audiences[0]",
    );
    assert_error_at(
        RA,
        "jwtRules:\n- issuer: a\n  timeout: 0s\n",
        "spec.jwtRules[0].timeout",
    );
    let errs = errors(RA, "jwtRules:\n- issuer: a\n  jwksUrl: https://a.com\n");
    assert!(
        errs[0].starts_with("spec.jwtRules[0].jwksUrl: unknown field"),
        "{errs:?}"
    );
}

#[test]
fn urls() {
    assert!(http_url("https://example.com/jwks").is_ok());
    assert!(http_url("http://10.0.0.1:8080").is_ok());
    assert!(http_url("HTTPS://[::1]:443/x").is_ok());
    assert!(http_url("https://").is_err());
    assert!(http_url("https://a.com:0/").is_err());
    assert!(http_url("https://a b/").is_err());
    assert!(http_url("jwks.json").is_err());
    assert!(http_url("httpsé://x").is_err());
}
