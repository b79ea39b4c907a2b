//! State shared by the HTTP handlers and the test's handle.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReviewSpec, TokenReviewStatus};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::faults::Faults;
use crate::resources::{Behaviour, ResourceType};
use crate::status::ApiError;
use crate::store::{State, WriteScope};

/// Answers TokenReviews: given the review's spec, the status to return.
pub type TokenReviewer = dyn Fn(&TokenReviewSpec) -> TokenReviewStatus + Send + Sync;

/// Settings of a [`crate::KubeTestServer`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Namespace of the clients built by [`crate::KubeTestServer::client`] (`default`).
    pub default_namespace: String,
    /// How often a watch that asked for bookmarks gets one (1 s; the real server
    /// sends them about once a minute).
    pub bookmark_interval: Duration,
    /// How many changes are kept for watches to replay (10 000); a watch from a
    /// version older than that gets 410 Expired.
    pub history_limit: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            default_namespace: "default".to_string(),
            bookmark_interval: Duration::from_secs(1),
            history_limit: 10_000,
        }
    }
}

/// Everything the handlers share.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) state: Mutex<State>,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) token_reviewer: Mutex<Option<Arc<TokenReviewer>>>,
    /// The newest resource version, for watches to wake on.
    pub(crate) changes: watch::Sender<u64>,
    /// Bumped to end every open watch.
    pub(crate) watch_epoch: watch::Sender<u64>,
    pub(crate) server_address: Mutex<String>,
}

impl Shared {
    pub(crate) fn new(config: ServerConfig) -> Self {
        let state = State::new(config.history_limit);
        let (changes, _) = watch::channel(state.current_rv());
        let (watch_epoch, _) = watch::channel(0);
        Self {
            config,
            state: Mutex::new(state),
            faults: Mutex::new(Faults::default()),
            token_reviewer: Mutex::new(None),
            changes,
            watch_epoch,
            server_address: Mutex::new(String::new()),
        }
    }

    /// Runs a change under the lock, then wakes the watches if anything changed.
    pub(crate) fn mutate<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let (result, rv) = {
            let mut state = self.state.lock();
            let result = f(&mut state);
            (result, state.current_rv())
        };
        self.changes.send_if_modified(|current| {
            let changed = *current != rv;
            *current = rv;
            changed
        });
        result
    }

    /// Ends every open watch stream.
    pub(crate) fn end_watches(&self) {
        self.watch_epoch.send_modify(|epoch| *epoch += 1);
    }
}

/// The resource a CustomResourceDefinition defines; fills in the status the real
/// server reports for an accepted definition.
fn crd_resource_type(state: &State, crd: &mut Value) -> Result<ResourceType, ApiError> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let invalid = |msg: &str| ApiError::invalid("CustomResourceDefinition", &name, msg);
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let text = |p: &str| {
        spec.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (group, plural, kind) = (text("/group"), text("/names/plural"), text("/names/kind"));
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Err(invalid(
            "spec.group, spec.names.plural and spec.names.kind: Required value",
        ));
    }
    if name != format!("{plural}.{group}") {
        return Err(invalid(&format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        )));
    }
    let namespaced = match text("/scope").as_str() {
        "Namespaced" => true,
        "Cluster" => false,
        other => {
            return Err(invalid(&format!(
                "spec.scope: Unsupported value: \"{other}\": supported values: \"Cluster\", \"Namespaced\""
            )));
        }
    };
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut served: Vec<String> = Vec::new();
    let mut status_subresource = false;
    for v in &versions {
        let vname = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if vname.is_empty() || v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            served.insert(0, vname.to_string());
        } else {
            served.push(vname.to_string());
        }
        status_subresource |= v.pointer("/subresources/status").is_some();
    }
    if served.is_empty() {
        return Err(invalid(
            "spec.versions: Invalid value: must have one served version",
        ));
    }
    let existing = state.registry.find_kind(&group, &served[0], &kind);
    if existing.is_some_and(|t| t.behaviour != Behaviour::Stored || t.plural != plural) {
        return Err(invalid(
            "spec.names.kind: the kind is already served by another resource",
        ));
    }
    let mut t = ResourceType::new(&group, &served[0], &kind, &plural, namespaced);
    t.versions = served.clone();
    t.status_subresource = status_subresource;
    if let Some(s) = spec.pointer("/names/singular").and_then(Value::as_str) {
        t.singular = s.to_string();
    }
    t.short_names = spec
        .pointer("/names/shortNames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let now = crate::meta::now_rfc3339();
    let condition = |kind: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": "True", "lastTransitionTime": now,
               "reason": reason, "message": message})
    };
    if let Some(o) = crd.as_object_mut() {
        o.insert(
            "status".into(),
            json!({
                "conditions": [
                    condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                    condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                ],
                "acceptedNames": spec.get("names").cloned().unwrap_or(Value::Null),
                "storedVersions": [served[0].clone()],
            }),
        );
    }
    Ok(t)
}

/// Removes the resource a deleted CustomResourceDefinition defined, with its objects.
pub(crate) fn unregister_crd(state: &mut State, crd: &Value) {
    let group = crd.pointer("/spec/group").and_then(Value::as_str);
    let plural = crd.pointer("/spec/names/plural").and_then(Value::as_str);
    if let (Some(group), Some(plural)) = (group, plural)
        && let Some(t) = state.registry.remove(group, plural)
    {
        state.delete_all(&t);
    }
}

/// Creates or replaces an object the way a write through the API would, with the
/// side effects of its type (a CustomResourceDefinition registers its resource).
pub(crate) fn write_object(
    state: &mut State,
    t: &ResourceType,
    namespace: &str,
    name: Option<&str>,
    mut object: Value,
    scope: WriteScope,
    expected_rv: Option<&str>,
) -> Result<Value, ApiError> {
    let defined =
        if t.behaviour == Behaviour::CustomResourceDefinition && scope != WriteScope::Status {
            Some(crd_resource_type(state, &mut object)?)
        } else {
            None
        };
    let written = match name {
        None => state.create(t, namespace, object, scope == WriteScope::All)?,
        Some(name) => state.replace(t, namespace, name, object, scope, expected_rv)?,
    };
    if let Some(defined) = defined {
        state.registry.insert(defined);
    }
    Ok(written)
}
