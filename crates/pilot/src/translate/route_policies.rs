//! Per-route policies: redirects, retries, fault injection, CORS, header manipulation.

use mesh_api::envoy::{
    envoy::{
        config::{
            core::v3::{HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction},
            route::v3::{
                RedirectAction, RetryPolicy, Route,
                redirect_action::{
                    PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
                },
                retry_policy::RetryBackOff,
            },
        },
        extensions::filters::{
            common::fault::v3::{FaultDelay, fault_delay::FaultDelaySecifier},
            http::{
                cors::v3::CorsPolicy as EnvoyCors,
                fault::v3::{FaultAbort, HttpFault, fault_abort::ErrorType},
            },
        },
        r#type::{
            matcher::v3::{StringMatcher, string_matcher::MatchPattern},
            v3::{FractionalPercent, fractional_percent::DenominatorType},
        },
    },
    google::protobuf::{Any, BoolValue, UInt32Value},
};
use mesh_model::networking::{
    CorsPolicy, HeaderOperations, Headers, HttpFaultInjection, HttpRedirect, HttpRetry, Percent,
    UnmatchedPreflights,
};

use super::{pack_named, parse_pb_duration, route_match::string_matcher};

/// Istio's retry conditions when a VirtualService gives none.
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

pub(super) fn redirect(r: &HttpRedirect) -> RedirectAction {
    let response_code = match r.redirect_code {
        Some(302) => RedirectResponseCode::Found,
        Some(303) => RedirectResponseCode::SeeOther,
        Some(307) => RedirectResponseCode::TemporaryRedirect,
        Some(308) => RedirectResponseCode::PermanentRedirect,
        _ => RedirectResponseCode::MovedPermanently,
    };
    RedirectAction {
        host_redirect: r.authority.clone(),
        port_redirect: r.port.filter(|p| *p <= 65535).unwrap_or(0),
        response_code: response_code as i32,
        scheme_rewrite_specifier: (!r.scheme.is_empty())
            .then(|| SchemeRewriteSpecifier::SchemeRedirect(r.scheme.clone())),
        path_rewrite_specifier: (!r.uri.is_empty())
            .then(|| PathRewriteSpecifier::PathRedirect(r.uri.clone())),
        ..Default::default()
    }
}

pub(super) fn retry_policy(r: &HttpRetry) -> Option<RetryPolicy> {
    let attempts = r.attempts.filter(|a| *a > 0)?;
    let mut conditions = Vec::new();
    let mut codes = Vec::new();
    let retry_on = if r.retry_on.trim().is_empty() {
        codes.push(503);
        DEFAULT_RETRY_ON.to_string()
    } else {
        for part in r
            .retry_on
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            match part.parse::<u32>() {
                Ok(code) => codes.push(code),
                Err(_) => conditions.push(part.to_string()),
            }
        }
        if !codes.is_empty() && !conditions.iter().any(|c| c == "retriable-status-codes") {
            conditions.push("retriable-status-codes".to_string());
        }
        conditions.join(",")
    };
    Some(RetryPolicy {
        retry_on,
        num_retries: Some(UInt32Value { value: attempts }),
        per_try_timeout: r.per_try_timeout.as_deref().and_then(parse_pb_duration),
        retriable_status_codes: codes,
        retry_back_off: r
            .backoff
            .as_deref()
            .and_then(parse_pb_duration)
            .filter(|d| d.seconds > 0 || d.nanos > 0)
            .map(|base| RetryBackOff {
                base_interval: Some(base),
                max_interval: None,
            }),
        ..Default::default()
    })
}

/// A percentage as Envoy's fraction per million.
pub(super) fn fractional(percent: f64) -> FractionalPercent {
    let clamped = if percent.is_finite() {
        percent.clamp(0.0, 100.0)
    } else {
        100.0
    };
    FractionalPercent {
        // In 0..=1_000_000 after clamping, so the cast cannot truncate.
        numerator: (clamped * 10_000.0).round() as u32,
        denominator: DenominatorType::Million as i32,
    }
}

pub(super) fn percent_of(p: Option<&Percent>, legacy: Option<u32>) -> FractionalPercent {
    fractional(
        p.map(|p| p.value)
            .or(legacy.map(f64::from))
            .unwrap_or(100.0),
    )
}

/// The per-route HTTPFault configuration, `None` when nothing valid is injected.
pub(super) fn fault_config(f: &HttpFaultInjection) -> Option<Any> {
    let delay = f.delay.as_ref().and_then(|d| {
        let fixed = d.fixed_delay.as_deref().and_then(parse_pb_duration)?;
        Some(FaultDelay {
            percentage: Some(percent_of(d.percentage.as_ref(), d.percent)),
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(fixed)),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let error = if let Some(status) = a.http_status.filter(|s| (200..600).contains(s)) {
            ErrorType::HttpStatus(status)
        } else {
            ErrorType::GrpcStatus(grpc_code(a.grpc_status.as_deref()?)?)
        };
        Some(FaultAbort {
            percentage: Some(percent_of(a.percentage.as_ref(), None)),
            error_type: Some(error),
            ..Default::default()
        })
    });
    if delay.is_none() && abort.is_none() {
        return None;
    }
    Some(pack_named(&HttpFault {
        delay,
        abort,
        ..Default::default()
    }))
}

/// The per-route CORS policy, `None` when no origin is allowed (the policy would
/// then allow nothing, so the filter is left out).
pub(super) fn cors_config(c: &CorsPolicy) -> Option<Any> {
    let mut origins: Vec<StringMatcher> = c
        .allow_origin
        .iter()
        .filter(|o| !o.is_empty())
        .map(|o| StringMatcher {
            // `*` in the legacy list means any origin.
            match_pattern: Some(if o == "*" {
                MatchPattern::Prefix(String::new())
            } else {
                MatchPattern::Exact(o.clone())
            }),
            ignore_case: false,
        })
        .collect();
    origins.extend(c.allow_origins.iter().filter_map(string_matcher));
    if origins.is_empty() {
        return None;
    }
    let max_age = match c.max_age.as_deref() {
        None => String::new(),
        Some(text) => match mesh_model::parse_duration(text) {
            Ok(d) => d.as_secs().to_string(),
            Err(_) => {
                tracing::warn!(max_age = text, "CORS maxAge does not parse; left out");
                String::new()
            }
        },
    };
    let forward_not_matching_preflights = match c.unmatched_preflights {
        Some(UnmatchedPreflights::Forward) => Some(BoolValue { value: true }),
        Some(UnmatchedPreflights::Ignore) => Some(BoolValue { value: false }),
        Some(UnmatchedPreflights::Unspecified) | None => None,
    };
    Some(pack_named(&EnvoyCors {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age,
        allow_credentials: c.allow_credentials.map(|value| BoolValue { value }),
        forward_not_matching_preflights,
        ..Default::default()
    }))
}

/// A gRPC status code from its name (`UNAVAILABLE`) or number.
pub(super) fn grpc_code(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return (n < 17).then_some(n);
    }
    mesh_model::protocol::GRPC_STATUS_NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .and_then(|i| u32::try_from(i).ok())
}

pub(super) fn header_ops(ops: Option<&HeaderOperations>) -> (Vec<HeaderValueOption>, Vec<String>) {
    let Some(ops) = ops else {
        return (Vec::new(), Vec::new());
    };
    let mk = |(k, v): (&String, &String), action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: k.to_ascii_lowercase(),
            value: v.clone(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
    let mut add: Vec<HeaderValueOption> = ops
        .set
        .iter()
        .map(|kv| mk(kv, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .collect();
    add.extend(
        ops.add
            .iter()
            .map(|kv| mk(kv, HeaderAppendAction::AppendIfExistsOrAdd)),
    );
    let remove = ops.remove.iter().map(|h| h.to_ascii_lowercase()).collect();
    (add, remove)
}

pub(super) fn apply_headers(route: &mut Route, headers: &Headers) {
    let (add, remove) = header_ops(headers.request.as_ref());
    route.request_headers_to_add = add;
    route.request_headers_to_remove = remove;
    let (add, remove) = header_ops(headers.response.as_ref());
    route.response_headers_to_add = add;
    route.response_headers_to_remove = remove;
}
