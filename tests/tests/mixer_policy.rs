//! mixer-policy end to end: rules in a configuration directory served by the real
//! galley, the real mixer-policy following it, and Check calls over the Mixer API
//! (compressed attribute bags), Envoy's ext_authz and Envoy's rate limit service
//! deciding as the rules say;
//! an edited rule changes decisions with no failed request.

#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use dromon_e2e::{ChildGuard, free_port, grpc_channel, http_json, local_addr, wait_http_ok};
use mesh_api::{
    envoy::envoy::service::auth::v3::{
        AttributeContext, CheckRequest as AuthzRequest,
        attribute_context::{HttpRequest, Peer, Request},
        authorization_client::AuthorizationClient,
    },
    envoy::envoy::{
        extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry},
        service::ratelimit::v3::{
            RateLimitRequest, rate_limit_service_client::RateLimitServiceClient,
        },
    },
    mixer::v1::{CheckRequest, check_request::QuotaParams, mixer_client::MixerClient},
};
use mixer_core::{
    Value,
    dictionary::GLOBAL_WORDS,
    wire::{AttributeBag, encode},
};
use tonic::transport::Channel;

const RULES: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: denyall, namespace: istio-system}
spec:
  compiledAdapter: denier
  params: {status: {code: 7, message: "ratings are closed to jason"}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: denyrequest, namespace: istio-system}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-user, namespace: istio-system}
spec:
  match: request.headers["x-user"] | "" == "jason"
  actions: [{handler: denyall, instances: [denyrequest]}]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: quotas, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    quotas: [{name: requestcount.istio-system, maxAmount: 3, validDuration: 1h}]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcount, namespace: istio-system}
spec:
  compiledTemplate: quota
  params: {dimensions: {destination: destination.service.host | "unknown"}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: quota, namespace: istio-system}
spec:
  actions: [{handler: quotas, instances: [requestcount]}]
"#;

struct Plane {
    _galley: ChildGuard,
    _policy: ChildGuard,
    grpc: SocketAddr,
    monitoring: SocketAddr,
}

/// galley serving `config`, ready; its MCP address.
async fn start_galley(config: &Path) -> (ChildGuard, SocketAddr) {
    let g = dromon_e2e::start_galley(config).await.unwrap();
    (g.child, g.mcp)
}

/// A mixer-policy following galley at `mcp`, ready; its Check and monitoring
/// addresses.
async fn start_policy(mcp: SocketAddr, extra: &[&str]) -> (ChildGuard, SocketAddr, SocketAddr) {
    let (grpc, monitoring) = (local_addr(), local_addr());
    let galley = format!("http://{mcp}");
    let (grpc_s, monitoring_s) = (grpc.to_string(), monitoring.to_string());
    let mut args = vec![
        "--galley",
        &galley,
        "--grpc-addr",
        &grpc_s,
        "--monitoring-addr",
        &monitoring_s,
    ];
    args.extend_from_slice(extra);
    let policy = ChildGuard::spawn("mixer-policy", &args).unwrap();
    wait_http_ok(monitoring, "/ready", Duration::from_secs(30))
        .await
        .unwrap();
    (policy, grpc, monitoring)
}

async fn start(config: &Path) -> Plane {
    let (galley, mcp) = start_galley(config).await;
    let (policy, grpc, monitoring) = start_policy(mcp, &[]).await;
    Plane {
        _galley: galley,
        _policy: policy,
        grpc,
        monitoring,
    }
}

async fn mixer_client(addr: SocketAddr) -> MixerClient<Channel> {
    let channel = grpc_channel(addr).await.unwrap();
    MixerClient::new(channel)
}

fn bag(user: &str, host: &str) -> AttributeBag {
    let mut b = AttributeBag::new();
    b.insert("request.headers", Value::string_map([("x-user", user)]));
    b.insert("destination.service.host", Value::from(host));
    b
}

fn all_words() -> u32 {
    u32::try_from(GLOBAL_WORDS.len()).unwrap()
}

async fn mixer_check(
    client: &mut MixerClient<Channel>,
    b: &AttributeBag,
    quota: bool,
) -> (i32, i64) {
    let mut req = CheckRequest {
        attributes: Some(encode(b, all_words())),
        global_word_count: all_words(),
        ..CheckRequest::default()
    };
    if quota {
        req.quotas.insert(
            "requestcount.istio-system".into(),
            QuotaParams {
                amount: 1,
                best_effort: false,
            },
        );
    }
    let resp = client.check(req).await.unwrap().into_inner();
    let code = resp.precondition.unwrap().status.unwrap().code;
    let granted = resp
        .quotas
        .get("requestcount.istio-system")
        .map_or(0, |q| q.granted_amount);
    (code, granted)
}

fn rate_limit(domain: &str, cluster: &str) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "destination_cluster".into(),
                value: cluster.into(),
            }],
            ..RateLimitDescriptor::default()
        }],
        hits_addend: 1,
    }
}

fn authz(user: &str) -> AuthzRequest {
    AuthzRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer::default()),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/ratings/1".into(),
                    headers: [("x-user".to_string(), user.to_string())].into(),
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_from_galley_allow_deny_and_limit_and_edits_apply_without_failed_calls() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("policy.yaml"), RULES).unwrap();
    let plane = start(tmp.path()).await;
    let channel = grpc_channel(plane.grpc).await.unwrap();
    let mut mixer = MixerClient::new(channel.clone());
    let mut envoy = AuthorizationClient::new(channel.clone());

    // Mixer Check API: allowed, denied with the configured status.
    assert_eq!(
        mixer_check(&mut mixer, &bag("ann", "ratings"), false)
            .await
            .0,
        0
    );
    assert_eq!(
        mixer_check(&mut mixer, &bag("jason", "ratings"), false)
            .await
            .0,
        7
    );
    // ext_authz: the same rule, through Envoy's API.
    let r = envoy.check(authz("jason")).await.unwrap().into_inner();
    assert_eq!(r.status.unwrap().code, 7);
    let r = envoy.check(authz("ann")).await.unwrap().into_inner();
    assert_eq!(r.status.unwrap().code, 0);
    // Quota: 3 per destination, then none.
    let mut granted = Vec::new();
    for _ in 0..4 {
        granted.push(
            mixer_check(&mut mixer, &bag("ann", "details"), true)
                .await
                .1,
        );
    }
    assert_eq!(granted, [1, 1, 1, 0]);
    // Envoy's rate limit service: each descriptor one allocation of the quota
    // instance the domain names, with the same rules and counts.
    let mut rls = RateLimitServiceClient::new(channel.clone());
    let mut codes = Vec::new();
    for _ in 0..4 {
        let r = rls
            .should_rate_limit(rate_limit("requestcount", "outbound|9080||reviews"))
            .await
            .unwrap()
            .into_inner();
        codes.push((r.overall_code, r.statuses[0].code));
    }
    // 1 is OK, 2 OVER_LIMIT.
    assert_eq!(codes, [(1, 1), (1, 1), (1, 1), (2, 2)]);
    // A quota no rule limits: nothing to limit.
    let r = rls
        .should_rate_limit(rate_limit("unlimited", "outbound|9080||reviews"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.overall_code, 1);
    // An entry that does not parse as its attribute is refused, named.
    let mut bad = rate_limit("requestcount", "reviews");
    bad.descriptors[0].entries.push(Entry {
        key: "remote_address".into(),
        value: "not-an-ip".into(),
    });
    let e = rls.should_rate_limit(bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("remote_address"), "{}", e.message());

    // A malformed bag is InvalidArgument, not a crash.
    let bad = CheckRequest {
        attributes: Some(mesh_api::mixer::v1::CompressedAttributes {
            int64s: [(-5, 1)].into(),
            ..Default::default()
        }),
        global_word_count: all_words(),
        ..CheckRequest::default()
    };
    assert_eq!(
        mixer.check(bad).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    // Edit the rule: jason is allowed, ann denied, while every call keeps
    // succeeding. (How long it takes is printed; it is a figure, not a check.)
    std::fs::write(
        tmp.path().join("policy.yaml"),
        RULES.replace(r#"| "" == "jason""#, r#"| "" == "ann""#),
    )
    .unwrap();
    let edited = Instant::now();
    loop {
        let (jason, _) = mixer_check(&mut mixer, &bag("jason", "ratings"), false).await;
        let (ann, _) = mixer_check(&mut mixer, &bag("ann", "ratings"), false).await;
        if jason == 0 && ann == 7 {
            break;
        }
        assert!(
            edited.elapsed() < Duration::from_secs(1),
            "the edit took over a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("edit applied after {:?}", edited.elapsed());
    // The quota handler did not change: its counts outlive the new version.
    assert_eq!(
        mixer_check(&mut mixer, &bag("jason", "details"), true)
            .await
            .1,
        0
    );
    let policyz = http_json(plane.monitoring, "/debug/policyz").await.unwrap();
    assert_eq!(policyz["loaded"], true);
    assert_eq!(policyz["issues"].as_array().unwrap().len(), 0, "{policyz}");
    // The decisions since the edit were kept for reuse.
    assert!(
        policyz["check_cache"]["entries"].as_u64().unwrap() >= 2,
        "{policyz}"
    );
}

const SQL_QUOTA: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: shared, namespace: istio-system}
spec:
  compiledAdapter: sqlquota
  params:
    quotas: [{name: requestcount.istio-system, maxAmount: 50, validDuration: 1h}]
    minDeduplicationDuration: 1m
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcount, namespace: istio-system}
spec:
  compiledTemplate: quota
  params: {dimensions: {destination: destination.service.host | "unknown"}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: quota, namespace: istio-system}
spec:
  actions: [{handler: shared, instances: [requestcount]}]
"#;

/// One quota allocation of 1 for `host`; the amount granted and the quota's
/// status code.
async fn allocate(client: &mut MixerClient<Channel>, host: &str, dedup: &str) -> (i64, i32) {
    let b = bag("ann", host);
    let mut req = CheckRequest {
        attributes: Some(encode(&b, all_words())),
        global_word_count: all_words(),
        deduplication_id: dedup.to_string(),
        ..CheckRequest::default()
    };
    req.quotas.insert(
        "requestcount.istio-system".into(),
        QuotaParams {
            amount: 1,
            best_effort: false,
        },
    );
    let resp = client.check(req).await.unwrap().into_inner();
    let q = &resp.quotas["requestcount.istio-system"];
    (q.granted_amount, q.status.as_ref().unwrap().code)
}

/// Two mixer-policy replicas count one SQL quota in a real PostgreSQL server:
/// however the calls are spread and raced between them, exactly the limit is
/// granted, and a retried allocation (same deduplication id) sent to the other
/// replica is not counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_an_exact_sql_quota_on_postgres() {
    let pg = mesh_testkit::postgres::PostgresServer::start().unwrap();
    let url = pg.url();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("quota.yaml"), SQL_QUOTA).unwrap();
    let (_galley, mcp) = start_galley(tmp.path()).await;
    let (_a, a_addr, _) = start_policy(mcp, &["--quota-database", &url]).await;
    // One replica on a single thread: its current-thread runtime serves Checks
    // and the database pool alike.
    let (_b, b_addr, b_mon) =
        start_policy(mcp, &["--quota-database", &url, "--worker-threads", "1"]).await;

    // 2 x 40 concurrent allocations of 1 against a limit of 50.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..80 {
        let addr = if i % 2 == 0 { a_addr } else { b_addr };
        calls.spawn(async move {
            let mut client = mixer_client(addr).await;
            allocate(&mut client, "ratings", "").await
        });
    }
    let mut granted = 0;
    let mut exhausted = 0;
    while let Some(r) = calls.join_next().await {
        let (amount, code) = r.unwrap();
        granted += amount;
        if code == 8 {
            exhausted += 1;
        } else {
            assert_eq!((amount, code), (1, 0));
        }
    }
    assert_eq!((granted, exhausted), (50, 30));
    // Another destination has its own count.
    let mut a = mixer_client(a_addr).await;
    let mut b = mixer_client(b_addr).await;
    assert_eq!(allocate(&mut a, "details", "").await, (1, 0));
    // A retry of the same allocation, sent to the other replica, is answered as
    // the first was and takes nothing more.
    assert_eq!(allocate(&mut a, "reviews", "req-1").await, (1, 0));
    assert_eq!(allocate(&mut b, "reviews", "req-1").await, (1, 0));
    let used = pg
        .psql(
            "test",
            "SELECT replace(replace(dims, chr(1), '='), chr(2), ';'), SUM(amount) \
             FROM mixer_quota_allocations GROUP BY dims ORDER BY dims",
        )
        .unwrap();
    let used: Vec<&str> = used.lines().map(str::trim).collect();
    assert_eq!(
        used,
        [
            "destination=details;|1",
            "destination=ratings;|50",
            "destination=reviews;|1"
        ],
        "rows as recorded"
    );
    let policyz = http_json(b_mon, "/debug/policyz").await.unwrap();
    assert_eq!(policyz["issues"].as_array().unwrap().len(), 0, "{policyz}");
}

/// With its database unreachable, a SQL quota grants nothing and says why
/// (Unavailable), and the rest of the policy keeps deciding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_quota_database_is_unavailable_not_exhausted() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("quota.yaml"), SQL_QUOTA).unwrap();
    let (_galley, mcp) = start_galley(tmp.path()).await;
    let dead = format!("postgres://nobody@127.0.0.1:{}/none", free_port());
    let (_p, addr, _) = start_policy(mcp, &["--quota-database", &dead]).await;
    let mut client = mixer_client(addr).await;
    let asked = Instant::now();
    assert_eq!(allocate(&mut client, "ratings", "").await, (0, 14));
    eprintln!("unreachable database answered in {:?}", asked.elapsed());
}
