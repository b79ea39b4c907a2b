//! Istio HTTP match conditions as Envoy route matches.

use mesh_api::envoy::{
    envoy::{
        config::route::v3::{
            HeaderMatcher, QueryParameterMatcher, RouteMatch, header_matcher::HeaderMatchSpecifier,
            query_parameter_matcher::QueryParameterMatchSpecifier, route_match::PathSpecifier,
        },
        r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher::MatchPattern},
    },
    google::protobuf::BoolValue,
};
use mesh_model::networking::{HttpMatchRequest, StringMatch};

pub(super) fn route_match(m: Option<&HttpMatchRequest>) -> RouteMatch {
    let mut out = RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
        ..Default::default()
    };
    let Some(m) = m else { return out };
    if let Some(uri) = &m.uri {
        if let Some(e) = &uri.exact {
            out.path_specifier = Some(PathSpecifier::Path(e.clone()));
        } else if let Some(p) = uri.prefix.as_ref().filter(|p| !p.is_empty()) {
            out.path_specifier = Some(PathSpecifier::Prefix(p.clone()));
        } else if let Some(r) = uri.regex.as_ref().filter(|r| !r.is_empty()) {
            out.path_specifier = Some(PathSpecifier::SafeRegex(regex_matcher(r)));
        }
    }
    if m.ignore_uri_case {
        out.case_sensitive = Some(BoolValue { value: false });
    }
    let pseudo = [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ];
    for (name, sm) in pseudo {
        if let Some(sm) = sm {
            out.headers.push(header_matcher(name, sm, false));
        }
    }
    for (name, sm) in &m.headers {
        out.headers.push(header_matcher(name, sm, false));
    }
    for (name, sm) in &m.without_headers {
        out.headers.push(header_matcher(name, sm, true));
    }
    for (name, sm) in &m.query_params {
        out.query_parameters.push(QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(match string_matcher(sm) {
                Some(s) => QueryParameterMatchSpecifier::StringMatch(s),
                None => QueryParameterMatchSpecifier::PresentMatch(true),
            }),
        });
    }
    out
}

pub(super) fn regex_matcher(regex: &str) -> RegexMatcher {
    RegexMatcher {
        regex: regex.to_string(),
        engine_type: None,
    }
}

/// Envoy's matcher for an Istio string match; `None` for one that only requires
/// presence (no condition, or an empty prefix or regex).
pub(super) fn string_matcher(sm: &StringMatch) -> Option<StringMatcher> {
    let pattern = if let Some(e) = &sm.exact {
        MatchPattern::Exact(e.clone())
    } else if let Some(p) = sm.prefix.as_ref().filter(|p| !p.is_empty()) {
        MatchPattern::Prefix(p.clone())
    } else if let Some(r) = sm.regex.as_ref().filter(|r| !r.is_empty()) {
        MatchPattern::SafeRegex(regex_matcher(r))
    } else {
        return None;
    };
    Some(StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    })
}

pub(super) fn header_matcher(name: &str, sm: &StringMatch, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_ascii_lowercase(),
        invert_match: invert,
        header_match_specifier: Some(match string_matcher(sm) {
            Some(s) => HeaderMatchSpecifier::StringMatch(s),
            None => HeaderMatchSpecifier::PresentMatch(true),
        }),
        ..Default::default()
    }
}
