//! EDS: a ClusterLoadAssignment per EDS cluster, endpoints grouped by locality.
//!
//! gRPC's xDS client refuses a LocalityLbEndpoints without `locality` or
//! `load_balancing_weight`, so both are always set (the locality possibly empty).
//! With locality load balancing (see [`locality`]) an assignment depends on where
//! the receiving proxy runs: endpoints are grouped by priority as well as locality,
//! or locality weights are redistributed.

pub mod locality;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use mesh_api::envoy::{
    envoy::config::{
        core::v3::{
            Address, Locality, Pipe, SocketAddress, address, socket_address::PortSpecifier,
        },
        endpoint::v3::{
            ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints,
            lb_endpoint::HostIdentifier,
        },
    },
    google::protobuf::{Any, UInt32Value},
};
use mesh_model::networking::Labels;

use super::{
    MeshContext, NamedResource, cluster_name,
    clusters::{effective_policy, uses_eds},
    into_sorted, pack, type_url,
};
use crate::model::{Endpoint, Service, ServicePort};
use crate::proxy::Proxy;
use locality::{LocalityPlan, Rank};

/// Builds the assignment of every EDS cluster (service ports and subsets) as seen
/// by `proxy`, sorted by cluster name.
pub fn build_endpoints(ctx: &MeshContext, proxy: &Proxy) -> Vec<NamedResource> {
    let mut out: BTreeMap<String, Any> = BTreeMap::new();
    for service in ctx.services.values().filter(|s| uses_eds(s, proxy.kind)) {
        let rule = ctx.destination_rule(&service.host);
        let subsets = rule.map(|r| r.subsets.as_slice()).unwrap_or(&[]);
        for port in &service.ports {
            let name = cluster_name(port.number, "", &service.host);
            let policy = effective_policy(rule, None, port.number);
            let plan = LocalityPlan::new(
                policy.load_balancer.as_ref(),
                policy.outlier_detection.as_ref(),
                proxy,
            );
            let cla = eds_load_assignment(&name, service, port, &Labels::new(), &plan);
            out.insert(name, pack(type_url::ENDPOINT, &cla));
            for subset in subsets.iter().filter(|s| !s.name.is_empty()) {
                let name = cluster_name(port.number, &subset.name, &service.host);
                let policy = effective_policy(rule, Some(subset), port.number);
                let plan = LocalityPlan::new(
                    policy.load_balancer.as_ref(),
                    policy.outlier_detection.as_ref(),
                    proxy,
                );
                let cla = eds_load_assignment(&name, service, port, &subset.labels, &plan);
                out.insert(name, pack(type_url::ENDPOINT, &cla));
            }
        }
    }
    into_sorted(out)
}

/// The assignment for an EDS cluster: IP (and `unix://`) endpoints carrying every
/// label of `selector`, arranged by `plan`.
pub fn eds_load_assignment(
    cluster: &str,
    service: &Service,
    port: &ServicePort,
    selector: &Labels,
    plan: &LocalityPlan<'_>,
) -> ClusterLoadAssignment {
    let chosen = service
        .endpoints
        .iter()
        .filter(|e| e.matches(selector))
        .filter_map(|e| Some((e, socket_or_pipe(&e.address, e.port_for(port))?)));
    assignment(cluster, chosen, plan)
}

/// The inline assignment of a DNS cluster: endpoint host names (or the service host
/// when none is usable); a logical DNS cluster gets at most one endpoint.
pub fn dns_load_assignment(
    cluster: &str,
    service: &Service,
    port: &ServicePort,
    selector: &Labels,
    logical: bool,
    plan: &LocalityPlan<'_>,
) -> ClusterLoadAssignment {
    let mut chosen: Vec<(&Endpoint, Address)> = service
        .endpoints
        .iter()
        .filter(|e| e.matches(selector) && !e.address.is_empty())
        .filter(|e| !e.address.starts_with("unix://"))
        .map(|e| (e, socket(&e.address, e.port_for(port))))
        .collect();
    let host_endpoint;
    if chosen.is_empty() && !mesh_model::host::is_wildcard(&service.host) {
        // No usable endpoint: resolve the service host itself.
        host_endpoint = Endpoint {
            address: service.host.clone(),
            ports: BTreeMap::new(),
            labels: Labels::new(),
            locality: String::new(),
            weight: None,
            service_account: String::new(),
        };
        let port_number = port.target_port.unwrap_or(port.number);
        chosen.push((&host_endpoint, socket(&service.host, port_number)));
    }
    if logical {
        chosen.truncate(1);
    }
    assignment(cluster, chosen.into_iter(), plan)
}

/// A priority rank and a locality's parts.
type GroupKey<'a> = (Rank, [&'a str; 3]);

/// The endpoints of one (rank, locality) with their summed weight.
type Group<'a> = (GroupKey<'a>, (u32, Vec<LbEndpoint>));

/// Groups endpoints by (rank, locality), renumbers ranks into contiguous priorities
/// and applies `distribute` weights. Localities are compared by their parts, so
/// `r/z` and `r/z/` are one locality (gRPC refuses a locality twice in a priority).
fn assignment<'a>(
    cluster: &str,
    chosen: impl Iterator<Item = (&'a Endpoint, Address)>,
    plan: &LocalityPlan<'_>,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<GroupKey<'_>, (u32, Vec<LbEndpoint>)> = BTreeMap::new();
    for (endpoint, address) in chosen {
        let weight = endpoint.weight.filter(|w| *w > 0).unwrap_or(1);
        let entry = by_locality
            .entry((plan.rank(endpoint), locality::split(&endpoint.locality)))
            .or_insert((0, Vec::new()));
        entry.0 = entry.0.saturating_add(weight);
        entry.1.push(LbEndpoint {
            load_balancing_weight: Some(UInt32Value { value: weight }),
            host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
                address: Some(address),
                ..Default::default()
            })),
            ..Default::default()
        });
    }
    let mut groups: Vec<Group<'_>> = by_locality.into_iter().collect();
    let summary: Vec<([&str; 3], u32)> = groups.iter().map(|((_, l), (w, _))| (*l, *w)).collect();
    if let Some(weights) = plan.distribute(&summary) {
        // Localities the distribution leaves out get no traffic: drop them.
        groups = groups
            .into_iter()
            .zip(weights)
            .filter_map(|((key, (_, eps)), w)| Some((key, (w?, eps))))
            .collect();
    }
    let ranks: BTreeSet<Rank> = groups.iter().map(|((r, _), _)| *r).collect();
    let priorities = LocalityPlan::contiguous(&ranks);
    let endpoints = groups
        .into_iter()
        .map(
            |((rank, locality), (weight, lb_endpoints))| LocalityLbEndpoints {
                locality: Some(Locality {
                    region: locality[0].to_string(),
                    zone: locality[1].to_string(),
                    sub_zone: locality[2].to_string(),
                }),
                load_balancing_weight: Some(UInt32Value {
                    value: weight.max(1),
                }),
                lb_endpoints,
                priority: priorities.get(&rank).copied().unwrap_or(0),
                ..Default::default()
            },
        )
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints,
        ..Default::default()
    }
}

/// `region/zone/subzone`, any part possibly missing.
pub fn parse_locality(text: &str) -> Locality {
    let mut parts = text.splitn(3, '/');
    Locality {
        region: parts.next().unwrap_or("").to_string(),
        zone: parts.next().unwrap_or("").to_string(),
        sub_zone: parts.next().unwrap_or("").to_string(),
    }
}

fn socket(address: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// An IP socket address or a pipe; `None` for host names (EDS takes only addresses).
fn socket_or_pipe(address: &str, port: u32) -> Option<Address> {
    if let Some(path) = address.strip_prefix("unix://") {
        return Some(Address {
            address: Some(address::Address::Pipe(Pipe {
                path: path.to_string(),
                mode: 0,
            })),
        });
    }
    address.parse::<IpAddr>().ok()?;
    Some(socket(address, port))
}
