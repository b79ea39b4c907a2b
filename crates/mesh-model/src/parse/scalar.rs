//! Resolution of plain YAML scalars, exactly as the full YAML parser resolves them
//! (YAML 1.2 core schema): `null`/`~`, `true`/`false`, integers (decimal without
//! leading zeros, `0x`, `0o`, `0b`), finite floats and `.inf`/`.nan`; anything else
//! is a string.

use std::borrow::Cow;

use super::{fast_yaml::Unsupported, node::Node};

/// Reads an unsigned integer as the full parser does: decimal (no leading zeros),
/// `0x`, `0o` or `0b`, with an optional `+`.
fn unsigned_int<T>(
    v: &str,
    from_str_radix: fn(&str, u32) -> Result<T, std::num::ParseIntError>,
) -> Option<T> {
    let unpositive = v.strip_prefix('+').unwrap_or(v);
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = unpositive.strip_prefix(prefix) {
            if rest.starts_with(['+', '-']) {
                return None;
            }
            if let Ok(n) = from_str_radix(rest, radix) {
                return Some(n);
            }
        }
    }
    if unpositive.starts_with(['+', '-']) || digits_but_not_number(v) {
        return None;
    }
    from_str_radix(unpositive, 10).ok()
}

/// Reads a negative integer as the full parser does.
fn negative_int<T>(
    v: &str,
    from_str_radix: fn(&str, u32) -> Result<T, std::num::ParseIntError>,
) -> Option<T> {
    for (prefix, radix) in [("-0x", 16), ("-0o", 8), ("-0b", 2)] {
        if let Some(rest) = v.strip_prefix(prefix)
            && let Ok(n) = from_str_radix(&format!("-{rest}"), radix)
        {
            return Some(n);
        }
    }
    if digits_but_not_number(v) {
        return None;
    }
    from_str_radix(v, 10).ok()
}

/// Leading zeros followed by digits make a string (YAML 1.2).
fn digits_but_not_number(v: &str) -> bool {
    let d = v.strip_prefix(['-', '+']).unwrap_or(v);
    d.len() > 1 && d.starts_with('0') && d[1..].bytes().all(|b| b.is_ascii_digit())
}

/// Reads a finite float (or `.inf`/`.nan`) as the full parser does.
fn float(v: &str) -> Option<f64> {
    let unpositive = match v.strip_prefix('+') {
        Some(u) if u.starts_with(['+', '-']) => return None,
        Some(u) => u,
        None => v,
    };
    if matches!(unpositive, ".inf" | ".Inf" | ".INF") {
        return Some(f64::INFINITY);
    }
    if matches!(v, "-.inf" | "-.Inf" | "-.INF") {
        return Some(f64::NEG_INFINITY);
    }
    if matches!(v, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    unpositive.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Resolves a plain scalar as the full parser does (YAML 1.2 core schema: null,
/// booleans, integers, floats, otherwise a string).
pub(super) fn resolve_plain(v: &str) -> Result<Node<'_>, Unsupported> {
    match v {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Node::Null),
        "true" | "True" | "TRUE" => return Ok(Node::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Node::Bool(false)),
        _ => {}
    }
    // Numbers start with a digit, a sign or a dot (Rust's float parser also reads
    // `inf` and `nan`, but only finite floats count).
    if !v.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.')) {
        return Ok(Node::Str(Cow::Borrowed(v)));
    }
    if let Some(u) = unsigned_int(v, u64::from_str_radix) {
        return Ok(Node::U64(u));
    }
    if let Some(i) = negative_int(v, i64::from_str_radix) {
        return Ok(u64::try_from(i).map_or(Node::I64(i), Node::U64));
    }
    if unsigned_int(v, u128::from_str_radix).is_some()
        || negative_int(v, i128::from_str_radix).is_some()
    {
        return Err(Unsupported);
    }
    if !digits_but_not_number(v)
        && let Some(f) = float(v)
    {
        return Ok(Node::F64(f));
    }
    Ok(Node::Str(Cow::Borrowed(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_core_schema_scalars() {
        assert_eq!(resolve_plain("~"), Ok(Node::Null));
        assert_eq!(resolve_plain("True"), Ok(Node::Bool(true)));
        assert_eq!(resolve_plain("yes"), Ok(Node::Str(Cow::Borrowed("yes"))));
        assert_eq!(resolve_plain("8080"), Ok(Node::U64(8080)));
        assert_eq!(resolve_plain("+5"), Ok(Node::U64(5)));
        assert_eq!(resolve_plain("-0"), Ok(Node::U64(0)));
        assert_eq!(resolve_plain("-12"), Ok(Node::I64(-12)));
        assert_eq!(resolve_plain("0x1F"), Ok(Node::U64(31)));
        assert_eq!(resolve_plain("017"), Ok(Node::Str(Cow::Borrowed("017"))));
        assert_eq!(resolve_plain("1.5"), Ok(Node::F64(1.5)));
        assert_eq!(resolve_plain("1e3"), Ok(Node::F64(1000.0)));
        assert_eq!(resolve_plain("inf"), Ok(Node::Str(Cow::Borrowed("inf"))));
        assert_eq!(resolve_plain("10s"), Ok(Node::Str(Cow::Borrowed("10s"))));
        assert_eq!(resolve_plain("99999999999999999999"), Err(Unsupported));
    }
}
