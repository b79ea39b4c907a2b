#![allow(clippy::unwrap_used)]

use super::*;
use crate::proxy_sim::decode::{CDS, EDS, LDS, RDS};
use mesh_api::envoy::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType},
            },
            endpoint::v3::ClusterLoadAssignment,
            listener::v3::{ApiListener, Listener},
            route::v3::{
                Route, RouteAction, RouteConfiguration, VirtualHost, route::Action,
                route_action::ClusterSpecifier,
            },
        },
        extensions::filters::network::http_connection_manager::v3::{
            HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
        },
        service::discovery::v3::{DiscoveryResponse, Resource},
    },
    google::protobuf::Any,
};

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

fn any<M: Message>(type_url: &str, m: &M) -> Any {
    Any {
        type_url: type_url.into(),
        value: m.encode_to_vec(),
    }
}

fn cluster(name: &str, eds: bool) -> Any {
    let t = if eds {
        DiscoveryType::Eds
    } else {
        DiscoveryType::StrictDns
    };
    any(
        CDS,
        &Cluster {
            name: name.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(t as i32)),
            ..Default::default()
        },
    )
}

fn cla(name: &str) -> Any {
    any(
        EDS,
        &ClusterLoadAssignment {
            cluster_name: name.into(),
            ..Default::default()
        },
    )
}

fn listener(name: &str, route: &str) -> Any {
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            route_config_name: route.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    any(
        LDS,
        &Listener {
            name: name.into(),
            api_listener: Some(ApiListener {
                api_listener: Some(any(HCM, &hcm)),
            }),
            ..Default::default()
        },
    )
}

fn route_config(name: &str, hosts: &[(&str, &str)]) -> Any {
    any(
        RDS,
        &RouteConfiguration {
            name: name.into(),
            virtual_hosts: hosts
                .iter()
                .map(|(domain, cluster)| VirtualHost {
                    name: domain.to_string(),
                    domains: vec![domain.to_string()],
                    routes: vec![Route {
                        action: Some(Action::Route(RouteAction {
                            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
    )
}

fn sotw(type_url: &str, version: &str, nonce: &str, resources: Vec<Any>) -> Bytes {
    Bytes::from(
        DiscoveryResponse {
            version_info: version.into(),
            type_url: type_url.into(),
            nonce: nonce.into(),
            resources,
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

fn delta(
    type_url: &str,
    version: &str,
    nonce: &str,
    resources: Vec<(&str, &str, Any)>,
    removed: &[&str],
) -> Bytes {
    Bytes::from(
        DeltaDiscoveryResponse {
            system_version_info: version.into(),
            type_url: type_url.into(),
            nonce: nonce.into(),
            resources: resources
                .into_iter()
                .map(|(name, version, body)| Resource {
                    name: name.into(),
                    version: version.into(),
                    resource: Some(body),
                    ..Default::default()
                })
                .collect(),
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

fn node() -> Node {
    Node {
        id: "sidecar~10.0.0.1~a-1.ns0~ns0.svc.cluster.local".into(),
        ..Default::default()
    }
}

fn sotw_reqs(reqs: Vec<Request>) -> Vec<DiscoveryRequest> {
    reqs.into_iter()
        .map(|r| match r {
            Request::Sotw(r) => r,
            Request::Delta(_) => panic!("delta request from a SotW proxy"),
        })
        .collect()
}

fn delta_reqs(reqs: Vec<Request>) -> Vec<DeltaDiscoveryRequest> {
    reqs.into_iter()
        .map(|r| match r {
            Request::Delta(r) => r,
            Request::Sotw(_) => panic!("SotW request from a delta proxy"),
        })
        .collect()
}

#[test]
fn sotw_sidecar_follows_clusters_to_endpoints_and_listeners_to_routes_acking_everything() {
    let now = Instant::now();
    let mut p = ProxyState::new(Protocol::Sotw, node(), None, SetStore::new());
    let first = sotw_reqs(p.start_stream());
    assert_eq!(
        first
            .iter()
            .map(|r| r.type_url.as_str())
            .collect::<Vec<_>>(),
        [CDS, LDS],
        "wildcard CDS and LDS first"
    );
    assert!(first[0].node.is_some() && first[1].node.is_none());
    assert!(first.iter().all(|r| r.resource_names.is_empty()));

    let reqs = sotw_reqs(
        p.on_response(
            sotw(
                CDS,
                "c1",
                "n1",
                vec![
                    cluster("a", true),
                    cluster("b", true),
                    cluster("dns", false),
                ],
            ),
            now,
        )
        .unwrap(),
    );
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        (reqs[0].type_url.as_str(), reqs[0].version_info.as_str()),
        (CDS, "c1")
    );
    assert_eq!(reqs[0].response_nonce, "n1");
    assert!(reqs[0].error_detail.is_none(), "never a NACK");
    assert_eq!(reqs[1].type_url, EDS);
    assert_eq!(reqs[1].resource_names, ["a", "b"]);
    assert!(!p.complete());

    let reqs = sotw_reqs(
        p.on_response(sotw(LDS, "l1", "n2", vec![listener("x:80", "80")]), now)
            .unwrap(),
    );
    assert_eq!(reqs[1].type_url, RDS);
    assert_eq!(reqs[1].resource_names, ["80"]);
    let reqs = sotw_reqs(
        p.on_response(sotw(EDS, "e1", "n3", vec![cla("a"), cla("b")]), now)
            .unwrap(),
    );
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].resource_names,
        ["a", "b"],
        "ACKs name the subscription"
    );
    assert!(!p.complete(), "routes still missing");
    p.on_response(sotw(RDS, "r1", "n4", vec![route_config("80", &[])]), now)
        .unwrap();
    assert!(p.complete());
    assert_eq!(p.view(Kind::Eds).version, "e1");

    // A new cluster: EDS is asked again, on the last EDS nonce and version.
    let later = now + std::time::Duration::from_millis(5);
    let reqs = sotw_reqs(
        p.on_response(
            sotw(
                CDS,
                "c2",
                "n5",
                vec![cluster("a", true), cluster("b", true), cluster("c", true)],
            ),
            later,
        )
        .unwrap(),
    );
    assert_eq!(reqs[1].type_url, EDS);
    assert_eq!(reqs[1].resource_names, ["a", "b", "c"]);
    assert_eq!(
        (
            reqs[1].version_info.as_str(),
            reqs[1].response_nonce.as_str()
        ),
        ("e1", "n3")
    );
    assert!(!p.complete());
    assert_eq!(p.view(Kind::Cds).changed_at, Some(later));
    p.on_response(
        sotw(EDS, "e2", "n6", vec![cla("a"), cla("b"), cla("c")]),
        later,
    )
    .unwrap();
    assert!(p.complete());

    // Same version again: no change recorded.
    let again = later + std::time::Duration::from_millis(5);
    p.on_response(
        sotw(EDS, "e2", "n7", vec![cla("a"), cla("b"), cla("c")]),
        again,
    )
    .unwrap();
    assert_eq!(p.view(Kind::Eds).changed_at, Some(later));

    // A new stream starts over, naming the versions held.
    let reqs = sotw_reqs(p.start_stream());
    assert!(!p.complete());
    let eds = reqs.iter().find(|r| r.type_url == EDS).unwrap();
    assert_eq!(
        (eds.version_info.as_str(), eds.response_nonce.as_str()),
        ("e2", "")
    );
    assert!(reqs[0].node.is_some());
}

#[test]
fn sotw_proxies_share_sets_by_version() {
    let store = SetStore::new();
    let now = Instant::now();
    let mut a = ProxyState::new(Protocol::Sotw, node(), None, store.clone());
    let mut b = ProxyState::new(Protocol::Sotw, node(), None, store.clone());
    a.start_stream();
    b.start_stream();
    a.on_response(sotw(CDS, "c1", "n1", vec![cluster("a", true)]), now)
        .unwrap();
    // b's response carries garbage resources under the same version: it is not read.
    let mut garbage = sotw(CDS, "c1", "n1", vec![]).to_vec();
    garbage.extend([0x12, 0x03, 0xff, 0xff, 0xff]);
    b.on_response(Bytes::from(garbage), now).ok();
    assert_eq!(store.len(), 1);
    assert_eq!(b.view(Kind::Cds).resources, 1);
    assert!(a.derived(Kind::Cds, "a").is_some());
}

#[test]
fn delta_proxy_assembles_split_updates_diffs_subscriptions_and_resumes_with_versions() {
    let now = Instant::now();
    let mut p = ProxyState::new(Protocol::Delta, node(), None, SetStore::new());
    let first = delta_reqs(p.start_stream());
    assert_eq!(first.len(), 2);
    assert!(first[0].node.is_some());
    assert!(first[0].resource_names_subscribe.is_empty(), "wildcard");

    // A split update: the first part is ACKed but not applied.
    let reqs = delta_reqs(
        p.on_response(
            delta(CDS, "", "n1", vec![("a", "1", cluster("a", true))], &[]),
            now,
        )
        .unwrap(),
    );
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].response_nonce, "n1");
    assert_eq!(p.view(Kind::Cds).resources, 0);
    let reqs = delta_reqs(
        p.on_response(
            delta(CDS, "c1", "n2", vec![("b", "1", cluster("b", true))], &[]),
            now,
        )
        .unwrap(),
    );
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].type_url, EDS);
    assert_eq!(reqs[1].resource_names_subscribe, ["a", "b"]);
    assert_eq!(p.view(Kind::Cds).version, "c1");

    p.on_response(
        delta(
            LDS,
            "l1",
            "n3",
            vec![("x:80", "1", listener("x:80", "80"))],
            &[],
        ),
        now,
    )
    .unwrap();
    p.on_response(
        delta(
            RDS,
            "r1",
            "n4",
            vec![("80", "1", route_config("80", &[]))],
            &[],
        ),
        now,
    )
    .unwrap();
    // "b" does not exist: the server says so, which completes the subscription.
    p.on_response(
        delta(EDS, "e1", "n5", vec![("a", "1", cla("a"))], &["b"]),
        now,
    )
    .unwrap();
    assert!(p.complete());

    // "a" goes away and "c" arrives: unsubscribe one, subscribe the other.
    let reqs = delta_reqs(
        p.on_response(
            delta(
                CDS,
                "c2",
                "n6",
                vec![("c", "1", cluster("c", true))],
                &["a"],
            ),
            now,
        )
        .unwrap(),
    );
    assert_eq!(reqs[1].resource_names_subscribe, ["c"]);
    assert_eq!(reqs[1].resource_names_unsubscribe, ["a"]);
    assert!(!p.complete());
    p.on_response(delta(EDS, "e2", "n7", vec![("c", "2", cla("c"))], &[]), now)
        .unwrap();
    assert!(p.complete());

    // Reconnecting resumes from the versions held.
    let reqs = delta_reqs(p.start_stream());
    let cds = reqs.iter().find(|r| r.type_url == CDS).unwrap();
    assert_eq!(cds.initial_resource_versions.len(), 2);
    assert_eq!(cds.initial_resource_versions["c"], "1");
    let eds = reqs.iter().find(|r| r.type_url == EDS).unwrap();
    assert_eq!(eds.resource_names_subscribe, ["b", "c"]);
    assert_eq!(
        eds.initial_resource_versions.get("c").map(String::as_str),
        Some("2")
    );
    assert!(!eds.initial_resource_versions.contains_key("a"));
}

#[test]
fn proxyless_client_asks_by_name_from_listener_to_endpoints() {
    let now = Instant::now();
    let mut p = ProxyState::new(
        Protocol::Sotw,
        node(),
        Some(vec!["a:80".into()]),
        SetStore::new(),
    );
    let first = sotw_reqs(p.start_stream());
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].type_url.as_str(), first[0].resource_names.clone()),
        (LDS, vec!["a:80".to_string()])
    );
    let reqs = sotw_reqs(
        p.on_response(sotw(LDS, "l1", "n1", vec![listener("a:80", "80")]), now)
            .unwrap(),
    );
    assert_eq!(reqs[0].resource_names, ["a:80"]);
    assert_eq!(reqs[1].resource_names, ["80"]);
    let reqs = sotw_reqs(
        p.on_response(
            sotw(
                RDS,
                "r1",
                "n2",
                vec![route_config("80", &[("a:80", "ca"), ("b:80", "cb")])],
            ),
            now,
        )
        .unwrap(),
    );
    assert_eq!(reqs[1].type_url, CDS);
    assert_eq!(
        reqs[1].resource_names,
        ["ca"],
        "only its own virtual host's"
    );
    let reqs = sotw_reqs(
        p.on_response(sotw(CDS, "c1", "n3", vec![cluster("ca", true)]), now)
            .unwrap(),
    );
    assert_eq!(reqs[1].type_url, EDS);
    assert!(!p.complete());
    p.on_response(sotw(EDS, "e1", "n4", vec![cla("ca")]), now)
        .unwrap();
    assert!(p.complete());
}

#[test]
fn unknown_types_and_garbage_are_errors_not_panics() {
    let mut p = ProxyState::new(Protocol::Sotw, node(), None, SetStore::new());
    p.start_stream();
    let now = Instant::now();
    assert!(
        p.on_response(sotw("type.x/Other", "v", "n", vec![]), now)
            .is_err()
    );
    assert!(
        p.on_response(Bytes::from_static(&[0xff, 0xff]), now)
            .is_err()
    );
    let mut d = ProxyState::new(Protocol::Delta, node(), None, SetStore::new());
    d.start_stream();
    assert!(d.on_response(Bytes::from_static(&[0x0a]), now).is_err());
}
