//! ServiceEntry validation.

use super::{Checker, common, gateway};
use crate::{
    host,
    networking::{Resolution, ServiceEntry, WorkloadEntry},
    protocol::Protocol,
};

pub(super) fn check(c: &mut Checker<'_>, se: &ServiceEntry) {
    let resolution = se.effective_resolution();
    let dns = matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin);
    if se.hosts.is_empty() {
        c.error_at("hosts", "a ServiceEntry needs at least one host");
    }
    c.each("hosts", &se.hosts, |c, h| {
        if h == "*" {
            c.error("the host `*` is not allowed in a ServiceEntry");
        } else if let Err(e) = host::validate_host(h) {
            c.error(format!("invalid host {h:?}: {e}"));
        } else if dns && se.endpoints.is_empty() && host::is_wildcard(h) {
            c.error(format!(
                "wildcard host {h:?} cannot be resolved by DNS; list endpoints or use resolution NONE"
            ));
        }
    });
    c.each("addresses", &se.addresses, |c, a| common::ip_or_cidr(c, a));
    if se.addresses.iter().any(|a| a.contains('/'))
        && !matches!(resolution, Resolution::None | Resolution::Static)
    {
        c.error_at(
            "addresses",
            "CIDR addresses are only allowed with resolution NONE or STATIC",
        );
    }

    // Ports: classic Istio requires at least one, with unique names and numbers.
    if se.ports.is_empty() {
        c.error_at("ports", "a ServiceEntry needs at least one port");
    }
    c.each("ports", &se.ports, |c, p| {
        c.at("number", |c| common::port(c, p.number));
        c.at("name", |c| common::dns_label(c, &p.name, "port name"));
        gateway::protocol(c, p, true);
        common::port_at(c, "targetPort", p.target_port);
    });
    for i in common::repeated(&se.ports, |p| {
        (!p.name.is_empty()).then_some(p.name.as_str())
    }) {
        let name = &se.ports[i].name;
        c.at("ports", |c| {
            c.index(i, |c| {
                c.error_at("name", format!("port name {name:?} is already defined"))
            })
        });
    }
    for i in common::repeated(&se.ports, |p| Some(p.number)) {
        let number = se.ports[i].number;
        c.at("ports", |c| {
            c.index(i, |c| {
                c.error_at("number", format!("port {number} is already defined"))
            })
        });
    }
    // Plain TCP cannot tell several hosts apart unless the original destination is kept.
    if resolution != Resolution::None && se.hosts.len() > 1 {
        let distinguishable = se
            .ports
            .iter()
            .all(|p| Protocol::parse(&p.protocol).is_some_and(|p| p.is_http() || p.is_tls()));
        if !distinguishable {
            c.error_at(
                "hosts",
                "several hosts with non-HTTP, non-TLS ports need resolution NONE",
            );
        }
    }

    if !se.endpoints.is_empty() && se.workload_selector.is_some() {
        c.error_at(
            "workloadSelector",
            "endpoints and workloadSelector are mutually exclusive",
        );
    }
    c.opt("workloadSelector", &se.workload_selector, |c, s| {
        c.at("labels", |c| common::selector_labels(c, &s.labels))
    });
    match resolution {
        Resolution::None => {
            if !se.endpoints.is_empty() {
                c.error_at(
                    "endpoints",
                    "endpoints cannot be given with resolution NONE",
                );
            }
        }
        Resolution::Static => {
            if se.endpoints.is_empty() && se.workload_selector.is_none() {
                c.error_at(
                    "endpoints",
                    "resolution STATIC needs endpoints (or a workloadSelector)",
                );
            }
            let unix = se
                .endpoints
                .iter()
                .any(|e| e.address.starts_with("unix://"));
            if unix && se.ports.len() != 1 {
                c.error_at(
                    "ports",
                    "unix domain socket endpoints need exactly one service port",
                );
            }
        }
        Resolution::DnsRoundRobin => {
            if se.endpoints.len() > 1 {
                c.error_at(
                    "endpoints",
                    "resolution DNS_ROUND_ROBIN allows at most one endpoint",
                );
            }
        }
        Resolution::Dns => {}
    }
    c.each("endpoints", &se.endpoints, |c, e| {
        endpoint(c, e, se, resolution)
    });
    common::export_to(c, &se.export_to, true);
}

fn endpoint(c: &mut Checker<'_>, e: &WorkloadEntry, se: &ServiceEntry, resolution: Resolution) {
    c.at("address", |c| {
        let a = e.address.as_str();
        if a.is_empty() {
            if e.network.is_empty() {
                c.error("endpoint address is required");
            }
        } else if let Some(path) = a.strip_prefix("unix://") {
            if resolution != Resolution::Static {
                c.error("unix:// endpoints need resolution STATIC");
            }
            common::unix_path(c, path);
            if !e.ports.is_empty() {
                c.error("unix:// endpoints must not list ports");
            }
        } else if !host::is_ip(a) {
            if resolution == Resolution::Static {
                c.error(format!("endpoint address {a:?} must be an IP address (or unix://) with resolution STATIC"));
            } else if host::validate_fqdn(a).is_err() {
                c.error(format!("endpoint address {a:?} is not an IP address or host name"));
            }
        }
    });
    if !e.ports.is_empty() {
        c.at("ports", |c| {
            for (name, number) in &e.ports {
                c.at(name, |c| {
                    if !se.ports.iter().any(|p| &p.name == name) {
                        c.error(format!(
                            "port {name:?} is not one of the ServiceEntry's port names"
                        ));
                    }
                    common::port(c, *number);
                });
            }
        });
    }
    c.at("labels", |c| common::labels(c, &e.labels));
}

#[cfg(test)]
#[path = "service_entry_tests.rs"]
mod tests;
