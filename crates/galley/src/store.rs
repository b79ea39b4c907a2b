//! The configuration store: what every source file currently contributes, with
//! Kubernetes-like "refused changes leave the last good version in place" semantics.
//!
//! - A file that parses contributes its accepted resources.
//! - A refused resource whose identity can be read keeps the last good version that
//!   this file gave for it, if any; the refusal is reported.
//! - A document so broken that no identity can be read (invalid YAML) makes the file
//!   keep every resource it gave before and does not now name: nothing is deleted on
//!   the strength of an unreadable file.
//! - A deleted file takes its resources with it.
//! - Two files defining the same resource: the first path (in sorted order) wins,
//!   the later one is reported as a duplicate.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use imbl::OrdMap;

use mesh_model::{
    ConfigError, Resource, ResourceKey,
    parse::{ParseOptions, Rejected, parse_document_set},
};
use serde::Serialize;

/// One change to the source: a file's new content, or its deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// The file's path relative to the source root (or another stable origin name).
    pub path: String,
    /// New content; None when the file was deleted.
    pub content: Option<String>,
}

#[derive(Debug, Default, Clone)]
struct FileState {
    accepted: Vec<Arc<Resource>>,
    kept: Vec<Arc<Resource>>,
    rejected: Vec<Rejected>,
    /// Later definitions of a resource this same file already defines.
    duplicates: Vec<ConfigError>,
    /// Resource -> (position, kept?), the first definition in the file.
    index: HashMap<ResourceKey, (usize, bool)>,
    skipped: usize,
}

/// A resource kept at its last good version because its new version was refused.
#[derive(Debug, Clone, Serialize)]
pub struct KeptResource {
    /// The resource.
    pub key: ResourceKey,
    /// Where the kept version came from.
    pub source: String,
}

/// The merged, current configuration. Cheap to clone: the resource map is a
/// persistent map sharing structure with the store's.
#[derive(Debug, Clone, Default)]
pub struct ConfigView {
    /// Every served resource.
    pub resources: OrdMap<ResourceKey, Arc<Resource>>,
    /// Every current refusal (invalid documents, duplicates).
    pub errors: Vec<ConfigError>,
    /// Resources served at their last good version.
    pub kept: Vec<KeptResource>,
    /// Documents of other API groups that were passed over.
    pub skipped: usize,
}

/// Per-file parse results, merged incrementally: a change costs work in
/// proportion to the file that changed, not to the whole configuration.
#[derive(Debug, Default)]
pub struct ConfigStore {
    opts: ParseOptions,
    files: BTreeMap<String, FileState>,
    /// Which files define each resource (accepted or kept), in path order.
    owners: HashMap<ResourceKey, BTreeSet<String>>,
    /// The winning definition of every resource.
    merged: OrdMap<ResourceKey, Arc<Resource>>,
    /// Resources whose merged definition may have moved since the last
    /// [`ConfigStore::take_changed`].
    changed: HashSet<ResourceKey>,
}

impl FileState {
    /// The resource this file gives for `key`: an accepted one first, then a kept one.
    fn get(&self, key: &ResourceKey) -> Option<&Arc<Resource>> {
        self.index.get(key).map(|&(i, kept)| {
            if kept {
                &self.kept[i]
            } else {
                &self.accepted[i]
            }
        })
    }

    fn keys(&self) -> impl Iterator<Item = &ResourceKey> {
        self.index.keys()
    }
}

impl ConfigStore {
    /// An empty store.
    pub fn new(opts: ParseOptions) -> Self {
        Self {
            opts,
            ..Self::default()
        }
    }

    /// Applies one change; returns the errors the new content produced.
    pub fn apply(&mut self, change: FileChange) -> Vec<ConfigError> {
        let previous = self.files.remove(&change.path);
        let (state, errors) = match change.content {
            Some(text) => {
                let (state, errors) = self.parse(&change.path, &text, previous.as_ref());
                (Some(state), errors)
            }
            None => (None, Vec::new()),
        };
        let mut affected: HashSet<ResourceKey> = HashSet::new();
        if let Some(old) = &previous {
            for key in old.keys() {
                if let Some(paths) = self.owners.get_mut(key) {
                    paths.remove(&change.path);
                }
                affected.insert(key.clone());
            }
        }
        if let Some(new) = &state {
            for key in new.keys() {
                self.owners
                    .entry(key.clone())
                    .or_default()
                    .insert(change.path.clone());
                affected.insert(key.clone());
            }
        }
        if let Some(state) = state {
            self.files.insert(change.path, state);
        }
        for key in affected {
            self.remerge(key);
        }
        errors
    }

    /// Re-elects the definition of `key` served: the first file (by path) defining it.
    fn remerge(&mut self, key: ResourceKey) {
        let winner = self
            .owners
            .get(&key)
            .and_then(|paths| paths.iter().next())
            .and_then(|path| self.files.get(path))
            .and_then(|file| file.get(&key))
            .cloned();
        let moved = match winner {
            Some(resource) => match self.merged.get(&key) {
                Some(current) if Arc::ptr_eq(current, &resource) => false,
                _ => {
                    self.merged.insert(key.clone(), resource);
                    true
                }
            },
            None => {
                self.owners.remove(&key);
                self.merged.remove(&key).is_some()
            }
        };
        if moved {
            self.changed.insert(key);
        }
    }

    fn parse(
        &self,
        path: &str,
        text: &str,
        previous: Option<&FileState>,
    ) -> (FileState, Vec<ConfigError>) {
        let set = parse_document_set(path, text, &self.opts);
        // Unchanged resources keep their identity, so everything downstream
        // (encodings, per-collection sets) can tell at a glance that they did not move.
        let accepted: Vec<Arc<Resource>> = set
            .accepted
            .into_iter()
            .map(|r| match previous.and_then(|p| p.get(&r.key())) {
                Some(old) if **old == r => Arc::clone(old),
                _ => Arc::new(r),
            })
            .collect();
        let named: HashSet<ResourceKey> = accepted
            .iter()
            .map(|r| r.key())
            .chain(set.rejected.iter().filter_map(|r| r.key.clone()))
            .collect();
        let unreadable = set.rejected.iter().any(|r| r.key.is_none());
        let refused: HashSet<&ResourceKey> =
            set.rejected.iter().filter_map(|r| r.key.as_ref()).collect();
        let mut kept = Vec::new();
        if let Some(previous) = previous {
            for key in previous.keys() {
                let keep = refused.contains(key) || (unreadable && !named.contains(key));
                if let (true, Some(old)) = (keep, previous.get(key)) {
                    kept.push(old.clone());
                }
            }
        }
        let mut index = HashMap::with_capacity(accepted.len() + kept.len());
        let mut duplicates = Vec::new();
        for (i, r) in accepted.iter().enumerate() {
            match index.entry(r.key()) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    let (j, _): (usize, bool) = *first.get();
                    duplicates.push(duplicate_error(r, &accepted[j]));
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert((i, false));
                }
            }
        }
        for (i, r) in kept.iter().enumerate() {
            index.entry(r.key()).or_insert((i, true));
        }
        let mut errors: Vec<ConfigError> =
            set.rejected.iter().flat_map(|r| r.errors.clone()).collect();
        errors.extend(duplicates.iter().cloned());
        let state = FileState {
            accepted,
            kept,
            rejected: set.rejected,
            duplicates,
            index,
            skipped: set.skipped.len(),
        };
        (state, errors)
    }

    /// Resources whose served definition moved since the last call.
    pub fn take_changed(&mut self) -> HashSet<ResourceKey> {
        std::mem::take(&mut self.changed)
    }

    /// The merged view of every file.
    pub fn view(&self) -> ConfigView {
        let mut view = ConfigView {
            resources: self.merged.clone(),
            ..ConfigView::default()
        };
        for state in self.files.values() {
            view.skipped += state.skipped;
            for rejected in &state.rejected {
                view.errors.extend(rejected.errors.iter().cloned());
            }
            view.errors.extend(state.duplicates.iter().cloned());
            for (key, &(i, kept)) in &state.index {
                let resource = if kept {
                    &state.kept[i]
                } else {
                    &state.accepted[i]
                };
                let winner = self.merged.get(key);
                match winner {
                    Some(w) if Arc::ptr_eq(w, resource) && kept => {
                        view.kept.push(KeptResource {
                            key: key.clone(),
                            source: resource.source.to_string(),
                        });
                    }
                    Some(w) if Arc::ptr_eq(w, resource) => {}
                    Some(w) => view.errors.push(duplicate_error(resource, w)),
                    None => {}
                }
            }
        }
        view.kept.sort_by(|a, b| a.key.cmp(&b.key));
        view
    }

    /// Number of files known.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }
}

fn duplicate_error(resource: &Resource, first: &Resource) -> ConfigError {
    let key = resource.key();
    ConfigError {
        source: resource.source.clone(),
        kind: Some(key.kind.as_str().to_string()),
        namespace: Some(key.namespace),
        name: Some(key.name),
        field: None,
        message: format!(
            "duplicate resource: already defined at {}; this definition is ignored",
            first.source
        ),
    }
}

#[cfg(test)]
mod tests;
