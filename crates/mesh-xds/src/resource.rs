//! Versioned resources and immutable snapshots of them.

use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock, Weak},
};

use parking_lot::Mutex;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::{Any, encode, names::NameSet};

/// One named resource, encoded once and shared by every stream that sends it.
#[derive(Debug, Clone)]
pub struct XdsResource {
    /// The resource name clients subscribe to.
    pub name: String,
    /// Content hash of the encoded body.
    pub version: String,
    /// The encoded resource.
    pub body: Any,
    sotw: OnceLock<Bytes>,
    delta: OnceLock<Bytes>,
}

impl PartialEq for XdsResource {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.version == other.version && self.body == other.body
    }
}

impl XdsResource {
    /// Builds a resource whose version is the hash of its encoded body.
    pub fn new(name: impl Into<String>, body: Any) -> Self {
        let mut h = Sha256::new();
        h.update(body.type_url.as_bytes());
        h.update([0]);
        h.update(&body.value);
        let version = hex::encode(&h.finalize()[..8]);
        Self {
            name: name.into(),
            version,
            body,
            sotw: OnceLock::new(),
            delta: OnceLock::new(),
        }
    }

    /// This resource as a `resources` entry of a SotW response (encoded once).
    pub fn sotw_entry(&self) -> &Bytes {
        self.sotw.get_or_init(|| encode::sotw_entry(&self.body))
    }

    /// This resource as a `resources` entry of a delta response (encoded once).
    pub fn delta_entry(&self) -> &Bytes {
        self.delta
            .get_or_init(|| encode::delta_entry(&self.name, &self.version, &self.body))
    }
}

/// All resources of one type URL, with the content hash of the whole set.
#[derive(Debug, Default)]
pub struct TypedResources {
    /// Content hash of every (name, version) pair in name order.
    pub version: String,
    /// Resources by name.
    pub items: BTreeMap<String, Arc<XdsResource>>,
    wildcard: OnceLock<(String, Bytes)>,
    /// The subsets named subscriptions select, shared by the streams of one
    /// subscription (see [`TypedResources::subset`]).
    subsets: Mutex<Vec<(Weak<NameSet>, Arc<Subset>)>>,
    /// The difference from the set streams last saw, computed by the first stream
    /// that needs it (the previous set is held weakly so no history accumulates).
    delta: Mutex<Option<(Weak<TypedResources>, Arc<SetDelta>)>>,
}

/// Distinct subscriptions whose subsets a set remembers.
const MAX_CACHED_SUBSETS: usize = 32;

/// Resources selected by name from a set, in name order, with their content hash.
#[derive(Debug, Default)]
pub struct Subset {
    /// Content hash of every (name, version) pair, as [`set_version`].
    pub version: String,
    /// The resources, in name order.
    pub items: Vec<Arc<XdsResource>>,
    body: OnceLock<(String, Bytes)>,
    /// The difference from the subset streams last held (see [`TypedResources`]).
    delta: Mutex<Option<(Weak<Subset>, Arc<SetDelta>)>>,
}

impl PartialEq for Subset {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version && self.items == other.items
    }
}

impl Subset {
    /// A subset of resources given in name order.
    pub fn new(items: Vec<Arc<XdsResource>>) -> Self {
        let version = set_version(items.iter().map(|r| (r.name.as_str(), r.version.as_str())));
        Self {
            version,
            items,
            body: OnceLock::new(),
            delta: Mutex::new(None),
        }
    }

    /// What changed from `prev` to this subset, computed once per `prev`: the
    /// streams of one subscription share both subsets, so one walk serves them all.
    pub fn delta_from(&self, prev: &Arc<Subset>) -> Arc<SetDelta> {
        let mut cached = self.delta.lock();
        if let Some((weak, delta)) = cached.as_ref()
            && std::ptr::eq(weak.as_ptr(), Arc::as_ptr(prev))
        {
            return delta.clone();
        }
        let delta = Arc::new(diff_sorted(
            prev.items.iter().map(|r| (r.name.as_str(), r)),
            self.items.iter().map(|r| (r.name.as_str(), r)),
        ));
        *cached = Some((Arc::downgrade(prev), delta.clone()));
        delta
    }

    /// The resource named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<XdsResource>> {
        self.items
            .binary_search_by(|r| r.name.as_str().cmp(name))
            .ok()
            .and_then(|i| self.items.get(i))
    }

    /// The shared body of a SotW response carrying this subset as `type_url`,
    /// encoded on first use.
    pub fn sotw_body(&self, type_url: &str) -> Bytes {
        let build = || {
            encode::sotw_body(
                &self.version,
                type_url,
                self.items.iter().map(|r| r.sotw_entry()),
            )
        };
        let (cached_type, body) = self.body.get_or_init(|| (type_url.to_string(), build()));
        if cached_type == type_url {
            body.clone()
        } else {
            build()
        }
    }
}

/// What changed between two versions of a set.
#[derive(Debug, Default)]
pub struct SetDelta {
    /// Resources added or changed.
    pub changed: Vec<Arc<XdsResource>>,
    /// Names no longer present.
    pub removed: Vec<String>,
    /// The old set without the removed names, built by the first stream that
    /// needs it (streams sharing this delta share it).
    pub kept: OnceLock<Arc<Subset>>,
    /// The new set with the removed resources added back, built by the first
    /// stream that needs it.
    pub union: OnceLock<Arc<Subset>>,
}

impl PartialEq for SetDelta {
    fn eq(&self, other: &Self) -> bool {
        self.changed == other.changed && self.removed == other.removed
    }
}

impl Clone for TypedResources {
    fn clone(&self) -> Self {
        Self {
            version: self.version.clone(),
            items: self.items.clone(),
            wildcard: OnceLock::new(),
            subsets: Mutex::new(Vec::new()),
            delta: Mutex::new(None),
        }
    }
}

impl PartialEq for TypedResources {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version && self.items == other.items
    }
}

impl TypedResources {
    /// Builds a set; a later resource with the same name replaces an earlier one.
    pub fn new(items: impl IntoIterator<Item = XdsResource>) -> Self {
        Self::from_shared(items.into_iter().map(Arc::new))
    }

    /// Builds a set from shared resources (encoded once, reused across snapshots).
    pub fn from_shared(items: impl IntoIterator<Item = Arc<XdsResource>>) -> Self {
        let items: BTreeMap<String, Arc<XdsResource>> =
            items.into_iter().map(|r| (r.name.clone(), r)).collect();
        let version = set_version(
            items
                .values()
                .map(|r| (r.name.as_str(), r.version.as_str())),
        );
        Self {
            version,
            items,
            wildcard: OnceLock::new(),
            subsets: Mutex::new(Vec::new()),
            delta: Mutex::new(None),
        }
    }

    /// The resources of this set that `names` select, versioned. Computed once per
    /// shared subscription (see [`crate::names::share`]) and shared by every stream
    /// holding it, so a stream in sync keeps a pointer rather than a list.
    pub fn subset(&self, names: &Arc<NameSet>) -> Arc<Subset> {
        let mut cache = self.subsets.lock();
        if let Some((_, subset)) = cache
            .iter()
            .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(names)))
        {
            return subset.clone();
        }
        let subset = Arc::new(Subset::new(
            names
                .iter()
                .filter_map(|n| self.items.get(n))
                .cloned()
                .collect(),
        ));
        cache.retain(|(w, _)| w.strong_count() > 0);
        if cache.len() >= MAX_CACHED_SUBSETS {
            cache.remove(0);
        }
        cache.push((Arc::downgrade(names), subset.clone()));
        subset
    }

    /// What changed from `prev` to this set, computed once per `prev`.
    pub fn delta_from(&self, prev: &Arc<TypedResources>) -> Arc<SetDelta> {
        let mut cached = self.delta.lock();
        if let Some((weak, delta)) = cached.as_ref()
            && std::ptr::eq(weak.as_ptr(), Arc::as_ptr(prev))
        {
            return delta.clone();
        }
        let delta = Arc::new(diff_sets(prev, self));
        *cached = Some((Arc::downgrade(prev), delta.clone()));
        delta
    }

    /// The shared body of a SotW response carrying the whole set as `type_url`,
    /// encoded on first use and reused for every stream.
    pub fn wildcard_body(&self, type_url: &str) -> Bytes {
        let build = || {
            encode::sotw_body(
                &self.version,
                type_url,
                self.items.values().map(|r| r.sotw_entry()),
            )
        };
        let (cached_type, body) = self
            .wildcard
            .get_or_init(|| (type_url.to_string(), build()));
        if cached_type == type_url {
            body.clone()
        } else {
            build()
        }
    }
}

/// Walks two sorted sets side by side.
fn diff_sets(old: &TypedResources, new: &TypedResources) -> SetDelta {
    diff_sorted(
        old.items.iter().map(|(n, r)| (n.as_str(), r)),
        new.items.iter().map(|(n, r)| (n.as_str(), r)),
    )
}

/// What changed between two lists of resources given in name order.
pub fn diff_sorted<'a>(
    old: impl Iterator<Item = (&'a str, &'a Arc<XdsResource>)>,
    new: impl Iterator<Item = (&'a str, &'a Arc<XdsResource>)>,
) -> SetDelta {
    let mut delta = SetDelta::default();
    let mut olds = old.peekable();
    for (name, r) in new {
        while let Some((gone, _)) = olds.next_if(|(o, _)| *o < name) {
            delta.removed.push(gone.to_string());
        }
        match olds.next_if(|(o, _)| *o == name) {
            Some((_, before)) if Arc::ptr_eq(before, r) || before.version == r.version => {}
            _ => delta.changed.push(r.clone()),
        }
    }
    delta.removed.extend(olds.map(|(gone, _)| gone.to_string()));
    delta
}

/// The content hash of a set of (name, version) pairs given in name order.
pub fn set_version<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = Sha256::new();
    for (name, version) in pairs {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(version.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// An immutable view of every type a server serves to one node group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    types: BTreeMap<String, Arc<TypedResources>>,
}

impl Snapshot {
    /// An empty snapshot (serving no type).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the resources of one type URL.
    pub fn with(mut self, type_url: impl Into<String>, resources: TypedResources) -> Self {
        self.types.insert(type_url.into(), Arc::new(resources));
        self
    }

    /// Sets the resources of one type URL, sharing an existing set.
    pub fn insert(&mut self, type_url: impl Into<String>, resources: Arc<TypedResources>) {
        self.types.insert(type_url.into(), resources);
    }

    /// The resources of a type URL, if the snapshot serves it.
    pub fn get(&self, type_url: &str) -> Option<&Arc<TypedResources>> {
        self.types.get(type_url)
    }

    /// The type URLs served.
    pub fn type_urls(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// Number of resources over every type.
    pub fn len(&self) -> usize {
        self.types.values().map(|t| t.items.len()).sum()
    }

    /// True when no type holds a resource.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(name: &str, value: &[u8]) -> XdsResource {
        XdsResource::new(
            name,
            Any {
                type_url: "t".into(),
                value: value.to_vec(),
            },
        )
    }

    #[test]
    fn delta_between_sets_is_computed_once_and_exact() {
        let old = Arc::new(TypedResources::new([
            mk("a", b"1"),
            mk("b", b"2"),
            mk("d", b"4"),
        ]));
        let new = TypedResources::new([mk("b", b"2"), mk("c", b"3"), mk("d", b"5")]);
        let d = new.delta_from(&old);
        let changed: Vec<&str> = d.changed.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(changed, ["c", "d"]);
        assert_eq!(d.removed, ["a"]);
        assert!(Arc::ptr_eq(&d, &new.delta_from(&old)), "cached");
        let other = Arc::new(TypedResources::new([]));
        assert_eq!(new.delta_from(&other).changed.len(), 3);
    }

    #[test]
    fn set_version_is_a_content_hash() {
        let a = TypedResources::new([mk("a", b"1"), mk("b", b"2")]);
        let b = TypedResources::new([mk("b", b"2"), mk("a", b"1")]);
        assert_eq!(a.version, b.version, "order of insertion must not matter");
        let c = TypedResources::new([mk("a", b"1"), mk("b", b"3")]);
        assert_ne!(a.version, c.version);
        let empty = TypedResources::new([]);
        assert_ne!(empty.version, a.version);
    }
}
