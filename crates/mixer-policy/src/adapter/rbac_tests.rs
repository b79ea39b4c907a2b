#![allow(clippy::unwrap_used)]

use super::*;

fn policy(ns: &str, name: &str, yaml: &str) -> NamedPolicy {
    NamedPolicy {
        namespace: ns.into(),
        name: name.into(),
        spec: serde_norway::from_str(yaml).unwrap(),
    }
}

fn request() -> AuthzRequest {
    AuthzRequest {
        source_principal: Some("cluster.local/ns/bookinfo/sa/productpage".into()),
        source_namespace: Some("bookinfo".into()),
        source_ip: Some("10.1.0.7".parse().unwrap()),
        destination_namespace: "bookinfo".into(),
        destination_labels: BTreeMap::from([("app".into(), "reviews".into())]),
        destination_port: Some(9080),
        host: Some("Reviews.bookinfo.svc.cluster.local".into()),
        method: Some("GET".into()),
        path: Some("/reviews/1".into()),
        headers: BTreeMap::from([("x-user".into(), "jason".into())]),
        ..AuthzRequest::default()
    }
}

fn allowed(rbac: &Rbac, req: &AuthzRequest) -> bool {
    rbac.check(req).is_ok()
}

#[test]
fn no_policy_allows_and_an_empty_allow_policy_denies() {
    assert!(allowed(&Rbac::default(), &request()));
    let rbac = Rbac::new(vec![policy("bookinfo", "allow-nothing", "{}")]);
    let r = rbac.check(&request());
    assert_eq!(r.code, code::PERMISSION_DENIED);
    assert!(r.message.contains("no ALLOW policy"), "{}", r.message);
}

#[test]
fn allow_rules_match_sources_operations_and_conditions() {
    let rbac = Rbac::new(vec![policy(
        "bookinfo",
        "reviews-viewer",
        r#"
selector: {matchLabels: {app: reviews}}
action: ALLOW
rules:
- from:
  - source: {principals: ["cluster.local/ns/bookinfo/sa/productpage"]}
  to:
  - operation: {methods: ["GET"], paths: ["/reviews/*"], hosts: ["reviews.bookinfo.svc.cluster.local"]}
  when:
  - key: request.headers[X-User]
    values: ["jas*"]
"#,
    )]);
    assert!(allowed(&rbac, &request()));
    for change in [
        |r: &mut AuthzRequest| r.method = Some("POST".into()),
        |r: &mut AuthzRequest| r.path = Some("/ratings/1".into()),
        |r: &mut AuthzRequest| r.source_principal = Some("cluster.local/ns/default/sa/x".into()),
        |r: &mut AuthzRequest| {
            r.headers.clear();
        },
        |r: &mut AuthzRequest| r.host = Some("details".into()),
    ] {
        let mut req = request();
        change(&mut req);
        assert!(!allowed(&rbac, &req), "{req:?}");
    }
    // Another workload in the namespace is not selected: no ALLOW policy applies.
    let mut other = request();
    other.destination_labels = BTreeMap::from([("app".into(), "ratings".into())]);
    other.method = Some("DELETE".into());
    assert!(allowed(&rbac, &other));
}

#[test]
fn deny_wins_and_root_namespace_policies_apply_everywhere() {
    let rbac = Rbac::new(vec![
        policy("bookinfo", "allow-all", "rules:\n- {}\n"),
        policy(
            "istio-system",
            "deny-blocked-ips",
            r#"
action: DENY
rules:
- from:
  - source: {ipBlocks: ["10.1.0.0/16"], notNamespaces: ["istio-system"]}
"#,
        ),
    ]);
    let r = rbac.check(&request());
    assert_eq!(r.code, code::PERMISSION_DENIED);
    assert!(
        r.message.contains("istio-system/deny-blocked-ips"),
        "{}",
        r.message
    );
    let mut elsewhere = request();
    elsewhere.source_ip = Some("192.168.0.1".parse().unwrap());
    assert!(allowed(&rbac, &elsewhere));
    let mut from_root = request();
    from_root.source_namespace = Some("istio-system".into());
    assert!(allowed(&rbac, &from_root), "notNamespaces excludes it");
}

#[test]
fn audit_never_decides_and_unknown_condition_keys_match_nothing() {
    let rbac = Rbac::new(vec![
        policy("bookinfo", "audit", "action: AUDIT\nrules:\n- {}\n"),
        policy(
            "bookinfo",
            "odd",
            "rules:\n- when:\n  - key: request.made_up\n    values: [\"*\"]\n",
        ),
    ]);
    assert!(!allowed(&rbac, &request()), "the odd ALLOW matches nothing");
    let rbac = Rbac::new(vec![policy(
        "bookinfo",
        "audit",
        "action: AUDIT\nrules:\n- {}\n",
    )]);
    assert!(allowed(&rbac, &request()));
}

#[test]
fn string_patterns() {
    assert!(string_match("*", "", false));
    assert!(string_match("/api/*", "/api/v1", false));
    assert!(!string_match("/api/*", "/ap", false));
    assert!(string_match(
        "*.svc.cluster.local",
        "a.svc.cluster.local",
        false
    ));
    assert!(string_match("A.B", "a.b", true) && !string_match("A.B", "a.b", false));
    assert!(!string_match("é*", "e", false));
    assert!(ip_match("10.0.0.0/8", &"10.2.3.4".parse().unwrap()));
    assert!(ip_match("10.0.0.1", &"10.0.0.1".parse().unwrap()));
    assert!(!ip_match("bogus", &"10.0.0.1".parse().unwrap()));
}
