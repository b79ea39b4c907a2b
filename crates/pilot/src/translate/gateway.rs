//! LDS and RDS for ingress gateways: listeners from the Gateway resources selecting
//! the gateway's Envoy, routes from the VirtualServices bound to those Gateways.
//!
//! Servers are grouped by bind address and port into one bound listener,
//! `<bind>_<port>` (`0.0.0.0_<port>` without a bind). By kind of server:
//! - plain HTTP: one chain with an HttpConnectionManager reading route configuration
//!   `http.<port>` (Istio's name), shared by every Gateway serving plain HTTP there;
//! - HTTPS terminated here (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL): one chain
//!   per server matching TLS with the server's hosts as SNI names, its certificate
//!   from SDS (`credentialName`, with `<credentialName>-cacert` for client
//!   certificates; `default` and `ROOTCA` for ISTIO_MUTUAL) and its own route
//!   configuration `https.<port>.<port name>.<gateway>.<namespace>`;
//! - TLS PASSTHROUGH: chains by SNI from the `tls:` routes of bound VirtualServices,
//!   proxying TCP untouched (AUTO_PASSTHROUGH needs SNI-encoded clusters: skipped);
//! - TCP (and TLS terminated here): a TCP proxy following the first applying `tcp:`
//!   route of a bound VirtualService.
//!
//! A route configuration has one virtual host per bound VirtualService, whose domains
//! are the VirtualService's hosts that the server serves (or the server's hosts when
//! the VirtualService says `*`). A domain belongs to the first virtual host claiming
//! it; Envoy refuses duplicates. `httpsRedirect` makes the virtual host require TLS.
//! The port is stripped from the Host header, so domains need no `:<port>` forms.

use std::collections::{BTreeMap, BTreeSet};

use mesh_api::envoy::{
    envoy::{
        config::{
            core::v3::{DataSource, TrafficDirection, data_source::Specifier},
            listener::v3::{FilterChain, FilterChainMatch, Listener},
            route::v3::{RouteConfiguration, VirtualHost, virtual_host::TlsRequirementType},
        },
        extensions::{
            filters::network::{
                http_connection_manager::v3::http_connection_manager::StripPortMode,
                tcp_proxy::v3::tcp_proxy::ClusterSpecifier,
            },
            transport_sockets::tls::v3::{
                CertificateValidationContext, CommonTlsContext, DownstreamTlsContext,
                TlsCertificate, TlsParameters, common_tls_context::ValidationContextType,
                tls_parameters::TlsProtocol as EnvoyTls,
            },
        },
    },
    google::protobuf::Any,
};
use mesh_model::{
    host::{GatewayRef, fqdn, host_covered_by, hosts_match, resolve_gateway},
    networking::{
        Gateway, HttpMatchRequest, Server, ServerTlsMode, ServerTlsSettings, TlsProtocol,
        VirtualService,
    },
    protocol::Protocol,
};

use super::{
    MeshContext, NamedResource, NamedSpec,
    chains::{
        ChainSet, SDS_DEFAULT, SDS_ROOTCA, TRANSPORT_TLS, bool_value, envoy_hcm, hcm_filter,
        outbound_http_filters, rds, sds_secret, socket_address, tcp_proxy_filter, tls_inspector,
        tls_transport_socket,
    },
    into_sorted, pack,
    routes::gateway_http_route,
    sidecar::destinations,
    type_url,
};
use crate::proxy::Proxy;

/// `http.<port>`, the route configuration of a gateway's plain HTTP servers.
pub fn http_route_config_name(port: u32) -> String {
    format!("http.{port}")
}

/// `https.<port>.<port name>.<gateway>.<namespace>`, a terminated HTTPS server's
/// route configuration.
pub fn https_route_config_name(port: u32, port_name: &str, gateway: &str, ns: &str) -> String {
    format!("https.{port}.{port_name}.{gateway}.{ns}")
}

/// The Gateways whose selector matches `proxy` (an empty selector matches every
/// gateway), in key order.
pub fn selected_gateways<'a>(ctx: &'a MeshContext, proxy: &Proxy) -> Vec<&'a NamedSpec<Gateway>> {
    ctx.gateways
        .iter()
        .filter(|g| proxy.matches(&g.spec.selector))
        .collect()
}

/// What a gateway server does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerKind {
    PlainHttp,
    TerminatedHttps,
    Passthrough,
    TerminatedTcp,
    PlainTcp,
}

fn server_kind(server: &Server) -> Option<ServerKind> {
    let port = server.port.as_ref()?;
    let protocol = Protocol::parse(&port.protocol);
    let mode = server.tls.as_ref().map(ServerTlsSettings::effective_mode);
    let kind = match (protocol, mode) {
        (Some(Protocol::Udp), _) => return None,
        (Some(p), _) if p.is_http() => ServerKind::PlainHttp,
        (Some(Protocol::Https | Protocol::Tls), Some(ServerTlsMode::Passthrough)) => {
            ServerKind::Passthrough
        }
        (Some(Protocol::Https | Protocol::Tls), Some(ServerTlsMode::AutoPassthrough) | None) => {
            return None;
        }
        (Some(Protocol::Https), Some(_)) => ServerKind::TerminatedHttps,
        (Some(Protocol::Tls), Some(_)) => ServerKind::TerminatedTcp,
        _ => ServerKind::PlainTcp,
    };
    Some(kind)
}

/// A server with the Gateway declaring it.
#[derive(Clone, Copy)]
struct GatewayServer<'a> {
    gateway: &'a NamedSpec<Gateway>,
    server: &'a Server,
    port: u32,
    kind: ServerKind,
}

impl GatewayServer<'_> {
    /// Hosts as `(namespace, host)`; `*` namespace when none is given.
    fn hosts(&self) -> Vec<(&str, &str)> {
        self.server
            .hosts
            .iter()
            .map(|h| h.split_once('/').unwrap_or(("*", h.as_str())))
            .collect()
    }

    /// SNI names: the hosts without namespaces; none (any) when a host is `*`.
    fn server_names(&self) -> Vec<String> {
        let hosts: BTreeSet<String> = self.hosts().iter().map(|(_, h)| h.to_string()).collect();
        if hosts.contains("*") {
            return Vec::new();
        }
        hosts.into_iter().collect()
    }

    /// Whether `vs` (in `vs_ns`, named `vs_name`) is bound to this server's Gateway.
    fn binds(&self, vs_ns: &str, vs: &VirtualService) -> bool {
        vs.bound_gateways().any(|g| self.is_gateway(g, vs_ns))
    }

    fn is_gateway(&self, reference: &str, ns: &str) -> bool {
        resolve_gateway(reference, ns)
            == GatewayRef::Gateway {
                namespace: &self.gateway.namespace,
                name: &self.gateway.name,
            }
    }

    /// The domains this server serves for `vs`: its hosts the server covers, or the
    /// server's hosts (for `*`, or a server host narrower than the VirtualService's).
    fn domains(&self, vs_ns: &str, vs: &VirtualService) -> Vec<String> {
        let mut out = Vec::new();
        for (ns, server_host) in self.hosts() {
            let ns_ok = ns == "*" || ns == vs_ns || (ns == "." && vs_ns == self.gateway.namespace);
            if !ns_ok {
                continue;
            }
            for h in &vs.hosts {
                let h = fqdn(h, vs_ns);
                if host_covered_by(&h, server_host) {
                    out.push(h.into_owned());
                } else if hosts_match(&h, server_host) {
                    out.push(server_host.to_string());
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The listeners and route configurations of a gateway proxy.
pub fn gateway_resources(
    ctx: &MeshContext,
    proxy: &Proxy,
) -> (Vec<NamedResource>, Vec<NamedResource>) {
    let mut by_listener: BTreeMap<(String, u32), Vec<GatewayServer<'_>>> = BTreeMap::new();
    for gateway in selected_gateways(ctx, proxy) {
        for server in &gateway.spec.servers {
            let Some(port) = server
                .port
                .as_ref()
                .map(|p| p.number)
                .filter(|p| (1..=65535).contains(p))
            else {
                tracing::warn!(gateway = %gateway.name, "gateway server without a valid port; skipped");
                continue;
            };
            let Some(kind) = server_kind(server) else {
                tracing::warn!(gateway = %gateway.name, port, "gateway server protocol or TLS mode not supported; skipped");
                continue;
            };
            let bind = if server.bind.is_empty() {
                "0.0.0.0".to_string()
            } else if server.bind.parse::<std::net::IpAddr>().is_ok() {
                server.bind.clone()
            } else {
                tracing::warn!(gateway = %gateway.name, bind = %server.bind, "gateway server bind is not an IP; skipped");
                continue;
            };
            by_listener
                .entry((bind, port))
                .or_default()
                .push(GatewayServer {
                    gateway,
                    server,
                    port,
                    kind,
                });
        }
    }
    let mut listeners: BTreeMap<String, Any> = BTreeMap::new();
    let mut routes: BTreeMap<String, Any> = BTreeMap::new();
    for ((bind, port), servers) in by_listener {
        let name = format!("{bind}_{port}");
        let mut chains = ChainSet::default();
        let mut tls = false;
        let plain: Vec<GatewayServer<'_>> = servers
            .iter()
            .filter(|s| s.kind == ServerKind::PlainHttp)
            .copied()
            .collect();
        for s in &servers {
            match s.kind {
                ServerKind::PlainHttp => {
                    if !std::ptr::eq(s.server, plain[0].server) {
                        continue;
                    }
                    let rc_name = http_route_config_name(port);
                    let rc = route_config(ctx, &rc_name, &plain, proxy);
                    routes.insert(rc_name.clone(), super::canonical::pack_route_config(&rc));
                    chains.push(&name, http_chain(&name, &rc_name, None, None));
                }
                ServerKind::TerminatedHttps => {
                    let Some(context) = server_tls_context(s, &["h2", "http/1.1"]) else {
                        continue;
                    };
                    let port_name = s.server.port.as_ref().map_or("", |p| p.name.as_str());
                    let rc_name = https_route_config_name(
                        port,
                        port_name,
                        &s.gateway.name,
                        &s.gateway.namespace,
                    );
                    let rc = route_config(ctx, &rc_name, &[*s], proxy);
                    tls = true;
                    if chains.push(&name, http_chain(&name, &rc_name, Some(s), Some(context))) {
                        routes.insert(rc_name, super::canonical::pack_route_config(&rc));
                    }
                }
                ServerKind::Passthrough => {
                    tls = true;
                    for chain in passthrough_chains(ctx, s) {
                        chains.push(&name, chain);
                    }
                }
                ServerKind::TerminatedTcp | ServerKind::PlainTcp => {
                    let context = if s.kind == ServerKind::TerminatedTcp {
                        let Some(c) = server_tls_context(s, &[]) else {
                            continue;
                        };
                        tls = true;
                        Some(c)
                    } else {
                        None
                    };
                    let Some(target) = tcp_target(ctx, s) else {
                        tracing::warn!(gateway = %s.gateway.name, port, "no VirtualService tcp route for gateway server; skipped");
                        continue;
                    };
                    let matched = context.is_some().then(|| FilterChainMatch {
                        server_names: s.server_names(),
                        transport_protocol: TRANSPORT_TLS.to_string(),
                        ..Default::default()
                    });
                    chains.push(
                        &name,
                        FilterChain {
                            name: format!("{}/{}|tcp|{port}", s.gateway.namespace, s.gateway.name),
                            filter_chain_match: matched,
                            transport_socket: context.as_ref().map(tls_transport_socket),
                            filters: vec![tcp_proxy_filter(&name, target)],
                            ..Default::default()
                        },
                    );
                }
            }
        }
        if chains.is_empty() {
            tracing::warn!(listener = %name, "gateway listener without a usable server; left out");
            continue;
        }
        let listener = Listener {
            name: name.clone(),
            address: Some(socket_address(&bind, port)),
            bind_to_port: bool_value(true),
            listener_filters: if tls {
                vec![tls_inspector()]
            } else {
                Vec::new()
            },
            filter_chains: chains.into_chains(),
            traffic_direction: TrafficDirection::Outbound as i32,
            ..Default::default()
        };
        listeners.insert(name, pack(type_url::LISTENER, &listener));
    }
    (into_sorted(listeners), into_sorted(routes))
}

fn http_chain(
    listener: &str,
    rc_name: &str,
    server: Option<&GatewayServer<'_>>,
    tls: Option<DownstreamTlsContext>,
) -> FilterChain {
    let mut hcm = envoy_hcm(listener, rds(rc_name), outbound_http_filters());
    hcm.use_remote_address = bool_value(true);
    hcm.strip_port_mode = Some(StripPortMode::StripAnyHostPort(true));
    FilterChain {
        name: rc_name.to_string(),
        filter_chain_match: server.map(|s| FilterChainMatch {
            server_names: s.server_names(),
            transport_protocol: TRANSPORT_TLS.to_string(),
            ..Default::default()
        }),
        transport_socket: tls.as_ref().map(tls_transport_socket),
        filters: vec![hcm_filter(&hcm)],
        ..Default::default()
    }
}

/// A route configuration with one virtual host per VirtualService bound to `servers`.
fn route_config(
    ctx: &MeshContext,
    name: &str,
    servers: &[GatewayServer<'_>],
    proxy: &Proxy,
) -> RouteConfiguration {
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut virtual_hosts = Vec::new();
    for s in servers {
        let redirect = s.server.tls.as_ref().is_some_and(|t| t.https_redirect);
        for vs in &ctx.gateway_virtual_services {
            if !s.binds(&vs.namespace, &vs.spec)
                || !seen.insert((vs.namespace.clone(), vs.name.clone()))
            {
                continue;
            }
            let mut domains = s.domains(&vs.namespace, &vs.spec);
            domains.retain(|d| {
                let fresh = claimed.insert(d.clone());
                if !fresh {
                    tracing::warn!(route_config = name, domain = %d, virtual_service = %vs.name, "domain already served by another VirtualService; left out");
                }
                fresh
            });
            if domains.is_empty() {
                continue;
            }
            let for_gateway = |m: &HttpMatchRequest| {
                m.gateways.is_empty() || m.gateways.iter().any(|g| s.is_gateway(g, &vs.namespace))
            };
            let routes: Vec<_> = vs
                .spec
                .http
                .iter()
                .flat_map(|http| {
                    gateway_http_route(ctx, &vs.namespace, http, s.port, &for_gateway, proxy)
                })
                .collect();
            if routes.is_empty() {
                continue;
            }
            virtual_hosts.push(VirtualHost {
                name: format!("{}/{}", vs.namespace, vs.name),
                domains,
                routes,
                require_tls: if redirect {
                    TlsRequirementType::All as i32
                } else {
                    TlsRequirementType::None as i32
                },
                ..Default::default()
            });
        }
    }
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts,
        ..Default::default()
    }
}

/// Chains by SNI for the `tls:` routes bound to a passthrough server.
fn passthrough_chains(ctx: &MeshContext, s: &GatewayServer<'_>) -> Vec<FilterChain> {
    let mut out = Vec::new();
    for vs in &ctx.gateway_virtual_services {
        if !s.binds(&vs.namespace, &vs.spec) {
            continue;
        }
        for (i, route) in vs.spec.tls.iter().enumerate() {
            let names: Vec<String> = route
                .matches
                .iter()
                .filter(|m| {
                    m.port.is_none_or(|p| p == s.port)
                        && (m.gateways.is_empty()
                            || m.gateways.iter().any(|g| s.is_gateway(g, &vs.namespace)))
                })
                .flat_map(|m| m.sni_hosts.iter())
                .filter(|sni| s.hosts().iter().any(|(_, h)| hosts_match(sni, h)))
                .cloned()
                .collect();
            if names.is_empty() {
                continue;
            }
            let Some(target) = destinations(ctx, &vs.namespace, &route.route, s.port) else {
                continue;
            };
            out.push(FilterChain {
                name: format!("{}/{}|tls|{i}", vs.namespace, vs.name),
                filter_chain_match: Some(FilterChainMatch {
                    server_names: names,
                    transport_protocol: TRANSPORT_TLS.to_string(),
                    ..Default::default()
                }),
                filters: vec![tcp_proxy_filter(
                    &format!("{}/{}", vs.namespace, vs.name),
                    target,
                )],
                ..Default::default()
            });
        }
    }
    out
}

/// The first `tcp:` route bound to the server and applying to its port.
fn tcp_target(ctx: &MeshContext, s: &GatewayServer<'_>) -> Option<ClusterSpecifier> {
    for vs in &ctx.gateway_virtual_services {
        if !s.binds(&vs.namespace, &vs.spec) {
            continue;
        }
        for route in &vs.spec.tcp {
            let applies = route.matches.is_empty()
                || route.matches.iter().any(|m| {
                    m.port.is_none_or(|p| p == s.port)
                        && (m.gateways.is_empty()
                            || m.gateways.iter().any(|g| s.is_gateway(g, &vs.namespace)))
                });
            if applies && let Some(target) = destinations(ctx, &vs.namespace, &route.route, s.port)
            {
                return Some(target);
            }
        }
    }
    None
}

fn envoy_tls_version(v: Option<TlsProtocol>) -> i32 {
    (match v {
        None | Some(TlsProtocol::TlsAuto) => EnvoyTls::TlsAuto,
        Some(TlsProtocol::TlsV1_0) => EnvoyTls::TlSv10,
        Some(TlsProtocol::TlsV1_1) => EnvoyTls::TlSv11,
        Some(TlsProtocol::TlsV1_2) => EnvoyTls::TlSv12,
        Some(TlsProtocol::TlsV1_3) => EnvoyTls::TlSv13,
    }) as i32
}

fn file(path: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::Filename(path.to_string())),
        ..Default::default()
    })
}

/// The TLS context terminating a server's TLS; `None` (with a warning) when the
/// server names no certificate.
fn server_tls_context(s: &GatewayServer<'_>, alpn: &[&str]) -> Option<DownstreamTlsContext> {
    let tls = s.server.tls.as_ref()?;
    let mode = tls.effective_mode();
    let mut common = CommonTlsContext {
        alpn_protocols: alpn.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    let mut require_client = None;
    if mode == ServerTlsMode::IstioMutual {
        common.tls_certificate_sds_secret_configs = vec![sds_secret(SDS_DEFAULT)];
        common.validation_context_type = Some(
            ValidationContextType::ValidationContextSdsSecretConfig(sds_secret(SDS_ROOTCA)),
        );
        require_client = bool_value(true);
    } else {
        if !tls.credential_name.is_empty() {
            common.tls_certificate_sds_secret_configs = vec![sds_secret(&tls.credential_name)];
        } else if !tls.server_certificate.is_empty() && !tls.private_key.is_empty() {
            common.tls_certificates = vec![TlsCertificate {
                certificate_chain: file(&tls.server_certificate),
                private_key: file(&tls.private_key),
                ..Default::default()
            }];
        } else {
            tracing::warn!(gateway = %s.gateway.name, port = s.port, "gateway server terminates TLS without credentialName or certificate files; skipped");
            return None;
        }
        if matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual) {
            if !tls.credential_name.is_empty() {
                common.validation_context_type =
                    Some(ValidationContextType::ValidationContextSdsSecretConfig(
                        sds_secret(&format!("{}-cacert", tls.credential_name)),
                    ));
            } else if !tls.ca_certificates.is_empty() {
                common.validation_context_type = Some(ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: file(&tls.ca_certificates),
                        ..Default::default()
                    },
                ));
            } else {
                tracing::warn!(gateway = %s.gateway.name, port = s.port, "MUTUAL gateway server without CA certificates; skipped");
                return None;
            }
            require_client = bool_value(mode == ServerTlsMode::Mutual);
        }
    }
    if tls.min_protocol_version.is_some()
        || tls.max_protocol_version.is_some()
        || !tls.cipher_suites.is_empty()
    {
        common.tls_params = Some(TlsParameters {
            tls_minimum_protocol_version: envoy_tls_version(tls.min_protocol_version),
            tls_maximum_protocol_version: envoy_tls_version(tls.max_protocol_version),
            cipher_suites: tls.cipher_suites.clone(),
            ..Default::default()
        });
    }
    Some(DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: require_client,
        ..Default::default()
    })
}
