#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use mesh_mcp::McpView;
use mesh_model::{
    ParseOptions,
    networking::{Location, Resolution},
    parse_document_set,
};
use mesh_xds::{Snapshot, SnapshotCache, type_url};

use super::{Inputs, PushEngine};
use crate::{
    model::{Endpoint, RegistryKind, Service, ServicePort},
    proxy::{Proxy, ProxyKind},
};

fn view(yaml: &str, generation: u64) -> Arc<McpView> {
    let set = parse_document_set("t.yaml", yaml, &ParseOptions::default());
    let errors: Vec<_> = set.errors().collect();
    assert!(errors.is_empty(), "{errors:?}");
    Arc::new(McpView {
        resources: set
            .accepted
            .into_iter()
            .map(|r| (r.key(), Arc::new(r)))
            .collect(),
        generation,
    })
}

fn service(name: &str, ns: &str, export_to: &str, ip: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{name}.{ns}.svc.cluster.local]\n  exportTo: [{export_to}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: {ip}}}]\n---\n"
    )
}

const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: a}\nspec:\n  hosts: [a.a.svc.cluster.local]\n  http: [{timeout: 3s, route: [{destination: {host: a.a.svc.cluster.local}}]}]\n---\n";

fn group(kind: ProxyKind, ns: &str, app: &str) -> String {
    Proxy::new(kind, ns, [("app".to_string(), app.to_string())].into()).group_key()
}

fn names(snapshot: &Snapshot, t: &str) -> Vec<String> {
    snapshot
        .get(t)
        .map(|s| s.items.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn groups_see_what_their_namespace_sees_and_share_scopes() {
    let cache = SnapshotCache::new();
    let mut engine = PushEngine::new(cache.clone());
    let ga1 = group(ProxyKind::Proxyless, "a", "one");
    let ga2 = group(ProxyKind::Proxyless, "a", "two");
    let gb = group(ProxyKind::Proxyless, "b", "one");
    let _watchers = [cache.watch(&ga1), cache.watch(&ga2), cache.watch(&gb)];
    let yaml = [
        service("a", "a", "\".\"", "10.0.0.1"),
        service("b", "b", "\"*\"", "10.0.0.2"),
    ]
    .concat();
    let stats = engine.update(view(&yaml, 1));
    assert_eq!((stats.groups, stats.scopes), (3, 2));
    let a1 = cache.get(&ga1).unwrap();
    let b = cache.get(&gb).unwrap();
    assert_eq!(
        names(&a1, type_url::CLUSTER),
        [
            "outbound|80||a.a.svc.cluster.local",
            "outbound|80||b.b.svc.cluster.local"
        ]
    );
    assert_eq!(
        names(&b, type_url::CLUSTER),
        ["outbound|80||b.b.svc.cluster.local"]
    );
    assert!(
        Arc::ptr_eq(&a1, &cache.get(&ga2).unwrap()),
        "groups of one scope with no additions share a snapshot"
    );
    let shared_a =
        a1.get(type_url::CLUSTER).unwrap().items["outbound|80||b.b.svc.cluster.local"].clone();
    let shared_b =
        b.get(type_url::CLUSTER).unwrap().items["outbound|80||b.b.svc.cluster.local"].clone();
    assert!(
        Arc::ptr_eq(&shared_a, &shared_b),
        "equal resources are interned across scopes"
    );
}

#[test]
fn scopes_seeing_the_same_services_share_whole_sets_across_pushes() {
    let cache = SnapshotCache::new();
    let mut engine = PushEngine::new(cache.clone());
    let (ga, gb, gc) = (
        group(ProxyKind::Proxyless, "a", "x"),
        group(ProxyKind::Proxyless, "b", "x"),
        group(ProxyKind::Proxyless, "c", "x"),
    );
    let _watchers = [cache.watch(&ga), cache.watch(&gb), cache.watch(&gc)];
    let yaml = |ip: &str, timeout: &str| {
        [
            service("a", "a", "\"*\"", ip),
            service("c", "c", "\".\"", "10.0.0.3"),
            VS.replace("timeout: 3s", timeout),
        ]
        .concat()
    };
    let stats = engine.update(view(&yaml("10.0.0.1", "timeout: 3s"), 1));
    assert_eq!((stats.groups, stats.scopes), (3, 3));
    let set = |g: &str, t: &str| cache.get(g).unwrap().get(t).unwrap().clone();
    for t in [type_url::CLUSTER, type_url::ENDPOINT, type_url::LISTENER] {
        assert!(
            Arc::ptr_eq(&set(&ga, t), &set(&gb, t)),
            "{t}: namespaces a and b see the same services and share one set"
        );
        assert!(
            !Arc::ptr_eq(&set(&ga, t), &set(&gc, t)),
            "{t}: namespace c also sees its own service"
        );
    }
    // A shared set encodes its response body once, for every scope.
    let body = set(&ga, type_url::CLUSTER).wildcard_body(type_url::CLUSTER);
    let again = set(&gb, type_url::CLUSTER).wildcard_body(type_url::CLUSTER);
    assert_eq!(body.as_ptr(), again.as_ptr());

    // A full push that changes routes only keeps the other sets as they were.
    let before = set(&ga, type_url::CLUSTER);
    let stats = engine.update(view(&yaml("10.0.0.1", "timeout: 4s"), 2));
    assert!(!stats.endpoints_only);
    assert!(Arc::ptr_eq(&before, &set(&ga, type_url::CLUSTER)));
    assert!(Arc::ptr_eq(&before, &set(&gb, type_url::CLUSTER)));
    assert_ne!(set(&ga, type_url::ROUTE).version, "");

    // An endpoint push gives both scopes one new set.
    let eds = set(&ga, type_url::ENDPOINT);
    let stats = engine.update(view(&yaml("10.0.0.9", "timeout: 4s"), 3));
    assert!(stats.endpoints_only, "{stats:?}");
    let (a, b) = (set(&ga, type_url::ENDPOINT), set(&gb, type_url::ENDPOINT));
    assert_ne!(a.version, eds.version);
    assert!(Arc::ptr_eq(&a, &b));
    assert!(!Arc::ptr_eq(&a, &set(&gc, type_url::ENDPOINT)));
}

#[test]
fn endpoint_changes_recompute_eds_only_and_rule_changes_recompute_all() {
    let cache = SnapshotCache::new();
    let mut engine = PushEngine::new(cache.clone());
    let g = group(ProxyKind::Proxyless, "a", "x");
    let _w = cache.watch(&g);
    let base = [service("a", "a", "\"*\"", "10.0.0.1"), VS.to_string()].concat();
    assert!(!engine.update(view(&base, 1)).endpoints_only);
    let before = cache.get(&g).unwrap();

    let moved = [service("a", "a", "\"*\"", "10.0.0.9"), VS.to_string()].concat();
    let stats = engine.update(view(&moved, 2));
    assert!(stats.endpoints_only, "{stats:?}");
    let after = cache.get(&g).unwrap();
    for t in [type_url::CLUSTER, type_url::LISTENER, type_url::ROUTE] {
        assert!(
            Arc::ptr_eq(before.get(t).unwrap(), after.get(t).unwrap()),
            "{t} kept as it was"
        );
    }
    assert_ne!(
        before.get(type_url::ENDPOINT).unwrap().version,
        after.get(type_url::ENDPOINT).unwrap().version
    );

    let retimed = moved.replace("timeout: 3s", "timeout: 4s");
    let stats = engine.update(view(&retimed, 3));
    assert!(!stats.endpoints_only);
    let last = cache.get(&g).unwrap();
    assert_ne!(
        after.get(type_url::ROUTE).unwrap().version,
        last.get(type_url::ROUTE).unwrap().version
    );
    assert!(
        Arc::ptr_eq(
            &after.get(type_url::CLUSTER).unwrap().items["outbound|80||a.a.svc.cluster.local"],
            &last.get(type_url::CLUSTER).unwrap().items["outbound|80||a.a.svc.cluster.local"],
        ),
        "an unchanged cluster is the same shared resource after a full push"
    );
}

#[test]
fn new_groups_are_built_on_demand_and_unwatched_ones_forgotten() {
    let cache = SnapshotCache::new();
    let mut engine = PushEngine::new(cache.clone());
    engine.update(view(&service("a", "a", "\"*\"", "10.0.0.1"), 1));
    assert_eq!(engine.group_count(), 0, "nothing is built for nobody");
    let g = group(ProxyKind::Proxyless, "z", "late");
    let w = cache.watch(&g);
    assert!(w.borrow().is_none());
    assert_eq!(engine.serve_new_groups(), 1);
    assert!(w.borrow().is_some());
    assert_eq!(engine.serve_new_groups(), 0, "built once");
    drop(w);
    engine.update(view(&service("a", "a", "\"*\"", "10.0.0.2"), 2));
    assert_eq!(engine.group_count(), 0);
    assert!(cache.groups().is_empty());
}

#[test]
fn sidecars_get_no_proxyless_listeners() {
    let cache = SnapshotCache::new();
    let mut engine = PushEngine::new(cache.clone());
    let sidecar = group(ProxyKind::Sidecar, "a", "x");
    let grpc = group(ProxyKind::Proxyless, "a", "x");
    let _w = [cache.watch(&sidecar), cache.watch(&grpc)];
    engine.update(view(&service("a", "a", "\"*\"", "10.0.0.1"), 1));
    assert_eq!(
        names(&cache.get(&grpc).unwrap(), type_url::LISTENER),
        ["a.a.svc.cluster.local:80"]
    );
    assert!(
        !names(&cache.get(&sidecar).unwrap(), type_url::LISTENER)
            .iter()
            .any(|l| l.ends_with(":80")),
        "API listeners are for proxyless clients only"
    );
}

#[test]
fn source_label_matches_give_each_label_set_its_own_routes() {
    let cache = SnapshotCache::new();
    let mut engine = PushEngine::new(cache.clone());
    let canary = group(ProxyKind::Sidecar, "a", "canary");
    let other = group(ProxyKind::Sidecar, "a", "other");
    let _w = [cache.watch(&canary), cache.watch(&other)];
    let yaml = [
        service("a", "a", "\"*\"", "10.0.0.1"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: a}\nspec:\n  hosts: [a.a.svc.cluster.local]\n  http:\n  - match: [{sourceLabels: {app: canary}}]\n    timeout: 9s\n    route: [{destination: {host: a.a.svc.cluster.local}}]\n  - route: [{destination: {host: a.a.svc.cluster.local}}]\n".to_string(),
    ]
    .concat();
    engine.update(view(&yaml, 1));
    let routes = |g: &str| cache.get(g).unwrap().get(type_url::ROUTE).unwrap().clone();
    let (c, o) = (routes(&canary), routes(&other));
    assert_eq!(c.items.keys().collect::<Vec<_>>(), ["80"]);
    assert_ne!(c.version, o.version, "the canary's own route differs");
    assert_eq!(
        cache
            .get(&canary)
            .unwrap()
            .get(type_url::CLUSTER)
            .unwrap()
            .version,
        cache
            .get(&other)
            .unwrap()
            .get(type_url::CLUSTER)
            .unwrap()
            .version,
        "clusters do not depend on the labels"
    );
}

fn bookinfo() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| format!("{}\n---\n", std::fs::read_to_string(f).unwrap()))
        .collect()
}

fn as_envoy(snapshot: &Snapshot) -> crate::EnvoyResources {
    let list = |t: &str| -> Vec<crate::NamedResource> {
        snapshot
            .get(t)
            .map(|s| {
                s.items
                    .values()
                    .map(|r| (r.name.clone(), r.body.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    crate::EnvoyResources {
        clusters: list(type_url::CLUSTER),
        endpoints: list(type_url::ENDPOINT),
        listeners: list(type_url::LISTENER),
        routes: list(type_url::ROUTE),
    }
}

#[test]
fn every_kind_of_proxy_gets_a_valid_and_stable_snapshot_of_bookinfo() {
    let cache = SnapshotCache::new();
    let mut engine = PushEngine::new(cache.clone());
    let labels = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let groups = [
        Proxy::new(
            ProxyKind::Sidecar,
            "bookinfo",
            labels(&[("app", "reviews"), ("version", "v1")]),
        ),
        Proxy::new(
            ProxyKind::Sidecar,
            "bookinfo",
            labels(&[("app", "productpage"), ("version", "v1")]),
        )
        .with_locality("us-east/zone-a/"),
        Proxy::new(
            ProxyKind::Router,
            "istio-system",
            labels(&[("istio", "ingressgateway")]),
        ),
        Proxy::new(ProxyKind::Proxyless, "bookinfo", Default::default()),
    ]
    .map(|p| p.group_key());
    let _w: Vec<_> = groups.iter().map(|g| cache.watch(g)).collect();
    let text = bookinfo();
    engine.update(view(&text, 1));
    let first: Vec<Arc<Snapshot>> = groups.iter().map(|g| cache.get(g).unwrap()).collect();
    for (g, snap) in groups.iter().zip(&first) {
        let envoy = as_envoy(snap);
        assert_eq!(crate::translate::validate::check(&envoy), Vec::new(), "{g}");
        assert!(!envoy.listeners.is_empty(), "{g} has listeners");
    }
    assert!(
        names(&first[2], type_url::ROUTE).contains(&"http.8080".to_string()),
        "the gateway gets its route configuration: {:?}",
        names(&first[2], type_url::ROUTE)
    );
    // The same configuration again (new objects, equal content): nothing changes,
    // so no stream would be woken.
    let mut rx: Vec<_> = groups.iter().map(|g| cache.watch(g)).collect();
    for r in &mut rx {
        r.borrow_and_update();
    }
    engine.update(view(&text, 2));
    for (g, r) in groups.iter().zip(&mut rx) {
        assert!(
            !r.has_changed().unwrap(),
            "{g} re-published unchanged config"
        );
    }
    // A full translation of the same content gives the same bytes for every set.
    let other = format!(
        "{text}{}",
        service("extra", "bookinfo", "\"*\"", "10.9.9.9")
    );
    engine.update(view(&other, 3));
    engine.update(view(&text, 4));
    for (g, before) in groups.iter().zip(&first) {
        let now = cache.get(g).unwrap();
        for t in before.type_urls() {
            assert_eq!(
                before.get(t).unwrap().version,
                now.get(t).unwrap().version,
                "{g} {t}"
            );
        }
    }
}

#[test]
fn a_workload_selected_sidecar_scopes_only_its_workloads() {
    let cache = SnapshotCache::new();
    let mut engine = PushEngine::new(cache.clone());
    let locked = group(ProxyKind::Sidecar, "a", "locked");
    let open = group(ProxyKind::Sidecar, "a", "open");
    let _w = [cache.watch(&locked), cache.watch(&open)];
    let yaml = [
        service("a", "a", "\"*\"", "10.0.0.1"),
        service("b", "b", "\"*\"", "10.0.0.2"),
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: locked, namespace: a}\nspec:\n  workloadSelector: {labels: {app: locked}}\n  egress: [{hosts: [\"./*\"]}]\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n".to_string(),
    ]
    .concat();
    let stats = engine.update(view(&yaml, 1));
    assert_eq!(stats.scopes, 2);
    let outbound = |g: &str| {
        names(&cache.get(g).unwrap(), type_url::CLUSTER)
            .into_iter()
            .filter(|n| n.starts_with("outbound|"))
            .collect::<Vec<_>>()
    };
    assert_eq!(outbound(&locked), ["outbound|80||a.a.svc.cluster.local"]);
    assert_eq!(
        outbound(&open),
        [
            "outbound|80||a.a.svc.cluster.local",
            "outbound|80||b.b.svc.cluster.local"
        ]
    );
    // The EDS-only path keeps each scope's own Sidecar.
    let moved = yaml.replace("10.0.0.2", "10.0.0.3");
    assert!(engine.update(view(&moved, 2)).endpoints_only);
    assert_eq!(
        names(&cache.get(&locked).unwrap(), type_url::ENDPOINT),
        ["outbound|80||a.a.svc.cluster.local"]
    );
    assert_eq!(
        names(&cache.get(&open).unwrap(), type_url::ENDPOINT).len(),
        2
    );
}

/// A Kubernetes service `<name>.shop`, headless or with a cluster IP, with
/// endpoints `(address, service account)`.
fn kube_service(name: &str, headless: bool, endpoints: &[(&str, &str)]) -> Service {
    Service {
        host: format!("{name}.shop.svc.cluster.local"),
        namespace: "shop".into(),
        ports: vec![ServicePort {
            number: 5432,
            name: "tcp".into(),
            protocol: None,
            target_port: None,
        }],
        resolution: if headless {
            Resolution::None
        } else {
            Resolution::Static
        },
        location: Location::MeshInternal,
        endpoints: endpoints
            .iter()
            .map(|(address, account)| Endpoint {
                address: address.to_string(),
                ports: Default::default(),
                labels: Default::default(),
                locality: String::new(),
                weight: None,
                service_account: account.to_string(),
            })
            .collect(),
        export_to: Vec::new(),
        addresses: if headless {
            Vec::new()
        } else {
            vec!["10.96.0.1".into()]
        },
        workload_selector: None,
        subject_alt_names: Vec::new(),
        registry: RegistryKind::Kubernetes,
    }
}

#[test]
fn new_service_accounts_and_headless_endpoints_are_full_pushes() {
    let cache = SnapshotCache::new();
    let mut engine = PushEngine::new(cache.clone());
    let sidecar = group(ProxyKind::Sidecar, "shop", "x");
    let proxyless = group(ProxyKind::Proxyless, "shop", "x");
    let _w = [cache.watch(&sidecar), cache.watch(&proxyless)];
    let empty = view("", 1);
    let mut push =
        |services: &[Service]| engine.update_inputs(Inputs::from_view_and(empty.clone(), services));
    let db = |eps: &[(&str, &str)]| kube_service("db", false, eps);
    let pg = |eps: &[(&str, &str)]| kube_service("pg", true, eps);
    assert!(!push(&[db(&[("10.1.0.1", "db")]), pg(&[("10.1.0.5", "pg")])]).endpoints_only);

    // A new pod running as an account the service already has: EDS only.
    let stats = push(&[
        db(&[("10.1.0.1", "db"), ("10.1.0.2", "db")]),
        pg(&[("10.1.0.5", "pg")]),
    ]);
    assert!(stats.endpoints_only, "{stats:?}");

    // A pod running as a new account changes the clusters' SAN matchers.
    let stats = push(&[
        db(&[("10.1.0.1", "db"), ("10.1.0.2", "db-v2")]),
        pg(&[("10.1.0.5", "pg")]),
    ]);
    assert!(!stats.endpoints_only, "{stats:?}");

    // A headless service's new endpoint changes sidecar listeners.
    let stats = push(&[
        db(&[("10.1.0.1", "db"), ("10.1.0.2", "db-v2")]),
        pg(&[("10.1.0.5", "pg"), ("10.1.0.6", "pg")]),
    ]);
    assert!(!stats.endpoints_only, "{stats:?}");
    let snapshot = cache.get(&sidecar).unwrap();
    assert!(
        !names(&snapshot, type_url::ENDPOINT)
            .contains(&"outbound|5432||pg.shop.svc.cluster.local".to_string()),
        "sidecars reach headless services without EDS"
    );
    assert!(
        names(&cache.get(&proxyless).unwrap(), type_url::ENDPOINT)
            .contains(&"outbound|5432||pg.shop.svc.cluster.local".to_string()),
        "proxyless clients get the headless service's endpoints"
    );
}
