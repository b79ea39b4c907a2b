//! Kubernetes API paths: which resource, namespace, name and subresource, and the verb.

use std::collections::HashMap;

use axum::http::Method;

use crate::status::ApiError;

/// A request for a resource, as its path names it.
#[derive(Debug)]
pub(crate) struct ResourcePath<'a> {
    pub(crate) group: &'a str,
    pub(crate) version: &'a str,
    pub(crate) namespace: Option<&'a str>,
    pub(crate) plural: &'a str,
    pub(crate) name: Option<&'a str>,
    pub(crate) subresource: Option<&'a str>,
    pub(crate) legacy_watch: bool,
}

pub(crate) fn not_found_path() -> ApiError {
    ApiError::new(404, "the server could not find the requested resource")
}

pub(crate) fn parse_resource_path<'a>(
    group: &'a str,
    version: &'a str,
    mut rest: &'a [&'a str],
) -> Result<ResourcePath<'a>, ApiError> {
    let legacy_watch = rest.first() == Some(&"watch");
    if legacy_watch {
        rest = &rest[1..];
    }
    let mut namespace = None;
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        let namespace_subresource = rest.len() == 3 && matches!(rest[2], "status" | "finalize");
        if !namespace_subresource {
            namespace = Some(rest[1]);
            rest = &rest[2..];
        }
    }
    match rest {
        [plural] => Ok((plural, None, None)),
        [plural, name] => Ok((plural, Some(*name), None)),
        [plural, name, sub] => Ok((plural, Some(*name), Some(*sub))),
        _ => Err(not_found_path()),
    }
    .map(|(plural, name, subresource)| ResourcePath {
        group,
        version,
        namespace,
        plural,
        name,
        subresource,
        legacy_watch,
    })
}

/// The verb the API server's authorizer would see.
pub(crate) fn verb_of(
    method: &Method,
    path: &ResourcePath<'_>,
    query: &HashMap<String, String>,
) -> &'static str {
    let watch_param = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method.as_str(), path.name.is_some()) {
        ("GET", true) if path.legacy_watch || watch_param => "watch",
        ("GET", true) => "get",
        ("GET", false) if path.legacy_watch || watch_param => "watch",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unsupported",
    }
}
