//! Checks shared by several kinds: hosts, ports, labels, durations, string matches,
//! regular expressions, addresses and exportTo lists.

use std::{cell::RefCell, collections::HashSet, hash::Hash, time::Duration};

use super::Checker;
use crate::{
    duration::parse_duration,
    host::{self, HostError},
    networking::{Destination, Labels, Percent, StringMatch},
};

/// Longest regular expression accepted (Envoy's RE2 program size stand-in, as Istio).
pub(crate) const MAX_REGEX_LEN: usize = 1024;

/// How many accepted patterns each thread remembers.
const REGEX_CACHE_SIZE: usize = 4096;

thread_local! {
    /// Patterns already found valid: configurations repeat the same few regexes across
    /// many resources, and compiling one costs far more than the rest of validation.
    static VALID_REGEXES: RefCell<HashSet<Box<str>>> = RefCell::new(HashSet::new());
}

/// Checks that `pattern` is a usable RE2-style regular expression: at most 1024
/// characters and accepted by the `regex` crate (whose syntax is RE2's).
pub fn validate_regex(pattern: &str) -> Result<(), String> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!(
            "regex is too long ({} characters, at most {MAX_REGEX_LEN})",
            pattern.len()
        ));
    }
    if VALID_REGEXES.with(|seen| seen.borrow().contains(pattern)) {
        return Ok(());
    }
    compile_regex(pattern)?;
    VALID_REGEXES.with(|seen| {
        let mut seen = seen.borrow_mut();
        if seen.len() >= REGEX_CACHE_SIZE {
            seen.clear();
        }
        seen.insert(pattern.into());
    });
    Ok(())
}

fn compile_regex(pattern: &str) -> Result<(), String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map(drop)
        .map_err(|e| match e {
            regex::Error::Syntax(text) => format!("invalid regex: {}", text.trim()),
            regex::Error::CompiledTooBig(_) => "regex is too complex".to_string(),
            other => format!("invalid regex: {other}"),
        })
}

/// Checks a duration where Istio requires one: it parses, is at least 1ms and has
/// millisecond precision.
pub fn validate_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text).map_err(|e| format!("{e} (got {text:?})"))?;
    if d < Duration::from_millis(1) {
        return Err(format!("duration {text:?} must be at least 1ms"));
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "duration {text:?} must be a whole number of milliseconds"
        ));
    }
    Ok(d)
}

/// Checks a duration that must be at least 1ms, at `.field`.
pub(crate) fn duration(c: &mut Checker<'_>, field: &str, value: &Option<String>) {
    if let Some(text) = value
        && let Err(e) = validate_duration(text)
    {
        c.error_at(field, e);
    }
}

/// Checks a duration that may be zero, at `.field`.
pub(crate) fn duration_or_zero(c: &mut Checker<'_>, field: &str, value: &Option<String>) {
    if let Some(text) = value {
        match parse_duration(text) {
            Ok(d) if d.is_zero() => {}
            Ok(_) => duration(c, field, value),
            Err(e) => c.error_at(field, format!("{e} (got {text:?})")),
        }
    }
}

fn host_message(h: &str, e: HostError) -> String {
    format!("invalid host {h:?}: {e}")
}

/// Checks a host (FQDN, short name or `*`-prefixed wildcard) at the current path.
pub(crate) fn host(c: &mut Checker<'_>, h: &str) {
    if let Err(e) = host::validate_host(h) {
        c.error(host_message(h, e));
    }
}

/// Checks a port number at the current path.
pub(crate) fn port(c: &mut Checker<'_>, number: u32) {
    if !(1..=65535).contains(&number) {
        c.error(format!(
            "port number {number} must be in the range 1..65535"
        ));
    }
}

/// Checks an optional port number at `.field`.
pub(crate) fn port_at(c: &mut Checker<'_>, field: &str, number: Option<u32>) {
    if let Some(n) = number {
        c.at(field, |c| port(c, n));
    }
}

/// Indices of items whose key repeats an earlier item's key (items without a key are
/// skipped): a scan for short lists, a hash set for long ones.
pub(crate) fn repeated<'a, T, K: Eq + Hash>(
    items: &'a [T],
    key: impl Fn(&'a T) -> Option<K>,
) -> Vec<usize> {
    let mut out = Vec::new();
    if items.len() <= 16 {
        for (i, item) in items.iter().enumerate() {
            if let Some(k) = key(item)
                && items[..i].iter().any(|o| key(o).as_ref() == Some(&k))
            {
                out.push(i);
            }
        }
    } else {
        let mut seen = HashSet::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Some(k) = key(item)
                && !seen.insert(k)
            {
                out.push(i);
            }
        }
    }
    out
}

/// Checks a DNS-1123 label (subset names, port names, namespaces) at the current path.
pub(crate) fn dns_label(c: &mut Checker<'_>, value: &str, what: &str) {
    if value.is_empty() {
        c.error(format!("{what} is required"));
    } else if !host::is_dns1123_label(value) {
        c.error(format!(
            "{what} {value:?} is not a DNS-1123 label (letters, digits and '-', at most 63 characters)"
        ));
    }
}

/// Whether `value` is a Kubernetes qualified name (label name or value part).
fn is_qualified_name(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_label_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => host::is_dns1123_subdomain(prefix) && is_qualified_name(name),
        None => is_qualified_name(key),
    }
}

/// Checks a label map (keys and values as Kubernetes requires) at the current path.
pub(crate) fn labels(c: &mut Checker<'_>, labels: &Labels) {
    for (k, v) in labels {
        if !is_label_key(k) {
            c.error_at(k, format!("invalid label name {k:?}"));
        } else if !(v.is_empty() || is_qualified_name(v)) {
            c.error_at(k, format!("invalid label value {v:?}"));
        }
    }
}

/// Checks the labels of a workload selector: valid labels, no wildcards.
pub(crate) fn selector_labels(c: &mut Checker<'_>, map: &Labels) {
    for (k, v) in map {
        if k.is_empty() {
            c.error("selector label names must not be empty");
        } else if k.contains('*') || v.contains('*') {
            c.error_at(k, "wildcards are not supported in selectors");
        } else if !is_label_key(k) {
            c.error_at(k, format!("invalid label name {k:?}"));
        } else if !(v.is_empty() || is_qualified_name(v)) {
            c.error_at(k, format!("invalid label value {v:?}"));
        }
    }
}

/// Checks an `exportTo` list at `.exportTo`: `.`, `*`, namespaces (and `~` for
/// ServiceEntries), no duplicates, `*` and `~` alone.
pub(crate) fn export_to(c: &mut Checker<'_>, list: &[String], allow_none: bool) {
    c.each("exportTo", list, |c, e| match e.as_str() {
        "." | "*" => {}
        "~" if allow_none => {}
        other => dns_label(c, other, "exportTo namespace"),
    });
    let namespace = c.namespace;
    for i in repeated(list, |e| {
        Some(if e == "." { namespace } else { e.as_str() })
    }) {
        c.error_at_index(
            "exportTo",
            i,
            format!("duplicate exportTo entry {:?}", list[i]),
        );
    }
    if list.len() > 1 {
        if list.iter().any(|e| e == "*") {
            c.error_at(
                "exportTo",
                "`*` exports to every namespace and cannot be combined with other entries",
            );
        }
        if list.iter().any(|e| e == "~") {
            c.error_at(
                "exportTo",
                "`~` exports to no namespace and cannot be combined with other entries",
            );
        }
    }
}

/// Checks a string match at the current path: exactly one of exact, prefix or regex;
/// a non-empty prefix (unless `allow_empty_prefix`, as for URIs) and a valid regex.
pub(crate) fn string_match(c: &mut Checker<'_>, m: &StringMatch, allow_empty_prefix: bool) {
    let set = usize::from(m.exact.is_some())
        + usize::from(m.prefix.is_some())
        + usize::from(m.regex.is_some());
    if set != 1 {
        c.error("exactly one of exact, prefix or regex must be set");
        return;
    }
    if let Some(p) = &m.prefix
        && p.is_empty()
        && !allow_empty_prefix
    {
        c.error_at("prefix", "prefix must not be empty");
    }
    if let Some(re) = &m.regex {
        if re.is_empty() {
            c.error_at("regex", "regex must not be empty");
        } else if let Err(e) = validate_regex(re) {
            c.error_at("regex", e);
        }
    }
}

/// Checks a percentage at the current path: finite and within 0..=100.
pub(crate) fn percent(c: &mut Checker<'_>, p: &Percent) {
    if !(0.0..=100.0).contains(&p.value) {
        c.error_at(
            "value",
            format!("percentage {} must be in the range 0..100", p.value),
        );
    }
}

/// Checks an IP address or CIDR block at the current path.
pub(crate) fn ip_or_cidr(c: &mut Checker<'_>, value: &str) {
    if !host::is_ip_or_cidr(value) {
        c.error(format!("{value:?} is not an IP address or CIDR block"));
    }
}

/// Checks a `unix://` address (an absolute path or an abstract `@name`), given
/// without its scheme.
pub(crate) fn unix_path(c: &mut Checker<'_>, path: &str) {
    if path.is_empty() {
        c.error("unix address must not be empty");
    } else if !(path.starts_with('@') || (path.starts_with('/') && !path.ends_with('/'))) {
        c.error(format!(
            "unix address {path:?} is not an absolute path to a file"
        ));
    }
}

/// Checks a `bind` address: an IP or a `unix://` path.
pub(crate) fn bind(c: &mut Checker<'_>, value: &str) {
    if value.is_empty() {
        return;
    }
    c.at("bind", |c| match value.strip_prefix("unix://") {
        Some(path) => unix_path(c, path),
        None if host::is_ip(value) => {}
        None => c.error(format!(
            "bind address {value:?} is not an IP address or unix:// path"
        )),
    });
}

/// Checks a gateway reference at the current path: `mesh`, `<ns>/<name>`, `<name>`
/// or the legacy `<name>.<ns>...` form.
pub(crate) fn gateway_ref(c: &mut Checker<'_>, reference: &str) {
    if reference == "mesh" {
        return;
    }
    match reference.split_once('/') {
        Some((ns, name)) => {
            if !host::is_dns1123_label(ns) {
                c.error(format!(
                    "gateway namespace {ns:?} in {reference:?} is not a DNS-1123 label"
                ));
            }
            if !host::is_dns1123_label(name) {
                c.error(format!(
                    "gateway name {name:?} in {reference:?} is not a DNS-1123 label"
                ));
            }
        }
        None => {
            if host::validate_fqdn(reference).is_err() {
                c.error(format!(
                    "gateway {reference:?} is not `mesh`, `<namespace>/<name>` or a gateway name"
                ));
            }
        }
    }
}

/// Checks a destination at the current path: a host other than `*`, a DNS-1123 label
/// subset, a valid port.
pub(crate) fn destination(c: &mut Checker<'_>, d: &Destination) {
    c.at("host", |c| {
        if d.host.is_empty() {
            c.error("destination host is required");
        } else if d.host == "*" {
            c.error("destination host must not be `*`");
        } else {
            host(c, &d.host);
        }
    });
    if !d.subset.is_empty() {
        c.at("subset", |c| dns_label(c, &d.subset, "subset name"));
    }
    c.opt("port", &d.port, |c, p| {
        c.at("number", |c| port(c, p.number))
    });
}

/// Checks an HTTP header name (non-empty token characters) at the current path.
pub(crate) fn header_name(c: &mut Checker<'_>, name: &str) {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:".contains(&b));
    if !ok {
        c.error(format!("{name:?} is not a valid HTTP header name"));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_follow_istio() {
        assert!(validate_duration("1ms").is_ok());
        assert!(validate_duration("1.5s").is_ok());
        assert!(validate_duration("0s").is_err());
        assert!(validate_duration("500us").is_err());
        assert!(validate_duration("1.0005s").is_err());
        assert!(validate_duration("soon").is_err());
    }

    #[test]
    fn regexes_are_checked() {
        assert!(validate_regex("^/api/v[0-9]+/.*$").is_ok());
        let err = validate_regex("(unclosed").unwrap_err();
        assert!(err.contains("invalid regex"), "{err}");
        assert!(validate_regex(&"a".repeat(1025)).is_err());
    }

    #[test]
    fn label_rules() {
        assert!(is_label_key("app"));
        assert!(is_label_key("app.kubernetes.io/name"));
        assert!(!is_label_key("-app"));
        assert!(!is_label_key("a/b/c"));
        assert!(is_qualified_name("v1.2_beta-3"));
    }
}
