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
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

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
}

/// A resource kept at its last good version because its new version was refused.
#[derive(Debug, Clone, Serialize)]
pub struct KeptResource {
    /// The resource.
    pub key: ResourceKey,
    /// Where the kept version came from.
    pub source: String,
}

/// The merged, current configuration.
#[derive(Debug, Clone, Default)]
pub struct ConfigView {
    /// Every served resource.
    pub resources: BTreeMap<ResourceKey, Arc<Resource>>,
    /// Every current refusal (invalid documents, duplicates).
    pub errors: Vec<ConfigError>,
    /// Resources served at their last good version.
    pub kept: Vec<KeptResource>,
    /// Documents of other API groups that were passed over.
    pub skipped: usize,
}

/// Per-file parse results and their merge.
#[derive(Debug, Default)]
pub struct ConfigStore {
    opts: ParseOptions,
    files: BTreeMap<String, FileState>,
    skipped: BTreeMap<String, usize>,
}

impl ConfigStore {
    /// An empty store.
    pub fn new(opts: ParseOptions) -> Self {
        Self {
            opts,
            files: BTreeMap::new(),
            skipped: BTreeMap::new(),
        }
    }

    /// Applies one change; returns the errors the new content produced.
    pub fn apply(&mut self, change: FileChange) -> Vec<ConfigError> {
        let Some(text) = change.content else {
            self.files.remove(&change.path);
            self.skipped.remove(&change.path);
            return Vec::new();
        };
        let set = parse_document_set(&change.path, &text, &self.opts);
        let previous = self.files.remove(&change.path).unwrap_or_default();
        let accepted: Vec<Arc<Resource>> = set.accepted.into_iter().map(Arc::new).collect();

        let named: HashSet<ResourceKey> = accepted
            .iter()
            .map(|r| r.key())
            .chain(set.rejected.iter().filter_map(|r| r.key.clone()))
            .collect();
        let unreadable = set.rejected.iter().any(|r| r.key.is_none());
        let refused: HashSet<&ResourceKey> =
            set.rejected.iter().filter_map(|r| r.key.as_ref()).collect();

        let mut kept = Vec::new();
        for old in previous.accepted.iter().chain(previous.kept.iter()) {
            let key = old.key();
            let keep = refused.contains(&key) || (unreadable && !named.contains(&key));
            if keep {
                kept.push(old.clone());
            }
        }
        let errors: Vec<ConfigError> = set.rejected.iter().flat_map(|r| r.errors.clone()).collect();
        self.skipped.insert(change.path.clone(), set.skipped.len());
        self.files.insert(
            change.path,
            FileState {
                accepted,
                kept,
                rejected: set.rejected,
            },
        );
        errors
    }

    /// The merged view of every file.
    pub fn view(&self) -> ConfigView {
        let mut view = ConfigView {
            skipped: self.skipped.values().sum(),
            ..ConfigView::default()
        };
        for (path, state) in &self.files {
            for rejected in &state.rejected {
                view.errors.extend(rejected.errors.iter().cloned());
            }
            let kept_keys: Vec<ResourceKey> = state.kept.iter().map(|r| r.key()).collect();
            for resource in state.accepted.iter().chain(state.kept.iter()) {
                let key = resource.key();
                if let Some(first) = view.resources.get(&key) {
                    if !Arc::ptr_eq(first, resource) {
                        view.errors.push(ConfigError {
                            source: resource.source.clone(),
                            kind: Some(key.kind.as_str().to_string()),
                            namespace: Some(key.namespace.clone()),
                            name: Some(key.name.clone()),
                            field: None,
                            message: format!(
                                "duplicate resource: already defined at {}; this definition is ignored",
                                first.source
                            ),
                        });
                    }
                    continue;
                }
                if kept_keys.contains(&key) {
                    view.kept.push(KeptResource {
                        key: key.clone(),
                        source: resource.source.to_string(),
                    });
                }
                view.resources.insert(key, resource.clone());
            }
            let _ = path;
        }
        view
    }

    /// Number of files known.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }
}

#[cfg(test)]
mod tests;
