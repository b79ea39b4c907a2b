//! galley's Kubernetes source against kube-testserver: galley runs in-process (and
//! as the binary with `--kube --kubeconfig`), the test writes Istio resources
//! through the real `kube` client and reads what galley publishes over MCP, and
//! the analysis messages galley writes into the resources' status.

#![allow(clippy::unwrap_used)]

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use dromon_e2e::{ChildGuard, ads::DeltaClient, citadel::metric_value, http_get, http_json, until};
use galley::{
    GalleyConfig, KubeConnection, Running, SourceConfig,
    source::kube::api_resource,
    status::writer::{DEFAULT_LEASE_NAME, StatusConfig},
};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube_testserver::{Fault, KubeTestServer};
use mesh_api::envoy::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use mesh_model::Kind;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const VS: &str = "networking.istio.io/v1alpha3/VirtualService";
const WAIT: Duration = Duration::from_secs(10);

/// A server with the chart's CRDs installed (all but `skip`) and namespace `shop`.
async fn server_with_crds(skip: &[&str]) -> KubeTestServer {
    let server = KubeTestServer::start().await.unwrap();
    let dir = dromon_e2e::repo().join("charts/dromon/crds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut installed = 0;
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if skip.iter().any(|s| name.starts_with(s)) {
            continue;
        }
        let crd: Value = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        server.apply_object(crd).unwrap();
        installed += 1;
    }
    assert_eq!(installed, 12 - skip.len());
    server
        .apply_object(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        )
        .unwrap();
    server
}

struct Galley {
    running: Option<Running>,
    shutdown: CancellationToken,
}

/// Namespace of the status writers' Lease in these tests.
const LEASE_NAMESPACE: &str = "istio-system";

impl Galley {
    async fn start(server: &KubeTestServer, namespaces: &[&str]) -> Self {
        Self::start_with(server, namespaces, None).await
    }

    /// A galley that writes analysis messages into status while it holds the Lease.
    async fn start_writing_status(server: &KubeTestServer, identity: &str) -> Self {
        let lease = mesh_kube::leader::LeaseConfig::new(
            LEASE_NAMESPACE,
            DEFAULT_LEASE_NAME,
            format!("{identity}-{}", std::process::id()),
        );
        Self::start_with(server, &[], Some(StatusConfig { lease })).await
    }

    async fn start_with(
        server: &KubeTestServer,
        namespaces: &[&str],
        status: Option<StatusConfig>,
    ) -> Self {
        let config = GalleyConfig {
            source: SourceConfig::Kubernetes {
                connection: KubeConnection::Config(Box::new(server.kube_config())),
                namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
                status,
            },
            mcp_addr: "127.0.0.1:0".parse().unwrap(),
            monitoring_addr: "127.0.0.1:0".parse().unwrap(),
            default_namespace: "default".into(),
            tls: None,
            webhook: None,
        };
        let shutdown = CancellationToken::new();
        let running = galley::start(config, shutdown.clone()).await.unwrap();
        Self {
            running: Some(running),
            shutdown,
        }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    fn monitoring(&self) -> SocketAddr {
        self.running().monitoring_addr
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.running().mcp_addr)
    }

    async fn wait_ready(&self) {
        wait_ready(self.monitoring()).await;
    }

    /// A sample of galley's /metrics (name and labels as written), 0 when absent.
    async fn metric(&self, series: &str) -> f64 {
        let text = http_get(self.monitoring(), "/metrics").await.unwrap().1;
        metric_value(&text, series).unwrap_or(0.0)
    }

    async fn leading(&self) -> bool {
        let series =
            format!("leader_election_leading{{lease=\"{LEASE_NAMESPACE}/{DEFAULT_LEASE_NAME}\"}}");
        self.metric(&series).await == 1.0
    }

    async fn status_writes(&self) -> f64 {
        self.metric("galley_status_writes_total{result=\"written\"}")
            .await
    }

    /// Shuts galley down and waits until it stopped (its Lease released).
    async fn stop(mut self) {
        self.shutdown.cancel();
        let running = self.running.take().unwrap();
        tokio::time::timeout(WAIT, running.wait())
            .await
            .expect("galley stops")
            .unwrap();
    }

    /// Names and hosts of the VirtualServices on /debug/configz.
    async fn served(&self) -> BTreeSet<(String, String)> {
        let configz = http_json(self.monitoring(), "/debug/configz")
            .await
            .unwrap();
        configz["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "VirtualService")
            .map(|r| {
                (
                    format!(
                        "{}/{}",
                        r["metadata"]["namespace"].as_str().unwrap(),
                        r["metadata"]["name"].as_str().unwrap()
                    ),
                    r["spec"]["hosts"][0].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Galley {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn wait_ready(monitoring: SocketAddr) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok((200, _)) = http_get(monitoring, "/ready").await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "galley never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn vs_api(server: &KubeTestServer, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        server.client(),
        namespace,
        &api_resource(Kind::VirtualService),
    )
}

fn virtual_service(name: &str, host: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": host}}]}]}
    }))
    .unwrap()
}

async fn set_host(api: &Api<DynamicObject>, name: &str, host: &str) {
    let patch =
        json!({"spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": host}}]}]}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Subscribes a delta stream to VirtualServices.
async fn delta_subscribe(galley: &Galley) -> DeltaClient {
    let client = DeltaClient::connect(galley.endpoint()).await.unwrap();
    client
        .send(DeltaDiscoveryRequest {
            type_url: VS.into(),
            node: Some(dromon_e2e::ads::node("kube-delta")),
            ..Default::default()
        })
        .await
        .unwrap();
    client
}

/// The next delta response, acknowledged.
async fn next_delta(client: &mut DeltaClient) -> DeltaDiscoveryResponse {
    let r = client.recv(WAIT).await.unwrap();
    client
        .send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    r
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<String> {
    let mut n: Vec<String> = r.resources.iter().map(|r| r.name.clone()).collect();
    n.sort();
    n
}

#[tokio::test]
async fn virtual_service_created_updated_and_deleted_reaches_a_delta_subscriber() {
    let server = server_with_crds(&[]).await;
    let api = vs_api(&server, "shop");
    api.create(
        &PostParams::default(),
        &virtual_service("cart", "cart.shop.svc.cluster.local"),
    )
    .await
    .unwrap();
    let galley = Galley::start(&server, &[]).await;
    galley.wait_ready().await;

    let mut client = delta_subscribe(&galley).await;
    let first = next_delta(&mut client).await;
    assert_eq!(names(&first), ["shop/cart"]);

    // Created.
    api.create(
        &PostParams::default(),
        &virtual_service("pay", "pay.shop.svc.cluster.local"),
    )
    .await
    .unwrap();
    let created = next_delta(&mut client).await;
    assert_eq!(names(&created), ["shop/pay"]);
    assert!(created.removed_resources.is_empty());

    // Updated.
    set_host(&api, "pay", "payments.shop.svc.cluster.local").await;
    let updated = next_delta(&mut client).await;
    assert_eq!(names(&updated), ["shop/pay"]);
    assert_ne!(updated.resources[0].version, created.resources[0].version);

    // Deleted.
    api.delete("pay", &DeleteParams::default()).await.unwrap();
    let deleted = next_delta(&mut client).await;
    assert!(deleted.resources.is_empty());
    assert_eq!(deleted.removed_resources, ["shop/pay"]);

    // Every watch is listed and shown on /debug/syncz.
    let syncz = http_json(galley.monitoring(), "/debug/syncz")
        .await
        .unwrap();
    let watches = syncz["kubernetes"].as_array().unwrap();
    assert_eq!(watches.len(), 12, "{syncz}");
    assert!(watches.iter().all(|w| w["phase"] == "synced"), "{syncz}");
}

#[tokio::test]
async fn forced_compaction_mid_watch_loses_no_change() {
    let server = server_with_crds(&[]).await;
    let api = vs_api(&server, "shop");
    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &virtual_service(&format!("vs{i}"), &format!("h{i}.shop")),
        )
        .await
        .unwrap();
    }
    let galley = Galley::start(&server, &[]).await;
    galley.wait_ready().await;
    assert_eq!(galley.served().await.len(), 5);

    // Compaction ends every watch; change things while the watchers are away
    // (they wait out their backoff before listing again).
    server.force_compaction();
    api.delete("vs0", &DeleteParams::default()).await.unwrap();
    set_host(&api, "vs1", "moved.shop").await;
    api.create(&PostParams::default(), &virtual_service("vs5", "h5.shop"))
        .await
        .unwrap();
    // And again, while the re-list may be under way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.force_compaction();
    api.delete("vs2", &DeleteParams::default()).await.unwrap();
    api.create(&PostParams::default(), &virtual_service("vs6", "h6.shop"))
        .await
        .unwrap();

    let expected: BTreeSet<(String, String)> = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| {
            (
                format!("shop/{}", o.metadata.name.as_deref().unwrap()),
                o.data["spec"]["hosts"][0].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(expected.len(), 5);
    until("galley serves exactly the server's set", WAIT, || async {
        galley.served().await == expected
    })
    .await;
    let syncz = http_json(galley.monitoring(), "/debug/syncz")
        .await
        .unwrap();
    let vs = syncz["kubernetes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["resource"] == "virtualservices.networking.istio.io")
        .unwrap()
        .clone();
    assert!(vs["lists"].as_u64().unwrap() >= 2, "re-listed: {vs}");
}

#[tokio::test]
async fn invalid_resource_is_refused_and_the_last_good_version_kept() {
    let server = server_with_crds(&[]).await;
    let api = vs_api(&server, "shop");
    api.create(
        &PostParams::default(),
        &virtual_service("cart", "cart.shop.svc.cluster.local"),
    )
    .await
    .unwrap();
    let galley = Galley::start(&server, &[]).await;
    galley.wait_ready().await;
    let mut client = delta_subscribe(&galley).await;
    let first = next_delta(&mut client).await;
    assert_eq!(names(&first), ["shop/cart"]);

    // A route weight galley refuses (the API server's schema leaves routes open).
    let patch =
        json!({"spec": {"http": [{"route": [{"destination": {"host": "cart"}, "weight": 150}]}]}});
    api.patch("cart", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let monitoring = galley.monitoring();
    until("the refusal is on /debug/errors", WAIT, || async move {
        let errors = http_json(monitoring, "/debug/errors").await.unwrap();
        !errors["errors"].as_array().unwrap().is_empty()
    })
    .await;
    let errors = http_json(monitoring, "/debug/errors").await.unwrap();
    let reported = errors["errors"][0]["message"].as_str().unwrap().to_string();
    assert!(reported.contains("VirtualService shop/cart"), "{reported}");
    assert!(
        reported.starts_with("kubernetes/virtualservices.networking.istio.io/shop/cart"),
        "{reported}"
    );
    let errors = http_json(galley.monitoring(), "/debug/errors")
        .await
        .unwrap();
    assert_eq!(errors["kept"].as_array().unwrap().len(), 1, "{errors}");
    assert_eq!(
        galley.served().await,
        BTreeSet::from([(
            "shop/cart".to_string(),
            "cart.shop.svc.cluster.local".to_string()
        )]),
        "the last good version stays served"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(400), client.recv(WAIT))
            .await
            .is_err(),
        "nothing new is published for a refused change"
    );

    // Fixed: published again, the refusal gone.
    set_host(&api, "cart", "basket.shop.svc.cluster.local").await;
    let patch = json!({"spec": {"http": [{"route": [{"destination": {"host": "basket.shop.svc.cluster.local"}}]}]}});
    api.patch("cart", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let fixed = next_delta(&mut client).await;
    assert_eq!(names(&fixed), ["shop/cart"]);
    let errors = http_json(galley.monitoring(), "/debug/errors")
        .await
        .unwrap();
    assert!(errors["errors"].as_array().unwrap().is_empty(), "{errors}");
}

#[tokio::test]
async fn galley_is_not_ready_until_every_kind_is_listed() {
    let server = server_with_crds(&[]).await;
    server.inject_fault(Fault::new("destinationrules", 500).verb("list"));
    let galley = Galley::start(&server, &[]).await;
    let monitoring = galley.monitoring();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, _) = http_get(monitoring, "/ready").await.unwrap();
    assert_eq!(code, 503, "not ready while one kind cannot be listed");
    // Streams are refused (at open or at the first request) until galley serves.
    let early = match DeltaClient::connect(galley.endpoint()).await {
        Err(e) => format!("{e:?}"),
        Ok(mut client) => {
            client
                .send(DeltaDiscoveryRequest {
                    type_url: VS.into(),
                    node: Some(dromon_e2e::ads::node("early")),
                    ..Default::default()
                })
                .await
                .unwrap();
            format!("{:?}", client.recv(WAIT).await.unwrap_err())
        }
    };
    assert!(early.contains("currently unavailable"), "{early}");
    let syncz = http_json(monitoring, "/debug/syncz").await.unwrap();
    let dr = syncz["kubernetes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["resource"] == "destinationrules.networking.istio.io")
        .unwrap()
        .clone();
    assert_eq!(dr["phase"], "retrying", "{dr}");
    assert!(dr["last_error"].as_str().unwrap().contains("list"), "{dr}");

    server.clear_faults();
    wait_ready(monitoring).await;
}

#[tokio::test]
async fn missing_crd_is_reported_and_does_not_block_the_others() {
    let server = server_with_crds(&["handlers."]).await;
    let api = vs_api(&server, "shop");
    api.create(
        &PostParams::default(),
        &virtual_service("cart", "cart.shop"),
    )
    .await
    .unwrap();
    let galley = Galley::start(&server, &[]).await;
    galley.wait_ready().await;
    assert_eq!(galley.served().await.len(), 1);
    let syncz = http_json(galley.monitoring(), "/debug/syncz")
        .await
        .unwrap();
    let handlers = syncz["kubernetes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["resource"] == "handlers.config.istio.io")
        .unwrap()
        .clone();
    assert_eq!(handlers["phase"], "crd_missing", "{handlers}");
    let metrics = http_get(galley.monitoring(), "/metrics").await.unwrap().1;
    assert!(
        metrics.contains("galley_kube_crd_missing{resource=\"handlers.config.istio.io\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn forbidden_list_stops_galley_with_a_clear_error() {
    let server = server_with_crds(&[]).await;
    server.inject_fault(Fault::new("gateways", 403).verb("list"));
    let mut galley = Galley::start(&server, &[]).await;
    let running = galley.running.take().unwrap();
    let error = tokio::time::timeout(WAIT, running.wait())
        .await
        .expect("galley stops")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(
            "forbidden: cannot list gateways.networking.istio.io at the cluster scope"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn binary_watches_the_namespaces_it_is_given_through_a_kubeconfig() {
    let server = server_with_crds(&[]).await;
    server
        .apply_object(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}),
        )
        .unwrap();
    vs_api(&server, "shop")
        .create(
            &PostParams::default(),
            &virtual_service("cart", "cart.shop"),
        )
        .await
        .unwrap();
    vs_api(&server, "other")
        .create(
            &PostParams::default(),
            &virtual_service("hidden", "hidden.other"),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.write_kubeconfig(dir.path()).unwrap();
    let (mcp, monitoring) = (dromon_e2e::local_addr(), dromon_e2e::local_addr());
    let _child = ChildGuard::spawn(
        "galley",
        &[
            "--kube",
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--watch-namespaces",
            "shop",
            "--mcp-addr",
            &mcp.to_string(),
            "--monitoring-addr",
            &monitoring.to_string(),
        ],
    )
    .unwrap();
    dromon_e2e::wait_http_ok(monitoring, "/ready", Duration::from_secs(30))
        .await
        .unwrap();
    let configz = http_json(monitoring, "/debug/configz").await.unwrap();
    let served: Vec<&str> = configz["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(served, ["cart"], "{configz}");
}

#[tokio::test]
async fn unreachable_api_server_at_start_is_retried_until_it_answers() {
    let server = server_with_crds(&[]).await;
    vs_api(&server, "shop")
        .create(
            &PostParams::default(),
            &virtual_service("cart", "cart.shop"),
        )
        .await
        .unwrap();
    server.set_unreachable(true).await.unwrap();
    let galley = Galley::start(&server, &[]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (code, _) = http_get(galley.monitoring(), "/ready").await.unwrap();
    assert_eq!(code, 503, "not ready while the API server is unreachable");
    server.set_unreachable(false).await.unwrap();
    galley.wait_ready().await;
    assert_eq!(galley.served().await.len(), 1);
}

// Analysis messages in status.

const CART_HOST: &str = "cart.shop.svc.cluster.local";

/// A server with the CRDs, namespace `shop` holding a ServiceEntry for
/// [`CART_HOST`] (so routes to it raise nothing), and the Lease's namespace.
async fn server_for_status() -> KubeTestServer {
    let server = server_with_crds(&[]).await;
    server
        .apply_object(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NAMESPACE}}),
        )
        .unwrap();
    let entries: Api<DynamicObject> =
        Api::namespaced_with(server.client(), "shop", &api_resource(Kind::ServiceEntry));
    let entry = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "cart"},
        "spec": {"hosts": [CART_HOST], "location": "MESH_INTERNAL", "resolution": "DNS",
                 "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]}
    }))
    .unwrap();
    entries
        .create(&PostParams::default(), &entry)
        .await
        .unwrap();
    server
}

/// A VirtualService for [`CART_HOST`] bound to `gateways` (which do not exist).
fn routed_virtual_service(name: &str, gateways: &[&str]) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {"hosts": [CART_HOST], "gateways": gateways,
                 "http": [{"route": [{"destination": {"host": CART_HOST}}]}]}
    }))
    .unwrap()
}

/// The object `shop/<name>` as stored.
fn stored_vs(server: &KubeTestServer, name: &str) -> Value {
    server
        .get_object("networking.istio.io/v1", "VirtualService", "shop", name)
        .unwrap()
}

/// The codes of the object's `status.validationMessages`.
fn message_codes(object: &Value) -> Vec<String> {
    object
        .pointer("/status/validationMessages")
        .and_then(Value::as_array)
        .map(|messages| {
            messages
                .iter()
                .map(|m| m["type"]["code"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `shop/<name>`'s status satisfies `check`; the object.
async fn await_status(
    server: &KubeTestServer,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let object = stored_vs(server, name);
        if check(&object) {
            return object;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {what}; the object: {object:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn analysis_messages_are_written_into_status_and_cleared_when_fixed() {
    let server = server_for_status().await;
    // Another controller's status field, which galley must keep.
    server
        .apply_object(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "cart", "namespace": "shop"},
            "spec": {"hosts": [CART_HOST], "gateways": ["missing"],
                     "http": [{"route": [{"destination": {"host": CART_HOST}}]}]},
            "status": {"conditions": [{"type": "Reconciled", "status": "True"}]}
        }))
        .unwrap();
    let galley = Galley::start_writing_status(&server, "only").await;
    galley.wait_ready().await;

    let written = await_status(&server, "cart", "GatewayNotFound in status", |o| {
        message_codes(o).contains(&"GAL0103".to_string())
    })
    .await;
    let generation = written.pointer("/metadata/generation").unwrap().clone();
    let status = &written["status"];
    assert_eq!(status["observedGeneration"], generation, "{written:#}");
    let gateway = status["validationMessages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["type"]["code"] == "GAL0103")
        .unwrap();
    assert_eq!(gateway["level"], "ERROR");
    assert_eq!(gateway["type"]["name"], "GatewayNotFound");
    assert_eq!(gateway["field"], "spec.gateways[0]");
    assert!(
        gateway["description"].as_str().unwrap().contains("missing"),
        "{gateway}"
    );
    assert_eq!(status["conditions"][0]["type"], "Reconciled", "kept");
    assert!(galley.leading().await);

    // Steady state: no more writes, the object untouched.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let writes = galley.status_writes().await;
    let version = stored_vs(&server, "cart")["metadata"]["resourceVersion"].clone();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        galley.status_writes().await,
        writes,
        "no write in a steady state"
    );
    assert_eq!(
        stored_vs(&server, "cart")["metadata"]["resourceVersion"],
        version
    );
    assert_eq!(writes, 1.0, "one write for one finding");

    // Fixed: the messages go, with the new generation; the other field stays.
    let patch = json!({"spec": {"gateways": null}});
    vs_api(&server, "shop")
        .patch("cart", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let fixed = await_status(&server, "cart", "messages cleared", |o| {
        o.pointer("/status/validationMessages").is_none()
    })
    .await;
    assert_ne!(fixed["metadata"]["generation"], generation);
    assert_eq!(
        fixed["status"]["observedGeneration"], fixed["metadata"]["generation"],
        "{fixed:#}"
    );
    assert_eq!(fixed["status"]["conditions"][0]["type"], "Reconciled");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(galley.status_writes().await, 2.0, "{fixed:#}");

    // A resource without messages and without status is never written.
    let entry = server
        .get_object("networking.istio.io/v1", "ServiceEntry", "shop", "cart")
        .unwrap();
    assert!(entry.get("status").is_none(), "{entry:#}");
}

#[tokio::test]
async fn only_the_lease_holder_writes_status_and_another_takes_over() {
    let server = server_for_status().await;
    let api = vs_api(&server, "shop");
    api.create(
        &PostParams::default(),
        &routed_virtual_service("cart", &["missing"]),
    )
    .await
    .unwrap();
    let first = Galley::start_writing_status(&server, "first").await;
    let second = Galley::start_writing_status(&server, "second").await;
    first.wait_ready().await;
    second.wait_ready().await;
    await_status(&server, "cart", "status written", |o| {
        message_codes(o).contains(&"GAL0103".to_string())
    })
    .await;
    // Both serve; exactly one leads, and only it wrote.
    let (leader, follower) = if first.leading().await {
        (first, second)
    } else {
        (second, first)
    };
    assert!(leader.leading().await);
    assert!(!follower.leading().await);
    assert_eq!(leader.status_writes().await, 1.0);
    assert_eq!(follower.status_writes().await, 0.0);
    assert_eq!(follower.served().await.len(), 1);

    // The leader stops and releases the Lease: the other takes over and writes what
    // analysis of the next generation finds.
    leader.stop().await;
    until("the follower takes the Lease", WAIT, || follower.leading()).await;
    let patch = json!({"spec": {"gateways": ["missing", "gone"]}});
    api.patch("cart", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let written = await_status(&server, "cart", "the new leader writes", |o| {
        o.pointer("/status/observedGeneration") == o.pointer("/metadata/generation")
            && message_codes(o).iter().filter(|c| *c == "GAL0103").count() == 2
    })
    .await;
    assert_eq!(follower.status_writes().await, 1.0, "{written:#}");
}

#[tokio::test]
async fn binary_logs_a_forbidden_status_write_keeps_serving_and_writes_once_allowed() {
    let server = server_for_status().await;
    vs_api(&server, "shop")
        .create(
            &PostParams::default(),
            &routed_virtual_service("cart", &["missing"]),
        )
        .await
        .unwrap();
    server.inject_fault(Fault::new("virtualservices", 403).verb("patch"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.write_kubeconfig(dir.path()).unwrap();
    let (mcp, monitoring) = (dromon_e2e::local_addr(), dromon_e2e::local_addr());
    let galley = ChildGuard::spawn_with_env(
        "galley",
        &[
            "--kube",
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--lease-namespace",
            "shop",
            "--mcp-addr",
            &mcp.to_string(),
            "--monitoring-addr",
            &monitoring.to_string(),
        ],
        &[("DROMON_LOG_FORMAT", "text")],
    )
    .unwrap();
    galley
        .await_log(
            "forbidden: cannot patch virtualservices.networking.istio.io/status in namespace shop",
            WAIT,
        )
        .await
        .unwrap();
    let (code, _) = http_get(monitoring, "/ready").await.unwrap();
    assert_eq!(code, 200, "galley keeps serving");
    let metrics = http_get(monitoring, "/metrics").await.unwrap().1;
    assert!(
        metric_value(&metrics, "galley_status_writes_total{result=\"forbidden\"}")
            .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(stored_vs(&server, "cart").get("status").is_none());

    // RBAC granted: the next retry writes.
    server.clear_faults();
    await_status(&server, "cart", "written after the retry", |o| {
        message_codes(o).contains(&"GAL0103".to_string())
    })
    .await;
    // The Lease in the namespace given names this process.
    let lease = server
        .get_object(
            "coordination.k8s.io/v1",
            "Lease",
            "shop",
            DEFAULT_LEASE_NAME,
        )
        .unwrap();
    assert!(
        lease
            .pointer("/spec/holderIdentity")
            .and_then(Value::as_str)
            .is_some_and(|h| !h.is_empty()),
        "{lease:#}"
    );
}
