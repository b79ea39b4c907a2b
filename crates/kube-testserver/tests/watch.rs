//! Watches through the real `kube` client: raw watch streams, `kube::runtime`
//! watchers and reflectors, bookmarks, 410 Expired and re-lists.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube_testserver::KubeTestServer;
use serde_json::json;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn configmap(name: &str, value: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("v".to_string(), value.to_string())])),
        ..ConfigMap::default()
    }
}

async fn next<S, T>(stream: &mut S) -> T
where
    S: futures::Stream<Item = T> + Unpin,
{
    timeout(WAIT, stream.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
}

fn describe(event: &watcher::Event<ConfigMap>) -> String {
    match event {
        watcher::Event::Init => "Init".to_string(),
        watcher::Event::InitApply(o) => format!("InitApply {}", o.name_any()),
        watcher::Event::InitDone => "InitDone".to_string(),
        watcher::Event::Apply(o) => format!(
            "Apply {} {}",
            o.name_any(),
            o.data
                .as_ref()
                .and_then(|d| d.get("v"))
                .cloned()
                .unwrap_or_default()
        ),
        watcher::Event::Delete(o) => format!("Delete {}", o.name_any()),
    }
}

#[tokio::test]
async fn watcher_sees_add_update_delete_in_order() {
    let server = KubeTestServer::start().await.expect("server");
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let pp = PostParams::default();
    api.create(&pp, &configmap("before", "0", &[]))
        .await
        .expect("create");

    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(describe(&next(&mut events).await.expect("event")));
    }
    assert_eq!(seen, ["Init", "InitApply before", "InitDone"]);

    api.create(&pp, &configmap("mesh", "1", &[]))
        .await
        .expect("create");
    api.patch(
        "mesh",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .expect("patch");
    api.delete("mesh", &DeleteParams::default())
        .await
        .expect("delete");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(describe(&next(&mut events).await.expect("event")));
    }
    assert_eq!(seen, ["Apply mesh 1", "Apply mesh 2", "Delete mesh"]);
}

#[tokio::test]
async fn raw_watch_from_a_version_with_selectors() {
    let server = KubeTestServer::start().await.expect("server");
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let pp = PostParams::default();
    let rv = server.resource_version().to_string();
    let wp = WatchParams::default().labels("app=web").disable_bookmarks();
    let mut stream = api.watch(&wp, &rv).await.expect("watch").boxed();

    api.create(&pp, &configmap("a", "1", &[("app", "web")]))
        .await
        .expect("create a");
    api.create(&pp, &configmap("b", "1", &[("app", "db")]))
        .await
        .expect("create b");
    // b starts matching: ADDED; a stops matching: DELETED, as the real server does.
    api.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .expect("relabel b");
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .expect("relabel a");
    api.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .expect("update b");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let event = next(&mut stream).await.expect("event");
        seen.push(match event {
            WatchEvent::Added(o) => format!("ADDED {}", o.name_any()),
            WatchEvent::Modified(o) => format!("MODIFIED {}", o.name_any()),
            WatchEvent::Deleted(o) => format!("DELETED {}", o.name_any()),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(seen, ["ADDED a", "ADDED b", "DELETED a", "MODIFIED b"]);
}

#[tokio::test]
async fn bookmarks_arrive_when_asked() {
    let server = KubeTestServer::start().await.expect("server");
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let rv = server.resource_version();
    let mut stream = api
        .watch(&WatchParams::default(), &rv.to_string())
        .await
        .expect("watch")
        .boxed();
    match next(&mut stream).await.expect("event") {
        WatchEvent::Bookmark(bookmark) => {
            assert_eq!(bookmark.metadata.resource_version, rv.to_string());
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
    // Without bookmarks asked for, none come.
    let mut quiet = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv.to_string())
        .await
        .expect("watch")
        .boxed();
    assert!(
        timeout(Duration::from_millis(2500), quiet.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn timeout_seconds_ends_the_watch() {
    let server = KubeTestServer::start().await.expect("server");
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let rv = server.resource_version().to_string();
    let wp = WatchParams::default().timeout(1).disable_bookmarks();
    let mut stream = api.watch(&wp, &rv).await.expect("watch").boxed();
    let ended = timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("ends in time");
    assert!(ended.is_none(), "the stream ends: {ended:?}");
}

#[tokio::test]
async fn watch_from_an_expired_version_gets_410() {
    let server = KubeTestServer::start().await.expect("server");
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let old = server.resource_version().to_string();
    api.create(&PostParams::default(), &configmap("a", "1", &[]))
        .await
        .expect("create");
    server.expire_resource_versions();
    let mut stream = api
        .watch(&WatchParams::default().disable_bookmarks(), &old)
        .await
        .expect("watch")
        .boxed();
    match next(&mut stream).await.expect("event") {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected 410, got {other:?}"),
    }
    // A list gives a version that can be watched from again.
    let list = api.list(&Default::default()).await.expect("list");
    let rv = list.metadata.resource_version.expect("rv");
    let mut stream = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .expect("watch")
        .boxed();
    api.create(&PostParams::default(), &configmap("b", "1", &[]))
        .await
        .expect("create");
    assert!(
        matches!(next(&mut stream).await.expect("event"), WatchEvent::Added(o) if o.name_any() == "b")
    );
}

/// Labels received until `wanted`, inclusive.
async fn wait_for(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    wanted: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let label = timeout(WAIT, rx.recv())
            .await
            .expect("in time")
            .expect("open");
        let done = label == wanted;
        seen.push(label);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn compaction_mid_watch_relists_and_loses_nothing() {
    let server = KubeTestServer::start().await.expect("server");
    let client = server.client();
    let api: Api<Service> = Api::all(client.clone());
    let in_default: Api<Service> = Api::default_namespaced(client);
    let pp = PostParams::default();
    let svc = |name: &str| -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"ports": [{"port": 80}]}
        }))
        .expect("service")
    };
    for name in ["a", "b", "c"] {
        in_default.create(&pp, &svc(name)).await.expect("create");
    }
    let (store, writer) = reflector::store();
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = reflector(writer, watcher(api, watcher::Config::default()));
    let task = tokio::spawn(async move {
        let mut stream = stream.default_backoff().boxed();
        while let Some(event) = stream.next().await {
            let label = match event {
                Ok(watcher::Event::Init) => "Init".to_string(),
                Ok(watcher::Event::InitDone) => "InitDone".to_string(),
                Ok(watcher::Event::InitApply(o)) => format!("InitApply {}", o.name_any()),
                Ok(watcher::Event::Apply(o)) => format!("Apply {}", o.name_any()),
                Ok(watcher::Event::Delete(o)) => format!("Delete {}", o.name_any()),
                Err(e) => format!("Error {e}"),
            };
            if events_tx.send(label).is_err() {
                break;
            }
        }
    });
    wait_for(&mut events_rx, "InitDone").await;
    assert_eq!(store.state().len(), 3);

    // Changes the watch sees, then compaction while changes keep coming.
    in_default.create(&pp, &svc("d")).await.expect("create d");
    wait_for(&mut events_rx, "Apply d").await;
    server.expire_resource_versions();
    in_default
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    in_default.create(&pp, &svc("e")).await.expect("create e");
    server.force_compaction();
    in_default
        .delete("b", &DeleteParams::default())
        .await
        .expect("delete b");
    in_default
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("patch c");

    // The watcher resumes, gets 410 Expired and lists again.
    let after = wait_for(&mut events_rx, "InitDone").await;
    assert!(
        after
            .iter()
            .any(|e| e.starts_with("Error") && e.contains("Expired")),
        "the watcher saw 410: {after:?}"
    );
    assert!(after.iter().any(|e| e == "Init"), "{after:?}");

    // Eventually the store equals the server's state, labels included.
    let expected: BTreeSet<(String, String, BTreeMap<String, String>)> = server
        .objects("v1", "Service")
        .into_iter()
        .map(|o| {
            let s: Service = serde_json::from_value(o).expect("service");
            (
                s.name_any(),
                s.resource_version().unwrap_or_default(),
                s.labels().clone(),
            )
        })
        .collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let actual: BTreeSet<_> = store
            .state()
            .iter()
            .map(|s| {
                (
                    s.name_any(),
                    s.resource_version().unwrap_or_default(),
                    s.labels().clone(),
                )
            })
            .collect();
        if actual == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "store {actual:?} != server {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names: Vec<_> = expected.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["c", "d", "e"]);
    task.abort();
}

#[tokio::test]
async fn streaming_list_watcher_syncs() {
    let server = KubeTestServer::start().await.expect("server");
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &configmap("a", "1", &[]))
        .await
        .expect("create");
    let mut events = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(describe(&next(&mut events).await.expect("event")));
    }
    assert_eq!(seen, ["Init", "InitApply a", "InitDone"]);
    api.create(&PostParams::default(), &configmap("b", "1", &[]))
        .await
        .expect("create");
    assert_eq!(
        describe(&next(&mut events).await.expect("event")),
        "Apply b 1"
    );
}

#[tokio::test]
async fn changes_beyond_the_history_limit_expire() {
    let config = kube_testserver::ServerConfig {
        history_limit: 2,
        ..Default::default()
    };
    let server = KubeTestServer::start_with(config).await.expect("server");
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let start = server.resource_version().to_string();
    for name in ["a", "b", "c"] {
        api.create(&PostParams::default(), &configmap(name, "1", &[]))
            .await
            .expect("create");
    }
    let mut stream = api
        .watch(&WatchParams::default().disable_bookmarks(), &start)
        .await
        .expect("watch")
        .boxed();
    match next(&mut stream).await.expect("event") {
        WatchEvent::Error(status) => assert_eq!(status.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}
