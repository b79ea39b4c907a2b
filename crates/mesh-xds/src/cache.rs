//! The current snapshot per node group, watched by streams.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::Snapshot;

/// Maps a client's node to the group whose snapshot it is served.
pub trait NodeGrouper: Send + Sync + 'static {
    /// The group key of `node` (None when the client sent no node).
    fn group(&self, node: Option<&mesh_api::envoy::envoy::config::core::v3::Node>) -> String;
}

/// Serves every client from one snapshot (galley's MCP server).
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleGroup;

impl NodeGrouper for SingleGroup {
    fn group(&self, _node: Option<&mesh_api::envoy::envoy::config::core::v3::Node>) -> String {
        String::new()
    }
}

type Slot = watch::Sender<Option<Arc<Snapshot>>>;

/// The latest snapshot of each node group. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SnapshotCache {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

impl SnapshotCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes the snapshot of a group; streams watching it see it at once.
    /// Publishing a snapshot equal to the current one wakes no stream.
    pub fn set(&self, group: &str, snapshot: Snapshot) {
        let mut slots = self.slots.lock();
        let slot = slots
            .entry(group.to_string())
            .or_insert_with(|| watch::channel(None).0);
        slot.send_if_modified(|current| {
            if current.as_deref() == Some(&snapshot) {
                false
            } else {
                *current = Some(Arc::new(snapshot));
                true
            }
        });
    }

    /// The current snapshot of a group.
    pub fn get(&self, group: &str) -> Option<Arc<Snapshot>> {
        self.slots
            .lock()
            .get(group)
            .and_then(|s| s.borrow().clone())
    }

    /// Watches a group; the receiver sees `None` until its first snapshot.
    pub fn watch(&self, group: &str) -> watch::Receiver<Option<Arc<Snapshot>>> {
        let mut slots = self.slots.lock();
        slots
            .entry(group.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// Groups that have a snapshot.
    pub fn groups(&self) -> Vec<String> {
        let slots = self.slots.lock();
        let mut groups: Vec<String> = slots
            .iter()
            .filter(|(_, s)| s.borrow().is_some())
            .map(|(k, _)| k.clone())
            .collect();
        groups.sort();
        groups
    }
}

/// Short description of a node for logs and status pages.
pub fn node_id(node: Option<&mesh_api::envoy::envoy::config::core::v3::Node>) -> String {
    match node {
        Some(n) if !n.id.is_empty() => n.id.clone(),
        _ => "<no node>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn equal_snapshot_does_not_wake_watchers() {
        let cache = SnapshotCache::new();
        let mut rx = cache.watch("");
        assert!(rx.borrow_and_update().is_none());
        cache.set("", Snapshot::new());
        assert!(rx.has_changed().unwrap_or(false));
        rx.borrow_and_update();
        cache.set("", Snapshot::new());
        assert!(!rx.has_changed().unwrap_or(true));
    }
}
