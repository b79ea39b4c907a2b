//! RDS: one RouteConfiguration per service port, named after the port number.
//!
//! Each holds a virtual host per service with that port; its routes come from the
//! mesh VirtualService for the host, or send everything to the service's cluster.
//!
//! Routes depend on the receiving proxy: match conditions on the calling workload
//! (`sourceLabels`, `sourceNamespace`) are evaluated against it, and per-route CORS
//! policies go only to Envoy. A proxyless gRPC client refuses a route whose
//! per-filter configuration has a type it does not know (gRFC A39), and it has no
//! CORS filter, so it gets none.

use std::collections::{BTreeMap, BTreeSet};

use mesh_api::envoy::{
    envoy::config::{
        core::v3::{DataSource, RuntimeFractionalPercent, data_source::Specifier},
        route::v3::{
            DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
            WeightedCluster,
            route::Action,
            route_action::{
                ClusterSpecifier, HashPolicy, HostRewriteSpecifier, MaxStreamDuration,
                RequestMirrorPolicy,
                hash_policy::{
                    ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter,
                },
            },
            route_match::PathSpecifier,
            weighted_cluster::ClusterWeight,
        },
    },
    envoy::r#type::matcher::v3::RegexMatchAndSubstitute,
    google::protobuf::{Any, Duration as PbDuration, UInt32Value},
};
use mesh_model::{
    host::fqdn,
    networking::{Destination, Headers, HttpMatchRequest, HttpRoute},
};

use super::{
    MeshContext, NamedResource, cluster_name, into_sorted, parse_pb_duration,
    route_match::{regex_matcher, route_match},
    route_policies::{
        apply_headers, cors_config, fault_config, fractional, header_ops, redirect, retry_policy,
    },
};
use crate::model::Service;
use crate::proxy::{Proxy, ProxyKind};

/// Name of the HTTP fault filter, the key of per-route fault configuration.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";

/// Name of the HTTP CORS filter, the key of per-route CORS policies (Envoy only; its
/// HTTP connection managers need the filter for the policies to take effect).
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// The name of the RouteConfiguration for a port.
pub fn route_config_name(port: u32) -> String {
    port.to_string()
}

/// Builds every RouteConfiguration `proxy` receives, sorted by name.
pub fn build_routes(ctx: &MeshContext, proxy: &Proxy) -> Vec<NamedResource> {
    let ports: BTreeSet<u32> = ctx
        .services
        .values()
        .flat_map(|s| s.ports.iter().map(|p| p.number))
        .collect();
    let mut out: BTreeMap<String, Any> = BTreeMap::new();
    for port in ports {
        let rc = build_route_config(ctx, port, proxy);
        out.insert(rc.name.clone(), super::canonical::pack_route_config(&rc));
    }
    into_sorted(out)
}

/// The RouteConfiguration for `port` as `proxy` sees it: one virtual host per service
/// with that port.
pub fn build_route_config(ctx: &MeshContext, port: u32, proxy: &Proxy) -> RouteConfiguration {
    let services: Vec<&Service> = ctx
        .services
        .values()
        .filter(|s| s.port(port).is_some())
        .map(|s| &**s)
        .collect();
    // A service's own names (`host`, `host:port`) are always its own. A short name
    // claimed by more than one virtual host, or equal to another service's own name,
    // is ambiguous (and Envoy refuses duplicates): it is left out.
    let own: BTreeSet<String> = services
        .iter()
        .flat_map(|s| [s.host.clone(), format!("{}:{port}", s.host)])
        .collect();
    let mut claims: BTreeMap<String, usize> = BTreeMap::new();
    let domain_lists: Vec<Vec<String>> = services.iter().map(|s| domains(s, port)).collect();
    for d in domain_lists.iter().flatten() {
        *claims.entry(d.clone()).or_default() += 1;
    }
    let virtual_hosts = services
        .iter()
        .zip(domain_lists)
        .map(|(service, domains)| {
            let is_own =
                |d: &String| *d == service.host || *d == format!("{}:{port}", service.host);
            VirtualHost {
                name: format!("{}:{port}", service.host),
                domains: domains
                    .into_iter()
                    .filter(|d| is_own(d) || (claims.get(d) == Some(&1) && !own.contains(d)))
                    .collect(),
                routes: service_routes(ctx, service, port, proxy),
                ..Default::default()
            }
        })
        .collect();
    RouteConfiguration {
        name: route_config_name(port),
        virtual_hosts,
        ..Default::default()
    }
}

/// Domains of a service's virtual host: `host`, `host:port`, and for Kubernetes-style
/// names the shorter forms clients in the same namespace use, each with and without
/// the port.
pub fn domains(service: &Service, port: u32) -> Vec<String> {
    let mut names = vec![service.host.clone()];
    let suffix = format!(".{}.svc.cluster.local", service.namespace);
    if let Some(short) = service.host.strip_suffix(&suffix)
        && !short.is_empty()
        && !short.contains('.')
    {
        names.push(short.to_string());
        names.push(format!("{short}.{}", service.namespace));
        names.push(format!("{short}.{}.svc", service.namespace));
    }
    let mut out = Vec::with_capacity(names.len() * 2);
    for n in names {
        out.push(format!("{n}:{port}"));
        out.push(n);
    }
    out.sort();
    out.dedup();
    out
}

fn service_routes(ctx: &MeshContext, service: &Service, port: u32, proxy: &Proxy) -> Vec<Route> {
    let mut routes = Vec::new();
    if let Some((ns, vs)) = ctx.virtual_service_for(&service.host) {
        for http in &vs.http {
            routes.extend(translate_http_route(ctx, ns, http, port, proxy));
        }
    }
    if routes.is_empty() {
        let mut route = default_route(&service.host, port);
        if let Some(Action::Route(ra)) = &mut route.action {
            ra.hash_policy = hash_policy(ctx, &service.host, "", port);
        }
        routes.push(route);
    }
    routes
}

/// The route used when no VirtualService applies: everything to the service cluster.
pub fn default_route(host: &str, port: u32) -> Route {
    Route {
        name: "default".to_string(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster_name(port, "", host))),
            timeout: Some(PbDuration::default()),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The Envoy routes for one VirtualService HTTP route on `port`: one per match
/// condition that applies to `proxy` on that port (none if none applies).
fn translate_http_route(
    ctx: &MeshContext,
    ns: &str,
    http: &HttpRoute,
    port: u32,
    proxy: &Proxy,
) -> Vec<Route> {
    let matches: Vec<Option<&HttpMatchRequest>> = if http.matches.is_empty() {
        vec![None]
    } else {
        http.matches
            .iter()
            .filter(|m| applies(m, port, proxy))
            .map(Some)
            .collect()
    };
    let Some(action) = route_action(ctx, ns, http, port) else {
        return Vec::new();
    };
    let per_filter = http.fault.as_ref().and_then(fault_config);
    let cors = http
        .cors_policy
        .as_ref()
        .filter(|_| proxy.kind != ProxyKind::Proxyless)
        .and_then(cors_config);
    matches
        .into_iter()
        .map(|m| {
            let mut route = Route {
                name: route_name(http, m),
                r#match: Some(route_match(m)),
                action: Some(action.clone()),
                ..Default::default()
            };
            if let Some(h) = &http.headers {
                apply_headers(&mut route, h);
            }
            if let Some(fault) = &per_filter {
                route
                    .typed_per_filter_config
                    .insert(FAULT_FILTER.to_string(), fault.clone());
            }
            if let Some(cors) = &cors {
                route
                    .typed_per_filter_config
                    .insert(CORS_FILTER.to_string(), cors.clone());
            }
            route
        })
        .collect()
}

/// Whether a match condition applies to `proxy` (as a mesh client) on `port`,
/// including its conditions on the calling workload's labels and namespace.
fn applies(m: &HttpMatchRequest, port: u32, proxy: &Proxy) -> bool {
    m.port.is_none_or(|p| p == port)
        && (m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"))
        && proxy.matches(&m.source_labels)
        && (m.source_namespace.is_empty() || m.source_namespace == proxy.namespace)
}

fn route_name(http: &HttpRoute, m: Option<&HttpMatchRequest>) -> String {
    match m.map(|m| m.name.as_str()).filter(|n| !n.is_empty()) {
        Some(n) if !http.name.is_empty() => format!("{}.{n}", http.name),
        Some(n) => n.to_string(),
        None => http.name.clone(),
    }
}

fn route_action(ctx: &MeshContext, ns: &str, http: &HttpRoute, port: u32) -> Option<Action> {
    if let Some(r) = &http.redirect {
        return Some(Action::Redirect(redirect(r)));
    }
    if let Some(d) = &http.direct_response {
        let body = d
            .body
            .as_ref()
            .and_then(|b| b.string.clone())
            .map(|s| DataSource {
                specifier: Some(Specifier::InlineString(s)),
                ..Default::default()
            });
        return Some(Action::DirectResponse(DirectResponseAction {
            status: d.status,
            body,
            ..Default::default()
        }));
    }
    if http.route.is_empty() {
        // A delegate route (not supported yet) or nothing to do.
        return None;
    }
    let mut action = RouteAction {
        timeout: Some(PbDuration::default()),
        ..Default::default()
    };
    // Consistent hashing applies when every destination hashes the same way.
    let hashes: Vec<Vec<HashPolicy>> = http
        .route
        .iter()
        .map(|d| {
            let host = fqdn(&d.destination.host, ns);
            let number = destination_port(ctx, &host, &d.destination, port);
            hash_policy(ctx, &host, &d.destination.subset, number)
        })
        .collect();
    if hashes.windows(2).all(|w| w[0] == w[1]) {
        action.hash_policy = hashes.into_iter().next().unwrap_or_default();
    }
    // Destinations, merged by cluster, weights kept in order of first appearance.
    let mut weighted: Vec<(String, u32, Option<&Headers>)> = Vec::new();
    for d in &http.route {
        let cluster = destination_cluster(ctx, ns, &d.destination, port);
        let weight = d
            .weight
            .unwrap_or(if http.route.len() == 1 { 100 } else { 0 });
        match weighted.iter_mut().find(|(c, _, _)| *c == cluster) {
            Some(entry) => entry.1 = entry.1.saturating_add(weight),
            None => weighted.push((cluster, weight, d.headers.as_ref())),
        }
    }
    normalize_weights(&mut weighted);
    action.cluster_specifier = match weighted.as_slice() {
        [(cluster, _, None)] => Some(ClusterSpecifier::Cluster(cluster.clone())),
        _ => {
            let clusters = weighted
                .iter()
                .map(|(name, weight, headers)| {
                    let mut cw = ClusterWeight {
                        name: name.clone(),
                        weight: Some(UInt32Value { value: *weight }),
                        ..Default::default()
                    };
                    if let Some(h) = headers {
                        let (add, remove) = header_ops(h.request.as_ref());
                        cw.request_headers_to_add = add;
                        cw.request_headers_to_remove = remove;
                        let (add, remove) = header_ops(h.response.as_ref());
                        cw.response_headers_to_add = add;
                        cw.response_headers_to_remove = remove;
                    }
                    cw
                })
                .collect();
            Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters,
                ..Default::default()
            }))
        }
    };
    if let Some(t) = http.timeout.as_deref().and_then(parse_pb_duration) {
        action.timeout = Some(t);
        // Proxyless gRPC reads the stream duration, not the route timeout.
        action.max_stream_duration = Some(MaxStreamDuration {
            max_stream_duration: Some(t),
            grpc_timeout_header_max: Some(t),
            ..Default::default()
        });
    }
    if let Some(r) = &http.retries {
        action.retry_policy = retry_policy(r);
    }
    if let Some(rw) = &http.rewrite {
        if !rw.uri.is_empty() {
            action.prefix_rewrite = rw.uri.clone();
        } else if let Some(rr) = rw
            .uri_regex_rewrite
            .as_ref()
            .filter(|r| !r.pattern.is_empty())
        {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex_matcher(&rr.pattern)),
                substitution: rr.rewrite.clone(),
            });
        }
        if !rw.authority.is_empty() {
            action.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(
                rw.authority.clone(),
            ));
        }
    }
    let mirrors = http
        .mirror
        .iter()
        .map(|d| {
            let pct = http
                .mirror_percentage
                .as_ref()
                .map(|p| p.value)
                .or(http.mirror_percent.map(f64::from));
            (d, pct)
        })
        .chain(
            http.mirrors
                .iter()
                .map(|m| (&m.destination, m.percentage.as_ref().map(|p| p.value))),
        );
    for (dest, pct) in mirrors {
        action.request_mirror_policies.push(RequestMirrorPolicy {
            cluster: destination_cluster(ctx, ns, dest, port),
            runtime_fraction: Some(RuntimeFractionalPercent {
                default_value: Some(fractional(pct.unwrap_or(100.0))),
                runtime_key: String::new(),
            }),
            ..Default::default()
        });
    }
    Some(Action::Route(action))
}

/// Scales weights to sum to exactly 100 (largest remainder first), as Envoy requires
/// when `total_weight` (deprecated) is unset; destinations left with 0 are dropped.
/// All-zero weights are shared equally.
pub(crate) fn normalize_weights<T>(weighted: &mut Vec<(String, u32, T)>) {
    if weighted.iter().all(|(_, w, _)| *w == 0) {
        for entry in weighted.iter_mut() {
            entry.1 = 1;
        }
    }
    let total: u64 = weighted.iter().map(|(_, w, _)| u64::from(*w)).sum();
    if total != 100 && total > 0 {
        let mut remainders: Vec<(u64, usize)> = Vec::with_capacity(weighted.len());
        let mut assigned = 0u64;
        for (i, entry) in weighted.iter_mut().enumerate() {
            let scaled = u64::from(entry.1) * 100;
            let share = scaled / total;
            remainders.push((scaled % total, i));
            assigned += share;
            // share <= 100, so it fits.
            entry.1 = u32::try_from(share).unwrap_or(100);
        }
        // Largest remainder first; ties to the earlier destination.
        remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, i) in remainders
            .into_iter()
            .take(usize::try_from(100 - assigned).unwrap_or(0))
        {
            if let Some(entry) = weighted.get_mut(i) {
                entry.1 += 1;
            }
        }
    }
    weighted.retain(|(_, w, _)| *w > 0);
}

/// The cluster a destination names: its port, or the destination service's only
/// port, or the port being routed.
fn destination_cluster(ctx: &MeshContext, ns: &str, d: &Destination, port: u32) -> String {
    let host = fqdn(&d.host, ns);
    cluster_name(destination_port(ctx, &host, d, port), &d.subset, &host)
}

fn destination_port(ctx: &MeshContext, host: &str, d: &Destination, port: u32) -> u32 {
    d.port
        .as_ref()
        .map(|p| p.number)
        .filter(|n| *n > 0)
        .or_else(|| {
            ctx.services
                .get(host)
                .filter(|s| s.ports.len() == 1 && s.port(port).is_none())
                .and_then(|s| s.ports.first())
                .map(|p| p.number)
        })
        .unwrap_or(port)
}

/// The route hash policy for a consistent-hash DestinationRule on the destination.
fn hash_policy(ctx: &MeshContext, host: &str, subset: &str, port: u32) -> Vec<HashPolicy> {
    let rule = ctx.destination_rule(host);
    let subset = rule.and_then(|r| {
        r.subsets
            .iter()
            .find(|s| !subset.is_empty() && s.name == subset)
    });
    let policy = super::clusters::effective_policy(rule, subset, port);
    let Some(ch) = policy.load_balancer.and_then(|lb| lb.consistent_hash) else {
        return Vec::new();
    };
    let specifier = if let Some(h) = ch.http_header_name.filter(|h| !h.is_empty()) {
        PolicySpecifier::Header(Header {
            header_name: h.to_ascii_lowercase(),
            regex_rewrite: None,
        })
    } else if let Some(c) = ch.http_cookie.filter(|c| !c.name.is_empty()) {
        PolicySpecifier::Cookie(Cookie {
            name: c.name,
            ttl: c.ttl.as_deref().and_then(parse_pb_duration),
            path: c.path,
            attributes: Vec::new(),
        })
    } else if ch.use_source_ip == Some(true) {
        PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
    } else if let Some(q) = ch.http_query_parameter_name.filter(|q| !q.is_empty()) {
        PolicySpecifier::QueryParameter(QueryParameter { name: q })
    } else {
        return Vec::new();
    };
    vec![HashPolicy {
        terminal: false,
        policy_specifier: Some(specifier),
    }]
}

/// The Envoy routes for one VirtualService HTTP route as bound to a gateway listening
/// on `port`: the match conditions `for_gateway` accepts are translated like mesh
/// routes (a route whose conditions are all for other gateways gives none).
pub(crate) fn gateway_http_route(
    ctx: &MeshContext,
    ns: &str,
    http: &HttpRoute,
    port: u32,
    for_gateway: &dyn Fn(&HttpMatchRequest) -> bool,
    proxy: &Proxy,
) -> Vec<Route> {
    let mut http = http.clone();
    if !http.matches.is_empty() {
        http.matches.retain(|m| for_gateway(m));
        if http.matches.is_empty() {
            return Vec::new();
        }
        for m in &mut http.matches {
            m.gateways.clear();
        }
    }
    translate_http_route(ctx, ns, &http, port, proxy)
}
