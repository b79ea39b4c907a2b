//! Host names as Istio's resources write them: FQDNs, short names and `*` wildcards.
//!
//! Validation, analysis and pilot share these helpers so that "which host does this
//! name mean" and "does this pattern cover that host" are answered one way only.

use std::{
    borrow::Cow,
    collections::{HashMap, hash_map::Entry},
    net::IpAddr,
};

/// The cluster's DNS suffix short names are qualified with.
pub const DEFAULT_DOMAIN_SUFFIX: &str = "svc.cluster.local";

/// The longest host name accepted.
pub const MAX_HOST_LEN: usize = 255;

/// Whether `host` is a wildcard host (`*` or `*.suffix`).
pub fn is_wildcard(host: &str) -> bool {
    host.starts_with('*')
}

/// Qualifies a short name (one without dots) as `<name>.<namespace>.svc.cluster.local`;
/// wildcards, IP addresses and names with a dot are returned unchanged.
pub fn fqdn<'a>(host: &'a str, namespace: &str) -> Cow<'a, str> {
    if host.is_empty() || host.contains('.') || is_wildcard(host) || host.contains(':') {
        Cow::Borrowed(host)
    } else {
        Cow::Owned(format!("{host}.{namespace}.{DEFAULT_DOMAIN_SUFFIX}"))
    }
}

/// Whether two hosts, either of which may be a wildcard, have any name in common
/// (Istio's `Name.Matches`).
pub fn hosts_match(a: &str, b: &str) -> bool {
    match (is_wildcard(a), is_wildcard(b)) {
        (true, true) => {
            let (a, b) = (&a[1..], &b[1..]);
            if a.len() >= b.len() {
                a.ends_with(b)
            } else {
                b.ends_with(a)
            }
        }
        (true, false) => b.ends_with(&a[1..]),
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

/// Whether every name `host` stands for is also covered by `pattern`
/// (Istio's `Name.SubsetOf`).
pub fn host_covered_by(host: &str, pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if is_wildcard(pattern) {
        let suffix = &pattern[1..];
        if is_wildcard(host) {
            host[1..].ends_with(suffix)
        } else {
            host.ends_with(suffix)
        }
    } else {
        host == pattern
    }
}

/// Every suffix of `h` that starts at a dot (`.b.c` and `.c` for `a.b.c`).
fn dot_suffixes(h: &str) -> impl Iterator<Item = &str> {
    h.match_indices('.').map(move |(i, _)| &h[i..])
}

/// For every host that has a name in common with an earlier one (see
/// [`hosts_match`]), its index and the index of one such earlier host. Linear in the
/// number of hosts (and their labels), however many there are.
pub fn overlapping_hosts<S: AsRef<str>>(hosts: &[S]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if hosts.len() <= 16 {
        for (j, b) in hosts.iter().enumerate() {
            if let Some(i) = hosts[..j]
                .iter()
                .position(|a| hosts_match(a.as_ref(), b.as_ref()))
            {
                out.push((j, i));
            }
        }
        return out;
    }
    let mut star: Option<usize> = None;
    let mut exact: HashMap<&str, usize> = HashMap::new();
    // Suffixes (`.example.com`) of wildcard hosts.
    let mut wild: HashMap<&str, usize> = HashMap::new();
    // Every dot-suffix of every host, wildcards included (their own suffix too).
    let mut under: HashMap<&str, usize> = HashMap::new();
    for (j, h) in hosts.iter().enumerate() {
        let h = h.as_ref();
        let earlier = if let Some(i) = star {
            Some(i)
        } else if h == "*" {
            (j > 0).then_some(0)
        } else if let Some(suffix) = h.strip_prefix('*') {
            under
                .get(suffix)
                .or_else(|| {
                    std::iter::once(suffix)
                        .chain(dot_suffixes(suffix))
                        .find_map(|s| wild.get(s))
                })
                .copied()
        } else {
            exact
                .get(h)
                .or_else(|| dot_suffixes(h).find_map(|s| wild.get(s)))
                .copied()
        };
        if let Some(i) = earlier {
            out.push((j, i));
        }
        if h == "*" {
            star.get_or_insert(j);
            continue;
        }
        match h.strip_prefix('*') {
            Some(suffix) => {
                wild.entry(suffix).or_insert(j);
                for s in std::iter::once(suffix).chain(dot_suffixes(suffix)) {
                    if let Entry::Vacant(v) = under.entry(s) {
                        v.insert(j);
                    }
                }
            }
            None => {
                exact.entry(h).or_insert(j);
                for s in dot_suffixes(h) {
                    under.entry(s).or_insert(j);
                }
            }
        }
    }
    out
}

/// Whether `label` is a DNS-1123 label as Istio checks it: 1 to 63 letters, digits and
/// `-`, starting and ending with a letter or digit (upper case is accepted, as Istio does).
pub fn is_dns1123_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// Whether `label` is a lower-case DNS-1123 label, as Kubernetes requires of namespaces.
pub fn is_lower_dns1123_label(label: &str) -> bool {
    is_dns1123_label(label) && !label.bytes().any(|c| c.is_ascii_uppercase())
}

/// Whether `name` is a lower-case DNS-1123 subdomain, as Kubernetes requires of names:
/// at most 253 characters, dot-separated lower-case labels.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(is_lower_dns1123_label)
}

/// Why a host name is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The host is empty.
    #[error("host must not be empty")]
    Empty,
    /// The host is longer than 255 characters.
    #[error("host is longer than 255 characters")]
    TooLong,
    /// The host carries a `:port`.
    #[error("host must not contain a port")]
    Port,
    /// A `*` appears other than as the whole first label.
    #[error("wildcards are only allowed as `*` or as a leading `*.` label")]
    Wildcard,
    /// A label is not a DNS-1123 label.
    #[error(
        "host is not a valid DNS name (each label: letters, digits and '-', at most 63 characters)"
    )]
    Label,
    /// The top-level label is all digits.
    #[error("top-level domain must not be all-numeric")]
    NumericTld,
}

/// Checks a host as written in a VirtualService, DestinationRule or ServiceEntry:
/// an FQDN or short name, optionally with a leading `*.` (or just `*`); no port, at
/// most 255 characters, DNS-1123 labels, a trailing dot allowed.
pub fn validate_host(host: &str) -> Result<(), HostError> {
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if host.len() > MAX_HOST_LEN {
        return Err(HostError::TooLong);
    }
    if host == "*" {
        return Ok(());
    }
    let rest = host.strip_prefix("*.").unwrap_or(host);
    if rest.contains('*') {
        return Err(HostError::Wildcard);
    }
    if rest.contains(':') && rest.parse::<IpAddr>().is_err() {
        return Err(HostError::Port);
    }
    validate_dns_labels(rest)
}

/// Checks dot-separated DNS-1123 labels; the last may be empty (a trailing dot).
pub fn validate_dns_labels(name: &str) -> Result<(), HostError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(HostError::Label);
    }
    let mut tld = "";
    for label in trimmed.split('.') {
        if !is_dns1123_label(label) {
            return Err(HostError::Label);
        }
        tld = label;
    }
    if tld.bytes().all(|c| c.is_ascii_digit()) {
        return Err(HostError::NumericTld);
    }
    Ok(())
}

/// Checks a fully qualified name: like [`validate_host`] but without wildcards.
pub fn validate_fqdn(host: &str) -> Result<(), HostError> {
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if host.len() > MAX_HOST_LEN {
        return Err(HostError::TooLong);
    }
    if host.contains('*') {
        return Err(HostError::Wildcard);
    }
    if host.contains(':') {
        return Err(HostError::Port);
    }
    validate_dns_labels(host)
}

/// Whether `text` is an IPv4 or IPv6 address.
pub fn is_ip(text: &str) -> bool {
    text.parse::<IpAddr>().is_ok()
}

/// Whether `text` is an IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
pub fn is_ip_or_cidr(text: &str) -> bool {
    if text.contains('/') {
        text.parse::<ipnet::IpNet>().is_ok()
    } else {
        is_ip(text)
    }
}

/// A gateway reference from a VirtualService, resolved to the Gateway it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GatewayRef<'a> {
    /// The reserved name `mesh`: every sidecar.
    Mesh,
    /// A Gateway resource.
    Gateway {
        /// Its namespace.
        namespace: &'a str,
        /// Its name.
        name: &'a str,
    },
}

/// Resolves a gateway reference as written in `gateways:` of a VirtualService in
/// `namespace`: `mesh`, `<ns>/<name>`, `<name>` (same namespace), or the legacy
/// `<name>.<ns>[.svc.cluster.local]`.
pub fn resolve_gateway<'a>(reference: &'a str, namespace: &'a str) -> GatewayRef<'a> {
    if reference == "mesh" {
        return GatewayRef::Mesh;
    }
    if let Some((ns, name)) = reference.split_once('/') {
        return GatewayRef::Gateway {
            namespace: ns,
            name,
        };
    }
    let mut parts = reference.split('.');
    match (parts.next(), parts.next()) {
        (Some(name), Some(ns)) => GatewayRef::Gateway {
            namespace: ns,
            name,
        },
        _ => GatewayRef::Gateway {
            namespace,
            name: reference,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifies_short_names_only() {
        assert_eq!(
            fqdn("reviews", "bookinfo"),
            "reviews.bookinfo.svc.cluster.local"
        );
        assert_eq!(fqdn("reviews.bookinfo", "x"), "reviews.bookinfo");
        assert_eq!(fqdn("*", "x"), "*");
        assert_eq!(fqdn("*.example.com", "x"), "*.example.com");
    }

    #[test]
    fn matches_and_covers_wildcards() {
        assert!(hosts_match("*.example.com", "a.example.com"));
        assert!(hosts_match("a.example.com", "*.example.com"));
        assert!(hosts_match("*.example.com", "*.a.example.com"));
        assert!(hosts_match("*", "anything.org"));
        assert!(!hosts_match("a.example.com", "b.example.com"));
        assert!(host_covered_by("a.example.com", "*.example.com"));
        assert!(host_covered_by("*.a.example.com", "*.example.com"));
        assert!(!host_covered_by("*.example.com", "a.example.com"));
        assert!(host_covered_by("x", "*"));
    }

    #[test]
    fn finds_overlapping_hosts_at_any_size() {
        let small = ["a.com", "*.com", "b.org", "b.org"];
        assert_eq!(overlapping_hosts(&small), vec![(1, 0), (3, 2)]);
        let mut many: Vec<String> = (0..100).map(|i| format!("h{i}.example.com")).collect();
        assert!(overlapping_hosts(&many).is_empty());
        many.push("*.example.com".to_string());
        many.push("h5.example.com".to_string());
        many.push("*.a.example.com".to_string());
        many.push("*.com".to_string());
        let found: Vec<usize> = overlapping_hosts(&many)
            .into_iter()
            .map(|(j, _)| j)
            .collect();
        assert_eq!(found, vec![100, 101, 102, 103]);
    }

    proptest::proptest! {
        /// The linear search finds exactly the hosts the pairwise check finds.
        #[test]
        fn overlap_search_matches_pairwise(
            hosts in proptest::collection::vec(
                proptest::sample::select(vec!["*", "*.com", "a.com", "b.a.com", "*.a.com", "*.b.a.com", "c.org", "*.org", "com"]),
                17..40,
            )
        ) {
            let fast: Vec<usize> = overlapping_hosts(&hosts).into_iter().map(|(j, _)| j).collect();
            let pairwise: Vec<usize> = (0..hosts.len())
                .filter(|&j| hosts[..j].iter().any(|a| hosts_match(a, hosts[j])))
                .collect();
            proptest::prop_assert_eq!(fast, pairwise);
        }
    }

    #[test]
    fn validates_hosts() {
        assert_eq!(validate_host("reviews"), Ok(()));
        assert_eq!(validate_host("reviews.default.svc.cluster.local"), Ok(()));
        assert_eq!(validate_host("*.example.com"), Ok(()));
        assert_eq!(validate_host("*"), Ok(()));
        assert_eq!(validate_host("istio.io."), Ok(()));
        assert_eq!(validate_host(""), Err(HostError::Empty));
        assert_eq!(validate_host("*foo.com"), Err(HostError::Wildcard));
        assert_eq!(validate_host("foo.*.com"), Err(HostError::Wildcard));
        assert_eq!(validate_host("foo.com:80"), Err(HostError::Port));
        assert_eq!(validate_host("foo..com"), Err(HostError::Label));
        assert_eq!(validate_host("-foo.com"), Err(HostError::Label));
        assert_eq!(validate_host("1.2.3"), Err(HostError::NumericTld));
        assert_eq!(validate_host(&"a".repeat(256)), Err(HostError::TooLong));
        assert_eq!(validate_host("ünï.com"), Err(HostError::Label));
    }

    #[test]
    fn dns_names() {
        assert!(is_dns1123_subdomain("reviews.v1"));
        assert!(!is_dns1123_subdomain("Reviews"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(is_lower_dns1123_label("bookinfo"));
        assert!(!is_lower_dns1123_label("book.info"));
        assert!(!is_lower_dns1123_label(&"a".repeat(64)));
    }

    #[test]
    fn resolves_gateway_references() {
        assert_eq!(resolve_gateway("mesh", "ns"), GatewayRef::Mesh);
        assert_eq!(
            resolve_gateway("istio-system/ingress", "ns"),
            GatewayRef::Gateway {
                namespace: "istio-system",
                name: "ingress"
            }
        );
        assert_eq!(
            resolve_gateway("gw", "ns"),
            GatewayRef::Gateway {
                namespace: "ns",
                name: "gw"
            }
        );
        assert_eq!(
            resolve_gateway("gw.other.svc.cluster.local", "ns"),
            GatewayRef::Gateway {
                namespace: "other",
                name: "gw"
            }
        );
    }
}
