//! Text conversions of the language's functions: globs, IP addresses, RFC 3339
//! times, email addresses, DNS names and URIs.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// A `match()` pattern, read once: `"abc*"` prefix, `"*abc"` suffix, else exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Glob {
    Prefix(Box<str>),
    Suffix(Box<str>),
    Exact(Box<str>),
}

impl Glob {
    pub(crate) fn new(pattern: &str) -> Glob {
        if let Some(p) = pattern.strip_suffix('*') {
            Glob::Prefix(p.into())
        } else if let Some(s) = pattern.strip_prefix('*') {
            Glob::Suffix(s.into())
        } else {
            Glob::Exact(pattern.into())
        }
    }

    pub(crate) fn matches(&self, s: &str) -> bool {
        match self {
            Glob::Prefix(p) => s.starts_with(&**p),
            Glob::Suffix(p) => s.ends_with(&**p),
            Glob::Exact(p) => s == &**p,
        }
    }
}

/// `match(s, pattern)` without compiling the pattern.
pub(crate) fn glob_match(s: &str, pattern: &str) -> bool {
    if let Some(p) = pattern.strip_suffix('*') {
        s.starts_with(p)
    } else if let Some(p) = pattern.strip_prefix('*') {
        s.ends_with(p)
    } else {
        s == pattern
    }
}

/// An IPv4 or IPv6 address in text form.
pub(crate) fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| format!("`{s}` is not an IP address"))
}

/// Whether `s` is a DNS name: dot-separated labels of 1 to 63 letters, digits,
/// `-` or `_`, no label starting or ending with `-`, at most 253 bytes; one
/// trailing dot allowed.
pub(crate) fn check_dns_name(s: &str) -> Result<(), String> {
    let name = s.strip_suffix('.').unwrap_or(s);
    let bad = |why: &str| Err(format!("`{s}` is not a DNS name: {why}"));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 253 {
        return bad("longer than 253 bytes");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each label must be 1 to 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad("labels hold letters, digits, `-` and `_` only");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label may not start or end with `-`");
        }
    }
    Ok(())
}

/// Whether `s` is an email address: `local@domain`, the domain a DNS name.
pub(crate) fn check_email(s: &str) -> Result<(), String> {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return Err(format!("`{s}` is not an email address: no `@`"));
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local.chars().all(|c| {
            !c.is_control()
                && !c.is_whitespace()
                && !matches!(
                    c,
                    '<' | '>' | '(' | ')' | ',' | ';' | ':' | '\\' | '"' | '[' | ']' | '@'
                )
        });
    if !local_ok {
        return Err(format!("`{s}` is not an email address: bad local part"));
    }
    check_dns_name(domain).map_err(|e| format!("`{s}` is not an email address: {e}"))
}

/// Whether `s` is an absolute URI: `scheme:rest`, the scheme a letter then
/// letters, digits, `+`, `-` or `.`; no spaces or control characters.
pub(crate) fn check_uri(s: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`{s}` is not a URI: {why}"));
    let Some((scheme, rest)) = s.split_once(':') else {
        return bad("no scheme");
    };
    let mut bytes = scheme.bytes();
    let scheme_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return bad("bad scheme");
    }
    if rest.is_empty() {
        return bad("nothing after the scheme");
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("spaces or control characters");
    }
    Ok(())
}

/// A duration as Go writes them: one or more decimal numbers each with a unit
/// (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), e.g. `0ms`, `1.5s`, `2h45m`; `0`
/// alone is zero.
pub(crate) fn parse_duration(s: &str) -> Option<std::time::Duration> {
    if s == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * nanos;
    }
    (total.is_finite() && total < 1e28).then(|| std::time::Duration::from_nanos(total as u64))
}

/// An RFC 3339 time: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
pub(crate) fn parse_timestamp(s: &str) -> Result<SystemTime, String> {
    parse_rfc3339(s).ok_or_else(|| format!("`{s}` is not an RFC 3339 timestamp"))
}

fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let sep = |at: usize, cs: &[u8]| b.get(at).is_some_and(|c| cs.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, min, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset_secs = match b.get(i) {
        Some(b'Z' | b'z') if b.len() == i + 1 => 0,
        Some(c @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 3600 + m * 60;
            if *c == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec.min(59) - offset_secs;
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))?
            .checked_add(Duration::from_nanos(u64::from(nanos)))
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn globs() {
        let g = Glob::new("/api/*");
        assert!(g.matches("/api/v1") && g.matches("/api/") && !g.matches("/apx"));
        let g = Glob::new("*.svc");
        assert!(g.matches("a.svc") && !g.matches("a.svc.x"));
        let g = Glob::new("abc");
        assert!(g.matches("abc") && !g.matches("abcd"));
        assert!(Glob::new("*").matches("anything"));
        assert!(glob_match("/api/x", "/api/*") && !glob_match("x", "*y"));
    }

    #[test]
    fn timestamps() {
        let t = parse_timestamp("2015-01-02T15:04:05Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_secs(1_420_211_045)
        );
        let t2 = parse_timestamp("2015-01-02T16:04:05.5+01:00").unwrap();
        assert_eq!(t2.duration_since(t).unwrap(), Duration::from_millis(500));
        let before = parse_timestamp("1969-12-31T23:59:59Z").unwrap();
        assert_eq!(
            UNIX_EPOCH.duration_since(before).unwrap(),
            Duration::from_secs(1)
        );
        assert!(parse_timestamp("2024-02-29T00:00:00Z").is_ok());
        for bad in [
            "2015-02-29T00:00:00Z",
            "2015-01-02 15:04:05",
            "2015-01-02T25:04:05Z",
            "2015-1-02T15:04:05Z",
            "2015-01-02T15:04:05.Z",
            "2015-01-02T15:04:05+0100",
            "",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_emails_uris() {
        assert!(check_dns_name("reviews.default.svc.cluster.local").is_ok());
        assert!(check_dns_name("a.b.").is_ok());
        for bad in ["", "a..b", "-a.b", "a b", &"x".repeat(64)] {
            assert!(check_dns_name(bad).is_err(), "{bad}");
        }
        assert!(check_email("jason@example.com").is_ok());
        for bad in ["jason", "@x.com", "a b@x.com", "a@", "a@-x"] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
        assert!(check_uri("http://example.com/a?b").is_ok());
        assert!(check_uri("spiffe://cluster.local/ns/default/sa/x").is_ok());
        for bad in ["example.com", "1http://x", "http:", "http://a b"] {
            assert!(check_uri(bad).is_err(), "{bad}");
        }
        assert!(parse_ip("10.0.0.1").is_ok() && parse_ip("::1").is_ok());
        assert!(parse_ip("10.0.0.256").is_err());
    }
}
