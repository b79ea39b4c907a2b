//! Building blocks shared by sidecar and gateway listeners: addresses, the network
//! and HTTP filters pilot configures, TLS transport sockets, and [`ChainSet`], a list
//! of filter chains that refuses overlapping matches.
//!
//! Envoy refuses a whole listener when two of its filter chains could match the same
//! connection with equal specificity, so every listener pilot builds collects its
//! chains through a [`ChainSet`]: the first chain claiming a match wins, later ones
//! lose the overlapping server names or are dropped (with a warning).

use std::collections::BTreeSet;

use mesh_api::envoy::{
    envoy::{
        config::{
            core::v3::{
                Address, CidrRange, SocketAddress, TransportSocket, address,
                socket_address::PortSpecifier, transport_socket,
            },
            listener::v3::{Filter, FilterChain, FilterChainMatch, ListenerFilter, filter},
        },
        extensions::{
            filters::{
                http::{cors::v3::Cors, fault::v3::HttpFault, router::v3::Router},
                listener::tls_inspector::v3::TlsInspector,
                network::{
                    http_connection_manager::v3::{
                        HttpConnectionManager, HttpFilter, Rds,
                        http_connection_manager::{CodecType, RouteSpecifier},
                        http_filter,
                    },
                    tcp_proxy::v3::{
                        TcpProxy,
                        tcp_proxy::{ClusterSpecifier, WeightedCluster, weighted_cluster},
                    },
                },
            },
            transport_sockets::tls::v3::{DownstreamTlsContext, SdsSecretConfig},
        },
    },
    google::protobuf::{Any, BoolValue, UInt32Value},
};

use super::{
    ads_config_source,
    listeners::{HCM_TYPE_URL, ROUTER_FILTER},
    pack, pack_named,
    routes::{FAULT_FILTER, normalize_weights},
};

/// The TCP proxy network filter.
pub const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
/// The HTTP connection manager network filter.
pub const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
/// The CORS HTTP filter (per-route policies come from RDS).
pub const CORS_FILTER: &str = "envoy.filters.http.cors";
/// The RBAC HTTP filter.
pub const HTTP_RBAC_FILTER: &str = "envoy.filters.http.rbac";
/// The RBAC network filter.
pub const NETWORK_RBAC_FILTER: &str = "envoy.filters.network.rbac";
/// The listener filter that reads SNI and ALPN and tells TLS from plain text.
pub const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
/// The TLS transport socket.
pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";
/// Sends a connection on to the address it was sent to.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Drops connections (no endpoints).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// Sends an inbound connection to a port no service declares, from 127.0.0.6.
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughClusterIpv4";
/// The SDS secret holding the workload's certificate (Istio's name).
pub const SDS_DEFAULT: &str = "default";
/// The SDS secret holding the mesh root certificate (Istio's name).
pub const SDS_ROOTCA: &str = "ROOTCA";
/// `transport_protocol` the TLS inspector reports for TLS connections.
pub const TRANSPORT_TLS: &str = "tls";
/// `transport_protocol` of connections that are not TLS.
pub const TRANSPORT_RAW: &str = "raw_buffer";

/// `ip:port` as an Envoy TCP address.
pub(crate) fn socket_address(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// A TCP proxy network filter sending to `target`.
pub(crate) fn tcp_proxy_filter(stat_prefix: &str, target: ClusterSpecifier) -> Filter {
    let proxy = TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(target),
        ..Default::default()
    };
    Filter {
        name: TCP_PROXY_FILTER.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_named(&proxy))),
    }
}

/// A TCP proxy target: the single cluster, or weighted clusters with weights scaled
/// to sum to 100; `None` when no destination is left.
pub(crate) fn tcp_target(destinations: Vec<(String, u32)>) -> Option<ClusterSpecifier> {
    let mut merged: Vec<(String, u32, ())> = Vec::new();
    for (cluster, weight) in destinations {
        match merged.iter_mut().find(|(c, _, _)| *c == cluster) {
            Some(entry) => entry.1 = entry.1.saturating_add(weight),
            None => merged.push((cluster, weight, ())),
        }
    }
    let mut destinations = merged;
    if destinations.len() == 1 {
        return destinations
            .pop()
            .map(|(c, _, _)| ClusterSpecifier::Cluster(c));
    }
    normalize_weights(&mut destinations);
    match destinations.len() {
        0 => None,
        1 => destinations
            .pop()
            .map(|(c, _, _)| ClusterSpecifier::Cluster(c)),
        _ => Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: destinations
                .into_iter()
                .map(|(name, weight, _)| weighted_cluster::ClusterWeight {
                    name,
                    weight,
                    ..Default::default()
                })
                .collect(),
        })),
    }
}

/// An HTTP connection manager network filter.
pub(crate) fn hcm_filter(hcm: &HttpConnectionManager) -> Filter {
    Filter {
        name: HCM_FILTER.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(HCM_TYPE_URL, hcm))),
    }
}

/// An HTTP connection manager for Envoy proxies (not proxyless clients) with `filters`
/// before the router.
pub(crate) fn envoy_hcm(
    stat_prefix: &str,
    routes: RouteSpecifier,
    mut filters: Vec<HttpFilter>,
) -> HttpConnectionManager {
    filters.push(http_filter(ROUTER_FILTER, pack_named(&Router::default())));
    HttpConnectionManager {
        codec_type: CodecType::Auto as i32,
        stat_prefix: stat_prefix.to_string(),
        route_specifier: Some(routes),
        http_filters: filters,
        ..Default::default()
    }
}

/// Routes over RDS (ADS), by name.
pub(crate) fn rds(name: &str) -> RouteSpecifier {
    RouteSpecifier::Rds(Rds {
        config_source: Some(ads_config_source()),
        route_config_name: name.to_string(),
    })
}

/// An HTTP filter with a typed config.
pub(crate) fn http_filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// The filters outbound and gateway HTTP traffic passes before the router: fault
/// injection and CORS, both configured per route.
pub(crate) fn outbound_http_filters() -> Vec<HttpFilter> {
    vec![
        http_filter(FAULT_FILTER, pack_named(&HttpFault::default())),
        http_filter(CORS_FILTER, pack_named(&Cors::default())),
    ]
}

/// The TLS inspector listener filter.
pub(crate) fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: TLS_INSPECTOR.to_string(),
        config_type: Some(
            mesh_api::envoy::envoy::config::listener::v3::listener_filter::ConfigType::TypedConfig(
                pack_named(&TlsInspector::default()),
            ),
        ),
        ..Default::default()
    }
}

/// A downstream TLS transport socket.
pub(crate) fn tls_transport_socket(context: &DownstreamTlsContext) -> TransportSocket {
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_named(
            context,
        ))),
    }
}

/// An SDS secret by name, fetched over ADS.
pub(crate) fn sds_secret(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads_config_source()),
    }
}

/// `Some(true)` / `Some(false)` as protobuf's wrapper.
pub(crate) fn bool_value(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

/// Parses `10.0.0.1` or `10.0.0.0/8` (or IPv6) into a CIDR range; `None` when it is
/// neither or the prefix length is too long for the address family.
pub(crate) fn parse_cidr(text: &str) -> Option<CidrRange> {
    let (ip, len) = match text.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (text, None),
    };
    let ip: std::net::IpAddr = ip.trim().parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.trim().parse::<u32>().ok().filter(|l| *l <= max)?,
        None => max,
    };
    Some(CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(UInt32Value { value: len }),
    })
}

/// One combination of filter chain match values; two chains of a listener that share
/// one make Envoy refuse the listener.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct MatchKey {
    port: Option<u32>,
    prefix: String,
    server_name: String,
    transport: String,
    application: String,
    source_type: i32,
    source_prefix: String,
    source_port: u32,
    direct_source_prefix: String,
}

fn cidr_text(c: &CidrRange) -> String {
    format!(
        "{}/{}",
        c.address_prefix,
        c.prefix_len.as_ref().map_or(0, |l| l.value)
    )
}

/// Every combination of values a filter chain match accepts (an empty list stands
/// for "any", one value).
pub(crate) fn match_keys(m: Option<&FilterChainMatch>) -> Vec<MatchKey> {
    let default = FilterChainMatch::default();
    let m = m.unwrap_or(&default);
    fn or_any<T: Clone>(list: Vec<T>, any: T) -> Vec<T> {
        if list.is_empty() { vec![any] } else { list }
    }
    let prefixes = or_any(
        m.prefix_ranges.iter().map(cidr_text).collect(),
        String::new(),
    );
    let names = or_any(m.server_names.clone(), String::new());
    let apps = or_any(m.application_protocols.clone(), String::new());
    let sources = or_any(
        m.source_prefix_ranges.iter().map(cidr_text).collect(),
        String::new(),
    );
    let source_ports = or_any(m.source_ports.clone(), 0);
    let direct = or_any(
        m.direct_source_prefix_ranges
            .iter()
            .map(cidr_text)
            .collect(),
        String::new(),
    );
    let mut out = Vec::new();
    for prefix in &prefixes {
        for name in &names {
            for app in &apps {
                for source in &sources {
                    for source_port in &source_ports {
                        for d in &direct {
                            out.push(MatchKey {
                                port: m.destination_port.as_ref().map(|p| p.value),
                                prefix: prefix.clone(),
                                server_name: name.clone(),
                                transport: m.transport_protocol.clone(),
                                application: app.clone(),
                                source_type: m.source_type,
                                source_prefix: source.clone(),
                                source_port: *source_port,
                                direct_source_prefix: d.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// The filter chains of one listener, none overlapping another.
#[derive(Debug, Default)]
pub(crate) struct ChainSet {
    chains: Vec<FilterChain>,
    taken: BTreeSet<MatchKey>,
}

impl ChainSet {
    /// Adds `chain` unless an earlier chain already claims its match. A chain matching
    /// on server names keeps the names no earlier chain claimed, then one matching on
    /// destination prefixes the prefixes no earlier chain claimed. Returns whether
    /// the chain (or part of it) was added.
    pub(crate) fn push(&mut self, listener: &str, mut chain: FilterChain) -> bool {
        let taken = |set: &BTreeSet<MatchKey>, m: &FilterChainMatch| {
            match_keys(Some(m)).iter().any(|k| set.contains(k))
        };
        let default = FilterChainMatch::default();
        if taken(
            &self.taken,
            chain.filter_chain_match.as_ref().unwrap_or(&default),
        ) {
            let kept = match chain.filter_chain_match.as_mut() {
                Some(m) if !m.server_names.is_empty() || !m.prefix_ranges.is_empty() => {
                    let names = std::mem::take(&mut m.server_names);
                    let had_names = !names.is_empty();
                    for name in names {
                        let probe = FilterChainMatch {
                            server_names: vec![name.clone()],
                            ..m.clone()
                        };
                        if !taken(&self.taken, &probe) {
                            m.server_names.push(name);
                        }
                    }
                    let prefixes = std::mem::take(&mut m.prefix_ranges);
                    let had_prefixes = !prefixes.is_empty();
                    for prefix in prefixes {
                        let probe = FilterChainMatch {
                            prefix_ranges: vec![prefix.clone()],
                            ..m.clone()
                        };
                        if !taken(&self.taken, &probe) {
                            m.prefix_ranges.push(prefix);
                        }
                    }
                    // An emptied list would mean "any": broader, not narrower.
                    (!had_names || !m.server_names.is_empty())
                        && (!had_prefixes || !m.prefix_ranges.is_empty())
                        && !taken(&self.taken, m)
                }
                _ => false,
            };
            if !kept {
                tracing::warn!(
                    listener,
                    chain = %chain.name,
                    "filter chain left out: an earlier chain matches the same connections"
                );
                return false;
            }
        }
        self.taken
            .extend(match_keys(chain.filter_chain_match.as_ref()));
        self.chains.push(chain);
        true
    }

    /// Whether no chain was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// The chains, in the order added.
    pub(crate) fn into_chains(self) -> Vec<FilterChain> {
        self.chains
    }
}
