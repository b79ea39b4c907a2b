//! Deterministic bytes for route configurations.
//!
//! prost keeps protobuf map fields in `HashMap`s, whose iteration order differs from
//! one map to the next, and encodes map entries in that order. A route carrying two
//! per-filter configurations (fault and CORS, say) would then encode differently on
//! every translation, its content hash would change, and pilot would re-send an
//! unchanged route to every proxy. Routes are therefore encoded here with each map
//! written in key order, after the rest of the message: protobuf parsers accept
//! fields in any order, so the bytes decode to the same message.

use std::collections::HashMap;

use mesh_api::envoy::{
    envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost},
    google::protobuf::Any,
};
use prost::{
    Message,
    encoding::{WireType, encode_key, encode_varint},
};

const RC_VIRTUAL_HOSTS: u32 = 2;
const RC_PER_FILTER: u32 = 16;
const VH_ROUTES: u32 = 3;
const VH_PER_FILTER: u32 = 15;
const ROUTE_PER_FILTER: u32 = 13;

/// The route configuration packed into `Any` with deterministic bytes.
pub fn pack_route_config(rc: &RouteConfiguration) -> Any {
    Any {
        type_url: super::type_url::ROUTE.to_string(),
        value: route_config_bytes(rc),
    }
}

/// Deterministic encoding of a route configuration.
pub fn route_config_bytes(rc: &RouteConfiguration) -> Vec<u8> {
    let mut shell = rc.clone();
    shell.virtual_hosts.clear();
    shell.typed_per_filter_config.clear();
    let mut buf = shell.encode_to_vec();
    for vh in &rc.virtual_hosts {
        put_bytes(&mut buf, RC_VIRTUAL_HOSTS, &virtual_host_bytes(vh));
    }
    put_sorted_map(&mut buf, RC_PER_FILTER, &rc.typed_per_filter_config);
    buf
}

fn virtual_host_bytes(vh: &VirtualHost) -> Vec<u8> {
    let mut shell = vh.clone();
    shell.routes.clear();
    shell.typed_per_filter_config.clear();
    let mut buf = shell.encode_to_vec();
    for route in &vh.routes {
        put_bytes(&mut buf, VH_ROUTES, &route_bytes(route));
    }
    put_sorted_map(&mut buf, VH_PER_FILTER, &vh.typed_per_filter_config);
    buf
}

fn route_bytes(route: &Route) -> Vec<u8> {
    let mut shell = route.clone();
    shell.typed_per_filter_config.clear();
    let mut buf = shell.encode_to_vec();
    put_sorted_map(&mut buf, ROUTE_PER_FILTER, &route.typed_per_filter_config);
    buf
}

fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// A `map<string, Any>` field, entries in key order.
fn put_sorted_map(buf: &mut Vec<u8>, tag: u32, map: &HashMap<String, Any>) {
    let mut entries: Vec<(&String, &Any)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (key, value) in entries {
        let mut entry = Vec::new();
        prost::encoding::string::encode(1, key, &mut entry);
        prost::encoding::message::encode(2, value, &mut entry);
        put_bytes(buf, tag, &entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(name: &str) -> Any {
        Any {
            type_url: format!("type.googleapis.com/{name}"),
            value: name.as_bytes().to_vec(),
        }
    }

    fn config(order: &[&str]) -> RouteConfiguration {
        let mut route = Route {
            name: "r".into(),
            ..Default::default()
        };
        for name in order {
            route
                .typed_per_filter_config
                .insert((*name).to_string(), any(name));
        }
        let mut vh = VirtualHost {
            name: "vh".into(),
            domains: vec!["a".into()],
            routes: vec![route.clone(), route],
            ..Default::default()
        };
        for name in order {
            vh.typed_per_filter_config
                .insert((*name).to_string(), any(name));
        }
        RouteConfiguration {
            name: "80".into(),
            virtual_hosts: vec![vh],
            ..Default::default()
        }
    }

    #[test]
    fn equal_configs_encode_to_equal_bytes_that_decode_to_the_same_message() {
        let names = [
            "envoy.filters.http.fault",
            "envoy.filters.http.cors",
            "x.y",
            "a.b",
        ];
        let reference = route_config_bytes(&config(&names));
        for i in 0..32 {
            let mut order = names.to_vec();
            order.rotate_left(i % names.len());
            if i % 2 == 1 {
                order.reverse();
            }
            let rc = config(&order);
            assert_eq!(route_config_bytes(&rc), reference, "order {order:?}");
            let decoded = RouteConfiguration::decode(reference.as_slice()).unwrap_or_default();
            assert_eq!(decoded, rc);
        }
    }
}
