//! Envoy's validation rules, checked on translated resources before they are served.
//!
//! A snapshot that breaks one of these would be NACKed by Envoy or refused by gRPC's
//! xDS client; pilot checks them so a translation bug shows up as an error here
//! rather than as a rejected push.
//!
//! [`check`] holds the rules Envoy enforces when it loads a snapshot: for API
//! listeners (proxyless gRPC) and for listeners bound to addresses (sidecars and
//! gateways: address set, no two filter chains matching the same connections, a
//! terminal filter last, the router last in every HttpConnectionManager, RDS names
//! that exist, TLS contexts with SDS secrets that have names and sources), and for
//! clusters (an assignment for every EDS cluster, inline endpoints for DNS clusters,
//! `ORIGINAL_DST` only with `CLUSTER_PROVIDED` and without endpoints).
//! [`check_references`] adds a rule Envoy does not enforce (it answers 503 or closes
//! the connection at run time instead): every cluster a route or TCP proxy names
//! exists. User configuration can break it (a route to an undeclared host), so it
//! is kept apart and used where the input is known to be complete.

use std::collections::{BTreeMap, BTreeSet};

use mesh_api::envoy::envoy::config::{
    cluster::v3::{
        Cluster,
        cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy},
    },
    endpoint::v3::ClusterLoadAssignment,
    listener::v3::Listener,
    route::v3::{RouteConfiguration, route::Action, route_action::ClusterSpecifier},
};
use mesh_api::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use prost::Message;

use super::{EnvoyResources, NamedResource, listener_rules, listeners::ROUTER_FILTER, type_url};

/// A broken Envoy validation rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The resource does not decode as its type, or carries another type URL.
    #[error("{name}: does not decode as {type_url}")]
    Decode {
        /// Expected type URL.
        type_url: &'static str,
        /// Resource name.
        name: String,
    },
    /// Two resources of one type share a name.
    #[error("{name}: duplicate {type_url} name")]
    DuplicateName {
        /// Type URL.
        type_url: &'static str,
        /// Resource name.
        name: String,
    },
    /// The listed name differs from the name inside the resource.
    #[error("{listed}: resource is named {inner}")]
    NameMismatch {
        /// Name in the list.
        listed: String,
        /// Name in the resource.
        inner: String,
    },
    /// A required field is unset.
    #[error("{name}: required field {field} is unset")]
    MissingField {
        /// Resource name.
        name: String,
        /// Field.
        field: &'static str,
    },
    /// An EDS cluster has no ClusterLoadAssignment.
    #[error("{cluster}: EDS cluster without a ClusterLoadAssignment")]
    MissingAssignment {
        /// Cluster name.
        cluster: String,
    },
    /// Weighted-cluster weights do not add up.
    #[error("{route_config}: weighted clusters sum to {sum}, expected {expected}")]
    WeightMismatch {
        /// RouteConfiguration name.
        route_config: String,
        /// Sum of weights.
        sum: u64,
        /// `total_weight`, or 100.
        expected: u64,
    },
    /// A domain appears in two virtual hosts of one RouteConfiguration.
    #[error("{route_config}: domain {domain} in more than one virtual host")]
    DuplicateDomain {
        /// RouteConfiguration name.
        route_config: String,
        /// The domain.
        domain: String,
    },
    /// A listener names a RouteConfiguration that does not exist.
    #[error("{listener}: route configuration {route_config} does not exist")]
    MissingRouteConfig {
        /// Listener name.
        listener: String,
        /// RouteConfiguration name.
        route_config: String,
    },
    /// A listener's last HTTP filter is not the router.
    #[error("{listener}: last HTTP filter is not {ROUTER_FILTER}")]
    RouterNotLast {
        /// Listener name.
        listener: String,
    },
    /// Two filter chains of a listener match the same connections.
    #[error("{listener}: filter chain {chain} overlaps an earlier chain")]
    OverlappingFilterChains {
        /// Listener name.
        listener: String,
        /// The later chain's name.
        chain: String,
    },
    /// A network or HTTP filter is malformed.
    #[error("{listener}: filter chain {chain}: {reason}")]
    InvalidFilter {
        /// Listener name.
        listener: String,
        /// Filter chain name.
        chain: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A downstream TLS context is incomplete.
    #[error("{listener}: filter chain {chain}: TLS {reason}")]
    InvalidTls {
        /// Listener name.
        listener: String,
        /// Filter chain name.
        chain: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A route or TCP proxy names a cluster that does not exist.
    #[error("{resource}: cluster {cluster} does not exist")]
    MissingCluster {
        /// The listener or route configuration naming it.
        resource: String,
        /// The cluster.
        cluster: String,
    },
    /// A cluster's discovery type and load balancer do not fit together: an
    /// `ORIGINAL_DST` cluster needs the `CLUSTER_PROVIDED` policy and no endpoints
    /// (inline or EDS), and only it may use that policy.
    #[error("{cluster}: {reason}")]
    InvalidCluster {
        /// Cluster name.
        cluster: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A logical DNS cluster does not have exactly one endpoint.
    #[error("{cluster}: LOGICAL_DNS cluster needs exactly one endpoint")]
    LogicalDnsEndpoints {
        /// Cluster name.
        cluster: String,
    },
}

fn decode_all<M: Message + Default>(
    list: &[NamedResource],
    url: &'static str,
    out: &mut Vec<Violation>,
) -> Vec<(String, M)> {
    let mut seen = BTreeSet::new();
    let mut decoded = Vec::new();
    for (name, any) in list {
        if !seen.insert(name.as_str()) {
            out.push(Violation::DuplicateName {
                type_url: url,
                name: name.clone(),
            });
        }
        match M::decode(any.value.as_slice()) {
            Ok(m) if any.type_url == url => decoded.push((name.clone(), m)),
            _ => out.push(Violation::Decode {
                type_url: url,
                name: name.clone(),
            }),
        }
    }
    decoded
}

fn check_name(listed: &str, inner: &str, out: &mut Vec<Violation>) {
    if inner.is_empty() {
        out.push(Violation::MissingField {
            name: listed.to_string(),
            field: "name",
        });
    } else if listed != inner {
        out.push(Violation::NameMismatch {
            listed: listed.to_string(),
            inner: inner.to_string(),
        });
    }
}

/// Every rule `resources` breaks; empty when Envoy would accept all of it.
pub fn check(resources: &EnvoyResources) -> Vec<Violation> {
    let mut out = Vec::new();
    let clusters: Vec<(String, Cluster)> =
        decode_all(&resources.clusters, type_url::CLUSTER, &mut out);
    let assignments: Vec<(String, ClusterLoadAssignment)> =
        decode_all(&resources.endpoints, type_url::ENDPOINT, &mut out);
    let listeners: Vec<(String, Listener)> =
        decode_all(&resources.listeners, type_url::LISTENER, &mut out);
    let routes: Vec<(String, RouteConfiguration)> =
        decode_all(&resources.routes, type_url::ROUTE, &mut out);

    let assigned: BTreeSet<&str> = assignments.iter().map(|(n, _)| n.as_str()).collect();
    for (name, c) in &clusters {
        check_name(name, &c.name, &mut out);
        if c.connect_timeout.is_none() {
            out.push(Violation::MissingField {
                name: name.clone(),
                field: "connect_timeout",
            });
        }
        let kind = match c.cluster_discovery_type {
            Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t).ok(),
            _ => None,
        };
        if c.lb_policy == LbPolicy::ClusterProvided as i32
            && kind != Some(DiscoveryType::OriginalDst)
        {
            out.push(Violation::InvalidCluster {
                cluster: name.clone(),
                reason: "lb_policy CLUSTER_PROVIDED is only valid for ORIGINAL_DST clusters",
            });
        }
        match kind {
            Some(DiscoveryType::Eds) => {
                let service = c
                    .eds_cluster_config
                    .as_ref()
                    .map(|e| e.service_name.as_str())
                    .filter(|s| !s.is_empty())
                    .unwrap_or(name);
                if !assigned.contains(service) {
                    out.push(Violation::MissingAssignment {
                        cluster: name.clone(),
                    });
                }
                if c.eds_cluster_config
                    .as_ref()
                    .and_then(|e| e.eds_config.as_ref())
                    .is_none()
                {
                    out.push(Violation::MissingField {
                        name: name.clone(),
                        field: "eds_cluster_config.eds_config",
                    });
                }
            }
            Some(DiscoveryType::OriginalDst) => {
                let reason = if c.lb_policy != LbPolicy::ClusterProvided as i32 {
                    Some("ORIGINAL_DST cluster needs lb_policy CLUSTER_PROVIDED")
                } else if c.load_assignment.is_some() {
                    Some("ORIGINAL_DST cluster must have no load assignment")
                } else if c.eds_cluster_config.is_some() {
                    Some("ORIGINAL_DST cluster must have no EDS configuration")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    out.push(Violation::InvalidCluster {
                        cluster: name.clone(),
                        reason,
                    });
                }
            }
            Some(DiscoveryType::StrictDns | DiscoveryType::LogicalDns) => {
                match &c.load_assignment {
                    None => out.push(Violation::MissingField {
                        name: name.clone(),
                        field: "load_assignment",
                    }),
                    Some(la) => {
                        let count: usize = la.endpoints.iter().map(|l| l.lb_endpoints.len()).sum();
                        if kind == Some(DiscoveryType::LogicalDns)
                            && (count != 1 || la.endpoints.len() != 1)
                        {
                            out.push(Violation::LogicalDnsEndpoints {
                                cluster: name.clone(),
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for (name, cla) in &assignments {
        check_name(name, &cla.cluster_name, &mut out);
        for l in &cla.endpoints {
            if l.locality.is_none() {
                out.push(Violation::MissingField {
                    name: name.clone(),
                    field: "endpoints.locality",
                });
            }
            if l.load_balancing_weight
                .as_ref()
                .is_none_or(|w| w.value == 0)
            {
                out.push(Violation::MissingField {
                    name: name.clone(),
                    field: "endpoints.load_balancing_weight",
                });
            }
        }
    }
    let route_names: BTreeSet<&str> = routes.iter().map(|(n, _)| n.as_str()).collect();
    for (name, rc) in &routes {
        check_name(name, &rc.name, &mut out);
        let mut domains: BTreeMap<&str, usize> = BTreeMap::new();
        for vh in &rc.virtual_hosts {
            for d in &vh.domains {
                *domains.entry(d.as_str()).or_default() += 1;
            }
            for r in &vh.routes {
                let Some(Action::Route(ra)) = &r.action else {
                    continue;
                };
                if let Some(ClusterSpecifier::WeightedClusters(wc)) = &ra.cluster_specifier {
                    let sum: u64 = wc
                        .clusters
                        .iter()
                        .map(|c| u64::from(c.weight.as_ref().map_or(0, |w| w.value)))
                        .sum();
                    #[allow(deprecated)] // Still honoured by Envoy when set.
                    let expected = wc.total_weight.as_ref().map_or(100, |t| u64::from(t.value));
                    if sum != expected || sum == 0 {
                        out.push(Violation::WeightMismatch {
                            route_config: name.clone(),
                            sum,
                            expected,
                        });
                    }
                }
            }
        }
        for (domain, n) in domains {
            if n > 1 {
                out.push(Violation::DuplicateDomain {
                    route_config: name.clone(),
                    domain: domain.to_string(),
                });
            }
        }
    }
    for (name, l) in &listeners {
        check_name(name, &l.name, &mut out);
        if l.api_listener.is_none() && l.address.is_some() {
            listener_rules::check_listener(name, l, &route_names, &mut out);
            continue;
        }
        let hcm = l
            .api_listener
            .as_ref()
            .and_then(|a| a.api_listener.as_ref())
            .and_then(|any| HttpConnectionManager::decode(any.value.as_slice()).ok());
        let Some(hcm) = hcm else {
            out.push(Violation::MissingField {
                name: name.clone(),
                field: "api_listener",
            });
            continue;
        };
        if hcm
            .http_filters
            .last()
            .is_none_or(|f| f.name != ROUTER_FILTER)
        {
            out.push(Violation::RouterNotLast {
                listener: name.clone(),
            });
        }
        match &hcm.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => {
                if !route_names.contains(rds.route_config_name.as_str()) {
                    out.push(Violation::MissingRouteConfig {
                        listener: name.clone(),
                        route_config: rds.route_config_name.clone(),
                    });
                }
            }
            _ => out.push(Violation::MissingField {
                name: name.clone(),
                field: "api_listener.rds",
            }),
        }
    }
    out
}

/// Every route, inline route and TCP proxy target that names a cluster missing from
/// `resources.clusters` (resources that do not decode are skipped: [`check`] reports
/// them).
pub fn check_references(resources: &EnvoyResources) -> Vec<Violation> {
    let mut ignored = Vec::new();
    let clusters: BTreeSet<&str> = resources.clusters.iter().map(|(n, _)| n.as_str()).collect();
    let listeners: Vec<(String, Listener)> =
        decode_all(&resources.listeners, type_url::LISTENER, &mut ignored);
    let routes: Vec<(String, RouteConfiguration)> =
        decode_all(&resources.routes, type_url::ROUTE, &mut ignored);
    listener_rules::cluster_references(&listeners, &routes)
        .into_iter()
        .filter(|(_, c)| !clusters.contains(c.as_str()))
        .map(|(resource, cluster)| Violation::MissingCluster { resource, cluster })
        .collect()
}
