//! The object store: every object, one global resource version (like an etcd
//! revision), and the history of changes that watches replay.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::meta;
use crate::resources::{Behaviour, Registry, ResourceKey, ResourceType};
use crate::status::ApiError;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Added,
    Modified,
    Deleted,
}

/// One change in the history, at its resource version.
#[derive(Debug)]
pub(crate) struct HistoryEntry {
    pub(crate) rv: u64,
    pub(crate) resource: ResourceKey,
    pub(crate) namespace: String,
    pub(crate) change: Change,
    /// The object after the change (for a deletion: the object as deleted).
    pub(crate) object: Arc<Value>,
    /// The object before the change, if it existed.
    pub(crate) previous: Option<Arc<Value>>,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteScope {
    /// The object without its status (when the type has a status subresource).
    Main,
    /// Only the status, through `/status`.
    Status,
    /// Everything, status included (the test's own writes).
    All,
}

/// Key of a stored object: resource, namespace ("" when cluster-scoped), name.
type ObjectKey = (ResourceKey, String, String);

/// Everything the server holds, behind one lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) registry: Registry,
    rv: u64,
    objects: BTreeMap<ObjectKey, Arc<Value>>,
    history: VecDeque<Arc<HistoryEntry>>,
    /// Watches from a resource version below this one get 410 Expired.
    floor: u64,
    /// The newest version whose change was dropped from the history; an open watch
    /// behind it has missed changes.
    dropped: u64,
    history_limit: usize,
    next_cluster_ip: u32,
}

/// The first resource version handed out.
const FIRST_RV: u64 = 1000;

impl State {
    pub(crate) fn new(history_limit: usize) -> Self {
        let mut state = Self {
            registry: Registry::builtin(),
            rv: FIRST_RV,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            floor: 0,
            dropped: 0,
            history_limit: history_limit.max(1),
            next_cluster_ip: 1,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let ns_type = state
                .registry
                .find("", "v1", "namespaces")
                .cloned()
                .expect("namespaces is built in");
            let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            // The built-in namespaces are valid objects; creating them cannot fail.
            let _ = state.create(&ns_type, "", object, false);
        }
        state
    }

    /// The newest resource version.
    pub(crate) fn current_rv(&self) -> u64 {
        self.rv
    }

    /// The oldest resource version a watch may start from.
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    fn key(t: &ResourceType, namespace: &str, name: &str) -> ObjectKey {
        let ns = if t.namespaced { namespace } else { "" };
        (
            (t.group.clone(), t.plural.clone()),
            ns.to_string(),
            name.to_string(),
        )
    }

    /// One object.
    pub(crate) fn get(&self, t: &ResourceType, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.objects.get(&Self::key(t, namespace, name)).cloned()
    }

    /// Objects of a type, in one namespace or (None) in all, in key order.
    pub(crate) fn list(&self, t: &ResourceType, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let resource = (t.group.clone(), t.plural.clone());
        self.objects
            .range((resource.clone(), String::new(), String::new())..)
            .take_while(|((r, _, _), _)| *r == resource)
            .filter(|((_, ns, _), _)| namespace.is_none_or(|want| !t.namespaced || ns == want))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn record(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        change: Change,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let entry = HistoryEntry {
            rv: self.rv,
            resource: (t.group.clone(), t.plural.clone()),
            namespace: namespace.to_string(),
            change,
            object,
            previous,
        };
        self.history.push_back(Arc::new(entry));
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.floor = self.floor.max(old.rv);
                self.dropped = self.dropped.max(old.rv);
            }
        }
    }

    /// Changes after `rv` (exclusive), or 410 Expired when some were forgotten.
    /// A new watch may not start below the compaction floor; an open watch only
    /// fails when changes it has not seen were dropped.
    pub(crate) fn history_after(
        &self,
        rv: u64,
        open_watch: bool,
    ) -> Result<Vec<Arc<HistoryEntry>>, ApiError> {
        let expired = if open_watch {
            rv < self.dropped
        } else {
            rv < self.floor
        };
        if expired {
            return Err(ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                self.floor
            )));
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Ok(self.history.range(start..).cloned().collect())
    }

    /// Forgets all history: every resource version handed out so far becomes too
    /// old to watch from. The global version moves on by one so that a list made
    /// after compaction returns a version that can be watched.
    pub(crate) fn compact(&mut self) {
        self.rv += 1;
        self.floor = self.rv;
        self.history.clear();
    }

    /// Creates an object (metadata already checked against the request).
    pub(crate) fn create(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        mut object: Value,
        keep_status: bool,
    ) -> Result<Value, ApiError> {
        if t.status_subresource
            && !keep_status
            && t.behaviour != Behaviour::CustomResourceDefinition
            && let Some(o) = object.as_object_mut()
        {
            o.remove("status");
        }
        let meta = metadata_mut(&mut object)?;
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            let prefix = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &t.kind,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
            name = meta::generated_name(prefix);
        }
        if !meta::is_dns_subdomain(&name) {
            return Err(ApiError::invalid(
                &t.kind,
                &name,
                format!(
                    "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain \
                     must consist of lower case alphanumeric characters, '-' or '.', and must \
                     start and end with an alphanumeric character"
                ),
            ));
        }
        if t.namespaced {
            let ns_type = self
                .registry
                .find("", "v1", "namespaces")
                .cloned()
                .ok_or_else(|| ApiError::new(500, "namespaces are not registered"))?;
            if self.get(&ns_type, "", namespace).is_none() {
                return Err(ApiError::not_found("", "namespaces", namespace));
            }
        }
        if self.get(t, namespace, &name).is_some() {
            return Err(ApiError::already_exists(&t.group, &t.plural, &name));
        }
        self.rv += 1;
        let meta = metadata_mut(&mut object)?;
        meta.insert("name".into(), json!(name));
        if t.namespaced {
            meta.insert("namespace".into(), json!(namespace));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), json!(meta::new_uid()));
        meta.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        meta.remove("managedFields");
        self.apply_defaults(t, &mut object);
        let stored = Arc::new(object);
        self.objects
            .insert(Self::key(t, namespace, &name), stored.clone());
        self.record(t, namespace, Change::Added, stored.clone(), None);
        Ok((*stored).clone())
    }

    /// Type-specific defaults the real server fills in on create.
    fn apply_defaults(&mut self, t: &ResourceType, object: &mut Value) {
        if t.group.is_empty() && t.plural == "services" {
            let spec = object
                .as_object_mut()
                .map(|o| o.entry("spec").or_insert_with(|| json!({})));
            if let Some(Value::Object(spec)) = spec {
                let kind = spec
                    .entry("type")
                    .or_insert_with(|| json!("ClusterIP"))
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if kind != "ExternalName" && !spec.contains_key("clusterIP") {
                    let n = self.next_cluster_ip;
                    self.next_cluster_ip += 1;
                    let ip = format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff);
                    spec.insert("clusterIP".into(), json!(ip));
                    spec.insert("clusterIPs".into(), json!([ip]));
                }
            }
        }
        let initial_status = match (t.group.as_str(), t.plural.as_str()) {
            ("", "namespaces") => Some(json!({"phase": "Active"})),
            ("", "pods") => Some(json!({"phase": "Pending"})),
            _ => None,
        };
        if let (Some(status), Some(o)) = (initial_status, object.as_object_mut()) {
            o.entry("status").or_insert(status);
        }
    }

    /// Replaces an object (PUT or the result of a patch). `expected_rv` is the
    /// optimistic-concurrency precondition, if the client gave one.
    pub(crate) fn replace(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        mut object: Value,
        scope: WriteScope,
        expected_rv: Option<&str>,
    ) -> Result<Value, ApiError> {
        let key = Self::key(t, namespace, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&t.group, &t.plural, name))?;
        let old_rv = old
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(expected) = expected_rv.filter(|rv| !rv.is_empty())
            && expected != old_rv
        {
            return Err(ApiError::conflict(&t.group, &t.plural, name));
        }
        if scope == WriteScope::Status {
            let status = object.get("status").cloned();
            object = (*old).clone();
            if let Some(o) = object.as_object_mut() {
                match status {
                    Some(s) => o.insert("status".into(), s),
                    None => o.remove("status"),
                };
            }
        } else if t.status_subresource
            && scope == WriteScope::Main
            && let Some(o) = object.as_object_mut()
        {
            match old.get("status") {
                Some(s) => o.insert("status".into(), s.clone()),
                None => o.remove("status"),
            };
        }
        // Server-owned metadata survives every write.
        let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
        let meta = metadata_mut(&mut object)?;
        for field in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
            match old_meta.get(field) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
        meta.insert("name".into(), json!(name));
        if t.namespaced {
            meta.insert("namespace".into(), json!(namespace));
        } else {
            meta.remove("namespace");
        }
        meta.remove("managedFields");
        if t.group.is_empty() && t.plural == "services" {
            keep_cluster_ip(&old, &mut object);
        }
        if object == *old {
            // A write that changes nothing is not a change: no new version, no event.
            return Ok(object);
        }
        if without_meta_and_status(&object) != without_meta_and_status(&old) {
            let generation = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            metadata_mut(&mut object)?.insert("generation".into(), json!(generation + 1));
        }
        self.rv += 1;
        metadata_mut(&mut object)?.insert("resourceVersion".into(), json!(self.rv.to_string()));
        let stored = Arc::new(object);
        self.objects.insert(key, stored.clone());
        self.record(t, namespace, Change::Modified, stored.clone(), Some(old));
        Ok((*stored).clone())
    }

    /// Deletes an object, with optional `resourceVersion` and `uid` preconditions.
    pub(crate) fn delete(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        expected_rv: Option<&str>,
        expected_uid: Option<&str>,
    ) -> Result<Value, ApiError> {
        let key = Self::key(t, namespace, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&t.group, &t.plural, name))?;
        let meta_str = |field: &str| {
            old.pointer(&format!("/metadata/{field}"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        if expected_rv.is_some_and(|rv| rv != meta_str("resourceVersion")) {
            return Err(ApiError::conflict(&t.group, &t.plural, name).with_reason("Conflict"));
        }
        if expected_uid.is_some_and(|uid| uid != meta_str("uid")) {
            return Err(ApiError::conflict(&t.group, &t.plural, name));
        }
        if t.group.is_empty() && t.plural == "namespaces" {
            self.delete_namespace_contents(name);
        }
        self.objects.remove(&key);
        self.rv += 1;
        let mut deleted = (*old).clone();
        metadata_mut(&mut deleted)?.insert("resourceVersion".into(), json!(self.rv.to_string()));
        let deleted = Arc::new(deleted);
        self.record(t, namespace, Change::Deleted, deleted.clone(), Some(old));
        Ok((*deleted).clone())
    }

    fn delete_namespace_contents(&mut self, namespace: &str) {
        let types: Vec<ResourceType> = self
            .registry
            .all()
            .filter(|t| t.namespaced)
            .cloned()
            .collect();
        for t in types {
            for object in self.list(&t, Some(namespace)) {
                if let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str) {
                    // Objects listed just now exist; deleting them cannot fail.
                    let _ = self.delete(&t, namespace, name, None, None);
                }
            }
        }
    }

    /// Deletes every object of a type (its definition is going away).
    pub(crate) fn delete_all(&mut self, t: &ResourceType) {
        for object in self.list(t, None) {
            let meta = |f: &str| {
                object
                    .pointer(&format!("/metadata/{f}"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let _ = self.delete(t, &meta("namespace"), &meta("name"), None, None);
        }
    }
}

fn keep_cluster_ip(old: &Value, new: &mut Value) {
    for field in ["clusterIP", "clusterIPs"] {
        let missing = new.pointer(&format!("/spec/{field}")).is_none();
        if let (true, Some(v), Some(Value::Object(spec))) = (
            missing,
            old.pointer(&format!("/spec/{field}")),
            new.get_mut("spec"),
        ) {
            spec.insert(field.into(), v.clone());
        }
    }
}

fn without_meta_and_status(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(o) = copy.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    copy
}

/// The object's `metadata` map (created if absent), or 400 when the object is not a map.
pub(crate) fn metadata_mut(object: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let o = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the object is not a JSON object"))?;
    match o.entry("metadata").or_insert_with(|| json!({})) {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad_request("metadata must be an object")),
    }
}
