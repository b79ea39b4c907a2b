//! Watches: newline-delimited JSON events from a resource version on.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::handler::present;
use crate::resources::{ResourceKey, ResourceType};
use crate::selector::Selectors;
use crate::shared::Shared;
use crate::status::ApiError;
use crate::store::{Change, HistoryEntry};

/// How long a watch lasts when the client gives no `timeoutSeconds` (the real
/// server picks 30 to 60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// What one watch sends.
struct WatchSpec {
    resource: ResourceKey,
    t: ResourceType,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    selectors: Selectors,
    bookmarks: bool,
    timeout: Duration,
}

/// Starts a watch and answers with its event stream.
pub(crate) fn start(
    shared: &Arc<Shared>,
    t: &ResourceType,
    version: &str,
    namespace: Option<&str>,
    name: Option<&str>,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let flag = |k: &str| query.get(k).is_some_and(|v| v == "true" || v == "1");
    let selectors = Selectors::from_query(query, t.extra_field_labels())?;
    let timeout = match query.get("timeoutSeconds") {
        Some(s) => Duration::from_secs(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
        ),
        None => DEFAULT_TIMEOUT,
    };
    let spec = WatchSpec {
        resource: (t.group.clone(), t.plural.clone()),
        t: t.clone(),
        version: version.to_string(),
        namespace: namespace.map(String::from),
        name: name.map(String::from),
        selectors,
        bookmarks: flag("allowWatchBookmarks"),
        timeout,
    };
    let send_initial = flag("sendInitialEvents");
    let requested_rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .filter(|rv| !rv.is_empty() && *rv != "0");
    let (start_rv, initial) = {
        let state = shared.state.lock();
        match requested_rv {
            Some(rv) if !send_initial => {
                let rv = rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?;
                (rv, Vec::new())
            }
            // No version (or "0", or a streaming list): the current state as ADDED
            // events first, then the changes after it.
            _ => {
                let objects = state
                    .list(t, spec.namespace.as_deref())
                    .into_iter()
                    .filter(|o| spec.selects(o))
                    .collect::<Vec<_>>();
                (state.current_rv(), objects)
            }
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let initial: Vec<Value> = initial.iter().map(|o| spec.event("ADDED", o)).collect();
    let end_marker = (send_initial && spec.bookmarks).then(|| spec.bookmark(start_rv, true));
    tokio::spawn(run(shared.clone(), spec, start_rv, initial, end_marker, tx));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

impl WatchSpec {
    fn selects(&self, object: &Value) -> bool {
        let name_matches = self
            .name
            .as_deref()
            .is_none_or(|n| object.pointer("/metadata/name").and_then(Value::as_str) == Some(n));
        name_matches && self.selectors.matches(object)
    }

    fn event(&self, kind: &str, object: &Value) -> Value {
        json!({"type": kind, "object": present(object, &self.t, &self.version)})
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Value {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"type": "BOOKMARK", "object": {
            "kind": self.t.kind,
            "apiVersion": self.t.api_version(&self.version),
            "metadata": metadata,
        }})
    }

    /// The event this watch sees for a change, if any: an object that starts
    /// matching the selectors is ADDED, one that stops matching is DELETED.
    fn event_for(&self, entry: &HistoryEntry) -> Option<Value> {
        let other_namespace = self.t.namespaced
            && self
                .namespace
                .as_ref()
                .is_some_and(|ns| *ns != entry.namespace);
        if entry.resource != self.resource || other_namespace {
            return None;
        }
        let before = entry.previous.as_deref().is_some_and(|p| self.selects(p));
        match entry.change {
            Change::Added => self
                .selects(&entry.object)
                .then(|| self.event("ADDED", &entry.object)),
            Change::Deleted => self
                .selects(&entry.object)
                .then(|| self.event("DELETED", &entry.object)),
            Change::Modified => match (before, self.selects(&entry.object)) {
                (true, true) => Some(self.event("MODIFIED", &entry.object)),
                (false, true) => Some(self.event("ADDED", &entry.object)),
                (true, false) => {
                    // The object as this watch last matched it, at the change's version.
                    let mut last_seen = entry.previous.as_deref().cloned().unwrap_or(Value::Null);
                    if let Some(meta) = last_seen.get_mut("metadata").and_then(Value::as_object_mut)
                    {
                        meta.insert("resourceVersion".into(), json!(entry.rv.to_string()));
                    }
                    Some(self.event("DELETED", &last_seen))
                }
                (false, false) => None,
            },
        }
    }
}

fn line(event: &Value) -> Result<Bytes, Infallible> {
    let mut text = event.to_string();
    text.push('\n');
    Ok(Bytes::from(text))
}

async fn run(
    shared: Arc<Shared>,
    spec: WatchSpec,
    start_rv: u64,
    initial: Vec<Value>,
    end_marker: Option<Value>,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let mut changes = shared.changes.subscribe();
    let mut epoch = shared.watch_epoch.subscribe();
    epoch.borrow_and_update();
    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    let interval = shared.config.bookmark_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    for event in initial.iter().chain(end_marker.iter()) {
        if tx.send(line(event)).await.is_err() {
            return;
        }
    }
    let mut last = start_rv;
    let mut open = false;
    loop {
        changes.borrow_and_update();
        let drained = {
            let state = shared.state.lock();
            state
                .history_after(last, open)
                .map(|entries| (entries, state.current_rv()))
        };
        open = true;
        match drained {
            Err(error) => {
                let _ = tx
                    .send(line(&json!({"type": "ERROR", "object": error.to_status()})))
                    .await;
                return;
            }
            Ok((entries, current)) => {
                for entry in entries {
                    if let Some(event) = spec.event_for(&entry)
                        && tx.send(line(&event)).await.is_err()
                    {
                        return;
                    }
                }
                last = last.max(current);
            }
        }
        tokio::select! {
            _ = &mut deadline => return,
            _ = epoch.changed() => return,
            changed = changes.changed() => if changed.is_err() { return },
            _ = ticker.tick(), if spec.bookmarks => {
                if tx.send(line(&spec.bookmark(last, false))).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}
