//! EDS: a ClusterLoadAssignment per EDS cluster, endpoints grouped by locality.
//!
//! gRPC's xDS client refuses a LocalityLbEndpoints without `locality` or
//! `load_balancing_weight`, so both are always set (the locality possibly empty).

use std::collections::BTreeMap;
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
    MeshContext, NamedResource, cluster_name, clusters::uses_eds, into_sorted, pack, type_url,
};
use crate::model::{Endpoint, Service, ServicePort};

/// Builds the assignment of every EDS cluster (service ports and subsets), sorted by
/// cluster name.
pub fn build_endpoints(ctx: &MeshContext) -> Vec<NamedResource> {
    let mut out: BTreeMap<String, Any> = BTreeMap::new();
    for service in ctx.services.values().filter(|s| uses_eds(s)) {
        let subsets = ctx
            .destination_rules
            .get(&service.host)
            .map(|r| r.subsets.as_slice())
            .unwrap_or(&[]);
        for port in &service.ports {
            let name = cluster_name(port.number, "", &service.host);
            let cla = eds_load_assignment(&name, service, port, &Labels::new());
            out.insert(name, pack(type_url::ENDPOINT, &cla));
            for subset in subsets.iter().filter(|s| !s.name.is_empty()) {
                let name = cluster_name(port.number, &subset.name, &service.host);
                let cla = eds_load_assignment(&name, service, port, &subset.labels);
                out.insert(name, pack(type_url::ENDPOINT, &cla));
            }
        }
    }
    into_sorted(out)
}

/// The assignment for an EDS cluster: IP (and `unix://`) endpoints carrying every
/// label of `selector`.
pub fn eds_load_assignment(
    cluster: &str,
    service: &Service,
    port: &ServicePort,
    selector: &Labels,
) -> ClusterLoadAssignment {
    let chosen = service
        .endpoints
        .iter()
        .filter(|e| e.matches(selector))
        .filter_map(|e| Some((e, socket_or_pipe(&e.address, e.port_for(port))?)));
    assignment(cluster, chosen)
}

/// The inline assignment of a DNS cluster: endpoint host names (or the service host
/// when none is usable); a logical DNS cluster gets at most one endpoint.
pub fn dns_load_assignment(
    cluster: &str,
    service: &Service,
    port: &ServicePort,
    selector: &Labels,
    logical: bool,
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
        };
        let port_number = port.target_port.unwrap_or(port.number);
        chosen.push((&host_endpoint, socket(&service.host, port_number)));
    }
    if logical {
        chosen.truncate(1);
    }
    assignment(cluster, chosen.into_iter())
}

fn assignment<'a>(
    cluster: &str,
    chosen: impl Iterator<Item = (&'a Endpoint, Address)>,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&str, (u32, Vec<LbEndpoint>)> = BTreeMap::new();
    for (endpoint, address) in chosen {
        let weight = endpoint.weight.filter(|w| *w > 0).unwrap_or(1);
        let entry = by_locality
            .entry(endpoint.locality.as_str())
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
    let endpoints = by_locality
        .into_iter()
        .map(|(locality, (weight, lb_endpoints))| LocalityLbEndpoints {
            locality: Some(parse_locality(locality)),
            load_balancing_weight: Some(UInt32Value {
                value: weight.max(1),
            }),
            lb_endpoints,
            ..Default::default()
        })
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
