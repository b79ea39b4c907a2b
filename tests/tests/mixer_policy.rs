//! mixer-policy end to end: rules in a configuration directory served by the real
//! galley, the real mixer-policy following it, and Check calls over the Mixer API
//! (compressed attribute bags) and Envoy's ext_authz deciding as the rules say;
//! an edited rule changes decisions with no failed request.

#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use dromon_e2e::{ChildGuard, free_port, http_json, wait_http_ok};
use mesh_api::{
    envoy::envoy::service::auth::v3::{
        AttributeContext, CheckRequest as AuthzRequest,
        attribute_context::{HttpRequest, Peer, Request},
        authorization_client::AuthorizationClient,
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

async fn start(config: &Path) -> Plane {
    let at = || -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().unwrap() };
    let (mcp, galley_mon, grpc, monitoring) = (at(), at(), at(), at());
    let galley = ChildGuard::spawn(
        "galley",
        &[
            "--config-dir",
            &config.display().to_string(),
            "--mcp-addr",
            &mcp.to_string(),
            "--monitoring-addr",
            &galley_mon.to_string(),
        ],
    )
    .unwrap();
    wait_http_ok(galley_mon, "/ready", Duration::from_secs(30))
        .await
        .unwrap();
    let policy = ChildGuard::spawn(
        "mixer-policy",
        &[
            "--galley",
            &format!("http://{mcp}"),
            "--grpc-addr",
            &grpc.to_string(),
            "--monitoring-addr",
            &monitoring.to_string(),
        ],
    )
    .unwrap();
    wait_http_ok(monitoring, "/ready", Duration::from_secs(30))
        .await
        .unwrap();
    Plane {
        _galley: galley,
        _policy: policy,
        grpc,
        monitoring,
    }
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
    let channel = Channel::from_shared(format!("http://{}", plane.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut mixer = MixerClient::new(channel.clone());
    let mut envoy = AuthorizationClient::new(channel);

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
    let policyz = http_json(plane.monitoring, "/debug/policyz").await.unwrap();
    assert_eq!(policyz["loaded"], true);
    assert_eq!(policyz["issues"].as_array().unwrap().len(), 0, "{policyz}");
}
