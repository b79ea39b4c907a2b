//! Checks of the policies an HTTP route carries: retries, fault injection, CORS and
//! header manipulation.

use super::{Checker, common};
use crate::networking::{CorsPolicy, HeaderOperations, Headers, HttpFaultInjection, HttpRetry};

/// Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on` conditions Istio accepts.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Methods a CORS policy may allow.
const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

pub(super) fn retries(c: &mut Checker<'_>, r: &HttpRetry) {
    if r.attempts == Some(0)
        && (r.per_try_timeout.is_some()
            || !r.retry_on.is_empty()
            || r.retry_remote_localities.is_some())
    {
        c.error_at(
            "attempts",
            "retry settings are given but attempts is 0 (retries disabled)",
        );
    }
    common::duration(c, "perTryTimeout", &r.per_try_timeout);
    common::duration(c, "backoff", &r.backoff);
    if !r.retry_on.is_empty() {
        for policy in r.retry_on.split(',') {
            let policy = policy.trim();
            let status = policy
                .parse::<u16>()
                .is_ok_and(|s| (100..=599).contains(&s));
            if !status && !RETRY_ON.contains(&policy) {
                c.error_at(
                    "retryOn",
                    format!("{policy:?} is not a valid retryOn condition"),
                );
            }
        }
    }
}

pub(super) fn fault(c: &mut Checker<'_>, f: &HttpFaultInjection) {
    if f.delay.is_none() && f.abort.is_none() {
        c.error("fault injection needs a delay, an abort or both");
    }
    c.opt("delay", &f.delay, |c, d| {
        match (&d.fixed_delay, &d.exponential_delay) {
            (Some(_), None) => common::duration(c, "fixedDelay", &d.fixed_delay),
            (None, Some(_)) => c.error_at("exponentialDelay", "exponentialDelay is not supported"),
            _ => c.error("exactly one of fixedDelay or exponentialDelay must be set"),
        }
        c.opt("percentage", &d.percentage, |c, p| common::percent(c, p));
        if let Some(p) = d.percent
            && p > 100
        {
            c.error_at("percent", format!("percent {p} must be at most 100"));
        }
    });
    c.opt("abort", &f.abort, |c, a| {
        match (a.http_status, &a.grpc_status, &a.http2_error) {
            (Some(s), None, None) => {
                if !(200..=599).contains(&s) {
                    c.error_at(
                        "httpStatus",
                        format!("HTTP status {s} is not in the range 200..599"),
                    );
                }
            }
            (None, Some(g), None) => {
                if !crate::protocol::GRPC_STATUS_NAMES.contains(&g.as_str()) {
                    c.error_at(
                        "grpcStatus",
                        format!("{g:?} is not a gRPC status name such as UNAVAILABLE"),
                    );
                }
            }
            (None, None, Some(_)) => {
                c.error_at("http2Error", "http2Error aborts are not supported")
            }
            _ => c.error("exactly one of httpStatus, grpcStatus or http2Error must be set"),
        }
        c.opt("percentage", &a.percentage, |c, p| common::percent(c, p));
    });
}

pub(super) fn cors(c: &mut Checker<'_>, p: &CorsPolicy) {
    c.each("allowOrigins", &p.allow_origins, |c, m| {
        let empty = [&m.exact, &m.prefix, &m.regex]
            .iter()
            .any(|v| v.as_deref() == Some(""));
        if empty {
            c.error("an allowed origin must not be empty");
        } else {
            common::string_match(c, m, false);
        }
    });
    c.each("allowMethods", &p.allow_methods, |c, m| {
        if !CORS_METHODS.contains(&m.as_str()) {
            c.error(format!("{m:?} is not an HTTP method CORS can allow"));
        }
    });
    c.each("allowHeaders", &p.allow_headers, |c, h| {
        if h != "*" {
            common::header_name(c, h);
        }
    });
    c.each("exposeHeaders", &p.expose_headers, |c, h| {
        if h != "*" {
            common::header_name(c, h);
        }
    });
    if let Some(age) = &p.max_age {
        match common::validate_duration(age) {
            Ok(d) if d.subsec_nanos() != 0 => {
                c.error_at("maxAge", "maxAge must be a whole number of seconds")
            }
            Ok(_) => {}
            Err(e) => c.error_at("maxAge", e),
        }
    }
}

pub(super) fn headers(c: &mut Checker<'_>, h: &Headers) {
    c.opt("request", &h.request, |c, ops| {
        header_operations(c, ops, true)
    });
    c.opt("response", &h.response, |c, ops| {
        header_operations(c, ops, false)
    });
}

fn header_operations(c: &mut Checker<'_>, ops: &HeaderOperations, request: bool) {
    // Requests may set the authority (`:authority` or `host`); nothing else internal
    // (`:`-prefixed or `host`) may be changed.
    let check = |c: &mut Checker<'_>, name: &str, may_set_authority: bool| {
        let authority =
            name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host");
        if name.is_empty() {
            c.error("header name must not be empty");
        } else if authority && may_set_authority {
        } else if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
            c.error(format!(
                "header {name:?} cannot be changed (pseudo-header or Host)"
            ));
        } else {
            common::header_name(c, name);
        }
    };
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        if !map.is_empty() {
            c.at(field, |c| {
                for name in map.keys() {
                    c.at(name, |c| check(c, name, request));
                }
            });
        }
    }
    c.each("remove", &ops.remove, |c, name| check(c, name, false));
}
