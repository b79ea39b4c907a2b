//! Durations as Istio's YAML writes them (`"1.5s"`, `"100ms"`, `"1h30m"`).
//!
//! Specs keep durations as the strings the user wrote, so they round-trip unchanged;
//! [`parse_duration`] turns one into a [`std::time::Duration`] for validation and for
//! pilot's translation to Envoy.

use std::time::Duration;

/// Why a duration string could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("duration is empty")]
    Empty,
    /// The string starts with `-`.
    #[error("duration must not be negative")]
    Negative,
    /// A number is missing where one was expected.
    #[error("duration is not of the form <number><unit>..., e.g. \"1.5s\" or \"1m30s\"")]
    Syntax,
    /// A number has no unit, or an unknown one.
    #[error("duration needs a unit: one of ns, us, ms, s, m, h")]
    Unit,
    /// The value does not fit.
    #[error("duration is too large")]
    Overflow,
}

const NANOS_PER_MICRO: u64 = 1_000;
const NANOS_PER_MILLI: u64 = 1_000_000;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Parses a duration written as Go and Istio write them: a sequence of decimal numbers,
/// each with an optional fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`),
/// e.g. `"300ms"`, `"1.5s"`, `"2h45m"`; `"0"` alone is zero. Negative durations are
/// refused.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    let s = match s.as_bytes().first() {
        None => return Err(DurationError::Empty),
        Some(b'-') => return Err(DurationError::Negative),
        Some(b'+') => &s[1..],
        Some(_) => s,
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(DurationError::Syntax);
    }
    let bytes = s.as_bytes();
    let mut total: u128 = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Whole part.
        let mut whole: u128 = 0;
        let mut digits = 0usize;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            whole = whole
                .checked_mul(10)
                .and_then(|w| w.checked_add(u128::from(bytes[i] - b'0')))
                .ok_or(DurationError::Overflow)?;
            digits += 1;
            i += 1;
        }
        // Fraction, kept to 18 digits (finer than a nanosecond of an hour).
        let mut frac: u128 = 0;
        let mut scale: u128 = 1;
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                if scale < 1_000_000_000_000_000_000 {
                    frac = frac * 10 + u128::from(bytes[i] - b'0');
                    scale *= 10;
                }
                digits += 1;
                i += 1;
            }
        }
        if digits == 0 {
            return Err(DurationError::Syntax);
        }
        let unit_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_digit() && bytes[i] != b'.' {
            i += 1;
        }
        let unit: u64 = match &s[unit_start..i] {
            "ns" => 1,
            "us" | "µs" | "μs" => NANOS_PER_MICRO,
            "ms" => NANOS_PER_MILLI,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            _ => return Err(DurationError::Unit),
        };
        let unit = u128::from(unit);
        let part = whole
            .checked_mul(unit)
            .and_then(|w| w.checked_add(frac * unit / scale))
            .ok_or(DurationError::Overflow)?;
        total = total.checked_add(part).ok_or(DurationError::Overflow)?;
    }
    let secs =
        u64::try_from(total / u128::from(NANOS_PER_SEC)).map_err(|_| DurationError::Overflow)?;
    // The remainder is below one second, so it fits in u32.
    let nanos = (total % u128::from(NANOS_PER_SEC)) as u32;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_go_and_istio_forms() {
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(
            parse_duration("2h45m").unwrap(),
            Duration::from_secs(2 * 3600 + 45 * 60)
        );
        assert_eq!(
            parse_duration("1m30.5s").unwrap(),
            Duration::from_millis(90_500)
        );
        assert_eq!(parse_duration("10us").unwrap(), Duration::from_micros(10));
        assert_eq!(parse_duration("10µs").unwrap(), Duration::from_micros(10));
        assert_eq!(parse_duration("7ns").unwrap(), Duration::from_nanos(7));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("+3s").unwrap(), Duration::from_secs(3));
    }

    #[test]
    fn refuses_malformed_durations() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("-1s"), Err(DurationError::Negative));
        assert_eq!(parse_duration("10"), Err(DurationError::Unit));
        assert_eq!(parse_duration("10 s"), Err(DurationError::Unit));
        assert_eq!(parse_duration("1d"), Err(DurationError::Unit));
        assert_eq!(parse_duration("s"), Err(DurationError::Syntax));
        assert_eq!(parse_duration("."), Err(DurationError::Syntax));
        assert_eq!(parse_duration("+"), Err(DurationError::Syntax));
        assert_eq!(
            parse_duration("99999999999999999999999999999999999999999h"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_duration("9999999999999999999999h"),
            Err(DurationError::Overflow)
        );
    }
}
