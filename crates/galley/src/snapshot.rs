//! Turning the merged configuration into an MCP snapshot: one collection (type URL)
//! per kind, each resource encoded once and reused until it changes.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use mesh_mcp::encode;
use mesh_model::{Kind, Resource, ResourceKey};
use mesh_xds::{Snapshot, TypedResources, XdsResource};

use crate::store::ConfigView;

/// Builds snapshots incrementally: only resources that changed are re-encoded, and
/// only collections that changed are rebuilt.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    encoded: HashMap<ResourceKey, (Arc<Resource>, Arc<XdsResource>)>,
    per_kind: HashMap<Kind, BTreeMap<String, Arc<XdsResource>>>,
    sets: HashMap<Kind, Arc<TypedResources>>,
}

/// Same resource content, wherever it was read from.
fn same_content(a: &Resource, b: &Resource) -> bool {
    a.api_version == b.api_version && a.meta == b.meta && a.spec == b.spec
}

impl SnapshotBuilder {
    /// A builder with nothing encoded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The snapshot of `view`, given the resources that `changed` since the last
    /// build (every resource, the first time). Every collection is present, empty
    /// ones included.
    pub fn build(&mut self, view: &ConfigView, changed: &HashSet<ResourceKey>) -> Snapshot {
        let mut dirty: HashSet<Kind> = HashSet::new();
        for key in changed {
            match view.resources.get(key) {
                Some(resource) => {
                    let reuse = matches!(
                        self.encoded.get(key),
                        Some((old, _)) if Arc::ptr_eq(old, resource) || same_content(old, resource)
                    );
                    if reuse {
                        if let Some(entry) = self.encoded.get_mut(key) {
                            entry.0 = resource.clone();
                        }
                        continue;
                    }
                    let enc = Arc::new(encode(resource));
                    self.per_kind
                        .entry(key.kind)
                        .or_default()
                        .insert(enc.name.clone(), enc.clone());
                    self.encoded.insert(key.clone(), (resource.clone(), enc));
                    dirty.insert(key.kind);
                }
                None => {
                    if let Some((_, enc)) = self.encoded.remove(key) {
                        if let Some(items) = self.per_kind.get_mut(&key.kind) {
                            items.remove(&enc.name);
                        }
                        dirty.insert(key.kind);
                    }
                }
            }
        }
        let mut snapshot = Snapshot::new();
        for kind in Kind::ALL {
            let set = match self.sets.get(&kind) {
                Some(set) if !dirty.contains(&kind) => set.clone(),
                _ => {
                    let items = self
                        .per_kind
                        .get(&kind)
                        .map(|m| m.values().cloned().collect::<Vec<_>>());
                    let set = Arc::new(TypedResources::from_shared(items.unwrap_or_default()));
                    self.sets.insert(kind, set.clone());
                    set
                }
            };
            snapshot.insert(kind.collection(), set);
        }
        snapshot
    }

    /// The snapshot of `view` built from scratch.
    pub fn build_all(&mut self, view: &ConfigView) -> Snapshot {
        let all: HashSet<ResourceKey> = view.resources.keys().cloned().collect();
        self.build(view, &all)
    }
}
