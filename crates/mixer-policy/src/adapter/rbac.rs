//! The rbac adapter: AuthorizationPolicy semantics for `authorization`
//! instances, so a proxy that asks mixer-policy gets the decision pilot's RBAC
//! filters would make.
//!
//! Which policies apply: those of the root namespace (`istio-system`) and those
//! of the destination's namespace whose selector matches its labels (no selector:
//! every workload there). The decision: a matching DENY policy refuses; otherwise,
//! when ALLOW policies apply, one of them must match; with none, the request is
//! allowed. AUDIT policies never change it; CUSTOM ones are not evaluated here.
//!
//! A rule matches when its `from` (any source), `to` (any operation) and every
//! `when` condition match; an empty part matches everything. Within a source or
//! an operation every field given must match one of its values and none of its
//! `not` values. Values match exactly, by prefix (`abc*`), by suffix (`*abc`) or
//! by presence (`*`); hosts ignore case; IP fields take addresses and CIDR ranges.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
use mesh_model::security::{
    Action, AuthorizationPolicy, Condition, Operation, ROOT_NAMESPACE, Rule, Source,
};

use super::{CheckResult, code};

/// What an authorization instance says about a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthzRequest {
    /// The peer's principal, `<trust-domain>/ns/<namespace>/sa/<account>`.
    pub source_principal: Option<String>,
    /// The peer's namespace.
    pub source_namespace: Option<String>,
    /// The peer's address.
    pub source_ip: Option<IpAddr>,
    /// The original client address (X-Forwarded-For and the like).
    pub remote_ip: Option<IpAddr>,
    /// The end user's principal from a JWT, `<iss>/<sub>`.
    pub request_principal: Option<String>,
    /// The JWT's audiences.
    pub audiences: Vec<String>,
    /// The JWT's presenter (`azp`).
    pub presenter: Option<String>,
    /// The JWT's claims (as text).
    pub claims: BTreeMap<String, String>,
    /// The destination workload's namespace.
    pub destination_namespace: String,
    /// The destination workload's labels.
    pub destination_labels: BTreeMap<String, String>,
    /// The destination address.
    pub destination_ip: Option<IpAddr>,
    /// The destination port.
    pub destination_port: Option<u16>,
    /// TLS server name.
    pub sni: Option<String>,
    /// HTTP host (authority).
    pub host: Option<String>,
    /// HTTP method.
    pub method: Option<String>,
    /// HTTP path.
    pub path: Option<String>,
    /// HTTP headers, names in lower case.
    pub headers: BTreeMap<String, String>,
}

/// An AuthorizationPolicy with where it lives.
#[derive(Debug, Clone)]
pub struct NamedPolicy {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The spec.
    pub spec: AuthorizationPolicy,
}

/// The rbac adapter over a set of policies.
#[derive(Debug, Clone, Default)]
pub struct Rbac {
    policies: Vec<NamedPolicy>,
}

impl Rbac {
    /// Evaluates `policies` (order does not matter).
    pub fn new(policies: Vec<NamedPolicy>) -> Self {
        Self { policies }
    }

    /// The decision for `req`.
    pub fn check(&self, req: &AuthzRequest) -> CheckResult {
        let applies = |p: &&NamedPolicy| {
            p.namespace == ROOT_NAMESPACE
                || (p.namespace == req.destination_namespace
                    && p.spec.selector.as_ref().is_none_or(|s| {
                        s.match_labels
                            .iter()
                            .all(|(k, v)| req.destination_labels.get(k) == Some(v))
                    }))
        };
        let mut allow_policies = false;
        let mut allowed = false;
        for p in self.policies.iter().filter(applies) {
            let matched = p.spec.rules.iter().any(|r| rule_matches(r, req));
            match p.spec.effective_action() {
                Action::Deny if matched => {
                    return denied(format!(
                        "RBAC: access denied by DENY policy {}/{}",
                        p.namespace, p.name
                    ));
                }
                Action::Allow => {
                    allow_policies = true;
                    allowed |= matched;
                }
                _ => {}
            }
        }
        if allow_policies && !allowed {
            return denied("RBAC: access denied: no ALLOW policy matches".into());
        }
        CheckResult::ok(std::time::Duration::from_secs(60), 10_000)
    }
}

fn denied(message: String) -> CheckResult {
    CheckResult {
        code: code::PERMISSION_DENIED,
        message,
        valid_duration: std::time::Duration::from_secs(60),
        valid_use_count: 10_000,
    }
}

fn rule_matches(rule: &Rule, req: &AuthzRequest) -> bool {
    (rule.from.is_empty()
        || rule
            .from
            .iter()
            .any(|f| f.source.as_ref().is_none_or(|s| source_matches(s, req))))
        && (rule.to.is_empty()
            || rule.to.iter().any(|t| {
                t.operation
                    .as_ref()
                    .is_none_or(|o| operation_matches(o, req))
            }))
        && rule.when.iter().all(|c| condition_matches(c, req))
}

/// Istio's string match: exact, `prefix*`, `*suffix`, or `*` (present).
fn string_match(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let eq = |a: &str, b: &str| {
        if ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    if pattern == "*" {
        true
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        value.len() >= prefix.len()
            && value.is_char_boundary(prefix.len())
            && eq(&value[..prefix.len()], prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        value.len() >= suffix.len()
            && value.is_char_boundary(value.len() - suffix.len())
            && eq(&value[value.len() - suffix.len()..], suffix)
    } else {
        eq(pattern, value)
    }
}

/// One field: with values given, one must match; no `not` value may match.
/// An absent request value matches no value (and no `not` value).
fn field<T: ?Sized>(
    values: &[String],
    not_values: &[String],
    actual: Option<&T>,
    matches: impl Fn(&str, &T) -> bool,
) -> bool {
    let positive =
        values.is_empty() || actual.is_some_and(|a| values.iter().any(|v| matches(v, a)));
    let negative = actual.is_some_and(|a| not_values.iter().any(|v| matches(v, a)));
    positive && !negative
}

fn strings(values: &[String], not_values: &[String], actual: Option<&str>) -> bool {
    field(values, not_values, actual, |p, a: &str| {
        string_match(p, a, false)
    })
}

fn ip_match(block: &str, ip: &IpAddr) -> bool {
    block
        .parse::<IpNet>()
        .map(|n| n.contains(ip))
        .or_else(|_| block.parse::<IpAddr>().map(|b| b == *ip))
        .unwrap_or(false)
}

fn ips(values: &[String], not_values: &[String], actual: Option<&IpAddr>) -> bool {
    field(values, not_values, actual, ip_match)
}

fn source_matches(s: &Source, req: &AuthzRequest) -> bool {
    let principal = req.source_principal.as_deref();
    let trust_domain = principal.and_then(|p| p.split('/').next());
    // serviceAccounts are `namespace/name`.
    let account = principal.and_then(|p| {
        let (_, rest) = p.split_once("/ns/")?;
        let (ns, sa) = rest.split_once("/sa/")?;
        Some(format!("{ns}/{sa}"))
    });
    strings(&s.principals, &s.not_principals, principal)
        && strings(
            &s.request_principals,
            &s.not_request_principals,
            req.request_principal.as_deref(),
        )
        && strings(
            &s.namespaces,
            &s.not_namespaces,
            req.source_namespace.as_deref(),
        )
        && strings(
            &s.service_accounts,
            &s.not_service_accounts,
            account.as_deref(),
        )
        && strings(&s.trust_domains, &s.not_trust_domains, trust_domain)
        && ips(&s.ip_blocks, &s.not_ip_blocks, req.source_ip.as_ref())
        && ips(
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
            req.remote_ip.as_ref(),
        )
}

fn operation_matches(o: &Operation, req: &AuthzRequest) -> bool {
    let port = req.destination_port.map(|p| p.to_string());
    field(&o.hosts, &o.not_hosts, req.host.as_deref(), |p, a: &str| {
        string_match(p, a, true)
    }) && strings(&o.ports, &o.not_ports, port.as_deref())
        && strings(&o.methods, &o.not_methods, req.method.as_deref())
        && strings(&o.paths, &o.not_paths, req.path.as_deref())
}

fn condition_matches(c: &Condition, req: &AuthzRequest) -> bool {
    let key = c.key.as_str();
    let indexed = |prefix: &str| key.strip_prefix(prefix).and_then(|k| k.strip_suffix(']'));
    if let Some(h) = indexed("request.headers[") {
        let v = req.headers.get(&h.to_ascii_lowercase()).map(String::as_str);
        return strings(&c.values, &c.not_values, v);
    }
    if let Some(claim) = indexed("request.auth.claims[") {
        return strings(
            &c.values,
            &c.not_values,
            req.claims.get(claim).map(String::as_str),
        );
    }
    let port = req.destination_port.map(|p| p.to_string());
    match key {
        "source.ip" => ips(&c.values, &c.not_values, req.source_ip.as_ref()),
        "remote.ip" => ips(&c.values, &c.not_values, req.remote_ip.as_ref()),
        "destination.ip" => ips(&c.values, &c.not_values, req.destination_ip.as_ref()),
        "source.namespace" => strings(&c.values, &c.not_values, req.source_namespace.as_deref()),
        "source.principal" => strings(&c.values, &c.not_values, req.source_principal.as_deref()),
        "request.auth.principal" => {
            strings(&c.values, &c.not_values, req.request_principal.as_deref())
        }
        "request.auth.presenter" => strings(&c.values, &c.not_values, req.presenter.as_deref()),
        "request.auth.audiences" => {
            let any = |vals: &[String]| {
                req.audiences
                    .iter()
                    .any(|a| vals.iter().any(|v| string_match(v, a, false)))
            };
            (c.values.is_empty() || any(&c.values)) && !any(&c.not_values)
        }
        "destination.port" => strings(&c.values, &c.not_values, port.as_deref()),
        "connection.sni" => strings(&c.values, &c.not_values, req.sni.as_deref()),
        // An unknown key matches nothing: a policy never allows by accident.
        _ => false,
    }
}

#[cfg(test)]
#[path = "rbac_tests.rs"]
mod tests;
