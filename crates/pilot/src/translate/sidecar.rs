//! LDS for a workload's Envoy, outbound side: what the application's own connections
//! meet once iptables hands them to the sidecar.
//!
//! Every outbound connection lands on `virtualOutbound` (port 15001), which hands it
//! to the listener for its original destination port (`0.0.0.0_<port>`, not bound
//! itself) or, for ports no service uses, sends it on (`PassthroughCluster`, outbound
//! traffic policy ALLOW_ANY, the default) or drops it (`BlackHoleCluster`,
//! REGISTRY_ONLY, set by the workload's Sidecar resource).
//!
//! A port listener for HTTP-family services holds an HttpConnectionManager reading
//! route configuration `<port>` over RDS (built with the mesh-wide routes). For TCP
//! and TLS services it holds one filter chain per service: services with virtual
//! addresses are told apart by destination IP, TLS services by SNI, and a VirtualService
//! with `tcp:` or `tls:` routes for the host picks (weighted) destination clusters.
//! Envoy refuses a listener whose chains overlap, so on a collision the service first
//! in host order keeps the match. Connections matching no chain take the listener's
//! default chain, the same passthrough or black hole as `virtualOutbound`.
//!
//! Headless services (resolved `NONE`, no addresses) are reached at their
//! endpoints' own addresses, through an original destination cluster. On HTTP ports
//! the route for the host picks that cluster. On other ports the service's chain
//! matches its endpoints' IPs (each a /32 or /128; no SNI, the address says which
//! pod is meant), so several headless services and the ClusterIP services on one
//! port stay apart, one listener per port as for every service: a Kubernetes
//! headless service without ready endpoints has no chain, as nothing could serve
//! it. A ServiceEntry resolved `NONE` has no endpoints (validation refuses them)
//! and keeps the chain for the whole port, so connections to any address on it
//! take the entry's cluster.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use mesh_api::envoy::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy},
            },
            core::v3::{
                BindConfig, CidrRange, SocketAddress, TrafficDirection,
                socket_address::PortSpecifier,
            },
            endpoint::v3::ClusterLoadAssignment,
            listener::v3::{FilterChain, FilterChainMatch, Listener},
        },
        extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier,
    },
    google::protobuf::Any,
};
use mesh_model::{
    host::{fqdn, host_covered_by},
    networking::{
        L4MatchAttributes, OutboundTrafficMode, Resolution, RouteDestination, Sidecar,
        TlsMatchAttributes, VirtualService,
    },
};

use super::{
    MeshContext, NamedResource, NamedSpec, ROOT_NAMESPACE,
    chains::{
        BLACKHOLE_CLUSTER, ChainSet, INBOUND_PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER, bool_value,
        envoy_hcm, hcm_filter, outbound_http_filters, parse_cidr, rds, socket_address,
        tcp_proxy_filter, tcp_target, tls_inspector,
    },
    cluster_name,
    clusters::DEFAULT_CONNECT_TIMEOUT,
    into_sorted, pack,
    routes::route_config_name,
    type_url,
};
use crate::{
    model::{RegistryKind, Service, ServicePort},
    proxy::Proxy,
};

/// Name of the listener catching every outbound connection.
pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
/// Port outbound connections are redirected to.
pub const VIRTUAL_OUTBOUND_PORT: u32 = 15001;

/// The name of the outbound listener for a port, `0.0.0.0_<port>`.
pub fn outbound_listener_name(port: u32) -> String {
    format!("0.0.0.0_{port}")
}

/// The Sidecar resource configuring `proxy`: one in its namespace whose selector
/// matches it, else its namespace's one without selector, else the root namespace's
/// one without selector (first in name order at each level).
pub fn applicable_sidecar<'a>(ctx: &'a MeshContext, proxy: &Proxy) -> Option<&'a Sidecar> {
    let selector = |s: &NamedSpec<Sidecar>| {
        s.spec
            .workload_selector
            .as_ref()
            .map(|w| w.labels.clone())
            .filter(|l| !l.is_empty())
    };
    let find = |ns: &str, pred: &dyn Fn(&NamedSpec<Sidecar>) -> bool| {
        ctx.sidecars.iter().find(|s| s.namespace == ns && pred(s))
    };
    find(&proxy.namespace, &|s| {
        selector(s).is_some_and(|l| proxy.matches(&l))
    })
    .or_else(|| find(&proxy.namespace, &|s| selector(s).is_none()))
    .or_else(|| find(ROOT_NAMESPACE, &|s| selector(s).is_none()))
    .map(|s| &s.spec)
}

/// Where connections to unknown destinations go: `PassthroughCluster` (ALLOW_ANY,
/// the default) or `BlackHoleCluster` (REGISTRY_ONLY, also when the Sidecar's policy
/// names no mode, as in Istio).
pub fn fallback_cluster(ctx: &MeshContext, proxy: &Proxy) -> &'static str {
    let mode = applicable_sidecar(ctx, proxy)
        .and_then(|s| s.outbound_traffic_policy.as_ref())
        .map(|p| p.mode.unwrap_or(OutboundTrafficMode::RegistryOnly));
    match mode {
        Some(OutboundTrafficMode::RegistryOnly) => BLACKHOLE_CLUSTER,
        _ => PASSTHROUGH_CLUSTER,
    }
}

/// The services `proxy` may reach: all of them, or those its Sidecar's egress hosts
/// (`<ns>/<host>`, `*`, `.` and `~` namespaces) name. Egress ports are not narrowed.
pub fn visible_services<'a>(ctx: &'a MeshContext, proxy: &Proxy) -> Vec<&'a Service> {
    let patterns: Vec<(&str, &str)> = applicable_sidecar(ctx, proxy)
        .map(|s| {
            s.egress
                .iter()
                .flat_map(|e| e.hosts.iter())
                .filter_map(|h| h.split_once('/'))
                .collect()
        })
        .unwrap_or_default();
    let has_egress = applicable_sidecar(ctx, proxy).is_some_and(|s| !s.egress.is_empty());
    ctx.services
        .values()
        .filter(|s| {
            !has_egress
                || patterns.iter().any(|(ns, host)| {
                    let ns_ok = match *ns {
                        "*" => true,
                        "." => s.namespace == proxy.namespace,
                        "~" => false,
                        other => s.namespace == other,
                    };
                    ns_ok && (*host == "*" || host_covered_by(&s.host, host))
                })
        })
        .map(|s| &**s)
        .collect()
}

/// `virtualOutbound` and one listener per port of the services `proxy` sees.
pub fn outbound_listeners(ctx: &MeshContext, proxy: &Proxy) -> Vec<NamedResource> {
    let fallback = fallback_cluster(ctx, proxy);
    let mut by_port: BTreeMap<u32, Vec<(&Service, &ServicePort)>> = BTreeMap::new();
    for service in visible_services(ctx, proxy) {
        for port in &service.ports {
            by_port
                .entry(port.number)
                .or_default()
                .push((service, port));
        }
    }
    let mut out: BTreeMap<String, Any> = BTreeMap::new();
    let virtual_outbound = Listener {
        name: VIRTUAL_OUTBOUND.to_string(),
        address: Some(socket_address("0.0.0.0", VIRTUAL_OUTBOUND_PORT)),
        use_original_dst: bool_value(true),
        default_filter_chain: Some(fallback_chain(fallback)),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    };
    out.insert(
        virtual_outbound.name.clone(),
        pack(type_url::LISTENER, &virtual_outbound),
    );
    for (port, services) in by_port {
        let listener = port_listener(ctx, proxy, port, &services, fallback);
        out.insert(listener.name.clone(), pack(type_url::LISTENER, &listener));
    }
    into_sorted(out)
}

fn fallback_chain(fallback: &str) -> FilterChain {
    FilterChain {
        name: fallback.to_string(),
        filters: vec![tcp_proxy_filter(
            fallback,
            ClusterSpecifier::Cluster(fallback.to_string()),
        )],
        ..Default::default()
    }
}

fn is_http(port: &ServicePort) -> bool {
    port.protocol.is_some_and(|p| p.is_http())
}

fn is_tls(port: &ServicePort) -> bool {
    port.protocol.is_some_and(|p| p.is_tls())
}

/// The outbound listener for one port shared by `services` (in host order).
fn port_listener(
    ctx: &MeshContext,
    proxy: &Proxy,
    port: u32,
    services: &[(&Service, &ServicePort)],
    fallback: &str,
) -> Listener {
    let name = outbound_listener_name(port);
    let mut chains = ChainSet::default();
    let mut catch_all = false;
    let mut sni = false;
    let mut http_seen = false;
    for (service, sp) in services {
        if is_http(sp) {
            if std::mem::replace(&mut http_seen, true) {
                continue;
            }
            let hcm = envoy_hcm(
                &name,
                rds(&route_config_name(port)),
                outbound_http_filters(),
            );
            let chain = FilterChain {
                name: format!("{port}|http"),
                filters: vec![hcm_filter(&hcm)],
                ..Default::default()
            };
            catch_all |= chains.push(&name, chain);
            continue;
        }
        let Some(prefixes) = destination_prefixes(service) else {
            continue;
        };
        let headless = is_headless(service);
        let vs = ctx.virtual_service_for(&service.host);
        if is_tls(sp) {
            sni = true;
            if let Some((ns, vs)) = vs {
                for (i, route) in vs.tls.iter().enumerate() {
                    let names: Vec<String> = route
                        .matches
                        .iter()
                        .filter(|m| tls_match_applies(m, proxy, port))
                        .flat_map(|m| m.sni_hosts.iter().cloned())
                        .collect();
                    if names.is_empty() {
                        continue;
                    }
                    let Some(target) = destinations(ctx, ns, &route.route, port) else {
                        continue;
                    };
                    chains.push(
                        &name,
                        FilterChain {
                            name: format!("{port}|tls|{}|{i}", service.host),
                            filter_chain_match: Some(FilterChainMatch {
                                server_names: names,
                                prefix_ranges: prefixes.clone(),
                                ..Default::default()
                            }),
                            filters: vec![tcp_proxy_filter(&service.host, target)],
                            ..Default::default()
                        },
                    );
                }
            }
            let cluster = cluster_name(port, "", &service.host);
            let server_names = if service.host == "*" || headless {
                Vec::new()
            } else {
                vec![service.host.clone()]
            };
            let chain = FilterChain {
                name: cluster.clone(),
                filter_chain_match: Some(FilterChainMatch {
                    server_names,
                    prefix_ranges: prefixes,
                    ..Default::default()
                }),
                filters: vec![tcp_proxy_filter(
                    &cluster,
                    ClusterSpecifier::Cluster(cluster.clone()),
                )],
                ..Default::default()
            };
            let all = is_catch_all(&chain);
            catch_all |= chains.push(&name, chain) && all;
            continue;
        }
        let default = ClusterSpecifier::Cluster(cluster_name(port, "", &service.host));
        let target = vs
            .and_then(|(ns, vs)| tcp_route_target(ctx, proxy, ns, vs, port))
            .unwrap_or(default);
        let chain = FilterChain {
            name: cluster_name(port, "", &service.host),
            filter_chain_match: (!prefixes.is_empty()).then(|| FilterChainMatch {
                prefix_ranges: prefixes,
                ..Default::default()
            }),
            filters: vec![tcp_proxy_filter(
                &cluster_name(port, "", &service.host),
                target,
            )],
            ..Default::default()
        };
        let all = is_catch_all(&chain);
        catch_all |= chains.push(&name, chain) && all;
    }
    Listener {
        name: name.clone(),
        address: Some(socket_address("0.0.0.0", port)),
        bind_to_port: bool_value(false),
        listener_filters: if sni {
            vec![tls_inspector()]
        } else {
            Vec::new()
        },
        default_filter_chain: (!catch_all).then(|| fallback_chain(fallback)),
        filter_chains: chains.into_chains(),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

fn is_catch_all(chain: &FilterChain) -> bool {
    chain
        .filter_chain_match
        .as_ref()
        .is_none_or(|m| *m == FilterChainMatch::default())
}

/// Whether `service` is headless: resolved `NONE`, without virtual addresses, and
/// either a Kubernetes service or one with endpoints. Its non-HTTP traffic is told
/// apart by its endpoints' addresses.
fn is_headless(service: &Service) -> bool {
    service.resolution == Resolution::None
        && service.addresses.is_empty()
        && (service.registry == RegistryKind::Kubernetes || !service.endpoints.is_empty())
}

/// The destination prefixes of a service's non-HTTP chains: its virtual addresses
/// (malformed ones left out), or a headless service's endpoint IPs (sorted, each
/// once). Empty means the whole port; `None` that the service gets no chain (a
/// headless service without IP endpoints).
fn destination_prefixes(service: &Service) -> Option<Vec<CidrRange>> {
    if is_headless(service) {
        let ips: BTreeSet<IpAddr> = service
            .endpoints
            .iter()
            .filter_map(|e| e.address.parse::<IpAddr>().ok())
            .collect();
        return (!ips.is_empty()).then(|| {
            ips.iter()
                .filter_map(|ip| parse_cidr(&ip.to_string()))
                .collect()
        });
    }
    Some(
        service
            .addresses
            .iter()
            .filter_map(|a| {
                let c = parse_cidr(a);
                if c.is_none() {
                    tracing::warn!(host = %service.host, address = %a, "service address is not an IP or CIDR; ignored");
                }
                c
            })
            .collect(),
    )
}

/// Whether a match condition is for this sidecar (not a gateway) on `port`. Matches on
/// destination subnets are not evaluated and do not apply.
fn l4_applies(
    port_match: Option<u32>,
    gateways: &[String],
    labels: &mesh_model::networking::Labels,
    source_ns: &str,
    proxy: &Proxy,
    port: u32,
) -> bool {
    port_match.is_none_or(|p| p == port)
        && (gateways.is_empty() || gateways.iter().any(|g| g == "mesh"))
        && proxy.matches(labels)
        && (source_ns.is_empty() || source_ns == proxy.namespace)
}

fn tls_match_applies(m: &TlsMatchAttributes, proxy: &Proxy, port: u32) -> bool {
    m.destination_subnets.is_empty()
        && l4_applies(
            m.port,
            &m.gateways,
            &m.source_labels,
            &m.source_namespace,
            proxy,
            port,
        )
}

fn tcp_match_applies(m: &L4MatchAttributes, proxy: &Proxy, port: u32) -> bool {
    m.destination_subnets.is_empty()
        && m.source_subnet.is_empty()
        && l4_applies(
            m.port,
            &m.gateways,
            &m.source_labels,
            &m.source_namespace,
            proxy,
            port,
        )
}

/// The target of the first `tcp:` route applying to `proxy` on `port`.
fn tcp_route_target(
    ctx: &MeshContext,
    proxy: &Proxy,
    ns: &str,
    vs: &VirtualService,
    port: u32,
) -> Option<ClusterSpecifier> {
    vs.tcp
        .iter()
        .find(|r| {
            r.matches.is_empty() || r.matches.iter().any(|m| tcp_match_applies(m, proxy, port))
        })
        .and_then(|r| destinations(ctx, ns, &r.route, port))
}

/// Weighted destinations of an L4 route as a TCP proxy target (cluster names qualified
/// in the route's namespace `ns`; ports defaulting like HTTP routes).
pub(crate) fn destinations(
    ctx: &MeshContext,
    ns: &str,
    route: &[RouteDestination],
    port: u32,
) -> Option<ClusterSpecifier> {
    let list = route
        .iter()
        .map(|d| {
            let host = fqdn(&d.destination.host, ns).into_owned();
            let number = d
                .destination
                .port
                .as_ref()
                .map(|p| p.number)
                .filter(|n| *n > 0)
                .or_else(|| {
                    ctx.services
                        .get(&host)
                        .filter(|s| s.ports.len() == 1 && s.port(port).is_none())
                        .and_then(|s| s.ports.first())
                        .map(|p| p.number)
                })
                .unwrap_or(port);
            let weight = d.weight.unwrap_or(if route.len() == 1 { 100 } else { 0 });
            (cluster_name(number, &d.destination.subset, &host), weight)
        })
        .collect();
    tcp_target(list)
}

/// `PassthroughCluster`, `BlackHoleCluster` and `InboundPassthroughClusterIpv4`.
pub fn passthrough_clusters() -> Vec<NamedResource> {
    let original_dst = |name: &str| Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
        ..Default::default()
    };
    let passthrough = original_dst(PASSTHROUGH_CLUSTER);
    // Inbound passthrough connects from 127.0.0.6 so iptables does not capture it again.
    let mut inbound = original_dst(INBOUND_PASSTHROUGH_CLUSTER);
    inbound.upstream_bind_config = Some(BindConfig {
        source_address: Some(SocketAddress {
            address: "127.0.0.6".to_string(),
            port_specifier: Some(PortSpecifier::PortValue(0)),
            ..Default::default()
        }),
        ..Default::default()
    });
    let blackhole = Cluster {
        name: BLACKHOLE_CLUSTER.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: BLACKHOLE_CLUSTER.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut out: BTreeMap<String, Any> = BTreeMap::new();
    for c in [passthrough, inbound, blackhole] {
        out.insert(c.name.clone(), pack(type_url::CLUSTER, &c));
    }
    into_sorted(out)
}
