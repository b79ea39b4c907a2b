//! Subscriptions shared between streams.
//!
//! Sidecars of one scope subscribe to the same resource names (an Envoy asks EDS
//! for every EDS cluster it was sent, 1,401 names in the pilot load test). Each
//! distinct set of names is kept once, as an `Arc<NameSet>`, and every stream whose
//! subscription equals it holds that `Arc`: a stream in sync costs a pointer, not a
//! copy of the names. Sets are held weakly here, so a set no stream uses is freed.

use std::{
    collections::{BTreeSet, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
    ops::{Deref, DerefMut},
    sync::{Arc, LazyLock, OnceLock, Weak},
};

use parking_lot::Mutex;

use crate::resource::set_version;

/// The names of one subscription, in order, with their content hash computed once
/// (a stream's version depends on its subscription; streams sharing the set share
/// the hash too).
#[derive(Debug, Default)]
pub struct NameSet {
    names: BTreeSet<String>,
    version: OnceLock<String>,
}

impl NameSet {
    /// The content hash of the names.
    pub fn version(&self) -> &str {
        self.version
            .get_or_init(|| set_version(self.names.iter().map(|n| (n.as_str(), ""))))
    }
}

impl Clone for NameSet {
    fn clone(&self) -> Self {
        Self {
            names: self.names.clone(),
            version: self.version.clone(),
        }
    }
}

impl PartialEq for NameSet {
    fn eq(&self, other: &Self) -> bool {
        self.names == other.names
    }
}

impl Eq for NameSet {}

impl Hash for NameSet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.names.hash(state);
    }
}

impl Deref for NameSet {
    type Target = BTreeSet<String>;
    fn deref(&self) -> &BTreeSet<String> {
        &self.names
    }
}

impl DerefMut for NameSet {
    /// Changing the names forgets their hash.
    fn deref_mut(&mut self) -> &mut BTreeSet<String> {
        self.version = OnceLock::new();
        &mut self.names
    }
}

impl FromIterator<String> for NameSet {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Self {
        Self {
            names: iter.into_iter().collect(),
            version: OnceLock::new(),
        }
    }
}

/// Every subscription in use, by hash of its names.
#[derive(Debug, Default)]
struct Registry {
    sets: HashMap<u64, Vec<Weak<NameSet>>>,
    /// Insertions since dead entries were last dropped.
    since_sweep: usize,
}

impl Registry {
    /// A set in use under `key` for which `same` holds.
    fn find(&self, key: u64, same: impl Fn(&NameSet) -> bool) -> Option<Arc<NameSet>> {
        self.sets
            .get(&key)?
            .iter()
            .find_map(|weak| weak.upgrade().filter(|e| same(e)))
    }
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

/// Sweep dead entries after this many insertions (or when the map doubles).
const SWEEP_EVERY: usize = 1024;

/// The shared copy of `set`: an equal set already used by another stream, or `set`
/// itself, registered for the next stream. The empty set is never registered.
pub fn share(set: Arc<NameSet>) -> Arc<NameSet> {
    if set.is_empty() {
        return set;
    }
    let key = key_of(set.iter().map(String::as_bytes));
    let mut reg = REGISTRY.lock();
    if let Some(existing) = reg.find(key, |e| std::ptr::eq(e, &*set) || *e == *set) {
        return existing;
    }
    let bucket = reg.sets.entry(key).or_default();
    bucket.retain(|w| w.strong_count() > 0);
    bucket.push(Arc::downgrade(&set));
    reg.since_sweep += 1;
    if reg.since_sweep >= SWEEP_EVERY.max(reg.sets.len()) {
        reg.sets.retain(|_, b| {
            b.retain(|w| w.strong_count() > 0);
            !b.is_empty()
        });
        reg.since_sweep = 0;
    }
    set
}

/// The shared set of `names` (in any order, possibly repeated), given as the bytes
/// they came in: when they come sorted, as clients usually send them, and an equal
/// set is in use, it is found without copying or decoding them. Fails when a name
/// is not UTF-8.
pub fn share_names<'a>(
    names: impl Iterator<Item = &'a [u8]> + Clone,
) -> Result<Arc<NameSet>, std::str::Utf8Error> {
    if names.clone().is_sorted_by(|a, b| a < b) {
        let key = key_of(names.clone());
        let found = REGISTRY
            .lock()
            .find(key, |e| e.iter().map(String::as_bytes).eq(names.clone()));
        if let Some(existing) = found {
            return Ok(existing);
        }
    }
    let set: NameSet = names
        .map(|n| std::str::from_utf8(n).map(str::to_string))
        .collect::<Result<_, _>>()?;
    Ok(share(Arc::new(set)))
}

/// The registry's key for names given in order.
fn key_of<'a>(names: impl Iterator<Item = &'a [u8]>) -> u64 {
    let mut h = DefaultHasher::new();
    for n in names {
        h.write(n);
        h.write_u8(0xff);
    }
    h.finish()
}

/// Whether `names` (in any order, possibly repeated, as the bytes they came in)
/// are exactly the set `set`, without copying or decoding them. Names compare as
/// bytes: a name that is not UTF-8 is in no set.
///
/// Clients repeat their whole subscription in every request, usually in the
/// same (sorted) order as the set: that case is one pass of comparisons, and
/// only another order falls back to looking each name up.
pub fn same_names<'a>(set: &NameSet, names: impl Iterator<Item = &'a [u8]> + Clone) -> bool {
    let mut held = set.iter();
    let mut in_order = names.clone();
    loop {
        match (held.next(), in_order.next()) {
            (None, None) => return true,
            (Some(h), Some(n)) if h.as_bytes() == n => {}
            _ => break,
        }
    }
    // Sorted without repeats, yet not the set's order: not the same names.
    if names.clone().is_sorted_by(|a, b| a < b) {
        return false;
    }
    let mut seen: BTreeSet<&[u8]> = BTreeSet::new();
    for n in names {
        let held = std::str::from_utf8(n).is_ok_and(|n| set.contains(n));
        if !held {
            return false;
        }
        seen.insert(n);
    }
    seen.len() == set.len()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn bytes<'a>(names: &'a [&'a str]) -> impl Iterator<Item = &'a [u8]> + Clone {
        names.iter().map(|n| n.as_bytes())
    }

    fn mk(names: &[&str]) -> Arc<NameSet> {
        Arc::new(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn equal_sets_are_shared_and_freed_with_their_last_user() {
        let a = share(mk(&["x-shared-test", "y-shared-test"]));
        let b = share(mk(&["y-shared-test", "x-shared-test"]));
        assert!(Arc::ptr_eq(&a, &b));
        let c = share(mk(&["x-shared-test"]));
        assert!(!Arc::ptr_eq(&a, &c));
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert!(weak.upgrade().is_none(), "the registry holds sets weakly");
    }

    #[test]
    fn names_in_any_order_find_the_shared_set() {
        let a = share(mk(&["p-names-test", "q-names-test", "r-names-test"]));
        for names in [
            ["p-names-test", "q-names-test", "r-names-test"],
            ["r-names-test", "p-names-test", "q-names-test"],
        ] {
            assert!(Arc::ptr_eq(&a, &share_names(bytes(&names)).unwrap()));
        }
        let b = share_names(bytes(&["p-names-test", "q-names-test"])).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(b.len(), 2);
        assert!(share_names(std::iter::empty()).unwrap().is_empty());
        assert!(
            share_names([b"ok".as_slice(), b"\xff\xfe".as_slice()].into_iter()).is_err(),
            "a name that is not UTF-8 is refused"
        );
    }

    #[test]
    fn same_names_ignores_order_and_repeats() {
        let set = mk(&["a", "b"]);
        assert!(same_names(&set, bytes(&["b", "a", "b"])));
        assert!(!same_names(&set, bytes(&["a"])));
        assert!(!same_names(&set, bytes(&["a", "b", "c"])));
        assert!(!same_names(&set, bytes(&["a", "a", "c"])));
        assert!(same_names(&set, bytes(&["a", "b"])), "in order");
        assert!(
            same_names(&set, bytes(&["a", "b", "b"])),
            "in order, repeated"
        );
        assert!(!same_names(&set, bytes(&["a", "c"])));
        assert!(!same_names(&set, bytes(&[])));
        assert!(same_names(&mk(&[]), bytes(&[])));
        assert!(
            !same_names(&set, [b"b".as_slice(), b"\xff".as_slice()].into_iter()),
            "a name that is not UTF-8 is in no set"
        );
    }
}
