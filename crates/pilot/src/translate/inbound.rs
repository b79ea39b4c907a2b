//! LDS for a workload's Envoy, inbound side: `virtualInbound` (port 15006) receives
//! every connection iptables redirects to the workload and picks a filter chain by
//! the connection's original destination port.
//!
//! The ports a workload serves come from its Sidecar resource's `ingress` listeners
//! when it has any (as in Istio, they replace the rest); otherwise from the services
//! in its namespace whose `workloadSelector` it matches, or one of whose endpoints
//! carries only labels the workload carries (ServiceEntry endpoints stand for the
//! workloads themselves). Traffic arrives at the endpoint's port, so chains match on
//! it, and go to cluster `inbound|<service port>||`, a static cluster at
//! `127.0.0.1:<endpoint port>`.
//!
//! PeerAuthentication decides each port's chains: STRICT gives one chain terminating
//! mesh mutual TLS (transport protocol `tls`), PERMISSIVE adds a plain text chain
//! (`raw_buffer`) beside it, DISABLE gives one plain chain. Ports no service declares
//! reach a passthrough chain under the workload-level mode. Because Envoy picks the
//! most specific destination port first and never falls back, a plain text connection
//! to a STRICT port matches no chain and is closed rather than passed through.
//!
//! AuthorizationPolicy gives RBAC filters: HTTP chains get the HTTP RBAC filters
//! before the router, TCP and passthrough chains the network ones before the proxy.

use std::collections::{BTreeMap, BTreeSet};

use mesh_api::envoy::{
    envoy::config::{
        cluster::v3::{
            Cluster,
            cluster::{ClusterDiscoveryType, DiscoveryType},
        },
        core::v3::{Locality, TrafficDirection},
        endpoint::v3::{
            ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
            lb_endpoint::HostIdentifier,
        },
        listener::v3::{Filter, FilterChain, FilterChainMatch, Listener},
        route::v3::{
            Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
            route_action::ClusterSpecifier as RouteCluster, route_match::PathSpecifier,
        },
    },
    envoy::extensions::filters::network::{
        http_connection_manager::v3::http_connection_manager::RouteSpecifier,
        tcp_proxy::v3::tcp_proxy::ClusterSpecifier,
    },
    google::protobuf::{Any, Duration as PbDuration, UInt32Value},
};
use mesh_model::protocol::Protocol;

use super::{
    MeshContext, NamedResource,
    authz::{AuthzFilters, authz_filters},
    chains::{
        ChainSet, INBOUND_PASSTHROUGH_CLUSTER, TRANSPORT_RAW, TRANSPORT_TLS, bool_value, envoy_hcm,
        hcm_filter, socket_address, tcp_proxy_filter, tls_inspector, tls_transport_socket,
    },
    clusters::DEFAULT_CONNECT_TIMEOUT,
    into_sorted,
    mtls::{Mode, effective_mtls, istio_mutual_tls_context},
    pack,
    sidecar::applicable_sidecar,
    type_url,
};
use crate::proxy::Proxy;

/// Name of the listener receiving every inbound connection.
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
/// Port inbound connections are redirected to.
pub const VIRTUAL_INBOUND_PORT: u32 = 15006;

/// `inbound|<port>||`, the cluster of the application behind a service port.
pub fn inbound_cluster_name(port: u32) -> String {
    format!("inbound|{port}||")
}

/// A port the workload serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundPort {
    /// The port connections arrive at (their original destination port).
    pub port: u32,
    /// The service port, naming the cluster.
    pub service_port: u32,
    /// Protocol; `None` is treated as TCP.
    pub protocol: Option<Protocol>,
    /// The address the application listens on.
    pub target_ip: String,
    /// The port the application listens on.
    pub target_port: u32,
}

impl InboundPort {
    fn is_http(&self) -> bool {
        self.protocol.is_some_and(|p| p.is_http())
    }
}

/// The ports `proxy` serves, in the order found, one per arrival port and per service
/// port (the first wins).
pub fn inbound_ports(ctx: &MeshContext, proxy: &Proxy) -> Vec<InboundPort> {
    let mut found = Vec::new();
    let ingress = applicable_sidecar(ctx, proxy)
        .map(|s| s.ingress.as_slice())
        .unwrap_or(&[]);
    if !ingress.is_empty() {
        for l in ingress {
            let Some(port) = l.port.as_ref().filter(|p| (1..=65535).contains(&p.number)) else {
                tracing::warn!("Sidecar ingress listener without a valid port; skipped");
                continue;
            };
            let Some((ip, target)) =
                parse_endpoint(&l.default_endpoint, port.target_port.unwrap_or(port.number))
            else {
                tracing::warn!(endpoint = %l.default_endpoint, "Sidecar ingress defaultEndpoint is not <ip>:<port>; skipped");
                continue;
            };
            found.push(InboundPort {
                port: port.number,
                service_port: port.number,
                protocol: Protocol::parse(&port.protocol),
                target_ip: ip,
                target_port: target,
            });
        }
    } else {
        for service in ctx
            .services
            .values()
            .filter(|s| s.namespace == proxy.namespace)
        {
            let selected = service
                .workload_selector
                .as_ref()
                .is_some_and(|sel| !sel.is_empty() && proxy.matches(sel));
            let endpoint = service
                .endpoints
                .iter()
                .find(|e| !e.labels.is_empty() && proxy.matches(&e.labels));
            if !selected && endpoint.is_none() {
                continue;
            }
            for sp in &service.ports {
                let target = match endpoint {
                    Some(e) if !selected => e.port_for(sp),
                    _ => sp.target_port.unwrap_or(sp.number),
                };
                found.push(InboundPort {
                    port: target,
                    service_port: sp.number,
                    protocol: sp.protocol,
                    target_ip: "127.0.0.1".to_string(),
                    target_port: target,
                });
            }
        }
    }
    let mut ports = BTreeSet::new();
    let mut service_ports = BTreeSet::new();
    found.retain(|p| {
        let keep = !ports.contains(&p.port) && !service_ports.contains(&p.service_port);
        if keep {
            ports.insert(p.port);
            service_ports.insert(p.service_port);
        } else {
            tracing::warn!(
                port = p.port,
                service_port = p.service_port,
                "inbound port declared twice; the first declaration wins"
            );
        }
        keep
    });
    found
}

/// `127.0.0.1:8080`, `0.0.0.0:8080` (both meaning the loopback address) or empty
/// (`127.0.0.1:<default>`); `unix://` paths and anything else give `None`.
fn parse_endpoint(text: &str, default: u32) -> Option<(String, u32)> {
    if text.is_empty() {
        return Some(("127.0.0.1".to_string(), default));
    }
    let (ip, port) = text.rsplit_once(':')?;
    let port = port
        .parse::<u32>()
        .ok()
        .filter(|p| (1..=65535).contains(p))?;
    let ip: std::net::IpAddr = ip.trim_matches(['[', ']']).parse().ok()?;
    let ip = if ip.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        ip.to_string()
    };
    Some((ip, port))
}

/// The `virtualInbound` listener for `proxy`.
pub fn inbound_listener(ctx: &MeshContext, proxy: &Proxy) -> Listener {
    let mtls = effective_mtls(ctx, proxy);
    let authz = authz_filters(ctx, proxy);
    let mut chains = ChainSet::default();
    for p in inbound_ports(ctx, proxy) {
        for tls in variants(mtls.for_port(p.port)) {
            let filters = if p.is_http() {
                http_filters(&p, &authz)
            } else {
                tcp_filters(
                    &format!("inbound|{}", p.port),
                    inbound_cluster_name(p.service_port),
                    &authz,
                )
            };
            let alpn: &[&str] = if p.is_http() {
                &["h2", "http/1.1"]
            } else {
                &[]
            };
            chains.push(
                VIRTUAL_INBOUND,
                chain(
                    format!("inbound|{}", p.port),
                    Some(p.port),
                    tls,
                    alpn,
                    filters,
                ),
            );
        }
    }
    for tls in variants(mtls.workload) {
        let filters = tcp_filters(
            "InboundPassthrough",
            INBOUND_PASSTHROUGH_CLUSTER.to_string(),
            &authz,
        );
        chains.push(
            VIRTUAL_INBOUND,
            chain("InboundPassthrough".to_string(), None, tls, &[], filters),
        );
    }
    Listener {
        name: VIRTUAL_INBOUND.to_string(),
        address: Some(socket_address("0.0.0.0", VIRTUAL_INBOUND_PORT)),
        use_original_dst: bool_value(true),
        listener_filters: vec![tls_inspector()],
        filter_chains: chains.into_chains(),
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    }
}

/// The chains a mode needs: `Some(true)` terminates mutual TLS, `Some(false)` is
/// plain text telling itself apart from TLS, `None` is plain text matching anything.
fn variants(mode: Mode) -> Vec<Option<bool>> {
    match mode {
        Mode::Strict => vec![Some(true)],
        Mode::Permissive => vec![Some(true), Some(false)],
        Mode::Disable => vec![None],
    }
}

fn chain(
    base: String,
    port: Option<u32>,
    tls: Option<bool>,
    alpn: &[&str],
    filters: Vec<Filter>,
) -> FilterChain {
    let transport = match tls {
        Some(true) => TRANSPORT_TLS,
        Some(false) => TRANSPORT_RAW,
        None => "",
    };
    FilterChain {
        name: match tls {
            Some(true) => format!("{base}|mtls"),
            _ => format!("{base}|plaintext"),
        },
        filter_chain_match: Some(FilterChainMatch {
            destination_port: port.map(|value| UInt32Value { value }),
            transport_protocol: transport.to_string(),
            ..Default::default()
        }),
        transport_socket: (tls == Some(true))
            .then(|| tls_transport_socket(&istio_mutual_tls_context(alpn))),
        filters,
        ..Default::default()
    }
}

fn tcp_filters(stat_prefix: &str, cluster: String, authz: &AuthzFilters) -> Vec<Filter> {
    let mut filters = authz.network.clone();
    filters.push(tcp_proxy_filter(
        stat_prefix,
        ClusterSpecifier::Cluster(cluster),
    ));
    filters
}

fn http_filters(p: &InboundPort, authz: &AuthzFilters) -> Vec<Filter> {
    let cluster = inbound_cluster_name(p.service_port);
    let routes = RouteConfiguration {
        name: cluster.clone(),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{}", p.service_port),
            domains: vec!["*".to_string()],
            routes: vec![Route {
                name: "default".to_string(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
                    ..Default::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(RouteCluster::Cluster(cluster)),
                    timeout: Some(PbDuration::default()),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let hcm = envoy_hcm(
        &format!("inbound_0.0.0.0_{}", p.port),
        RouteSpecifier::RouteConfig(routes),
        authz.http.clone(),
    );
    vec![hcm_filter(&hcm)]
}

/// The `inbound|<port>||` clusters of `proxy`'s ports: static, at the application.
pub fn inbound_clusters(ctx: &MeshContext, proxy: &Proxy) -> Vec<NamedResource> {
    let mut out: BTreeMap<String, Any> = BTreeMap::new();
    for p in inbound_ports(ctx, proxy) {
        let name = inbound_cluster_name(p.service_port);
        let cluster = Cluster {
            name: name.clone(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            load_assignment: Some(ClusterLoadAssignment {
                cluster_name: name.clone(),
                endpoints: vec![LocalityLbEndpoints {
                    locality: Some(Locality::default()),
                    lb_endpoints: vec![LbEndpoint {
                        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                            address: Some(socket_address(&p.target_ip, p.target_port)),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    load_balancing_weight: Some(UInt32Value { value: 1 }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        out.insert(name, pack(type_url::CLUSTER, &cluster));
    }
    into_sorted(out)
}
