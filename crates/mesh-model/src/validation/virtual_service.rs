//! VirtualService validation.

use super::{
    Checker, common,
    http_policies::{cors, fault, headers, retries},
};
use crate::{
    host,
    networking::{
        Delegate, HttpDirectResponse, HttpMatchRequest, HttpRedirect, HttpRewrite, HttpRoute,
        HttpRouteDestination, L4MatchAttributes, RouteDestination, TcpRoute, TlsMatchAttributes,
        TlsRoute, VirtualService,
    },
};

/// Largest direct response body (Istio refuses 1MB and more).
const MAX_DIRECT_RESPONSE_BODY: usize = 1024 * 1024;

pub(super) fn check(c: &mut Checker<'_>, vs: &VirtualService) {
    let delegate = vs.hosts.is_empty();
    let gateways = vs.gateways.as_deref().unwrap_or(&[]);
    let mesh_only = gateways.iter().all(|g| g == "mesh");

    if delegate {
        // A VirtualService without hosts is a delegate: it is only reached through a
        // root VirtualService's `delegate`.
        if !gateways.is_empty() {
            c.error_at(
                "gateways",
                "a delegate VirtualService (one without hosts) must not name gateways",
            );
        }
        if !vs.tls.is_empty() {
            c.error_at(
                "tls",
                "a delegate VirtualService (one without hosts) must not have tls routes",
            );
        }
        if !vs.tcp.is_empty() {
            c.error_at(
                "tcp",
                "a delegate VirtualService (one without hosts) must not have tcp routes",
            );
        }
    }
    let mut hosts_valid = true;
    c.each("hosts", &vs.hosts, |c, h| {
        if host::is_ip(h) {
            return;
        }
        if let Err(e) = host::validate_host(h) {
            c.error(format!("invalid host {h:?}: {e}"));
            hosts_valid = false;
        } else if h == "*" && mesh_only {
            c.error("the wildcard host `*` is not allowed for VirtualServices bound to the mesh");
            hosts_valid = false;
        }
    });
    if hosts_valid {
        for (j, i) in host::overlapping_hosts(&vs.hosts) {
            let (a, b) = (&vs.hosts[i], &vs.hosts[j]);
            c.error_at_index(
                "hosts",
                j,
                format!("host {b:?} duplicates or overlaps host {a:?}"),
            );
        }
    }
    c.each("gateways", gateways, |c, g| common::gateway_ref(c, g));

    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        c.error("at least one http, tls or tcp route is required");
    }
    c.each("http", &vs.http, |c, r| http_route(c, r, delegate));
    c.each("tls", &vs.tls, |c, r| tls_route(c, r, vs));
    c.each("tcp", &vs.tcp, |c, r| tcp_route(c, r));
    common::export_to(c, &vs.export_to, false);
}

fn http_route(c: &mut Checker<'_>, r: &HttpRoute, in_delegate: bool) {
    route_conflicts(c, r, in_delegate);
    c.each("match", &r.matches, |c, m| http_match(c, m));
    http_destinations(c, &r.route);
    c.opt("redirect", &r.redirect, |c, red| redirect(c, red));
    c.opt("directResponse", &r.direct_response, |c, d| {
        direct_response(c, d)
    });
    c.opt("delegate", &r.delegate, |c, d| delegate_ref(c, d));
    c.opt("rewrite", &r.rewrite, |c, rw| rewrite(c, rw));
    common::duration(c, "timeout", &r.timeout);
    c.opt("retries", &r.retries, |c, rt| retries(c, rt));
    c.opt("fault", &r.fault, |c, f| fault(c, f));
    c.opt("mirror", &r.mirror, |c, d| common::destination(c, d));
    if let Some(p) = r.mirror_percent
        && p > 100
    {
        c.error_at(
            "mirrorPercent",
            format!("mirrorPercent {p} must be at most 100"),
        );
    }
    c.opt("mirrorPercentage", &r.mirror_percentage, |c, p| {
        common::percent(c, p)
    });
    c.each("mirrors", &r.mirrors, |c, m| {
        c.at("destination", |c| common::destination(c, &m.destination));
        c.opt("percentage", &m.percentage, |c, p| common::percent(c, p));
    });
    c.opt("corsPolicy", &r.cors_policy, |c, p| cors(c, p));
    c.opt("headers", &r.headers, |c, h| headers(c, h));
}

fn route_conflicts(c: &mut Checker<'_>, r: &HttpRoute, in_delegate: bool) {
    if let Some(_d) = &r.delegate {
        if in_delegate {
            c.error_at(
                "delegate",
                "a delegate VirtualService cannot delegate again",
            );
        }
        if !r.route.is_empty() {
            c.error_at(
                "route",
                "route must not be set on an HTTP route that delegates",
            );
        }
        if r.redirect.is_some() {
            c.error_at(
                "redirect",
                "redirect must not be set on an HTTP route that delegates",
            );
        }
        if r.direct_response.is_some() {
            c.error_at(
                "directResponse",
                "directResponse must not be set on an HTTP route that delegates",
            );
        }
        return;
    }
    if r.redirect.is_some() {
        if !r.route.is_empty() {
            c.error_at(
                "redirect",
                "an HTTP route cannot have both route and redirect",
            );
        }
        if r.direct_response.is_some() {
            c.error_at(
                "directResponse",
                "an HTTP route cannot have both redirect and directResponse",
            );
        }
        if r.fault.is_some() {
            c.error_at("fault", "an HTTP route cannot have both fault and redirect");
        }
        if r.rewrite.is_some() {
            c.error_at(
                "rewrite",
                "an HTTP route cannot have both rewrite and redirect",
            );
        }
    } else if r.direct_response.is_some() {
        if !r.route.is_empty() {
            c.error_at(
                "directResponse",
                "an HTTP route cannot have both route and directResponse",
            );
        }
        if r.fault.is_some() {
            c.error_at(
                "fault",
                "an HTTP route cannot have both fault and directResponse",
            );
        }
        if r.rewrite.is_some() {
            c.error_at(
                "rewrite",
                "an HTTP route cannot have both rewrite and directResponse",
            );
        }
    } else if r.route.is_empty() {
        c.error("an HTTP route needs one of route, redirect, directResponse or delegate");
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        c.error_at(
            "mirrors",
            "an HTTP route cannot have both mirror and mirrors",
        );
    }
}

fn match_header_name(c: &mut Checker<'_>, name: &str) {
    if !name.starts_with("@request.auth.claims") {
        common::header_name(c, name);
    }
}

fn http_match(c: &mut Checker<'_>, m: &HttpMatchRequest) {
    c.opt("uri", &m.uri, |c, s| common::string_match(c, s, true));
    c.opt("scheme", &m.scheme, |c, s| {
        common::string_match(c, s, false)
    });
    c.opt("method", &m.method, |c, s| {
        common::string_match(c, s, false)
    });
    c.opt("authority", &m.authority, |c, s| {
        common::string_match(c, s, false)
    });
    if !m.headers.is_empty() {
        c.at("headers", |c| {
            for (name, sm) in &m.headers {
                c.at(name, |c| {
                    match_header_name(c, name);
                    common::string_match(c, sm, false);
                });
            }
        });
    }
    if !m.without_headers.is_empty() {
        c.at("withoutHeaders", |c| {
            for (name, sm) in &m.without_headers {
                c.at(name, |c| {
                    match_header_name(c, name);
                    // `regex: "*"` means "header present", not a regular expression.
                    if sm.regex.as_deref() != Some("*") {
                        common::string_match(c, sm, false);
                    }
                });
            }
        });
    }
    if !m.query_params.is_empty() {
        c.at("queryParams", |c| {
            for (name, sm) in &m.query_params {
                c.at(name, |c| common::string_match(c, sm, false));
            }
        });
    }
    common::port_at(c, "port", m.port);
    c.at("sourceLabels", |c| common::labels(c, &m.source_labels));
    c.each("gateways", &m.gateways, |c, g| common::gateway_ref(c, g));
    if !m.source_namespace.is_empty() {
        c.at("sourceNamespace", |c| {
            common::dns_label(c, &m.source_namespace, "sourceNamespace")
        });
    }
}

/// Checks weights: each at most 100 and, with more than one destination, a total of 100
/// (the classic Istio rule; current Istio only refuses a zero total).
fn weights(c: &mut Checker<'_>, weights: impl Iterator<Item = Option<u32>>, count: usize) {
    let mut total: u64 = 0;
    for (i, w) in weights.enumerate() {
        let w = w.unwrap_or(0);
        if w > 100 {
            c.at("route", |c| {
                c.index(i, |c| {
                    c.error_at("weight", format!("weight {w} must be at most 100"))
                })
            });
        }
        total += u64::from(w);
    }
    if count > 1 && total != 100 {
        c.error_at(
            "route",
            format!("the weights of the destinations add up to {total}; with more than one destination they must add up to 100"),
        );
    }
}

fn http_destinations(c: &mut Checker<'_>, route: &[HttpRouteDestination]) {
    c.each("route", route, |c, d| {
        c.at("destination", |c| common::destination(c, &d.destination));
        c.opt("headers", &d.headers, |c, h| headers(c, h));
    });
    weights(c, route.iter().map(|d| d.weight), route.len());
}

fn route_destinations(c: &mut Checker<'_>, route: &[RouteDestination]) {
    c.each("route", route, |c, d| {
        c.at("destination", |c| common::destination(c, &d.destination))
    });
    weights(c, route.iter().map(|d| d.weight), route.len());
}

fn redirect(c: &mut Checker<'_>, r: &HttpRedirect) {
    if r.uri.is_empty()
        && r.authority.is_empty()
        && r.scheme.is_empty()
        && r.port.is_none()
        && r.derive_port.is_none()
    {
        c.error("a redirect must set uri, authority, scheme or port");
    }
    if let Some(code) = r.redirect_code
        && !(300..=399).contains(&code)
    {
        c.error_at(
            "redirectCode",
            format!("redirect code {code} is not a 3xx code"),
        );
    }
    if !r.scheme.is_empty() && r.scheme != "http" && r.scheme != "https" {
        c.error_at(
            "scheme",
            format!(
                "redirect scheme {:?} must be \"http\" or \"https\"",
                r.scheme
            ),
        );
    }
    common::port_at(c, "port", r.port);
    if r.port.is_some() && r.derive_port.is_some() {
        c.error_at("derivePort", "port and derivePort are mutually exclusive");
    }
}

fn direct_response(c: &mut Checker<'_>, d: &HttpDirectResponse) {
    if !(200..=599).contains(&d.status) {
        c.error_at(
            "status",
            format!("status {} is not an HTTP status in 200..599", d.status),
        );
    }
    c.opt("body", &d.body, |c, b| match (&b.string, &b.bytes) {
        (Some(s), None) | (None, Some(s)) => {
            if s.len() >= MAX_DIRECT_RESPONSE_BODY {
                c.error("a direct response body must be smaller than 1MB");
            }
        }
        _ => c.error("exactly one of string or bytes must be set"),
    });
}

fn delegate_ref(c: &mut Checker<'_>, d: &Delegate) {
    c.at("name", |c| {
        if d.name.is_empty() {
            c.error("delegate name is required");
        } else if !host::is_dns1123_subdomain(&d.name) {
            c.error(format!(
                "delegate name {:?} is not a valid resource name",
                d.name
            ));
        }
    });
    if !d.namespace.is_empty() && !host::is_lower_dns1123_label(&d.namespace) {
        c.error_at(
            "namespace",
            format!(
                "delegate namespace {:?} is not a valid namespace",
                d.namespace
            ),
        );
    }
}

fn rewrite(c: &mut Checker<'_>, r: &HttpRewrite) {
    if r.uri.is_empty() && r.authority.is_empty() && r.uri_regex_rewrite.is_none() {
        c.error("a rewrite must set uri, authority or uriRegexRewrite");
    }
    if !r.uri.is_empty() && r.uri_regex_rewrite.is_some() {
        c.error_at(
            "uriRegexRewrite",
            "uri and uriRegexRewrite are mutually exclusive",
        );
    }
    c.opt("uriRegexRewrite", &r.uri_regex_rewrite, |c, rr| {
        if rr.pattern.is_empty() {
            c.error_at("match", "match is required");
        } else if let Err(e) = common::validate_regex(&rr.pattern) {
            c.error_at("match", e);
        }
        if rr.rewrite.is_empty() {
            c.error_at("rewrite", "rewrite is required");
        }
    });
}

fn tls_route(c: &mut Checker<'_>, r: &TlsRoute, vs: &VirtualService) {
    if r.matches.is_empty() {
        c.error_at(
            "match",
            "a TLS route needs at least one match with sniHosts",
        );
    }
    c.each("match", &r.matches, |c, m| tls_match(c, m, vs));
    if r.route.is_empty() {
        c.error_at("route", "a TLS route needs at least one destination");
    }
    route_destinations(c, &r.route);
}

fn tls_match(c: &mut Checker<'_>, m: &TlsMatchAttributes, vs: &VirtualService) {
    if m.sni_hosts.is_empty() {
        c.error_at("sniHosts", "a TLS match needs at least one SNI host");
    }
    c.each("sniHosts", &m.sni_hosts, |c, sni| {
        if host::is_ip(sni) {
            return;
        }
        if let Err(e) = host::validate_host(sni) {
            c.error(format!("invalid SNI host {sni:?}: {e}"));
        } else if !vs.hosts.iter().any(|h| host::host_covered_by(sni, h)) {
            c.error(format!(
                "SNI host {sni:?} is not covered by any of the VirtualService's hosts"
            ));
        }
    });
    c.each("destinationSubnets", &m.destination_subnets, |c, s| {
        common::ip_or_cidr(c, s)
    });
    common::port_at(c, "port", m.port);
    c.at("sourceLabels", |c| common::labels(c, &m.source_labels));
    c.each("gateways", &m.gateways, |c, g| common::gateway_ref(c, g));
    if !m.source_namespace.is_empty() {
        c.at("sourceNamespace", |c| {
            common::dns_label(c, &m.source_namespace, "sourceNamespace")
        });
    }
}

fn tcp_route(c: &mut Checker<'_>, r: &TcpRoute) {
    c.each("match", &r.matches, |c, m| l4_match(c, m));
    if r.route.is_empty() {
        c.error_at("route", "a TCP route needs at least one destination");
    }
    route_destinations(c, &r.route);
}

fn l4_match(c: &mut Checker<'_>, m: &L4MatchAttributes) {
    c.each("destinationSubnets", &m.destination_subnets, |c, s| {
        common::ip_or_cidr(c, s)
    });
    common::port_at(c, "port", m.port);
    if !m.source_subnet.is_empty() {
        c.at("sourceSubnet", |c| common::ip_or_cidr(c, &m.source_subnet));
    }
    c.at("sourceLabels", |c| common::labels(c, &m.source_labels));
    c.each("gateways", &m.gateways, |c, g| common::gateway_ref(c, g));
    if !m.source_namespace.is_empty() {
        c.at("sourceNamespace", |c| {
            common::dns_label(c, &m.source_namespace, "sourceNamespace")
        });
    }
}

#[cfg(test)]
#[path = "virtual_service_tests.rs"]
mod tests;
