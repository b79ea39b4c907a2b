//! PeerAuthentication, AuthorizationPolicy and RequestAuthentication validation.

use super::{Checker, common};
use crate::{
    host,
    security::{
        Action, AuthorizationPolicy, Condition, JwtRule, Operation, PeerAuthentication,
        RequestAuthentication, Source,
    },
    selector::{PolicyTargetReference, WorkloadSelector},
};

pub(super) fn check_peer_authentication(c: &mut Checker<'_>, pa: &PeerAuthentication) {
    c.opt("selector", &pa.selector, |c, s| selector(c, s));
    let has_selector = pa
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty());
    if !pa.port_level_mtls.is_empty() {
        if !has_selector {
            c.error_at(
                "portLevelMtls",
                "port-level mTLS needs a selector with matchLabels; mesh- and namespace-wide policies cannot set it",
            );
        }
        c.at("portLevelMtls", |c| {
            for port in pa.port_level_mtls.keys() {
                if !(1..=65535).contains(port) {
                    c.at(&port.to_string(), |c| {
                        c.error(format!("port {port} must be in the range 1..65535"))
                    });
                }
            }
        });
    }
}

fn selector(c: &mut Checker<'_>, s: &WorkloadSelector) {
    c.at("matchLabels", |c| {
        common::selector_labels(c, &s.match_labels)
    });
}

/// Checks that at most one of selector, targetRef and targetRefs is set, and that
/// target references name a kind and a name.
fn targets(
    c: &mut Checker<'_>,
    sel: &Option<WorkloadSelector>,
    target_ref: &Option<PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    let set = usize::from(sel.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        c.error("only one of selector, targetRef or targetRefs can be set");
    }
    c.opt("selector", sel, |c, s| selector(c, s));
    let check = |c: &mut Checker<'_>, t: &PolicyTargetReference| {
        if t.kind.is_empty() {
            c.error_at("kind", "kind is required");
        }
        if t.name.is_empty() {
            c.error_at("name", "name is required");
        }
    };
    c.opt("targetRef", target_ref, |c, t| check(c, t));
    c.each("targetRefs", target_refs, |c, t| check(c, t));
}

pub(super) fn check_authorization_policy(c: &mut Checker<'_>, ap: &AuthorizationPolicy) {
    targets(c, &ap.selector, &ap.target_ref, &ap.target_refs);
    let action = ap.effective_action();
    match (action, &ap.provider) {
        (Action::Custom, None) => c.error_at("provider", "the CUSTOM action needs a provider"),
        (Action::Custom, Some(p)) if p.name.is_empty() => {
            c.error_at("provider.name", "provider name is required")
        }
        (Action::Custom, Some(_)) => {}
        (_, Some(_)) => c.error_at(
            "provider",
            "provider can only be set with the CUSTOM action",
        ),
        (_, None) => {}
    }
    if matches!(action, Action::Deny | Action::Custom) && ap.rules.is_empty() {
        c.error_at(
            "rules",
            "a DENY or CUSTOM policy without rules never applies; add an empty rule `{}` to match every request",
        );
    }
    c.each("rules", &ap.rules, |c, rule| {
        c.each("from", &rule.from, |c, from| match &from.source {
            None => c.error_at("source", "source is required"),
            Some(s) => c.at("source", |c| source(c, s)),
        });
        c.each("to", &rule.to, |c, to| match &to.operation {
            None => c.error_at("operation", "operation is required"),
            Some(op) => c.at("operation", |c| operation(c, op)),
        });
        c.each("when", &rule.when, |c, cond| condition(c, cond));
    });
}

fn non_empty_values(c: &mut Checker<'_>, field: &str, values: &[String]) {
    c.each(field, values, |c, v| {
        if v.is_empty() {
            c.error("values must not be empty strings");
        }
    });
}

fn source(c: &mut Checker<'_>, s: &Source) {
    let lists: [(&str, &[String]); 14] = [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
    ];
    if lists.iter().all(|(_, l)| l.is_empty()) {
        c.error("source must set at least one field");
    }
    for (field, list) in lists {
        // ipBlocks, notIpBlocks, remoteIpBlocks and notRemoteIpBlocks hold addresses.
        if field.ends_with("pBlocks") {
            c.each(field, list, |c, v| common::ip_or_cidr(c, v));
        } else {
            non_empty_values(c, field, list);
        }
    }
    let identities =
        s.principals.len() + s.not_principals.len() + s.namespaces.len() + s.not_namespaces.len();
    if identities > 0 && (!s.service_accounts.is_empty() || !s.not_service_accounts.is_empty()) {
        c.error("serviceAccounts cannot be combined with principals or namespaces");
    }
}

fn ports(c: &mut Checker<'_>, field: &str, ports: &[String]) {
    c.each(field, ports, |c, p| {
        if !p.parse::<u32>().is_ok_and(|n| n <= 65535) {
            c.error(format!("{p:?} is not a port number (0..65535)"));
        }
    });
}

fn operation(c: &mut Checker<'_>, op: &Operation) {
    let lists: [(&str, &[String]); 6] = [
        ("hosts", &op.hosts),
        ("notHosts", &op.not_hosts),
        ("methods", &op.methods),
        ("notMethods", &op.not_methods),
        ("paths", &op.paths),
        ("notPaths", &op.not_paths),
    ];
    if lists.iter().all(|(_, l)| l.is_empty()) && op.ports.is_empty() && op.not_ports.is_empty() {
        c.error("operation must set at least one field");
    }
    for (field, list) in lists {
        non_empty_values(c, field, list);
    }
    ports(c, "ports", &op.ports);
    ports(c, "notPorts", &op.not_ports);
}

/// What a condition key's values must look like.
enum KeyKind {
    Plain,
    Ips,
    Ports,
}

/// Whether `key` is `<prefix>[<name>]` with a non-empty name.
fn is_map_key(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('['))
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|name| !name.is_empty())
}

/// Classifies a condition key, or explains why it is refused.
fn condition_key(key: &str) -> Result<KeyKind, String> {
    match key {
        "source.ip" | "remote.ip" | "destination.ip" => return Ok(KeyKind::Ips),
        "destination.port" => return Ok(KeyKind::Ports),
        "source.namespace"
        | "source.principal"
        | "source.serviceAccount"
        | "source.trustDomain"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => {
            return Ok(KeyKind::Plain);
        }
        "destination.namespace" => {
            return Err("destination.namespace is replaced by the policy's namespace".into());
        }
        "destination.name" | "destination.user" => {
            return Err(format!("{key} is no longer supported"));
        }
        _ => {}
    }
    for prefix in ["request.headers", "request.auth.claims"] {
        if key.starts_with(prefix) {
            return if is_map_key(key, prefix) {
                Ok(KeyKind::Plain)
            } else {
                Err(format!("{key:?} must be of the form {prefix}[<name>]"))
            };
        }
    }
    if key.starts_with("destination.labels") {
        return Err("destination.labels is replaced by the policy's selector".into());
    }
    if let Some(rest) = key.strip_prefix("experimental.envoy.filters.") {
        let shaped = rest
            .find('[')
            .is_some_and(|open| open > 0 && key.ends_with(']') && rest.len() > open + 2);
        return if shaped {
            Ok(KeyKind::Plain)
        } else {
            Err(format!(
                "{key:?} must be of the form experimental.envoy.filters.<filter>[<name>]"
            ))
        };
    }
    Err(format!(
        "unknown condition key {key:?}; known keys: request.headers[<name>], source.ip, remote.ip, \
         source.namespace, source.principal, request.auth.principal, request.auth.audiences, \
         request.auth.presenter, request.auth.claims[<name>], destination.ip, destination.port, \
         connection.sni, experimental.envoy.filters.*"
    ))
}

fn condition(c: &mut Checker<'_>, cond: &Condition) {
    if cond.key.is_empty() {
        c.error_at("key", "key is required");
        return;
    }
    let kind = match condition_key(&cond.key) {
        Ok(kind) => kind,
        Err(e) => {
            c.error_at("key", e);
            return;
        }
    };
    if cond.values.is_empty() && cond.not_values.is_empty() {
        c.error(format!(
            "condition on {:?} needs values or notValues",
            cond.key
        ));
    }
    for (field, list) in [("values", &cond.values), ("notValues", &cond.not_values)] {
        match kind {
            KeyKind::Plain => non_empty_values(c, field, list),
            KeyKind::Ips => c.each(field, list, |c, v| common::ip_or_cidr(c, v)),
            KeyKind::Ports => ports(c, field, list),
        }
    }
}

pub(super) fn check_request_authentication(c: &mut Checker<'_>, ra: &RequestAuthentication) {
    targets(c, &ra.selector, &ra.target_ref, &ra.target_refs);
    c.each("jwtRules", &ra.jwt_rules, |c, r| jwt_rule(c, r));
}

fn jwt_rule(c: &mut Checker<'_>, r: &JwtRule) {
    if r.issuer.is_empty() {
        c.error_at("issuer", "issuer is required");
    }
    if !r.jwks.is_empty() && !r.jwks_uri.is_empty() {
        c.error_at("jwks", "jwks and jwksUri are mutually exclusive");
    }
    if !r.jwks_uri.is_empty()
        && let Err(e) = http_url(&r.jwks_uri)
    {
        c.error_at("jwksUri", e);
    }
    if !r.jwks.is_empty() {
        match serde_json::from_str::<serde_json::Value>(&r.jwks) {
            Ok(serde_json::Value::Object(_)) => {}
            _ => c.error_at("jwks", "jwks must be a JSON Web Key Set (a JSON object)"),
        }
    }
    non_empty_values(c, "audiences", &r.audiences);
    c.each("fromHeaders", &r.from_headers, |c, h| {
        if h.name.is_empty() {
            c.error_at("name", "header name is required");
        } else {
            c.at("name", |c| common::header_name(c, &h.name));
        }
    });
    non_empty_values(c, "fromParams", &r.from_params);
    non_empty_values(c, "fromCookies", &r.from_cookies);
    c.each(
        "outputClaimToHeaders",
        &r.output_claim_to_headers,
        |c, h| {
            if h.header.is_empty() {
                c.error_at("header", "header is required");
            } else {
                c.at("header", |c| common::header_name(c, &h.header));
            }
            if h.claim.is_empty() {
                c.error_at("claim", "claim is required");
            }
        },
    );
    common::duration(c, "timeout", &r.timeout);
    non_empty_values(c, "spaceDelimitedClaims", &r.space_delimited_claims);
}

/// Checks an `http://` or `https://` URL with a host and an optional numeric port.
fn http_url(url: &str) -> Result<(), String> {
    let rest = if url.len() >= 8
        && url.is_char_boundary(8)
        && url[..8].eq_ignore_ascii_case("https://")
    {
        &url[8..]
    } else if url.len() >= 7 && url.is_char_boundary(7) && url[..7].eq_ignore_ascii_case("http://")
    {
        &url[7..]
    } else {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (h, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((ip, tail)) if host::is_ip(ip) => (ip, tail.strip_prefix(':')),
            _ => return Err(format!("{url:?} has an invalid IPv6 host")),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if h.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if !host::is_ip(h) && host::validate_fqdn(h).is_err() {
        return Err(format!("{url:?} has an invalid host {h:?}"));
    }
    if let Some(p) = port
        && !p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n))
    {
        return Err(format!("{url:?} has an invalid port {p:?}"));
    }
    Ok(())
}

#[cfg(test)]
#[path = "security_tests.rs"]
mod tests;
