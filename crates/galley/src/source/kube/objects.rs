//! What the Kubernetes source knows of each object beyond the configuration it
//! feeds the store: its generation, resource version and status, as last seen by the
//! watches. galley's status writer reads it to compare the status it wants with the
//! one the object holds, without asking the API server.

use std::{collections::HashMap, sync::Arc};

use kube::api::DynamicObject;
use parking_lot::RwLock;
use serde_json::Value;
use tokio::sync::watch;

/// One object's state, as of the last watch event about it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectState {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
    /// `status`, when the object has one.
    pub status: Option<Value>,
}

impl ObjectState {
    /// The state of a watched object.
    pub fn of(object: &DynamicObject) -> Self {
        Self {
            generation: object.metadata.generation,
            resource_version: object.metadata.resource_version.clone(),
            status: object.data.get("status").filter(|s| !s.is_null()).cloned(),
        }
    }
}

/// Every watched object's [`ObjectState`], by the name of its "file"
/// (`kubernetes/<plural>.<group>/<namespace>/<name>`); cheap to clone.
#[derive(Debug, Clone)]
pub struct KubeObjects {
    objects: Arc<RwLock<HashMap<String, ObjectState>>>,
    /// Bumped whenever a status changes or an object goes away.
    changes: Arc<watch::Sender<u64>>,
}

impl Default for KubeObjects {
    fn default() -> Self {
        Self {
            objects: Arc::default(),
            changes: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl KubeObjects {
    /// The state of the object behind `path`, if it exists.
    pub fn get(&self, path: &str) -> Option<ObjectState> {
        self.objects.read().get(path).cloned()
    }

    /// Runs `f` with every object's state, under a read lock (no await inside).
    pub fn with<T>(&self, f: impl FnOnce(&HashMap<String, ObjectState>) -> T) -> T {
        f(&self.objects.read())
    }

    /// The generation of the object behind `path`.
    pub fn generation(&self, path: &str) -> Option<i64> {
        self.objects.read().get(path).and_then(|o| o.generation)
    }

    /// A receiver that sees a change whenever a status changes or an object goes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records an object's state.
    pub fn set(&self, path: &str, state: ObjectState) {
        let status_changed = {
            let mut objects = self.objects.write();
            let changed = objects
                .get(path)
                .is_none_or(|old| old.status != state.status);
            objects.insert(path.to_string(), state);
            changed
        };
        if status_changed {
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Forgets a deleted object.
    pub fn remove(&self, path: &str) {
        if self.objects.write().remove(path).is_some() {
            self.changes.send_modify(|n| *n += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn status_changes_are_signalled_and_other_updates_are_not() {
        let objects = KubeObjects::default();
        let mut rx = objects.subscribe();
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "cart", "namespace": "shop", "generation": 2, "resourceVersion": "7"},
            "spec": {}, "status": {"observedGeneration": 2}
        }))
        .unwrap();
        let state = ObjectState::of(&object);
        assert_eq!(state.generation, Some(2));
        assert_eq!(state.status, Some(json!({"observedGeneration": 2})));
        objects.set("p", state.clone());
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        // A new resource version with the same status: no signal.
        objects.set(
            "p",
            ObjectState {
                resource_version: Some("8".into()),
                ..state
            },
        );
        assert!(!rx.has_changed().unwrap());
        assert_eq!(objects.generation("p"), Some(2));
        objects.remove("p");
        assert!(rx.has_changed().unwrap());
        assert!(objects.get("p").is_none());
    }
}
