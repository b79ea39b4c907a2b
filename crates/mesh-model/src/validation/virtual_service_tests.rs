use crate::{
    kind::Kind,
    validation::test_support::{assert_clean, assert_error_at, assert_error_with, errors},
};

const VS: Kind = Kind::VirtualService;

/// A route to one destination, with `extra` lines added to the HTTP route.
fn mk_http(extra: &str) -> String {
    let mut s =
        String::from("hosts: [reviews]\nhttp:\n- route:\n  - destination:\n      host: reviews\n");
    for line in extra.lines() {
        s.push_str("  ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

#[test]
fn istio_docs_example_is_clean() {
    assert_clean(
        VS,
        r#"
hosts:
- reviews.prod.svc.cluster.local
- uk.bookinfo.com
gateways: [bookinfo-gateway, mesh]
http:
- name: reviews-v2-routes
  match:
  - uri:
      prefix: /wpcatalog
  - uri:
      prefix: /consumercatalog
    headers:
      end-user:
        exact: jason
    ignoreUriCase: true
  rewrite:
    uri: /newcatalog
  route:
  - destination:
      host: reviews.prod.svc.cluster.local
      subset: v2
- name: reviews-v1-route
  route:
  - destination:
      host: reviews.prod.svc.cluster.local
      subset: v1
    weight: 75
  - destination:
      host: reviews.prod.svc.cluster.local
      subset: v3
      port:
        number: 9080
    weight: 25
    headers:
      response:
        remove: [foo]
  timeout: 10s
  retries:
    attempts: 3
    perTryTimeout: 2s
    retryOn: gateway-error,connect-failure,refused-stream,503
  fault:
    delay:
      percentage:
        value: 0.1
      fixedDelay: 5s
  mirror:
    host: reviews.prod.svc.cluster.local
    subset: v3
  mirrorPercentage:
    value: 50.0
  corsPolicy:
    allowOrigins:
    - exact: https://example.com
    - regex: "https://.*\\.example\\.org"
    allowMethods: [POST, GET]
    allowCredentials: false
    allowHeaders: [X-Foo-Bar]
    maxAge: "24h"
  headers:
    request:
      set:
        x-forwarded-proto: https
      add:
        x-trace: "1"
tls:
- match:
  - port: 443
    sniHosts: [uk.bookinfo.com]
  route:
  - destination:
      host: reviews.prod.svc.cluster.local
tcp:
- match:
  - port: 27017
    destinationSubnets: [10.0.0.0/8]
  route:
  - destination:
      host: mongo.backup.svc.cluster.local
      port:
        number: 5555
"#,
    );
}

#[test]
fn redirect_direct_response_and_delegate_are_clean() {
    assert_clean(
        VS,
        "hosts: [a.example.com]\nhttp:\n- match:\n  - uri:\n      exact: /old\n  redirect:\n    uri: /new\n    authority: b.example.com\n    redirectCode: 308\n- match:\n  - uri:\n      prefix: /health\n  directResponse:\n    status: 200\n    body:\n      string: ok\n- delegate:\n    name: api\n    namespace: team\n",
    );
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    let errs = errors(VS, &mk_http("").replace("host: reviews", "hots: reviews"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("spec.http[0].route[0].destination.hots: unknown field `hots`"),
        "{errs:?}"
    );
}

#[test]
fn bad_enum_values_name_the_allowed_ones() {
    let errs = errors(
        VS,
        &mk_http("redirect:\n  uri: /x\n  derivePort: SOMEWHERE"),
    );
    assert!(errs[0].contains("FROM_PROTOCOL_DEFAULT"), "{errs:?}");
}

#[test]
fn hosts_are_checked() {
    assert_error_at(
        VS,
        "hosts: [\"foo.com:80\"]\nhttp:\n- route:\n  - destination:\n      host: a\n",
        "spec.hosts[0]",
    );
    assert_error_at(
        VS,
        "hosts: [\"*foo.com\"]\nhttp:\n- route:\n  - destination:\n      host: a\n",
        "spec.hosts[0]",
    );
    assert_error_with(
        VS,
        "hosts: [\"*\"]\nhttp:\n- route:\n  - destination:\n      host: a\n",
        "spec.hosts[0]",
        "mesh",
    );
    assert_error_with(
        VS,
        "hosts: [\"*.foo.com\", a.foo.com]\nhttp:\n- route:\n  - destination:\n      host: a\n",
        "spec.hosts[1]",
        "overlaps",
    );
    // `*` is fine on a gateway.
    assert_clean(
        VS,
        "hosts: [\"*\"]\ngateways: [istio-system/ingress]\nhttp:\n- route:\n  - destination:\n      host: a\n",
    );
}

#[test]
fn delegate_virtual_services_have_no_gateways_tls_or_tcp() {
    assert_error_at(
        VS,
        "gateways: [gw]\nhttp:\n- route:\n  - destination:\n      host: a\n",
        "spec.gateways",
    );
    assert_error_at(
        VS,
        "http:\n- delegate:\n    name: other\n",
        "spec.http[0].delegate",
    );
}

#[test]
fn gateway_references_are_checked() {
    assert_error_at(
        VS,
        "hosts: [a]\ngateways: [\"ns/Bad_Name\"]\nhttp:\n- route:\n  - destination:\n      host: a\n",
        "spec.gateways[0]",
    );
    assert_error_at(
        VS,
        &mk_http("match:\n- gateways: [\"a/b/c\"]"),
        "spec.http[0].match[0].gateways[0]",
    );
}

#[test]
fn some_route_is_required() {
    assert_error_at(VS, "hosts: [a]\n", "spec");
    assert_error_with(
        VS,
        "hosts: [a]\nhttp:\n- timeout: 1s\n",
        "spec.http[0]",
        "needs one of",
    );
}

#[test]
fn weights_must_add_up_to_100() {
    let spec = "hosts: [a]\nhttp:\n- route:\n  - destination:\n      host: a\n      subset: v1\n    weight: 50\n  - destination:\n      host: a\n      subset: v2\n    weight: 40\n";
    assert_error_with(VS, spec, "spec.http[0].route", "add up to 90");
    let over = "hosts: [a]\ntcp:\n- route:\n  - destination:\n      host: a\n    weight: 150\n";
    assert_error_at(VS, over, "spec.tcp[0].route[0].weight");
    let negative = "hosts: [a]\nhttp:\n- route:\n  - destination:\n      host: a\n    weight: -1\n";
    assert_error_at(VS, negative, "spec.http[0].route[0].weight");
    // A single destination needs no weight.
    assert_clean(VS, &mk_http(""));
}

#[test]
fn destinations_are_checked() {
    assert_error_at(
        VS,
        "hosts: [a]\nhttp:\n- route:\n  - destination:\n      subset: v1\n",
        "spec.http[0].route[0].destination.host",
    );
    assert_error_at(
        VS,
        "hosts: [a]\nhttp:\n- route:\n  - destination:\n      host: \"*\"\n",
        "spec.http[0].route[0].destination.host",
    );
    assert_error_at(
        VS,
        "hosts: [a]\nhttp:\n- route:\n  - destination:\n      host: a\n      subset: V_1\n",
        "spec.http[0].route[0].destination.subset",
    );
    assert_error_at(
        VS,
        "hosts: [a]\nhttp:\n- route:\n  - destination:\n      host: a\n      port:\n        number: 70000\n",
        "spec.http[0].route[0].destination.port.number",
    );
}

#[test]
fn string_matches_need_exactly_one_valid_kind() {
    assert_error_at(
        VS,
        &mk_http("match:\n- uri:\n    exact: /a\n    prefix: /b"),
        "spec.http[0].match[0].uri",
    );
    assert_error_at(
        VS,
        &mk_http("match:\n- method: {}"),
        "spec.http[0].match[0].method",
    );
    assert_error_at(
        VS,
        &mk_http("match:\n- authority:\n    prefix: \"\""),
        "spec.http[0].match[0].authority.prefix",
    );
    assert_error_with(
        VS,
        &mk_http("match:\n- headers:\n    x-user:\n      regex: \"(unclosed\""),
        "spec.http[0].match[0].headers.x-user.regex",
        "invalid regex",
    );
    assert_error_at(
        VS,
        &mk_http("match:\n- queryParams:\n    q:\n      regex: \"\""),
        "spec.http[0].match[0].queryParams.q.regex",
    );
    // An empty URI prefix matches everything and is allowed.
    assert_clean(VS, &mk_http("match:\n- uri:\n    prefix: \"\""));
    // `regex: "*"` in withoutHeaders means "present".
    assert_clean(
        VS,
        &mk_http("match:\n- withoutHeaders:\n    x-debug:\n      regex: \"*\""),
    );
}

#[test]
fn match_attributes_are_checked() {
    assert_error_at(
        VS,
        &mk_http("match:\n- port: 0"),
        "spec.http[0].match[0].port",
    );
    assert_error_at(
        VS,
        &mk_http("match:\n- sourceNamespace: Not_A_Namespace"),
        "spec.http[0].match[0].sourceNamespace",
    );
    assert_error_at(
        VS,
        &mk_http("match:\n- sourceLabels:\n    \"bad key!\": x"),
        "spec.http[0].match[0].sourceLabels.bad key!",
    );
    assert_error_at(
        VS,
        &mk_http("match:\n- headers:\n    \"bad header\":\n      exact: x"),
        "spec.http[0].match[0].headers.bad header",
    );
}

#[test]
fn redirect_excludes_route_and_direct_response() {
    assert_error_with(
        VS,
        &mk_http("redirect:\n  uri: /x"),
        "spec.http[0].redirect",
        "route and redirect",
    );
    assert_error_at(
        VS,
        "hosts: [a]\nhttp:\n- redirect:\n    uri: /x\n  directResponse:\n    status: 200\n",
        "spec.http[0].directResponse",
    );
    assert_error_at(
        VS,
        &mk_http("directResponse:\n  status: 503"),
        "spec.http[0].directResponse",
    );
    assert_error_at(
        VS,
        "hosts: [a]\nhttp:\n- redirect:\n    uri: /x\n  fault:\n    abort:\n      httpStatus: 500\n",
        "spec.http[0].fault",
    );
    assert_error_at(
        VS,
        "hosts: [a]\nhttp:\n- delegate:\n    name: d\n  redirect:\n    uri: /x\n",
        "spec.http[0].redirect",
    );
    assert_error_at(
        VS,
        "hosts: [a]\nhttp:\n- delegate:\n    name: d\n  route:\n  - destination:\n      host: a\n",
        "spec.http[0].route",
    );
}

#[test]
fn redirects_are_checked() {
    let r = |body: &str| format!("hosts: [a]\nhttp:\n- redirect:\n{body}");
    assert_error_at(VS, &r("    redirectCode: 301\n"), "spec.http[0].redirect");
    assert_error_at(
        VS,
        &r("    uri: /x\n    redirectCode: 200\n"),
        "spec.http[0].redirect.redirectCode",
    );
    assert_error_at(
        VS,
        &r("    uri: /x\n    scheme: ftp\n"),
        "spec.http[0].redirect.scheme",
    );
    assert_error_at(VS, &r("    port: 0\n"), "spec.http[0].redirect.port");
    assert_error_at(
        VS,
        &r("    port: 8080\n    derivePort: FROM_REQUEST_PORT\n"),
        "spec.http[0].redirect.derivePort",
    );
}

#[test]
fn direct_responses_are_checked() {
    let d = |body: &str| format!("hosts: [a]\nhttp:\n- directResponse:\n{body}");
    assert_error_at(
        VS,
        &d("    status: 150\n"),
        "spec.http[0].directResponse.status",
    );
    assert_error_at(
        VS,
        &d("    status: 200\n    body:\n      string: a\n      bytes: Yg==\n"),
        "spec.http[0].directResponse.body",
    );
}

#[test]
fn delegates_and_rewrites_are_checked() {
    assert_error_at(
        VS,
        "hosts: [a]\nhttp:\n- delegate:\n    namespace: x\n",
        "spec.http[0].delegate.name",
    );
    assert_error_at(VS, &mk_http("rewrite: {}"), "spec.http[0].rewrite");
    assert_error_at(
        VS,
        &mk_http("rewrite:\n  uri: /a\n  uriRegexRewrite:\n    match: ^/a\n    rewrite: /b"),
        "spec.http[0].rewrite.uriRegexRewrite",
    );
    assert_error_at(
        VS,
        &mk_http("rewrite:\n  uriRegexRewrite:\n    match: \"[\"\n    rewrite: /b"),
        "spec.http[0].rewrite.uriRegexRewrite.match",
    );
}

#[test]
fn timeouts_and_retries_are_checked() {
    assert_error_at(VS, &mk_http("timeout: 0s"), "spec.http[0].timeout");
    assert_error_at(VS, &mk_http("timeout: soon"), "spec.http[0].timeout");
    assert_error_at(
        VS,
        &mk_http("retries:\n  attempts: 2\n  perTryTimeout: 1us"),
        "spec.http[0].retries.perTryTimeout",
    );
    assert_error_at(
        VS,
        &mk_http("retries:\n  attempts: 0\n  perTryTimeout: 1s"),
        "spec.http[0].retries.attempts",
    );
    assert_error_with(
        VS,
        &mk_http("retries:\n  attempts: 2\n  retryOn: 5xx,sometimes"),
        "spec.http[0].retries.retryOn",
        "sometimes",
    );
    assert_error_at(
        VS,
        &mk_http("retries:\n  attempts: -1"),
        "spec.http[0].retries.attempts",
    );
}

#[test]
fn faults_are_checked() {
    assert_error_at(VS, &mk_http("fault: {}"), "spec.http[0].fault");
    assert_error_at(
        VS,
        &mk_http("fault:\n  abort:\n    httpStatus: 700"),
        "spec.http[0].fault.abort.httpStatus",
    );
    assert_error_at(
        VS,
        &mk_http("fault:\n  abort:\n    grpcStatus: NOPE"),
        "spec.http[0].fault.abort.grpcStatus",
    );
    assert_error_at(
        VS,
        &mk_http("fault:\n  abort:\n    percentage:\n      value: 10"),
        "spec.http[0].fault.abort",
    );
    assert_error_at(
        VS,
        &mk_http("fault:\n  abort:\n    httpStatus: 503\n    percentage:\n      value: 101"),
        "spec.http[0].fault.abort.percentage.value",
    );
    assert_error_at(
        VS,
        &mk_http("fault:\n  delay:\n    fixedDelay: 5s\n    percentage:\n      value: -3"),
        "spec.http[0].fault.delay.percentage.value",
    );
    assert_error_at(
        VS,
        &mk_http("fault:\n  delay:\n    percent: 10"),
        "spec.http[0].fault.delay",
    );
    assert_error_at(
        VS,
        &mk_http("fault:\n  delay:\n    fixedDelay: -5s"),
        "spec.http[0].fault.delay.fixedDelay",
    );
    assert_error_at(
        VS,
        &mk_http("fault:\n  delay:\n    fixedDelay: .nan"),
        "spec.http[0].fault.delay.fixedDelay",
    );
}

#[test]
fn mirrors_are_checked() {
    assert_error_at(
        VS,
        &mk_http("mirrorPercentage:\n  value: 120"),
        "spec.http[0].mirrorPercentage.value",
    );
    assert_error_at(
        VS,
        &mk_http("mirrorPercentage:\n  value: .nan"),
        "spec.http[0].mirrorPercentage.value",
    );
    assert_error_at(
        VS,
        &mk_http("mirror:\n  subset: v1"),
        "spec.http[0].mirror.host",
    );
    assert_error_at(
        VS,
        &mk_http("mirror:\n  host: a\nmirrors:\n- destination:\n    host: b"),
        "spec.http[0].mirrors",
    );
    assert_error_at(
        VS,
        &mk_http("mirrors:\n- destination:\n    host: \"\""),
        "spec.http[0].mirrors[0].destination.host",
    );
}

#[test]
fn cors_policies_are_checked() {
    assert_error_at(
        VS,
        &mk_http("corsPolicy:\n  allowMethods: [FETCH]"),
        "spec.http[0].corsPolicy.allowMethods[0]",
    );
    assert_error_at(
        VS,
        &mk_http("corsPolicy:\n  allowOrigins:\n  - exact: \"\""),
        "spec.http[0].corsPolicy.allowOrigins[0]",
    );
    assert_error_at(
        VS,
        &mk_http("corsPolicy:\n  maxAge: 1500ms"),
        "spec.http[0].corsPolicy.maxAge",
    );
    assert_error_at(
        VS,
        &mk_http("corsPolicy:\n  allowHeaders: [\"\"]"),
        "spec.http[0].corsPolicy.allowHeaders[0]",
    );
}

#[test]
fn header_operations_are_checked() {
    assert_error_at(
        VS,
        &mk_http("headers:\n  response:\n    set:\n      \":status\": \"200\""),
        "spec.http[0].headers.response.set.:status",
    );
    assert_error_at(
        VS,
        &mk_http("headers:\n  request:\n    remove: [host]"),
        "spec.http[0].headers.request.remove[0]",
    );
    // Requests may set the authority.
    assert_clean(
        VS,
        &mk_http("headers:\n  request:\n    set:\n      host: example.com"),
    );
}

#[test]
fn tls_routes_need_sni_hosts_covered_by_the_hosts() {
    let tls = |m: &str| {
        format!(
            "hosts: [\"*.example.com\"]\ngateways: [gw]\ntls:\n- match:\n{m}  route:\n  - destination:\n      host: a\n"
        )
    };
    assert_clean(VS, &tls("  - sniHosts: [a.example.com]\n"));
    assert_error_at(VS, &tls("  - port: 443\n"), "spec.tls[0].match[0].sniHosts");
    assert_error_with(
        VS,
        &tls("  - sniHosts: [other.org]\n"),
        "spec.tls[0].match[0].sniHosts[0]",
        "not covered",
    );
    assert_error_at(
        VS,
        "hosts: [a]\ntls:\n- route:\n  - destination:\n      host: a\n",
        "spec.tls[0].match",
    );
    assert_error_at(
        VS,
        &tls("  - sniHosts: [a.example.com]\n    destinationSubnets: [10.0.0.0/99]\n"),
        "spec.tls[0].match[0].destinationSubnets[0]",
    );
}

#[test]
fn tcp_routes_are_checked() {
    assert_error_at(
        VS,
        "hosts: [a]\ntcp:\n- match:\n  - port: 1\n",
        "spec.tcp[0].route",
    );
    assert_error_at(
        VS,
        "hosts: [a]\ntcp:\n- match:\n  - sourceSubnet: nope\n  route:\n  - destination:\n      host: a\n",
        "spec.tcp[0].match[0].sourceSubnet",
    );
}

#[test]
fn export_to_is_checked() {
    let spec = |e: &str| format!("{}exportTo: {e}\n", mk_http(""));
    assert_clean(VS, &spec("[\".\", other]"));
    assert_error_at(VS, &spec("[\"*\", other]"), "spec.exportTo");
    assert_error_at(VS, &spec("[\".\", default]"), "spec.exportTo[1]");
    assert_error_at(VS, &spec("[\"~\"]"), "spec.exportTo[0]");
}
