//! Validation of the mixers' handler, instance, rule and attributemanifest kinds.

use super::{Checker, common};
use crate::{
    host,
    policy::{AttributeManifest, Handler, Instance, Rule, Sampling, ValueType},
};

pub(super) fn check_handler(c: &mut Checker<'_>, h: &Handler) {
    match (h.adapter.is_empty(), h.compiled_adapter.is_empty()) {
        (true, true) => c.error("one of adapter or compiledAdapter is required"),
        (false, false) => c.error_at(
            "adapter",
            "adapter and compiledAdapter are mutually exclusive",
        ),
        _ => {}
    }
    if !h.params.is_null() && !h.params.is_object() {
        c.error_at("params", "params must be a mapping");
    }
    c.opt("connection", &h.connection, |c, conn| {
        c.at("address", |c| {
            if conn.address.is_empty() {
                c.error("address is required");
            } else if !is_host_port(&conn.address) {
                c.error(format!("address {:?} is not <host>:<port>", conn.address));
            }
        });
        common::duration(c, "timeout", &conn.timeout);
    });
}

/// Whether `text` is `<host>:<port>` (host a name or IP, IPv6 in brackets).
fn is_host_port(text: &str) -> bool {
    let Some((h, p)) = text.rsplit_once(':') else {
        return false;
    };
    let h = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    let port_ok = p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
    port_ok && !h.is_empty() && (host::is_ip(h) || host::validate_fqdn(h).is_ok())
}

pub(super) fn check_instance(c: &mut Checker<'_>, i: &Instance) {
    match (i.template.is_empty(), i.compiled_template.is_empty()) {
        (true, true) => c.error("one of template or compiledTemplate is required"),
        (false, false) => c.error_at(
            "template",
            "template and compiledTemplate are mutually exclusive",
        ),
        _ => {}
    }
    if !i.params.is_null() && !i.params.is_object() {
        c.error_at("params", "params must be a mapping");
    }
}

/// Checks a mixer reference: `name`, `name.namespace` (or the legacy
/// `name.kind.namespace`), each part a DNS-1123 label.
fn mixer_ref(c: &mut Checker<'_>, reference: &str, what: &str) {
    if reference.is_empty() {
        c.error(format!("{what} name is required"));
        return;
    }
    let parts = reference.split('.').count();
    if parts > 3 || !reference.split('.').all(host::is_dns1123_label) {
        c.error(format!(
            "{what} {reference:?} must be `name` or `name.namespace`"
        ));
    }
}

pub(super) fn check_rule(c: &mut Checker<'_>, r: &Rule) {
    c.each("actions", &r.actions, |c, a| {
        c.at("handler", |c| mixer_ref(c, &a.handler, "handler"));
        if a.instances.is_empty() {
            c.error_at("instances", "an action needs at least one instance");
        }
        c.each("instances", &a.instances, |c, i| {
            mixer_ref(c, i, "instance")
        });
    });
    for i in common::repeated(&r.actions, |a| {
        (!a.name.is_empty()).then_some(a.name.as_str())
    }) {
        let name = &r.actions[i].name;
        c.at("actions", |c| {
            c.index(i, |c| {
                c.error_at("name", format!("action name {name:?} is used twice"))
            })
        });
    }
    for (field, ops) in [
        ("requestHeaderOperations", &r.request_header_operations),
        ("responseHeaderOperations", &r.response_header_operations),
    ] {
        c.each(field, ops, |c, op| {
            if op.name.is_empty() {
                c.error_at("name", "header name is required");
            }
        });
    }
    c.opt("sampling", &r.sampling, |c, s| sampling(c, s));
}

fn sampling(c: &mut Checker<'_>, s: &Sampling) {
    if s.random.is_some() && s.rate_limit.is_some() {
        c.error("random and rateLimit sampling are mutually exclusive");
    }
    c.opt("random", &s.random, |c, r| {
        c.opt("percentSampled", &r.percent_sampled, |c, p| {
            let max = match p.denominator {
                Some(crate::policy::Denominator::TenThousand) => 10_000,
                _ => 100,
            };
            if p.numerator > max {
                c.error_at(
                    "numerator",
                    format!("numerator {} exceeds the denominator {max}", p.numerator),
                );
            }
        });
    });
    c.opt("rateLimit", &s.rate_limit, |c, r| {
        common::duration(c, "samplingDuration", &r.sampling_duration)
    });
}

pub(super) fn check_attribute_manifest(c: &mut Checker<'_>, m: &AttributeManifest) {
    if m.attributes.is_empty() {
        return;
    }
    c.at("attributes", |c| {
        for (name, info) in &m.attributes {
            c.at(name, |c| {
                if name.is_empty() {
                    c.error("attribute name must not be empty");
                }
                match info.value_type {
                    None | Some(ValueType::ValueTypeUnspecified) => c.error_at(
                        "valueType",
                        "valueType is required: one of STRING, INT64, DOUBLE, BOOL, TIMESTAMP, IP_ADDRESS, \
                         EMAIL_ADDRESS, URI, DNS_NAME, DURATION, STRING_MAP, BYTES",
                    ),
                    Some(_) => {}
                }
            });
        }
    });
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
