//! Envoy's rules for listeners bound to addresses (sidecar and gateway listeners), and
//! the cross-reference rule "every cluster a listener or route names exists".

use std::collections::BTreeSet;

use mesh_api::envoy::envoy::{
    config::core::v3::transport_socket, extensions::filters::http::rbac::v3::Rbac as HttpRbac,
};
use mesh_api::envoy::envoy::{
    config::{
        listener::v3::{Filter, FilterChain, Listener, filter},
        route::v3::{
            RouteConfiguration, route::Action, route_action::ClusterSpecifier as RouteCluster,
        },
    },
    extensions::{
        filters::network::{
            http_connection_manager::v3::{
                HttpConnectionManager, http_connection_manager::RouteSpecifier, http_filter,
            },
            rbac::v3::Rbac as NetworkRbac,
            tcp_proxy::v3::{TcpProxy, tcp_proxy::ClusterSpecifier as TcpCluster},
        },
        transport_sockets::tls::v3::{
            DownstreamTlsContext, SdsSecretConfig, common_tls_context::ValidationContextType,
        },
    },
};
use prost::{Message, Name};

use super::{
    chains::{HCM_FILTER, HTTP_RBAC_FILTER, NETWORK_RBAC_FILTER, TCP_PROXY_FILTER, match_keys},
    listeners::{HCM_TYPE_URL, ROUTER_FILTER},
    validate::Violation,
};

fn typed(f: &Filter) -> Option<&mesh_api::envoy::google::protobuf::Any> {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => Some(any),
        _ => None,
    }
}

/// Checks a listener with an address (not an API listener).
pub(super) fn check_listener(
    name: &str,
    l: &Listener,
    route_names: &BTreeSet<&str>,
    out: &mut Vec<Violation>,
) {
    if l.address.is_none() {
        out.push(Violation::MissingField {
            name: name.to_string(),
            field: "address",
        });
    }
    if l.filter_chains.is_empty() && l.default_filter_chain.is_none() {
        out.push(Violation::MissingField {
            name: name.to_string(),
            field: "filter_chains",
        });
    }
    let mut taken = BTreeSet::new();
    for chain in &l.filter_chains {
        let keys = match_keys(chain.filter_chain_match.as_ref());
        if keys.iter().any(|k| taken.contains(k)) {
            out.push(Violation::OverlappingFilterChains {
                listener: name.to_string(),
                chain: chain.name.clone(),
            });
        }
        taken.extend(keys);
    }
    for chain in l
        .filter_chains
        .iter()
        .chain(l.default_filter_chain.as_ref())
    {
        check_chain(name, chain, route_names, out);
    }
}

fn check_chain(
    listener: &str,
    chain: &FilterChain,
    route_names: &BTreeSet<&str>,
    out: &mut Vec<Violation>,
) {
    let bad = |reason: &'static str| Violation::InvalidFilter {
        listener: listener.to_string(),
        chain: chain.name.clone(),
        reason,
    };
    match chain.filters.last().map(|f| f.name.as_str()) {
        Some(HCM_FILTER | TCP_PROXY_FILTER) => {}
        _ => out.push(bad("last network filter is not terminal")),
    }
    for f in &chain.filters {
        let Some(any) = typed(f) else {
            out.push(bad("filter without typed config"));
            continue;
        };
        match f.name.as_str() {
            HCM_FILTER => {
                let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
                    out.push(bad("HttpConnectionManager does not decode"));
                    continue;
                };
                if any.type_url != HCM_TYPE_URL {
                    out.push(bad("HttpConnectionManager type URL"));
                }
                check_hcm(listener, chain, &hcm, route_names, out);
            }
            TCP_PROXY_FILTER => match TcpProxy::decode(any.value.as_slice()) {
                Ok(tp) if any.type_url == TcpProxy::type_url() => {
                    if tp.stat_prefix.is_empty() {
                        out.push(bad("tcp_proxy without stat_prefix"));
                    }
                    match &tp.cluster_specifier {
                        Some(TcpCluster::Cluster(c)) if !c.is_empty() => {}
                        Some(TcpCluster::WeightedClusters(w))
                            if !w.clusters.is_empty()
                                && w.clusters
                                    .iter()
                                    .all(|c| !c.name.is_empty() && c.weight > 0) => {}
                        _ => out.push(bad("tcp_proxy without a cluster")),
                    }
                }
                _ => out.push(bad("tcp_proxy does not decode")),
            },
            NETWORK_RBAC_FILTER => match NetworkRbac::decode(any.value.as_slice()) {
                Ok(r) if any.type_url == NetworkRbac::type_url() => {
                    if r.stat_prefix.is_empty() {
                        out.push(bad("network RBAC without stat_prefix"));
                    }
                }
                _ => out.push(bad("network RBAC does not decode")),
            },
            _ => {}
        }
    }
    if let Some(ts) = &chain.transport_socket {
        let context = match &ts.config_type {
            Some(transport_socket::ConfigType::TypedConfig(any))
                if any.type_url == DownstreamTlsContext::type_url() =>
            {
                DownstreamTlsContext::decode(any.value.as_slice()).ok()
            }
            _ => None,
        };
        match context {
            Some(c) => check_tls(listener, chain, &c, out),
            None => out.push(bad("transport socket is not a DownstreamTlsContext")),
        }
    }
}

fn check_hcm(
    listener: &str,
    chain: &FilterChain,
    hcm: &HttpConnectionManager,
    route_names: &BTreeSet<&str>,
    out: &mut Vec<Violation>,
) {
    if hcm
        .http_filters
        .last()
        .is_none_or(|f| f.name != ROUTER_FILTER)
    {
        out.push(Violation::RouterNotLast {
            listener: listener.to_string(),
        });
    }
    if hcm.stat_prefix.is_empty() {
        out.push(Violation::InvalidFilter {
            listener: listener.to_string(),
            chain: chain.name.clone(),
            reason: "HttpConnectionManager without stat_prefix",
        });
    }
    for f in &hcm.http_filters {
        if f.name == HTTP_RBAC_FILTER {
            let ok = match &f.config_type {
                Some(http_filter::ConfigType::TypedConfig(any)) => {
                    any.type_url == HttpRbac::type_url()
                        && HttpRbac::decode(any.value.as_slice()).is_ok()
                }
                _ => false,
            };
            if !ok {
                out.push(Violation::InvalidFilter {
                    listener: listener.to_string(),
                    chain: chain.name.clone(),
                    reason: "HTTP RBAC does not decode",
                });
            }
        }
    }
    match &hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            if !route_names.contains(rds.route_config_name.as_str()) {
                out.push(Violation::MissingRouteConfig {
                    listener: listener.to_string(),
                    route_config: rds.route_config_name.clone(),
                });
            }
        }
        Some(RouteSpecifier::RouteConfig(_)) => {}
        _ => out.push(Violation::MissingField {
            name: listener.to_string(),
            field: "http_connection_manager.route_specifier",
        }),
    }
}

fn sds_ok(s: &SdsSecretConfig) -> bool {
    !s.name.is_empty() && s.sds_config.is_some()
}

fn check_tls(
    listener: &str,
    chain: &FilterChain,
    c: &DownstreamTlsContext,
    out: &mut Vec<Violation>,
) {
    let bad = |reason: &'static str| Violation::InvalidTls {
        listener: listener.to_string(),
        chain: chain.name.clone(),
        reason,
    };
    let Some(common) = &c.common_tls_context else {
        out.push(bad("no common_tls_context"));
        return;
    };
    let sds = &common.tls_certificate_sds_secret_configs;
    if sds.is_empty() && common.tls_certificates.is_empty() {
        out.push(bad("no certificate"));
    }
    if !sds.iter().all(sds_ok) {
        out.push(bad("certificate SDS secret without name or config source"));
    }
    let validation = match &common.validation_context_type {
        None => false,
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => {
            if !sds_ok(s) {
                out.push(bad("validation SDS secret without name or config source"));
            }
            true
        }
        Some(_) => true,
    };
    if c.require_client_certificate
        .as_ref()
        .is_some_and(|b| b.value)
        && !validation
    {
        out.push(bad(
            "client certificates required without a validation context",
        ));
    }
}

/// Every cluster named by a listener's TCP proxies and inline routes, or by a route
/// configuration, with the resource naming it.
pub(super) fn cluster_references(
    listeners: &[(String, Listener)],
    routes: &[(String, RouteConfiguration)],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let from_routes = |owner: &str, rc: &RouteConfiguration, out: &mut Vec<(String, String)>| {
        for vh in &rc.virtual_hosts {
            for r in &vh.routes {
                let Some(Action::Route(ra)) = &r.action else {
                    continue;
                };
                match &ra.cluster_specifier {
                    Some(RouteCluster::Cluster(c)) => out.push((owner.to_string(), c.clone())),
                    Some(RouteCluster::WeightedClusters(w)) => {
                        out.extend(
                            w.clusters
                                .iter()
                                .map(|c| (owner.to_string(), c.name.clone())),
                        );
                    }
                    _ => {}
                }
                out.extend(
                    ra.request_mirror_policies
                        .iter()
                        .map(|m| (owner.to_string(), m.cluster.clone())),
                );
            }
        }
    };
    for (name, rc) in routes {
        from_routes(name, rc, &mut out);
    }
    for (name, l) in listeners {
        for chain in l
            .filter_chains
            .iter()
            .chain(l.default_filter_chain.as_ref())
        {
            for f in &chain.filters {
                let Some(any) = typed(f) else { continue };
                if f.name == TCP_PROXY_FILTER
                    && let Ok(tp) = TcpProxy::decode(any.value.as_slice())
                {
                    match tp.cluster_specifier {
                        Some(TcpCluster::Cluster(c)) => out.push((name.clone(), c)),
                        Some(TcpCluster::WeightedClusters(w)) => {
                            out.extend(w.clusters.into_iter().map(|c| (name.clone(), c.name)));
                        }
                        None => {}
                    }
                }
                if f.name == HCM_FILTER
                    && let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice())
                    && let Some(RouteSpecifier::RouteConfig(rc)) = &hcm.route_specifier
                {
                    from_routes(name, rc, &mut out);
                }
            }
        }
    }
    out
}
