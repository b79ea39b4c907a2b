//! Envoy RBAC building blocks for AuthorizationPolicy: permission and principal
//! combinators, and the matchers for Istio's value forms (`*` wildcards, SPIFFE
//! identities, namespaces, IPs, ports).

use mesh_api::envoy::envoy::{
    config::{
        core::v3::CidrRange,
        rbac::v3::{
            Permission, Principal,
            permission::{Rule as PermRule, Set as PermSet},
            principal::{Authenticated, Identifier, Set as IdSet},
        },
        route::v3::{HeaderMatcher, header_matcher::HeaderMatchSpecifier},
    },
    r#type::matcher::v3::{
        PathMatcher, RegexMatcher, StringMatcher, path_matcher, regex_matcher::GoogleRe2,
        string_matcher::MatchPattern,
    },
};

use super::chains::parse_cidr;

/// The outcome of translating one field: a constraint, nothing to constrain, or a
/// reason it cannot be enforced here.
pub(super) type Field<T> = Result<Option<T>, String>;

pub(super) fn permission(rule: PermRule) -> Permission {
    Permission { rule: Some(rule) }
}

pub(super) fn principal(id: Identifier) -> Principal {
    Principal {
        identifier: Some(id),
    }
}

pub(super) fn perm_and(mut list: Vec<Permission>) -> Permission {
    match list.len() {
        0 => permission(PermRule::Any(true)),
        1 => list.remove(0),
        _ => permission(PermRule::AndRules(PermSet { rules: list })),
    }
}

pub(super) fn perm_or(mut list: Vec<Permission>) -> Permission {
    match list.len() {
        // An empty OR matches nothing.
        0 => perm_not(permission(PermRule::Any(true))),
        1 => list.remove(0),
        _ => permission(PermRule::OrRules(PermSet { rules: list })),
    }
}

pub(super) fn perm_not(p: Permission) -> Permission {
    permission(PermRule::NotRule(Box::new(p)))
}

pub(super) fn id_and(mut list: Vec<Principal>) -> Principal {
    match list.len() {
        0 => principal(Identifier::Any(true)),
        1 => list.remove(0),
        _ => principal(Identifier::AndIds(IdSet { ids: list })),
    }
}

pub(super) fn id_or(mut list: Vec<Principal>) -> Principal {
    match list.len() {
        0 => id_not(principal(Identifier::Any(true))),
        1 => list.remove(0),
        _ => principal(Identifier::OrIds(IdSet { ids: list })),
    }
}

pub(super) fn id_not(p: Principal) -> Principal {
    principal(Identifier::NotId(Box::new(p)))
}

pub(super) fn matcher(pattern: MatchPattern, ignore_case: bool) -> StringMatcher {
    StringMatcher {
        ignore_case,
        match_pattern: Some(pattern),
    }
}

pub(super) fn regex(re: String) -> StringMatcher {
    #[allow(deprecated)] // google_re2 is still the engine Envoy defaults to.
    let engine = Some(
        mesh_api::envoy::envoy::r#type::matcher::v3::regex_matcher::EngineType::GoogleRe2(
            GoogleRe2::default(),
        ),
    );
    matcher(
        MatchPattern::SafeRegex(RegexMatcher {
            regex: re,
            engine_type: engine,
        }),
        false,
    )
}

/// Istio's value wildcards: `*` (anything non-empty), `*suffix`, `prefix*`, exact.
pub(super) fn wildcard(value: &str, ignore_case: bool) -> StringMatcher {
    if value == "*" {
        regex(".+".to_string())
    } else if let Some(suffix) = value.strip_prefix('*') {
        matcher(MatchPattern::Suffix(suffix.to_string()), ignore_case)
    } else if let Some(prefix) = value.strip_suffix('*') {
        matcher(MatchPattern::Prefix(prefix.to_string()), ignore_case)
    } else {
        matcher(MatchPattern::Exact(value.to_string()), ignore_case)
    }
}

pub(super) fn header(name: &str, m: StringMatcher) -> Permission {
    permission(PermRule::Header(HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(m)),
        ..Default::default()
    }))
}

/// The Host header, case-insensitively; an exact host also matches `host:<port>`.
pub(super) fn host_permission(host: &str) -> Permission {
    let exact = header(":authority", wildcard(host, true));
    if host.contains('*') {
        exact
    } else {
        perm_or(vec![
            exact,
            header(
                ":authority",
                matcher(MatchPattern::Prefix(format!("{host}:")), true),
            ),
        ])
    }
}

pub(super) fn method_permission(method: &str) -> Permission {
    header(":method", wildcard(method, false))
}

pub(super) fn header_permission(name: &str, value: &str) -> Permission {
    header(name, wildcard(value, false))
}

/// The request path without its query string.
pub(super) fn path_permission(path: &str) -> Permission {
    permission(PermRule::UrlPath(PathMatcher {
        rule: Some(path_matcher::Rule::Path(wildcard(path, false))),
    }))
}

pub(super) fn port(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|p| (1..=65535).contains(p))
        .ok_or_else(|| format!("{text:?} is not a port"))
}

pub(super) fn ports(values: &[String]) -> Field<Permission> {
    if values.is_empty() {
        return Ok(None);
    }
    let list = values
        .iter()
        .map(|v| port(v).map(|p| permission(PermRule::DestinationPort(p))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(perm_or(list)))
}

pub(super) fn cidr(text: &str) -> Result<CidrRange, String> {
    parse_cidr(text).ok_or_else(|| format!("{text:?} is not an IP or CIDR"))
}

pub(super) fn ids(values: &[String], f: impl Fn(&str) -> Principal) -> Field<Principal> {
    Ok((!values.is_empty()).then(|| id_or(values.iter().map(|v| f(v)).collect())))
}

pub(super) fn cidr_ids(values: &[String], f: fn(CidrRange) -> Identifier) -> Field<Principal> {
    if values.is_empty() {
        return Ok(None);
    }
    let list = values
        .iter()
        .map(|v| cidr(v).map(|c| principal(f(c))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(id_or(list)))
}

pub(super) fn request_principals(values: &[String]) -> Field<Principal> {
    if values.is_empty() {
        Ok(None)
    } else {
        Err("requestPrincipals need request authentication, which is not configured".into())
    }
}

pub(super) fn authenticated(m: StringMatcher) -> Principal {
    principal(Identifier::Authenticated(Authenticated {
        principal_name: Some(m),
    }))
}

/// A peer identity `<trust-domain>/ns/<ns>/sa/<sa>` as the certificate's SPIFFE URI.
pub(super) fn principal_id(value: &str) -> Principal {
    let m = if value == "*" {
        regex(".+".to_string())
    } else if let Some(suffix) = value.strip_prefix('*') {
        matcher(MatchPattern::Suffix(suffix.to_string()), false)
    } else if let Some(prefix) = value.strip_suffix('*') {
        matcher(MatchPattern::Prefix(format!("spiffe://{prefix}")), false)
    } else {
        matcher(MatchPattern::Exact(format!("spiffe://{value}")), false)
    };
    authenticated(m)
}

/// Escapes RE2 metacharacters.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A regex for one path segment with Istio's `*` prefix/suffix wildcard.
pub(super) fn segment(value: &str) -> String {
    if value == "*" {
        "[^/]+".to_string()
    } else if let Some(suffix) = value.strip_prefix('*') {
        format!("[^/]*{}", escape(suffix))
    } else if let Some(prefix) = value.strip_suffix('*') {
        format!("{}[^/]*", escape(prefix))
    } else {
        escape(value)
    }
}

pub(super) fn namespace_id(ns: &str) -> Principal {
    authenticated(regex(format!("spiffe://[^/]+/ns/{}/.*", segment(ns))))
}

/// `<ns>/<sa>`, or `<sa>` in the policy's namespace.
pub(super) fn service_account_id(value: &str, policy_ns: &str) -> Principal {
    let (ns, sa) = value.split_once('/').unwrap_or((policy_ns, value));
    authenticated(regex(format!(
        "spiffe://[^/]+/ns/{}/sa/{}",
        segment(ns),
        segment(sa)
    )))
}

pub(super) fn trust_domain_id(td: &str) -> Principal {
    authenticated(regex(format!("spiffe://{}/.*", segment(td))))
}
