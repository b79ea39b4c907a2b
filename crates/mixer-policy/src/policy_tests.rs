#![allow(clippy::unwrap_used)]

use mesh_model::{ParseOptions, parse_document_set};
use mixer_core::wire::AttributeBag;

use super::*;

const CONFIG: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: denyall, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status: {code: 7, message: "not allowed"}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: denyrequest, namespace: istio-system}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-jason, namespace: istio-system}
spec:
  match: request.headers["x-user"] | "" == "jason" && destination.service.host == "ratings.bookinfo.svc.cluster.local"
  actions:
  - handler: denyall
    instances: [denyrequest]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: versions, namespace: bookinfo}
spec:
  compiledAdapter: listchecker
  params:
    overrides: ["v1", "v2"]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: appversion, namespace: bookinfo}
spec:
  compiledTemplate: listentry
  params:
    value: source.labels["version"] | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: checkversion, namespace: bookinfo}
spec:
  match: destination.labels["app"] | "" == "reviews"
  actions:
  - handler: versions
    instances: [appversion]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: quotas, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    quotas:
    - name: requestcount.istio-system
      maxAmount: 2
      validDuration: 10s
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcount, namespace: istio-system}
spec:
  compiledTemplate: quota
  params:
    dimensions:
      destination: destination.service.host | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: quota, namespace: istio-system}
spec:
  actions:
  - handler: quotas
    instances: [requestcount]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: broken, namespace: istio-system}
spec:
  match: request.size == "big"
  actions:
  - handler: denyall
    instances: [denyrequest]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: dangling, namespace: istio-system}
spec:
  actions:
  - handler: nosuch
    instances: [denyrequest]
"#;

fn policy(text: &str) -> Policy {
    let set = parse_document_set("policy.yaml", text, &ParseOptions::default());
    assert!(set.rejected.is_empty(), "{:?}", set.rejected);
    Policy::compile(&set.accepted)
}

fn bag(pairs: &[(&str, Value)]) -> AttributeBag {
    let mut b = AttributeBag::new();
    for (n, v) in pairs {
        b.insert(n, v.clone());
    }
    b
}

fn map(pairs: &[(&str, &str)]) -> Value {
    Value::string_map(pairs.iter().copied())
}

fn check<'p>(p: &'p Policy, b: &AttributeBag) -> Decision<'p> {
    p.check(b, &BTreeMap::new(), "", Instant::now())
}

#[test]
fn rules_decide_as_written_and_bad_ones_are_reported() {
    let p = policy(CONFIG);
    let issues: Vec<&str> = p.issues().iter().map(|i| i.resource.as_str()).collect();
    assert_eq!(
        issues,
        ["rule/istio-system/broken", "rule/istio-system/dangling"],
        "{:?}",
        p.issues()
    );
    assert!(p.issues()[0].message.contains("match"), "{:?}", p.issues());

    let jason = bag(&[
        ("request.headers", map(&[("x-user", "jason")])),
        (
            "destination.service.host",
            Value::from("ratings.bookinfo.svc.cluster.local"),
        ),
    ]);
    let d = check(&p, &jason);
    assert_eq!(d.precondition.code, code::PERMISSION_DENIED);
    assert_eq!(d.precondition.message, "not allowed");
    // The cache key: what the decision read, present or not.
    assert!(
        d.referenced
            .iter()
            .any(|(r, present)| r.name == "request.headers"
                && r.key.as_deref() == Some("x-user")
                && *present)
    );

    let other_user = bag(&[
        ("request.headers", map(&[("x-user", "ann")])),
        (
            "destination.service.host",
            Value::from("ratings.bookinfo.svc.cluster.local"),
        ),
    ]);
    assert!(check(&p, &other_user).precondition.is_ok());
}

#[test]
fn namespaced_rules_apply_to_their_namespace_only() {
    let p = policy(CONFIG);
    let to_reviews = |version: &str, ns: &str| {
        bag(&[
            ("destination.labels", map(&[("app", "reviews")])),
            ("source.labels", map(&[("version", version)])),
            ("destination.namespace", Value::from(ns)),
        ])
    };
    assert!(
        check(&p, &to_reviews("v1", "bookinfo"))
            .precondition
            .is_ok()
    );
    let d = check(&p, &to_reviews("v3", "bookinfo"));
    assert_eq!(d.precondition.code, 5, "{:?}", d.precondition);
    // The bookinfo rule does not apply elsewhere.
    assert!(check(&p, &to_reviews("v3", "shop")).precondition.is_ok());
}

#[test]
fn quotas_are_granted_per_dimension_until_exhausted() {
    let p = policy(CONFIG);
    let ask = BTreeMap::from([(
        "requestcount.istio-system".to_string(),
        QuotaAsk {
            amount: 1,
            best_effort: false,
        },
    )]);
    let b = bag(&[(
        "destination.service.host",
        Value::from("details.bookinfo.svc.cluster.local"),
    )]);
    let now = Instant::now();
    let granted: Vec<i64> = (0..3)
        .map(|_| p.check(&b, &ask, "", now).quotas["requestcount.istio-system"].granted)
        .collect();
    assert_eq!(granted, [1, 1, 0]);
    // An unknown quota gets nothing.
    let unknown = BTreeMap::from([(
        "nope".to_string(),
        QuotaAsk {
            amount: 1,
            best_effort: true,
        },
    )]);
    assert_eq!(p.check(&b, &unknown, "", now).quotas["nope"].granted, 0);
}

fn compile_with(text: &str, stores: &mut Stores) -> Policy {
    let set = parse_document_set("policy.yaml", text, &ParseOptions::default());
    assert!(set.rejected.is_empty(), "{:?}", set.rejected);
    Policy::compile_with(&set.accepted, stores)
}

fn one_request() -> BTreeMap<String, QuotaAsk> {
    BTreeMap::from([(
        "requestcount.istio-system".to_string(),
        QuotaAsk {
            amount: 1,
            best_effort: false,
        },
    )])
}

#[test]
fn quota_counts_outlive_versions_until_their_handler_changes() {
    let mut stores = Stores::default();
    let b = bag(&[("destination.service.host", Value::from("details"))]);
    let now = Instant::now();
    let grant = |p: &Policy| {
        p.check(&b, &one_request(), "", now).quotas["requestcount.istio-system"].granted
    };
    let v1 = compile_with(CONFIG, &mut stores);
    assert_eq!((grant(&v1), grant(&v1)), (1, 1));
    // Another rule changes: the quota handler is the same, so is its count.
    let v2 = compile_with(&CONFIG.replace("\"jason\"", "\"ann\""), &mut stores);
    assert_eq!(grant(&v2), 0);
    // The handler's params change: a new count.
    let v3 = compile_with(&CONFIG.replace("maxAmount: 2", "maxAmount: 3"), &mut stores);
    assert_eq!(grant(&v3), 1);
    assert_eq!(
        stores.memquotas.len(),
        1,
        "the old handler's count is dropped"
    );
}

#[tokio::test]
async fn sql_quotas_are_allocated_after_the_decision() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("q/quota.db").display());
    let mut stores = Stores::new(Some(url));
    let text = CONFIG.replace("compiledAdapter: memquota", "compiledAdapter: sqlquota");
    let p = compile_with(&text, &mut stores);
    assert!(
        !p.issues().iter().any(|i| i.resource.contains("quotas")),
        "{:?}",
        p.issues()
    );
    let b = bag(&[("destination.service.host", Value::from("details"))]);
    let mut granted = Vec::new();
    for _ in 0..3 {
        let mut d = p.check(&b, &one_request(), "", Instant::now());
        assert!(d.has_pending());
        d.allocate().await;
        assert!(d.quota_errors.is_empty(), "{:?}", d.quota_errors);
        granted.push(d.quotas["requestcount.istio-system"].granted);
    }
    assert_eq!(granted, [1, 1, 0]);
    // Without a database to count in, the handler is reported, not guessed.
    let p = compile_with(&text, &mut Stores::default());
    let issue = p
        .issues()
        .iter()
        .find(|i| i.resource == "handler/istio-system/quotas")
        .unwrap();
    assert!(
        issue.message.contains("--quota-database"),
        "{}",
        issue.message
    );
}

#[test]
fn the_rbac_adapter_applies_authorization_policies() {
    let p = policy(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: rbac, namespace: istio-system}
spec: {compiledAdapter: rbac}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcontext, namespace: istio-system}
spec: {compiledTemplate: authorization}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: rbac, namespace: istio-system}
spec:
  actions: [{handler: rbac, instances: [requestcontext]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-readers, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: ratings}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/bookinfo/sa/reviews"]}}]
    to: [{operation: {methods: ["GET"]}}]
"#,
    );
    assert!(p.issues().is_empty(), "{:?}", p.issues());
    let req = |principal: &str| {
        bag(&[
            ("source.principal", Value::from(principal)),
            ("destination.namespace", Value::from("bookinfo")),
            ("destination.labels", map(&[("app", "ratings")])),
            ("request.method", Value::from("GET")),
        ])
    };
    assert!(
        check(&p, &req("cluster.local/ns/bookinfo/sa/reviews"))
            .precondition
            .is_ok()
    );
    let denied = check(&p, &req("cluster.local/ns/bookinfo/sa/productpage"));
    assert_eq!(denied.precondition.code, code::PERMISSION_DENIED);
    // What the adapter read is part of the answer's referenced attributes, so
    // a client (or the cache) never reuses it for another principal or path.
    let refs: Vec<(&str, bool)> = denied
        .referenced
        .iter()
        .map(|(r, present)| (r.name.as_str(), *present))
        .collect();
    for expected in [
        ("source.principal", true),
        ("request.method", true),
        ("request.path", false),
        ("request.headers", false),
    ] {
        assert!(refs.contains(&expected), "{expected:?} in {refs:?}");
    }
}

const DENY_JASON: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: denyall, namespace: istio-system}
spec:
  compiledAdapter: denier
  params: {status: {code: 7}, validDuration: 10s, validUseCount: 3}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: denyrequest, namespace: istio-system}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-jason, namespace: istio-system}
spec:
  match: request.headers["x-user"] | "" == "jason"
  actions: [{handler: denyall, instances: [denyrequest]}]
"#;

#[test]
fn the_cache_reuses_answers_for_requests_agreeing_on_what_was_read() {
    let p = policy(DENY_JASON);
    let user = |u: &str, path: &str| {
        bag(&[
            ("request.headers", map(&[("x-user", u), ("x-other", path)])),
            ("request.path", Value::from(path)),
        ])
    };
    let t0 = Instant::now();
    let at = |b: &AttributeBag, secs: u64| {
        let d = p.check(b, &BTreeMap::new(), "", t0 + Duration::from_secs(secs));
        (d.precondition.code, d.precondition.valid_use_count)
    };
    // Decided, then reused while uses remain, also for a request differing only
    // in what the decision did not read.
    assert_eq!(at(&user("jason", "/a"), 0), (7, 3));
    assert_eq!(at(&user("jason", "/b"), 0), (7, 2));
    assert_eq!(at(&user("jason", "/a"), 1), (7, 1));
    assert_eq!(at(&user("jason", "/a"), 1), (7, 0));
    // Uses exhausted: decided again.
    assert_eq!(at(&user("jason", "/a"), 1), (7, 3));
    assert_eq!(p.cache_stats(), (1, 1));
    // Another value of what was read is decided on its own (no handler ran:
    // the default reuse of 10,000).
    assert_eq!(at(&user("ann", "/a"), 1), (0, 10_000));
    assert_eq!(at(&user("ann", "/a"), 1), (0, 9_999));
    assert_eq!(p.cache_stats(), (1, 2));
    // Absent is a value too: no header at all is allowed, and not confused
    // with jason's entry.
    let nobody = bag(&[("request.path", Value::from("/a"))]);
    assert_eq!(at(&nobody, 1), (0, 10_000));
    // Past the valid duration: decided again.
    assert_eq!(at(&user("jason", "/a"), 11), (7, 3));
    // Quota asks are never answered from the cache.
    let ask = BTreeMap::from([(
        "requestcount.istio-system".to_string(),
        QuotaAsk {
            amount: 1,
            best_effort: false,
        },
    )]);
    let d = p.check(&user("jason", "/a"), &ask, "", t0 + Duration::from_secs(11));
    assert_eq!(d.precondition.valid_use_count, 3);
}

#[test]
fn unknown_adapters_templates_and_bad_params_are_reported() {
    let p = policy(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: a, namespace: istio-system}
spec: {compiledAdapter: stdio}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: b, namespace: istio-system}
spec: {compiledAdapter: denier, params: {status: {code: 99}}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: c, namespace: istio-system}
spec: {compiledTemplate: metric}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: d, namespace: istio-system}
spec: {compiledTemplate: listentry, params: {value: "no.such.attribute"}}
"#,
    );
    let messages: Vec<String> = p
        .issues()
        .iter()
        .map(|i| format!("{}: {}", i.resource, i.message))
        .collect();
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert!(
        messages[0].contains("unknown adapter \"stdio\""),
        "{messages:?}"
    );
    assert!(messages[1].contains("status.code 99"), "{messages:?}");
    assert!(
        messages[2].contains("unknown template \"metric\""),
        "{messages:?}"
    );
    assert!(messages[3].contains("params.value"), "{messages:?}");
}
