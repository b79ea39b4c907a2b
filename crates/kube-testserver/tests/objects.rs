//! Object round trips through the real `kube` client: create, get, list, update,
//! patch, delete, conflicts, selectors, paging, faults.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube_testserver::{Fault, KubeTestServer};
use serde_json::json;
use std::collections::BTreeMap;

async fn server() -> KubeTestServer {
    KubeTestServer::start().await.expect("server starts")
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn service(name: &str, port: i32) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                port,
                name: Some("http".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn pod(namespace: &str, name: &str, labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    }
}

#[tokio::test]
async fn service_create_get_list_update_patch_delete() {
    let server = server().await;
    let services: Api<Service> = Api::default_namespaced(server.client());
    let pp = PostParams::default();

    let created = services
        .create(&pp, &service("reviews", 9080))
        .await
        .expect("create");
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    let spec = created.spec.as_ref().expect("spec");
    assert!(
        spec.cluster_ip
            .as_deref()
            .is_some_and(|ip| ip.starts_with("10.96."))
    );
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));

    let again = api_error(services.create(&pp, &service("reviews", 9080)).await);
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));

    let got = services.get("reviews").await.expect("get");
    assert_eq!(got.metadata.uid, meta.uid);
    assert_eq!(got.metadata.resource_version, meta.resource_version);

    services
        .create(&pp, &service("ratings", 9080))
        .await
        .expect("create");
    let list = services.list(&ListParams::default()).await.expect("list");
    let names: Vec<_> = list
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert_eq!(names, ["ratings", "reviews"]);
    let list_rv: u64 = list
        .metadata
        .resource_version
        .as_deref()
        .expect("rv")
        .parse()
        .expect("number");
    assert_eq!(list_rv, server.resource_version());

    // Replace: the spec changes, so the generation moves on; server fields stay.
    let mut changed = got.clone();
    changed
        .spec
        .as_mut()
        .expect("spec")
        .ports
        .as_mut()
        .expect("ports")[0]
        .port = 9081;
    let replaced = services
        .replace("reviews", &pp, &changed)
        .await
        .expect("replace");
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(replaced.metadata.uid, meta.uid);
    assert_ne!(replaced.metadata.resource_version, meta.resource_version);
    assert_eq!(
        replaced.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
        spec.cluster_ip
    );

    // A label change is not a spec change.
    let labelled = services
        .patch(
            "reviews",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"version": "v2"}}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(labelled.metadata.generation, Some(2));
    assert_eq!(
        labelled.labels().get("version").map(String::as_str),
        Some("v2")
    );
    assert_eq!(
        labelled.labels().get("app").map(String::as_str),
        Some("reviews")
    );

    let strategic = services
        .patch(
            "reviews",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"annotations": {"a": "b"}}})),
        )
        .await
        .expect("strategic merge patch");
    assert_eq!(
        strategic.annotations().get("a").map(String::as_str),
        Some("b")
    );

    let applied = services
        .patch(
            "details",
            &PatchParams::apply("kube-testserver-test"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "details"},
                "spec": {"ports": [{"port": 9080}]}
            })),
        )
        .await
        .expect("apply creates");
    assert_eq!(applied.metadata.generation, Some(1));
    let reapplied = services
        .patch(
            "details",
            &PatchParams::apply("kube-testserver-test"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "details", "labels": {"app": "details"}},
            })),
        )
        .await
        .expect("apply merges");
    assert_eq!(
        reapplied.labels().get("app").map(String::as_str),
        Some("details")
    );
    assert!(reapplied.spec.is_some_and(|s| s.ports.is_some()));

    let missing = api_error(
        services
            .patch("nope", &PatchParams::default(), &Patch::Merge(json!({})))
            .await,
    );
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));

    let deleted = services
        .delete("reviews", &DeleteParams::default())
        .await
        .expect("delete");
    let deleted = deleted.left().expect("the deleted object");
    assert_eq!(deleted.metadata.uid, meta.uid);
    let gone = api_error(services.get("reviews").await);
    assert_eq!((gone.code, gone.reason.as_str()), (404, "NotFound"));
    assert_eq!(gone.message, "services \"reviews\" not found");
    let gone = api_error(services.delete("reviews", &DeleteParams::default()).await);
    assert_eq!(gone.code, 404);
}

#[tokio::test]
async fn json_patch_through_a_raw_request() {
    let server = server().await;
    let configmaps: Api<ConfigMap> = Api::default_namespaced(server.client());
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("mesh".to_string()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("a".to_string(), "1".to_string())])),
        ..ConfigMap::default()
    };
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let request = axum::http::Request::patch("/api/v1/namespaces/default/configmaps/mesh")
        .header("content-type", "application/json-patch+json")
        .body(
            json!([{"op": "add", "path": "/data/b", "value": "2"},
                   {"op": "replace", "path": "/data/a", "value": "3"}])
            .to_string()
            .into_bytes(),
        )
        .expect("request");
    let patched: ConfigMap = server.client().request(request).await.expect("json patch");
    let data = patched.data.expect("data");
    assert_eq!((data["a"].as_str(), data["b"].as_str()), ("3", "2"));

    let request = axum::http::Request::patch("/api/v1/namespaces/default/configmaps/mesh")
        .header("content-type", "application/json-patch+json")
        .body(
            json!([{"op": "test", "path": "/data/a", "value": "9"}])
                .to_string()
                .into_bytes(),
        )
        .expect("request");
    let failed = api_error(server.client().request::<ConfigMap>(request).await);
    assert_eq!(failed.code, 422);
}

#[tokio::test]
async fn stale_resource_version_conflicts_and_a_fresh_get_succeeds() {
    let server = server().await;
    let leases: Api<Lease> = Api::namespaced(server.client(), "kube-system");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("galley-leader".to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("galley-0".to_string()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }),
    };
    let pp = PostParams::default();
    let first = leases.create(&pp, &lease).await.expect("create");
    let mut mine = first.clone();
    let mut theirs = first.clone();
    theirs.spec.as_mut().expect("spec").holder_identity = Some("galley-1".to_string());
    leases
        .replace("galley-leader", &pp, &theirs)
        .await
        .expect("their update");

    mine.spec.as_mut().expect("spec").holder_identity = Some("galley-2".to_string());
    let conflict = api_error(leases.replace("galley-leader", &pp, &mine).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.contains("the object has been modified"),
        "{}",
        conflict.message
    );

    let mut fresh = leases.get("galley-leader").await.expect("get");
    fresh.spec.as_mut().expect("spec").holder_identity = Some("galley-2".to_string());
    let won = leases
        .replace("galley-leader", &pp, &fresh)
        .await
        .expect("retry");
    assert_eq!(
        won.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("galley-2")
    );

    // A merge patch naming a stale version is refused too.
    let stale = api_error(
        leases
            .patch(
                "galley-leader",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"resourceVersion": first.metadata.resource_version}}),
                ),
            )
            .await,
    );
    assert_eq!(stale.code, 409);
}

#[tokio::test]
async fn label_and_field_selectors_and_all_namespaces() {
    let server = server().await;
    let client = server.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("bookinfo".to_string()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let pp = PostParams::default();
    for (ns, name, labels) in [
        ("default", "a", vec![("app", "web"), ("tier", "front")]),
        ("default", "b", vec![("app", "db")]),
        ("bookinfo", "c", vec![("app", "web"), ("tier", "back")]),
        ("bookinfo", "d", vec![]),
    ] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        pods.create(&pp, &pod(ns, name, &labels))
            .await
            .expect("create pod");
    }
    let all: Api<Pod> = Api::all(client.clone());
    let names = |list: kube::core::ObjectList<Pod>| -> Vec<String> {
        list.items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect()
    };
    let select = |s: &str| ListParams::default().labels(s);
    assert_eq!(
        names(all.list(&ListParams::default()).await.expect("all")),
        ["c", "d", "a", "b"]
    );
    assert_eq!(
        names(all.list(&select("app=web")).await.expect("=")),
        ["c", "a"]
    );
    assert_eq!(
        names(all.list(&select("app==db")).await.expect("==")),
        ["b"]
    );
    assert_eq!(
        names(all.list(&select("app!=web")).await.expect("!=")),
        ["d", "b"]
    );
    assert_eq!(
        names(
            all.list(&select("app in (db,web),tier notin (back)"))
                .await
                .expect("in")
        ),
        ["a", "b"]
    );
    assert_eq!(
        names(all.list(&select("tier")).await.expect("exists")),
        ["c", "a"]
    );
    assert_eq!(
        names(all.list(&select("!app")).await.expect("!exists")),
        ["d"]
    );
    let fields = |s: &str| ListParams::default().fields(s);
    assert_eq!(
        names(all.list(&fields("metadata.name=b")).await.expect("name")),
        ["b"]
    );
    assert_eq!(
        names(
            all.list(&fields("metadata.namespace==bookinfo,metadata.name!=c"))
                .await
                .expect("ns")
        ),
        ["d"]
    );
    let in_default: Api<Pod> = Api::default_namespaced(client.clone());
    assert_eq!(
        names(in_default.list(&select("app")).await.expect("ns list")),
        ["a", "b"]
    );

    let bad = api_error(all.list(&fields("spec.containers=x")).await);
    assert_eq!(bad.code, 400);
    assert!(
        bad.message.contains("field label not supported"),
        "{}",
        bad.message
    );
    let bad = api_error(all.list(&select("app in (web")).await);
    assert_eq!(bad.code, 400);

    // A namespace that does not exist refuses new objects, as on a real cluster.
    let nowhere: Api<Pod> = Api::namespaced(client, "nowhere");
    let missing = api_error(nowhere.create(&pp, &pod("nowhere", "x", &[])).await);
    assert_eq!(
        (missing.code, missing.message.as_str()),
        (404, "namespaces \"nowhere\" not found")
    );
}

#[tokio::test]
async fn limit_and_continue_page_through_a_list() {
    let server = server().await;
    let slices: Api<EndpointSlice> = Api::default_namespaced(server.client());
    for i in 0..7 {
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                generate_name: Some("reviews-".to_string()),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/service-name".to_string(),
                    "reviews".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".to_string(),
            endpoints: vec![Endpoint {
                addresses: vec![format!("10.0.0.{i}")],
                ..Endpoint::default()
            }],
            ports: None,
        };
        let created = slices
            .create(&PostParams::default(), &slice)
            .await
            .expect("create");
        assert!(
            created
                .metadata
                .name
                .is_some_and(|n| n.starts_with("reviews-") && n.len() == 13)
        );
    }
    let mut seen = Vec::new();
    let mut lp = ListParams::default()
        .labels("kubernetes.io/service-name=reviews")
        .limit(3);
    let mut pages = 0;
    let mut first_rv = None;
    loop {
        let page = slices.list(&lp).await.expect("page");
        pages += 1;
        assert!(page.items.len() <= 3);
        first_rv.get_or_insert(page.metadata.resource_version.clone());
        assert_eq!(Some(page.metadata.resource_version.clone()), first_rv);
        seen.extend(page.items.into_iter().filter_map(|s| s.metadata.name));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 7);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
}

#[tokio::test]
async fn status_subresource_is_written_apart() {
    let server = server().await;
    let pods: Api<Pod> = Api::default_namespaced(server.client());
    let created = pods
        .create(&PostParams::default(), &pod("default", "p", &[]))
        .await
        .expect("create");
    assert_eq!(
        created.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
    let patched = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.1.0.5"}})),
        )
        .await
        .expect("patch status");
    assert_eq!(
        patched.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        Some("10.1.0.5")
    );
    // The main resource does not write the status.
    let ignored = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Failed"}, "metadata": {"labels": {"x": "y"}}}),
            ),
        )
        .await
        .expect("patch");
    assert_eq!(
        ignored.status.and_then(|s| s.phase).as_deref(),
        Some("Running")
    );
    let running: Vec<_> = pods
        .list(&ListParams::default().fields("status.phase=Running"))
        .await
        .expect("list")
        .items;
    assert_eq!(running.len(), 1);
}

#[tokio::test]
async fn injected_faults_surface_as_api_errors() {
    let server = server().await;
    let services: Api<Service> = Api::default_namespaced(server.client());
    server.inject_fault(Fault::new("services", 403).verb("list").times(1));
    let forbidden = api_error(services.list(&ListParams::default()).await);
    assert_eq!(
        (forbidden.code, forbidden.reason.as_str()),
        (403, "Forbidden")
    );
    assert!(
        forbidden
            .message
            .contains("cannot list resource \"services\""),
        "{}",
        forbidden.message
    );
    assert!(
        forbidden.message.contains("in the namespace \"default\""),
        "{}",
        forbidden.message
    );
    services
        .list(&ListParams::default())
        .await
        .expect("the fault was used up");

    server.inject_fault(Fault::new("services", 500).times(2).message("etcd is down"));
    for _ in 0..2 {
        let failed = api_error(services.get("x").await);
        assert_eq!(
            (failed.code, failed.reason.as_str(), failed.message.as_str()),
            (500, "InternalError", "etcd is down")
        );
    }
    assert_eq!(api_error(services.get("x").await).code, 404);

    // kube retries 503 on its own: one failure is invisible to the caller.
    server.inject_fault(Fault::new("services", 503).times(1));
    services
        .list(&ListParams::default())
        .await
        .expect("retried after 503");

    server.inject_fault(Fault::new("services", 500));
    assert_eq!(
        api_error(services.list(&ListParams::default()).await).code,
        500
    );
    server.clear_faults();
    services
        .list(&ListParams::default())
        .await
        .expect("faults cleared");
}

#[tokio::test]
async fn unreachable_server_fails_requests_until_it_returns() {
    let server = server().await;
    let configmaps: Api<ConfigMap> = Api::default_namespaced(server.client());
    configmaps
        .list(&ListParams::default())
        .await
        .expect("reachable");
    server.set_unreachable(true).await.expect("unreachable");
    match configmaps.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => panic!("expected a connection error, got {status:?}"),
        Err(_) => {}
        Ok(_) => panic!("the server should be unreachable"),
    }
    server
        .set_unreachable(false)
        .await
        .expect("reachable again");
    configmaps
        .list(&ListParams::default())
        .await
        .expect("reachable again");
    server.stop().await;
}

#[tokio::test]
async fn apply_object_sets_up_state_with_status() {
    let server = server().await;
    let stored = server
        .apply_object(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "reviews-v1", "namespace": "bookinfo", "labels": {"app": "reviews"}},
            "spec": {"containers": [{"name": "app", "image": "reviews"}]},
            "status": {"phase": "Running", "podIP": "10.1.2.3"}
        }))
        .expect("apply");
    assert_eq!(stored["metadata"]["namespace"], "bookinfo");
    let pods: Api<Pod> = Api::namespaced(server.client(), "bookinfo");
    let pod = pods.get("reviews-v1").await.expect("get");
    assert_eq!(
        pod.status.and_then(|s| s.pod_ip).as_deref(),
        Some("10.1.2.3")
    );
    assert!(
        server
            .get_object("v1", "Namespace", "", "bookinfo")
            .is_some()
    );
    assert_eq!(server.objects("v1", "Pod").len(), 1);
    assert!(
        server
            .delete_object("v1", "Pod", "bookinfo", "reviews-v1")
            .is_some()
    );
    assert!(server.objects("v1", "Pod").is_empty());
}

#[tokio::test]
async fn no_op_writes_namespace_deletion_and_delete_collection() {
    let server = server().await;
    let client = server.client();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "bookinfo");
    server
        .apply_object(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bookinfo"}}),
        )
        .expect("namespace");
    let cm = |name: &str, tier: &str| ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([("tier".to_string(), tier.to_string())])),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    let pp = PostParams::default();
    let a = configmaps.create(&pp, &cm("a", "front")).await.expect("a");
    configmaps.create(&pp, &cm("b", "back")).await.expect("b");
    configmaps.create(&pp, &cm("c", "back")).await.expect("c");

    // Writing the same object again is not a change.
    let same = configmaps.replace("a", &pp, &a).await.expect("replace");
    assert_eq!(same.metadata.resource_version, a.metadata.resource_version);

    let deleted = configmaps
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("tier=back"),
        )
        .await
        .expect("delete collection");
    let names: Vec<_> = deleted
        .left()
        .expect("the deleted objects")
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    assert_eq!(names, ["b", "c"]);

    let namespaces: Api<Namespace> = Api::all(client);
    namespaces
        .delete("bookinfo", &DeleteParams::default())
        .await
        .expect("delete ns");
    assert!(
        server
            .objects("v1", "ConfigMap")
            .iter()
            .all(|o| o["metadata"]["namespace"] != "bookinfo")
    );
    assert_eq!(api_error(configmaps.get("a").await).code, 404);
}
