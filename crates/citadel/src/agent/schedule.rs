//! When to renew: at a random point between 50 % and 80 % of a certificate's
//! lifetime, and after a failure, again after an exponentially growing, jittered
//! delay (1 s doubling to 60 s).
//!
//! Pure arithmetic on `SystemTime` and `Duration`, so it is tested without clocks.

use std::time::{Duration, SystemTime};

/// Earliest renewal point, as a fraction of the lifetime.
pub const RENEW_FROM: f64 = 0.5;
/// Latest renewal point, as a fraction of the lifetime.
pub const RENEW_UNTIL: f64 = 0.8;
/// First retry delay after a failed renewal.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Shortest wait before any renewal, so a certificate that is already due (or a CA
/// handing out certificates that are) cannot make the agent spin.
pub const MIN_WAIT: Duration = Duration::from_millis(500);

/// The lifetime the schedule counts from: `not_before` to `not_after`, but
/// starting no earlier than `received` (citadel backdates `notBefore` a little for
/// clock skew, which would otherwise eat into a short lifetime).
pub fn lifetime(not_before: SystemTime, not_after: SystemTime, received: SystemTime) -> Duration {
    let start = not_before.max(received);
    not_after.duration_since(start).unwrap_or_default()
}

/// The renewal point for a certificate valid until `not_after`, received at
/// `received`, with `fraction` of its lifetime gone (clamped to 50–80 %).
pub fn renew_at_fraction(
    not_before: SystemTime,
    not_after: SystemTime,
    received: SystemTime,
    fraction: f64,
) -> SystemTime {
    let fraction = fraction.clamp(RENEW_FROM, RENEW_UNTIL);
    let start = not_before.max(received);
    start + lifetime(not_before, not_after, received).mul_f64(fraction)
}

/// A random renewal point between 50 % and 80 % of the lifetime.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime, received: SystemTime) -> SystemTime {
    let fraction = RENEW_FROM + fastrand::f64() * (RENEW_UNTIL - RENEW_FROM);
    renew_at_fraction(not_before, not_after, received, fraction)
}

/// How long to wait from `now` until `at` (at least [`MIN_WAIT`]).
pub fn wait_until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or_default().max(MIN_WAIT)
}

/// Retry delays after failures: 1 s, 2 s, 4 s … capped at 60 s, each with up to
/// ±20 % jitter so agents that failed together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// A backoff at its first step.
    pub fn new() -> Self {
        Self {
            next: BACKOFF_INITIAL,
        }
    }

    /// The un-jittered delay the next failure gets.
    pub fn base(&self) -> Duration {
        self.next
    }

    /// The delay after one more failure (jittered), advancing the step.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        jitter(base, fastrand::f64())
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.next = BACKOFF_INITIAL;
    }
}

/// `base` scaled by a factor between 0.8 and 1.2 chosen by `r` in [0, 1).
pub fn jitter(base: Duration, r: f64) -> Duration {
    base.mul_f64(0.8 + 0.4 * r.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn renewal_falls_between_half_and_four_fifths_of_the_lifetime() {
        let (nb, na) = (t(1000), t(2000));
        for _ in 0..10_000 {
            let at = renew_at(nb, na, nb);
            assert!(at >= t(1500) && at <= t(1800), "{at:?}");
        }
        assert_eq!(renew_at_fraction(nb, na, nb, 0.0), t(1500), "clamped low");
        assert_eq!(renew_at_fraction(nb, na, nb, 1.0), t(1800), "clamped high");
        // Renewal points spread over the window rather than bunching.
        let spread: Vec<SystemTime> = (0..1000).map(|_| renew_at(nb, na, nb)).collect();
        assert!(spread.iter().any(|a| *a < t(1560)));
        assert!(spread.iter().any(|a| *a > t(1740)));
    }

    #[test]
    fn a_backdated_not_before_counts_from_receipt() {
        // Issued for 10 s but backdated by 60 s: renew 5–8 s after receipt, not at once.
        let (nb, received, na) = (t(940), t(1000), t(1010));
        assert_eq!(lifetime(nb, na, received), Duration::from_secs(10));
        let at = renew_at(nb, na, received);
        assert!(at >= t(1005) && at <= t(1008), "{at:?}");
        assert_eq!(lifetime(t(5), t(1), t(0)), Duration::ZERO, "expired");
    }

    #[test]
    fn waits_are_never_negative_nor_shorter_than_the_floor() {
        assert_eq!(wait_until(t(10), t(20)), MIN_WAIT);
        assert_eq!(wait_until(t(20), t(10)), Duration::from_secs(10));
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_bounded_jitter_and_resets() {
        let mut b = Backoff::new();
        let bases: Vec<u64> = (0..9)
            .map(|_| {
                let base = b.base();
                let d = b.next_delay();
                assert!(
                    d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2),
                    "{d:?} {base:?}"
                );
                base.as_secs()
            })
            .collect();
        assert_eq!(bases, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.base(), BACKOFF_INITIAL);
        assert_eq!(jitter(Duration::from_secs(10), 0.0), Duration::from_secs(8));
        assert_eq!(
            jitter(Duration::from_secs(10), 1.0),
            Duration::from_secs(12)
        );
    }
}
