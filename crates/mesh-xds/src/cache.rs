//! The current snapshot per node group, watched by streams.

use std::{collections::HashMap, sync::Arc, time::Instant};

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

/// A snapshot as published, with when it was published (for convergence times).
#[derive(Debug, Clone)]
pub struct Published {
    /// The snapshot.
    pub snapshot: Arc<Snapshot>,
    /// When [`SnapshotCache::set`] published it.
    pub at: Instant,
}

type Slot = watch::Sender<Option<Published>>;

/// The latest snapshot of each node group. Cheap to clone.
///
/// Groups come into being when a stream first watches them; whoever publishes
/// snapshots learns of new groups through [`SnapshotCache::demand`] and can build
/// each group's snapshot lazily, for the groups that have streams only.
#[derive(Debug, Clone)]
pub struct SnapshotCache {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    demand: Arc<watch::Sender<u64>>,
}

impl Default for SnapshotCache {
    fn default() -> Self {
        Self {
            slots: Arc::default(),
            demand: Arc::new(watch::channel(0).0),
        }
    }
}

impl SnapshotCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes the snapshot of a group; streams watching it see it at once.
    /// Publishing a snapshot equal to the current one wakes no stream.
    pub fn set(&self, group: &str, snapshot: Snapshot) {
        self.set_shared(group, Arc::new(snapshot));
    }

    /// Publishes a shared snapshot (one snapshot may serve several groups).
    pub fn set_shared(&self, group: &str, snapshot: Arc<Snapshot>) {
        let mut slots = self.slots.lock();
        let slot = slots
            .entry(group.to_string())
            .or_insert_with(|| watch::channel(None).0);
        slot.send_if_modified(|current| {
            let same = current
                .as_ref()
                .is_some_and(|p| same_content(&p.snapshot, &snapshot));
            if same {
                false
            } else {
                *current = Some(Published {
                    snapshot,
                    at: Instant::now(),
                });
                true
            }
        });
    }

    /// The current snapshot of a group.
    pub fn get(&self, group: &str) -> Option<Arc<Snapshot>> {
        self.slots
            .lock()
            .get(group)
            .and_then(|s| s.borrow().as_ref().map(|p| p.snapshot.clone()))
    }

    /// Watches a group; the receiver sees `None` until its first snapshot. Watching
    /// a group that has no snapshot yet signals [`SnapshotCache::demand`].
    pub fn watch(&self, group: &str) -> watch::Receiver<Option<Published>> {
        let mut slots = self.slots.lock();
        let slot = slots
            .entry(group.to_string())
            .or_insert_with(|| watch::channel(None).0);
        let rx = slot.subscribe();
        if rx.borrow().is_none() {
            self.demand.send_modify(|n| *n = n.wrapping_add(1));
        }
        rx
    }

    /// Changes whenever a stream starts watching a group that has no snapshot.
    pub fn demand(&self) -> watch::Receiver<u64> {
        self.demand.subscribe()
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

    /// Groups watched by at least one stream, sorted, each with whether it already
    /// has a snapshot.
    pub fn watched(&self) -> Vec<(String, bool)> {
        let slots = self.slots.lock();
        let mut groups: Vec<(String, bool)> = slots
            .iter()
            .filter(|(_, s)| s.receiver_count() > 0)
            .map(|(k, s)| (k.clone(), s.borrow().is_some()))
            .collect();
        groups.sort();
        groups
    }

    /// Forgets groups no stream watches any more, returning how many were dropped.
    pub fn prune(&self) -> usize {
        let mut slots = self.slots.lock();
        let before = slots.len();
        slots.retain(|_, s| s.receiver_count() > 0);
        before - slots.len()
    }
}

/// Whether two snapshots hold the same sets, judged by their content hashes (each
/// set's version hashes every resource name and version), without comparing bodies.
fn same_content(a: &Arc<Snapshot>, b: &Arc<Snapshot>) -> bool {
    if Arc::ptr_eq(a, b) {
        return true;
    }
    a.type_urls().eq(b.type_urls())
        && a.type_urls().all(|t| match (a.get(t), b.get(t)) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y) || x.version == y.version,
            _ => false,
        })
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

    #[tokio::test]
    async fn new_groups_signal_demand_and_unwatched_ones_are_pruned() {
        let cache = SnapshotCache::new();
        let mut demand = cache.demand();
        demand.borrow_and_update();
        let a = cache.watch("a");
        assert!(
            demand.has_changed().unwrap_or(false),
            "a new group is demanded"
        );
        demand.borrow_and_update();
        assert_eq!(cache.watched(), [("a".to_string(), false)]);
        cache.set("a", Snapshot::new());
        let _a2 = cache.watch("a");
        assert!(
            !demand.has_changed().unwrap_or(true),
            "a group with a snapshot is not demanded again"
        );
        assert_eq!(cache.watched(), [("a".to_string(), true)]);
        cache.set("b", Snapshot::new());
        assert_eq!(cache.prune(), 1, "b has no watcher");
        drop(a);
        assert_eq!(cache.watched().len(), 1, "a second watcher keeps a");
        drop(_a2);
        assert_eq!(cache.prune(), 1);
        assert!(cache.groups().is_empty());
    }
}
