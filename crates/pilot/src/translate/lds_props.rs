//! Properties of sidecar and gateway listeners over random inputs.

use mesh_model::{
    networking::{Location, Resolution},
    protocol::Protocol,
};
use proptest::prelude::*;

use super::{
    inbound::VIRTUAL_INBOUND,
    lds_tests::{mk_proxy, names},
    *,
};
use crate::{
    model::{Endpoint, RegistryKind, Service, ServicePort},
    proxy::ProxyKind,
};

fn arb_service() -> impl Strategy<Value = Service> {
    (
        prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")],
        prop_oneof![
            Just("x.example.com"),
            Just("svc.cluster.local"),
            Just("example.org")
        ],
        proptest::collection::btree_map(
            prop_oneof![Just(80u32), Just(443), Just(3306), Just(9080)],
            prop_oneof![
                Just(None),
                Just(Some(Protocol::Http)),
                Just(Some(Protocol::Grpc)),
                Just(Some(Protocol::Tcp)),
                Just(Some(Protocol::Tls)),
                Just(Some(Protocol::Https)),
                Just(Some(Protocol::Mongo)),
            ],
            1..3,
        ),
        proptest::collection::vec(
            prop_oneof![
                Just("10.0.0.1"),
                Just("10.0.0.0/24"),
                Just("10.0.0.1/32"),
                Just("bogus"),
                Just("2001:db8::/32"),
            ],
            0..3,
        ),
        proptest::bool::ANY,
        (
            prop_oneof![
                Just(RegistryKind::ServiceEntry),
                Just(RegistryKind::Kubernetes)
            ],
            prop_oneof![Just(Resolution::None), Just(Resolution::Static)],
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("10.1.0.1"),
                        Just("10.1.0.2"),
                        Just("fd00::1"),
                        Just("db.example.com"),
                    ],
                    prop_oneof![Just(""), Just("a"), Just("b")],
                ),
                0..3,
            ),
        ),
    )
        .prop_map(
            |(name, domain, ports, addresses, wildcard, (registry, resolution, endpoints))| {
                Service {
                    host: if wildcard {
                        format!("*.{domain}")
                    } else {
                        format!("{name}.{domain}")
                    },
                    namespace: "ns".to_string(),
                    ports: ports
                        .into_iter()
                        .map(|(number, protocol)| ServicePort {
                            number,
                            name: format!("p{number}"),
                            protocol,
                            target_port: None,
                        })
                        .collect(),
                    resolution,
                    location: Location::MeshExternal,
                    endpoints: endpoints
                        .into_iter()
                        .map(|(address, account)| Endpoint {
                            address: address.to_string(),
                            ports: Default::default(),
                            labels: Default::default(),
                            locality: String::new(),
                            weight: None,
                            service_account: account.to_string(),
                        })
                        .collect(),
                    addresses: addresses.into_iter().map(String::from).collect(),
                    workload_selector: None,
                    export_to: Vec::new(),
                    subject_alt_names: Vec::new(),
                    registry,
                }
            },
        )
}

proptest! {
    /// Headless services (resolved NONE, Kubernetes or with endpoints) sharing
    /// ports and endpoint addresses with each other and with services that have
    /// virtual addresses still give listeners without overlapping chains.
    #[test]
    fn random_services_give_listeners_envoy_accepts(
        services in proptest::collection::vec(arb_service(), 0..8),
    ) {
        let mut by_host = std::collections::BTreeMap::new();
        for s in services {
            by_host.entry(s.host.clone()).or_insert(s);
        }
        let ctx = MeshContext::new(by_host.into_values().collect(), &[]);
        let proxy = mk_proxy(ProxyKind::Sidecar, "ns", &[]);
        let own = proxy_resources(&ctx, &proxy);
        let mut clusters = clusters::build_clusters(&ctx, &proxy);
        clusters.extend(own.clusters.clone());
        clusters.sort_by(|a, b| a.0.cmp(&b.0));
        let full = EnvoyResources {
            clusters,
            endpoints: endpoints::build_endpoints(&ctx, &proxy),
            listeners: own.listeners.clone(),
            routes: routes::build_routes(&ctx, &proxy),
        };
        prop_assert_eq!(validate::check(&full), Vec::new());
        prop_assert_eq!(validate::check_references(&full), Vec::new());
        // One listener per port of the services, plus the two virtual ones.
        let ports: std::collections::BTreeSet<u32> = ctx
            .services
            .values()
            .flat_map(|s| s.ports.iter().map(|p| p.number))
            .collect();
        prop_assert_eq!(names(&own.listeners).len(), ports.len() + 2);
        prop_assert!(names(&own.listeners).contains(&VIRTUAL_INBOUND));
    }
}
