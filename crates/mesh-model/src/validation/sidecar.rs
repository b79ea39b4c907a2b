//! Sidecar validation.

use super::{Checker, common, destination_rule::connection_pool, gateway};
use crate::{
    host,
    networking::{
        CaptureMode, IstioEgressListener, IstioIngressListener, OutboundTrafficMode, ServerTlsMode,
        Sidecar,
    },
};

pub(super) fn check(c: &mut Checker<'_>, sc: &Sidecar) {
    c.opt("workloadSelector", &sc.workload_selector, |c, s| {
        c.at("labels", |c| common::selector_labels(c, &s.labels))
    });
    // Classic Istio requires egress listeners; current Istio accepts any non-empty Sidecar.
    if sc.egress.is_empty() {
        c.error_at("egress", "a Sidecar needs at least one egress listener");
    }
    c.each("ingress", &sc.ingress, |c, l| ingress(c, l));
    for i in common::repeated(&sc.ingress, |l| l.port.as_ref().map(|p| p.number)) {
        let number = sc.ingress[i].port.as_ref().map_or(0, |p| p.number);
        c.at("ingress", |c| {
            c.index(i, |c| {
                c.error_at(
                    "port.number",
                    format!("port {number} is used by another ingress listener"),
                )
            })
        });
    }
    c.each("egress", &sc.egress, |c, l| egress(c, l));
    let last = sc.egress.len().saturating_sub(1);
    for (i, l) in sc.egress.iter().enumerate() {
        if l.port.is_none() && i != last {
            c.at("egress", |c| {
                c.index(i, |c| {
                    c.error(
                        "only the last egress listener may omit its port (the catch-all listener)",
                    )
                })
            });
        }
    }
    fn ip_port(l: &IstioEgressListener) -> Option<u32> {
        l.port.as_ref().map(|p| p.number).filter(|n| *n != 0)
    }
    for i in common::repeated(&sc.egress, ip_port) {
        let number = ip_port(&sc.egress[i]).unwrap_or_default();
        c.at("egress", |c| {
            c.index(i, |c| {
                c.error_at(
                    "port.number",
                    format!("port {number} is used by another egress listener"),
                )
            })
        });
    }
    c.opt(
        "inboundConnectionPool",
        &sc.inbound_connection_pool,
        |c, cp| connection_pool(c, cp),
    );
    c.opt(
        "outboundTrafficPolicy",
        &sc.outbound_traffic_policy,
        |c, p| {
            c.opt("egressProxy", &p.egress_proxy, |c, d| {
                if p.mode != Some(OutboundTrafficMode::AllowAny) {
                    c.error("egressProxy can only be set with mode ALLOW_ANY");
                }
                if host::validate_fqdn(&d.host).is_err() {
                    c.error_at(
                        "host",
                        format!(
                            "egressProxy host {:?} must be a fully qualified name",
                            d.host
                        ),
                    );
                }
                match &d.port {
                    None => c.error_at("port", "egressProxy needs a port"),
                    Some(port) => {
                        c.at("port", |c| c.at("number", |c| common::port(c, port.number)))
                    }
                }
            });
        },
    );
}

fn ingress(c: &mut Checker<'_>, l: &IstioIngressListener) {
    let proto = match &l.port {
        None => {
            c.error_at("port", "an ingress listener needs a port");
            None
        }
        Some(p) => c.at("port", |c| {
            c.at("number", |c| common::port(c, p.number));
            if !p.name.is_empty() {
                c.at("name", |c| common::dns_label(c, &p.name, "port name"));
            }
            if p.target_port.is_some() {
                c.error_at("targetPort", "targetPort has no effect on Sidecars");
            }
            gateway::protocol(c, p, true)
        }),
    };
    common::bind(c, &l.bind);
    c.at("defaultEndpoint", |c| {
        // Classic Istio requires a default endpoint for every ingress listener.
        if l.default_endpoint.is_empty() {
            c.error("an ingress listener needs a defaultEndpoint (127.0.0.1:<port>, 0.0.0.0:<port> or unix://<path>)");
        } else {
            default_endpoint(c, &l.default_endpoint);
        }
    });
    c.opt("tls", &l.tls, |c, t| {
        if !t.subject_alt_names.is_empty() {
            c.error_at(
                "subjectAltNames",
                "subjectAltNames is not supported on sidecar ingress",
            );
        }
        if t.https_redirect {
            c.error_at(
                "httpsRedirect",
                "httpsRedirect is not supported on sidecar ingress",
            );
        }
        if !t.credential_name.is_empty() {
            c.error_at(
                "credentialName",
                "credentialName is not supported on sidecar ingress",
            );
        }
        if matches!(
            t.mode,
            Some(ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough)
        ) {
            c.error_at(
                "mode",
                "ISTIO_MUTUAL and AUTO_PASSTHROUGH cannot be used on sidecar ingress",
            );
        }
        if proto.is_some_and(|p| !p.is_tls()) || (proto.is_none() && l.port.is_some()) {
            c.error("only HTTPS and TLS ports can have tls settings");
        }
        gateway::server_tls(c, t);
    });
    c.opt("connectionPool", &l.connection_pool, |c, cp| {
        connection_pool(c, cp)
    });
}

/// Checks `127.0.0.1:<port>`, `0.0.0.0:<port>`, `[::1]:<port>`, `[::]:<port>`, `:<port>`
/// or `unix://<path>`.
fn default_endpoint(c: &mut Checker<'_>, endpoint: &str) {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        common::unix_path(c, path);
        return;
    }
    let Some((h, p)) = endpoint.rsplit_once(':') else {
        c.error(format!(
            "defaultEndpoint {endpoint:?} must be <ip>:<port> or unix://<path>"
        ));
        return;
    };
    if !matches!(h, "" | "127.0.0.1" | "0.0.0.0" | "[::1]" | "[::]") {
        c.error(format!(
            "defaultEndpoint {endpoint:?} must be 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port> or unix://<path>"
        ));
    }
    match p.parse::<u32>() {
        Ok(n) => common::port(c, n),
        Err(_) => c.error(format!("defaultEndpoint port {p:?} is not a number")),
    }
}

fn egress(c: &mut Checker<'_>, l: &IstioEgressListener) {
    if let Some(p) = &l.port {
        c.at("port", |c| {
            if !p.name.is_empty() {
                c.at("name", |c| common::dns_label(c, &p.name, "port name"));
            }
            if p.target_port.is_some() {
                c.error_at("targetPort", "targetPort has no effect on Sidecars");
            }
            gateway::protocol(c, p, true);
            if p.number != 0 {
                c.at("number", |c| common::port(c, p.number));
            }
        });
        if p.number == 0 {
            if !l.bind.starts_with("unix://") {
                c.error_at(
                    "bind",
                    "a listener with port 0 must bind to a unix:// domain socket",
                );
            }
            if !matches!(
                l.capture_mode,
                None | Some(CaptureMode::Default | CaptureMode::None)
            ) {
                c.error_at(
                    "captureMode",
                    "unix domain socket listeners need captureMode DEFAULT or NONE",
                );
            }
        }
    }
    common::bind(c, &l.bind);
    if l.hosts.is_empty() {
        c.error_at("hosts", "an egress listener needs at least one host");
    }
    c.each("hosts", &l.hosts, |c, h| egress_host(c, h));
}

/// Checks `<ns>/<host>`: the namespace `*`, `.`, `~` or a namespace name (optionally
/// `~`-prefixed), the host `*` or an FQDN with an optional leading `*.`.
fn egress_host(c: &mut Checker<'_>, entry: &str) {
    let Some((ns, h)) = entry.split_once('/') else {
        c.error(format!(
            "{entry:?}: egress hosts must be of the form <namespace>/<host>"
        ));
        return;
    };
    if ns.is_empty() || h.is_empty() {
        c.error(format!("{entry:?}: namespace and host must not be empty"));
        return;
    }
    let bare = ns.strip_prefix('~').unwrap_or(ns);
    if !(bare.is_empty() || bare == "*" || bare == "." || host::is_dns1123_label(bare)) {
        c.error(format!(
            "{entry:?}: namespace {ns:?} must be `*`, `.`, `~` or a namespace name"
        ));
    }
    gateway::fqdn_or_wildcard_host(c, entry, h, false);
}

#[cfg(test)]
#[path = "sidecar_tests.rs"]
mod tests;
