//! LDS for proxyless gRPC: one API listener per service port, named `<host>:<port>`.
//!
//! A gRPC client dialing `xds:///<host>:<port>` asks for exactly that listener and
//! expects an `api_listener` holding an HttpConnectionManager that names its routes
//! over RDS; the route configuration (named after the port) has a virtual host for
//! `<host>:<port>`.

use std::collections::BTreeMap;

use mesh_api::envoy::{
    envoy::{
        config::listener::v3::{ApiListener, Listener},
        extensions::filters::{
            http::{fault::v3::HttpFault, router::v3::Router},
            network::http_connection_manager::v3::{
                HttpConnectionManager, HttpFilter, Rds,
                http_connection_manager::{CodecType, RouteSpecifier},
                http_filter::ConfigType,
            },
        },
    },
    google::protobuf::Any,
};

use super::{
    MeshContext, NamedResource, ads_config_source, into_sorted, pack, pack_named,
    routes::{FAULT_FILTER, route_config_name},
    type_url,
};

/// Name of the router filter, always the last HTTP filter.
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";

/// The type URL an API listener's HttpConnectionManager is packed with.
pub const HCM_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// The listener name a gRPC client dialing `xds:///<host>:<port>` asks for.
pub fn listener_name(host: &str, port: u32) -> String {
    format!("{host}:{port}")
}

/// Builds one API listener per service port, sorted by name.
pub fn build_listeners(ctx: &MeshContext) -> Vec<NamedResource> {
    let mut out: BTreeMap<String, Any> = BTreeMap::new();
    for service in ctx.services.values() {
        for port in &service.ports {
            let listener = api_listener(&service.host, port.number);
            out.insert(listener.name.clone(), pack(type_url::LISTENER, &listener));
        }
    }
    into_sorted(out)
}

/// The API listener for `host:port`, routing through RDS config `<port>`.
pub fn api_listener(host: &str, port: u32) -> Listener {
    let name = listener_name(host, port);
    let hcm = HttpConnectionManager {
        codec_type: CodecType::Auto as i32,
        stat_prefix: name.clone(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: route_config_name(port),
        })),
        http_filters: vec![
            HttpFilter {
                name: FAULT_FILTER.to_string(),
                config_type: Some(ConfigType::TypedConfig(pack_named(&HttpFault::default()))),
                ..Default::default()
            },
            HttpFilter {
                name: ROUTER_FILTER.to_string(),
                config_type: Some(ConfigType::TypedConfig(pack_named(&Router::default()))),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    Listener {
        name,
        api_listener: Some(ApiListener {
            api_listener: Some(pack(HCM_TYPE_URL, &hcm)),
        }),
        ..Default::default()
    }
}
