//! McpStore following a real galley over the delta client.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use galley::{GalleyConfig, SourceConfig, source::dir::Debounce};
use mesh_mcp::{McpStore, collections};
use mesh_model::{Kind, ResourceKey, Spec};
use mesh_xds::client::{DeltaClient, DeltaClientConfig};
use tokio_util::sync::CancellationToken;

const SE: &str = "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
";

fn key() -> ResourceKey {
    ResourceKey {
        kind: Kind::ServiceEntry,
        namespace: "shop".into(),
        name: "cart".into(),
    }
}

#[tokio::test]
async fn store_follows_galley() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), SE).unwrap();
    std::fs::write(
        dir.path().join("examples.yaml"),
        std::fs::read_to_string("../../examples/bookinfo/traffic.yaml").unwrap(),
    )
    .unwrap();
    let stop = CancellationToken::new();
    let galley = galley::start(
        GalleyConfig {
            source: SourceConfig::Directory {
                path: dir.path().to_path_buf(),
                debounce: Debounce::default(),
            },
            mcp_addr: "127.0.0.1:0".parse().unwrap(),
            monitoring_addr: "127.0.0.1:0".parse().unwrap(),
            default_namespace: "default".into(),
            tls: None,
            webhook: None,
        },
        stop.clone(),
    )
    .await
    .unwrap();
    let store = McpStore::new();
    let mut views = store.subscribe();
    let client = DeltaClient::new(
        DeltaClientConfig {
            endpoint: format!("http://{}", galley.mcp_addr),
            node_id: "pilot-test".into(),
            type_urls: collections(),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
        },
        store,
    );
    let mut synced = client.synced();
    tokio::spawn(client.run(stop.clone()));
    tokio::time::timeout(Duration::from_secs(10), synced.wait_for(|s| *s))
        .await
        .unwrap()
        .unwrap();

    let view = views.borrow_and_update().clone();
    assert!(view.resources.contains_key(&key()));
    let vs = ResourceKey {
        kind: Kind::VirtualService,
        namespace: "bookinfo".into(),
        name: "reviews".into(),
    };
    assert!(
        matches!(view.resources[&vs].spec, Spec::VirtualService(_)),
        "typed on arrival"
    );

    std::fs::write(
        dir.path().join("a.yaml"),
        SE.replace("cart.shop", "basket.shop"),
    )
    .unwrap();
    let changed = tokio::time::timeout(
        Duration::from_secs(5),
        views.wait_for(|v| match &v.resources.get(&key()).map(|r| &r.spec) {
            Some(Spec::ServiceEntry(se)) => se.hosts == ["basket.shop.svc.cluster.local"],
            _ => false,
        }),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert!(changed.generation > view.generation);

    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        views.wait_for(|v| !v.resources.contains_key(&key())),
    )
    .await
    .unwrap()
    .unwrap();
    stop.cancel();
    galley.wait().await.unwrap();
}
