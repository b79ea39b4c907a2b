//! The resources that depend on which proxy is asking, by kind of proxy.
//!
//! The mesh-wide translation ([`super::translate`]) gives what every proxy shares:
//! outbound clusters, endpoints, the route configurations `<port>` and proxyless API
//! listeners. [`proxy_resources`] adds what differs per node group:
//! - a sidecar (`ProxyKind::Sidecar`) gets `virtualOutbound`, one `0.0.0.0_<port>`
//!   listener per port of the services it sees, and `virtualInbound` (with its
//!   PeerAuthentication mutual TLS and AuthorizationPolicy RBAC); the clusters
//!   `PassthroughCluster`, `BlackHoleCluster`, `InboundPassthroughClusterIpv4` and
//!   `inbound|<port>||` per port it serves; no route configurations (its outbound
//!   listeners read the mesh-wide `<port>` ones, its inbound ones are inline);
//! - an ingress gateway (`ProxyKind::Router`) gets one listener per bind address and
//!   port of the Gateways selecting it, and their route configurations (`http.<port>`,
//!   `https.<port>.<port name>.<gateway>.<namespace>`); it reaches services through
//!   the mesh-wide outbound clusters;
//! - a proxyless gRPC client gets nothing more: its API listeners are mesh-wide.

use super::{MeshContext, NamedResource, gateway, inbound, sidecar, type_url};
use crate::proxy::{Proxy, ProxyKind};

/// Per-proxy resources by xDS type, each list sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyResources {
    /// LDS: `Listener`s.
    pub listeners: Vec<NamedResource>,
    /// CDS: `Cluster`s, to merge with the mesh-wide ones.
    pub clusters: Vec<NamedResource>,
    /// RDS: `RouteConfiguration`s, to merge with the mesh-wide ones.
    pub routes: Vec<NamedResource>,
}

/// The resources specific to `proxy` (see the module docs for what each kind gets).
pub fn proxy_resources(ctx: &MeshContext, proxy: &Proxy) -> ProxyResources {
    let mut out = match proxy.kind {
        ProxyKind::Sidecar => {
            let mut listeners = sidecar::outbound_listeners(ctx, proxy);
            let inbound = inbound::inbound_listener(ctx, proxy);
            listeners.push((
                inbound.name.clone(),
                super::pack(type_url::LISTENER, &inbound),
            ));
            let mut clusters = sidecar::passthrough_clusters();
            clusters.extend(inbound::inbound_clusters(ctx, proxy));
            ProxyResources {
                listeners,
                clusters,
                routes: Vec::new(),
            }
        }
        ProxyKind::Router => {
            let (listeners, routes) = gateway::gateway_resources(ctx, proxy);
            ProxyResources {
                listeners,
                clusters: Vec::new(),
                routes,
            }
        }
        ProxyKind::Proxyless => ProxyResources::default(),
    };
    for list in [&mut out.listeners, &mut out.clusters, &mut out.routes] {
        list.sort_by(|a, b| a.0.cmp(&b.0));
    }
    out
}
