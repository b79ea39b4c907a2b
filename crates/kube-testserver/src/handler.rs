//! HTTP routing: Kubernetes API paths to the store's operations.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::discovery;
use crate::faults::RequestInfo;
use crate::patch::{PatchKind, apply_patch, parse_body};
use crate::path::{ResourcePath, not_found_path, parse_resource_path, verb_of};
use crate::resources::{Behaviour, ResourceType};
use crate::selector::Selectors;
use crate::shared::{Shared, unregister_crd, write_object};
use crate::status::ApiError;
use crate::store::WriteScope;

/// The server's router: every request goes through [`handle`].
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// A JSON response.
pub(crate) fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match dispatch(&shared, &method, &uri, &headers, &body) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

fn dispatch(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    let discovery_only = |m: &Method| {
        if m == Method::GET {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(format!(
                "{m} is not supported on discovery paths"
            )))
        }
    };
    match segments.as_slice() {
        ["version"] => {
            discovery_only(method)?;
            ok(discovery::version_info())
        }
        ["api"] => {
            discovery_only(method)?;
            ok(discovery::core_versions(&shared.server_address.lock()))
        }
        ["apis"] => {
            discovery_only(method)?;
            ok(discovery::group_list(&shared.state.lock().registry))
        }
        ["apis", group] => {
            discovery_only(method)?;
            let doc = discovery::group(&shared.state.lock().registry, group);
            ok(doc.ok_or_else(not_found_path)?)
        }
        ["api", version] => {
            discovery_only(method)?;
            let doc = discovery::resource_list(&shared.state.lock().registry, "", version);
            ok(doc.ok_or_else(not_found_path)?)
        }
        ["apis", group, version] => {
            discovery_only(method)?;
            let doc = discovery::resource_list(&shared.state.lock().registry, group, version);
            ok(doc.ok_or_else(not_found_path)?)
        }
        ["api", version, rest @ ..] => {
            let path = parse_resource_path("", version, rest)?;
            resource_request(shared, method, uri, headers, body, &path)
        }
        ["apis", group, version, rest @ ..] => {
            let path = parse_resource_path(group, version, rest)?;
            resource_request(shared, method, uri, headers, body, &path)
        }
        _ => Err(not_found_path()),
    }
}

fn resource_request(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    path: &ResourcePath<'_>,
) -> Result<Response, ApiError> {
    let Query(query) = Query::<HashMap<String, String>>::try_from_uri(uri)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let t = shared
        .state
        .lock()
        .registry
        .find(path.group, path.version, path.plural)
        .cloned()
        .ok_or_else(not_found_path)?;
    if path.namespace.is_some() && !t.namespaced {
        return Err(not_found_path());
    }
    let verb = verb_of(method, path, &query);
    if let Some(error) = shared.faults.lock().check(&RequestInfo {
        verb,
        group: &t.group,
        plural: &t.plural,
        namespace: path.namespace,
    }) {
        return Err(error);
    }
    let scope = match path.subresource {
        None => WriteScope::Main,
        Some("status") if t.status_subresource => WriteScope::Status,
        Some(other) => {
            return Err(ApiError::new(
                404,
                format!(
                    "the server could not find the requested resource: subresource {other:?} \
                     of {} is not served by kube-testserver",
                    t.plural
                ),
            ));
        }
    };
    if query.get("dryRun").is_some_and(|d| !d.is_empty()) {
        return Err(ApiError::bad_request(
            "dryRun is not supported by kube-testserver",
        ));
    }
    if t.behaviour == Behaviour::TokenReview {
        return if verb == "create" {
            crate::tokenreview::answer(shared, body)
        } else {
            Err(ApiError::method_not_allowed(format!(
                "{verb} is not supported on tokenreviews (create only)"
            )))
        };
    }
    // A namespaced object needs a namespace, except to list or watch across all of them.
    let collection_wide =
        matches!(verb, "list" | "watch" | "deletecollection") && path.name.is_none();
    let namespace = match (t.namespaced, path.namespace) {
        (true, Some(ns)) => ns,
        (true, None) if collection_wide => "",
        (true, None) => return Err(not_found_path()),
        (false, _) => "",
    };
    let request = Request {
        shared,
        t: &t,
        version: path.version,
        namespace,
        all_namespaces: t.namespaced && path.namespace.is_none(),
        name: path.name.unwrap_or_default(),
        query: &query,
        body,
    };
    match verb {
        "get" => request.get(),
        "list" => request.list(),
        "watch" => crate::watch::start(
            shared,
            &t,
            path.version,
            request.namespace_filter(),
            path.name,
            &query,
        ),
        "create" if scope == WriteScope::Main => request.create(),
        "update" => request.update(scope),
        "patch" => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            request.patch(PatchKind::from_content_type(content_type)?, scope)
        }
        "delete" if scope == WriteScope::Main => request.delete(),
        "deletecollection" => request.delete_collection(),
        _ => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on this path by kube-testserver"
        ))),
    }
}

/// Sets `apiVersion` and `kind` of an object to those of the requested version.
pub(crate) fn present(object: &Value, t: &ResourceType, version: &str) -> Value {
    let mut object = object.clone();
    if let Some(o) = object.as_object_mut() {
        o.insert("apiVersion".into(), json!(t.api_version(version)));
        o.insert("kind".into(), json!(t.kind));
    }
    object
}

/// One resource request, resolved.
struct Request<'a> {
    shared: &'a Arc<Shared>,
    t: &'a ResourceType,
    version: &'a str,
    namespace: &'a str,
    all_namespaces: bool,
    name: &'a str,
    query: &'a HashMap<String, String>,
    body: &'a [u8],
}

impl Request<'_> {
    fn namespace_filter(&self) -> Option<&str> {
        (!self.all_namespaces).then_some(self.namespace)
    }

    fn respond(&self, code: StatusCode, object: &Value) -> Result<Response, ApiError> {
        Ok(json_response(code, &present(object, self.t, self.version)))
    }

    fn get(&self) -> Result<Response, ApiError> {
        let object = self
            .shared
            .state
            .lock()
            .get(self.t, self.namespace, self.name)
            .ok_or_else(|| ApiError::not_found(&self.t.group, &self.t.plural, self.name))?;
        self.respond(StatusCode::OK, &object)
    }

    fn list(&self) -> Result<Response, ApiError> {
        let selectors = Selectors::from_query(self.query, self.t.extra_field_labels())?;
        let limit = match self.query.get("limit") {
            Some(l) => l
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
            None => 0,
        };
        let state = self.shared.state.lock();
        let mut list_rv = state.current_rv();
        if let Some(rv) = self
            .query
            .get("resourceVersion")
            .filter(|rv| !rv.is_empty())
        {
            let rv: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
            if rv > list_rv {
                return Err(ApiError::new(
                    504,
                    format!("Too large resource version: {rv}, current: {list_rv}"),
                )
                .with_reason("Timeout"));
            }
        }
        // A continue token is `<list rv>/<namespace>/<name>` of the last item returned.
        let mut after: Option<(String, String)> = None;
        if let Some(token) = self.query.get("continue").filter(|c| !c.is_empty()) {
            let mut parts = token.splitn(3, '/');
            let (rv, ns, name) = (parts.next(), parts.next(), parts.next());
            let (Some(rv), Some(ns), Some(name)) =
                (rv.and_then(|r| r.parse::<u64>().ok()), ns, name)
            else {
                return Err(ApiError::bad_request(format!(
                    "invalid continue token {token:?}"
                )));
            };
            if rv < state.floor() {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter.",
                ));
            }
            list_rv = rv;
            after = Some((ns.to_string(), name.to_string()));
        }
        let key_of = |o: &Value| {
            let field = |f: &str| {
                o.pointer(&format!("/metadata/{f}"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            (field("namespace"), field("name"))
        };
        let matching: Vec<_> = state
            .list(self.t, self.namespace_filter())
            .into_iter()
            .filter(|o| after.as_ref().is_none_or(|a| key_of(o) > *a))
            .filter(|o| selectors.matches(o))
            .collect();
        drop(state);
        let total = matching.len();
        let take = if limit == 0 { total } else { limit.min(total) };
        let items: Vec<Value> = matching[..take]
            .iter()
            .map(|o| present(o, self.t, self.version))
            .collect();
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if take < total {
            let (ns, name) = key_of(&matching[take - 1]);
            metadata["continue"] = json!(format!("{list_rv}/{ns}/{name}"));
            metadata["remainingItemCount"] = json!(total - take);
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "apiVersion": self.t.api_version(self.version),
                "kind": format!("{}List", self.t.kind),
                "metadata": metadata,
                "items": items,
            }),
        ))
    }

    /// Checks `apiVersion`, `kind` and `metadata.namespace` of a body against the request.
    fn checked_body(&self, yaml: bool) -> Result<Value, ApiError> {
        let mut object = parse_body(self.body, yaml)?;
        let api_version = self.t.api_version(self.version);
        let Some(o) = object.as_object_mut() else {
            return Err(ApiError::bad_request("the body is not a JSON object"));
        };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
        let kind = text(o.get("kind"));
        if !kind.is_empty() && kind != self.t.kind {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({kind}) does not match the resource ({}, kind {})",
                self.t.plural, self.t.kind
            )));
        }
        let given_version = text(o.get("apiVersion"));
        if !given_version.is_empty() && given_version != api_version {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({given_version}) does not match the expected API \
                 version ({api_version})"
            )));
        }
        o.insert("apiVersion".into(), json!(api_version));
        o.insert("kind".into(), json!(self.t.kind));
        let meta_ns = text(o.get("metadata").and_then(|m| m.get("namespace")));
        if self.t.namespaced && !meta_ns.is_empty() && meta_ns != self.namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        Ok(object)
    }

    fn create(&self) -> Result<Response, ApiError> {
        let object = self.checked_body(false)?;
        let created = self.shared.mutate(|state| {
            write_object(
                state,
                self.t,
                self.namespace,
                None,
                object,
                WriteScope::Main,
                None,
            )
        })?;
        self.respond(StatusCode::CREATED, &created)
    }

    fn update(&self, scope: WriteScope) -> Result<Response, ApiError> {
        let object = self.checked_body(false)?;
        let body_name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if body_name != self.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({})",
                self.name
            )));
        }
        let expected = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from);
        let updated = self.shared.mutate(|state| {
            write_object(
                state,
                self.t,
                self.namespace,
                Some(self.name),
                object,
                scope,
                expected.as_deref(),
            )
        })?;
        self.respond(StatusCode::OK, &updated)
    }

    fn patch(&self, kind: PatchKind, scope: WriteScope) -> Result<Response, ApiError> {
        let patch = parse_body(self.body, kind == PatchKind::Apply)?;
        if kind == PatchKind::Apply && self.query.get("fieldManager").is_none_or(|m| m.is_empty()) {
            return Err(ApiError::invalid(
                "PatchOptions.meta.k8s.io",
                "",
                "fieldManager: Required value: is required for apply patch",
            ));
        }
        let what = format!("{} {:?}", self.t.plural, self.name);
        let (code, written) = self.shared.mutate(|state| {
            let Some(live) = state.get(self.t, self.namespace, self.name) else {
                if kind != PatchKind::Apply {
                    return Err(ApiError::not_found(
                        &self.t.group,
                        &self.t.plural,
                        self.name,
                    ));
                }
                // Applying an absent object creates it.
                let mut object = self.checked_body(true)?;
                crate::store::metadata_mut(&mut object)?.insert("name".into(), json!(self.name));
                let created = write_object(
                    state,
                    self.t,
                    self.namespace,
                    None,
                    object,
                    WriteScope::Main,
                    None,
                )?;
                return Ok((StatusCode::CREATED, created));
            };
            let patched = apply_patch(kind, &live, &patch, &what)?;
            let live_rv = live.pointer("/metadata/resourceVersion");
            let patched_rv = patched.pointer("/metadata/resourceVersion");
            let expected = patched_rv
                .filter(|rv| Some(*rv) != live_rv || patch_names_rv(&patch))
                .and_then(Value::as_str)
                .map(String::from);
            let written = write_object(
                state,
                self.t,
                self.namespace,
                Some(self.name),
                patched,
                scope,
                expected.as_deref(),
            )?;
            Ok((StatusCode::OK, written))
        })?;
        self.respond(code, &written)
    }

    fn delete_preconditions(&self) -> Result<(Option<String>, Option<String>), ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok((None, None));
        }
        let options = parse_body(self.body, false)?;
        let text = |p: &str| options.pointer(p).and_then(Value::as_str).map(String::from);
        Ok((
            text("/preconditions/resourceVersion"),
            text("/preconditions/uid"),
        ))
    }

    fn delete(&self) -> Result<Response, ApiError> {
        let (rv, uid) = self.delete_preconditions()?;
        let deleted = self.shared.mutate(|state| {
            let deleted = state.delete(
                self.t,
                self.namespace,
                self.name,
                rv.as_deref(),
                uid.as_deref(),
            )?;
            if self.t.behaviour == Behaviour::CustomResourceDefinition {
                unregister_crd(state, &deleted);
            }
            Ok::<_, ApiError>(deleted)
        })?;
        self.respond(StatusCode::OK, &deleted)
    }

    fn delete_collection(&self) -> Result<Response, ApiError> {
        let selectors = Selectors::from_query(self.query, self.t.extra_field_labels())?;
        let deleted = self.shared.mutate(|state| {
            let mut deleted = Vec::new();
            for object in state.list(self.t, self.namespace_filter()) {
                if !selectors.matches(&object) {
                    continue;
                }
                let meta = |f: &str| {
                    object
                        .pointer(&format!("/metadata/{f}"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                let gone = state.delete(self.t, &meta("namespace"), &meta("name"), None, None)?;
                if self.t.behaviour == Behaviour::CustomResourceDefinition {
                    unregister_crd(state, &gone);
                }
                deleted.push(present(&gone, self.t, self.version));
            }
            Ok::<_, ApiError>((deleted, state.current_rv()))
        });
        let (items, rv) = deleted?;
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "apiVersion": self.t.api_version(self.version),
                "kind": format!("{}List", self.t.kind),
                "metadata": {"resourceVersion": rv.to_string()},
                "items": items,
            }),
        ))
    }
}

/// Whether a merge-style patch names `metadata.resourceVersion` (a precondition).
fn patch_names_rv(patch: &Value) -> bool {
    patch.pointer("/metadata/resourceVersion").is_some()
}
