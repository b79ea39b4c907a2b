//! The check cache: a precondition result reused for requests that agree on
//! every attribute the decision read.
//!
//! A decision reads a set of the policy's attribute references (its
//! *signature*: the conditions evaluated, the instances built, the attributes
//! the rbac adapter and namespace scoping read). Any request whose bag holds the
//! same values for that set gets the same decision, so the cache keeps, per
//! signature seen, results keyed by those values, each for as long and as many
//! times as the result allows (`valid_duration`, `valid_use_count`). It lives in
//! one compiled [`crate::policy::Policy`]: a new configuration version starts
//! with an empty cache.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use mixer_core::{Bag, Value, expr::AttributeRef};
use parking_lot::{Mutex, RwLock};

use crate::adapter::CheckResult;

/// A set of the policy's attribute references, by index in its table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct RefSet(Vec<u64>);

impl RefSet {
    /// An empty set able to hold indexes below `n` without growing.
    pub(crate) fn for_table(n: usize) -> Self {
        Self(vec![0; n.div_ceil(64)])
    }

    pub(crate) fn insert(&mut self, i: usize) {
        let word = i / 64;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (i % 64);
    }

    pub(crate) fn union(&mut self, other: &RefSet) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= *b;
        }
    }

    /// The indexes, ascending.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, bits)| {
            let mut bits = *bits;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(w * 64 + b)
            })
        })
    }
}

/// Whether `bag` holds what `r` reads (for a map entry, the key).
pub(crate) fn present(bag: &dyn Bag, r: &AttributeRef) -> bool {
    match (bag.get(&r.name), &r.key) {
        (None, _) => false,
        (Some(Value::StringMap(m)), Some(k)) => m.contains_key(k.as_str()),
        (Some(_), _) => true,
    }
}

/// Appends an unambiguous encoding of what `bag` holds for `r` to `out`.
fn encode_ref(bag: &dyn Bag, r: &AttributeRef, out: &mut Vec<u8>) {
    match (bag.get(&r.name), &r.key) {
        (None, _) => out.push(0),
        (Some(Value::StringMap(m)), Some(k)) => match m.get(k.as_str()) {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                bytes(out, v.as_bytes());
            }
        },
        (Some(v), _) => {
            out.push(2);
            encode_value(&v, out);
        }
    }
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

fn encode_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::String(s) => {
            out.push(1);
            bytes(out, s.as_bytes());
        }
        Value::Int64(i) => {
            out.push(2);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::Double(d) => {
            out.push(3);
            out.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        Value::Bool(b) => out.extend_from_slice(&[4, u8::from(*b)]),
        Value::Timestamp(t) => {
            out.push(5);
            let (sign, d) = match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => (1, d),
                Err(e) => (0, e.duration()),
            };
            out.push(sign);
            out.extend_from_slice(&d.as_nanos().to_le_bytes());
        }
        Value::Duration(d) => {
            out.push(6);
            out.extend_from_slice(&d.as_nanos().to_le_bytes());
        }
        Value::Bytes(b) => {
            out.push(7);
            bytes(out, b);
        }
        Value::Ip(ip) => {
            out.push(8);
            bytes(out, ip.to_string().as_bytes());
        }
        Value::StringMap(m) => {
            out.push(9);
            out.extend_from_slice(&(m.len() as u64).to_le_bytes());
            for (k, v) in m.iter() {
                bytes(out, k.as_bytes());
                bytes(out, v.as_bytes());
            }
        }
    }
}

struct Entry {
    result: CheckResult,
    signature: usize,
    expires: Instant,
    uses_left: i32,
}

/// Signatures kept at most: each lookup probes every one.
const MAX_SIGNATURES: usize = 16;
/// Entries kept at most; past it expired ones go, then everything.
const MAX_ENTRIES: usize = 10_000;

/// Cached precondition results of one configuration version.
#[derive(Default)]
pub(crate) struct CheckCache {
    signatures: RwLock<Vec<RefSet>>,
    entries: Mutex<HashMap<Vec<u8>, Entry>>,
}

impl CheckCache {
    fn key(signature: usize, set: &RefSet, refs: &[AttributeRef], bag: &dyn Bag) -> Vec<u8> {
        let mut key = Vec::with_capacity(128);
        key.push(u8::try_from(signature).unwrap_or(u8::MAX));
        for i in set.iter() {
            if let Some(r) = refs.get(i) {
                encode_ref(bag, r, &mut key);
            }
        }
        key
    }

    /// A result cached for a request agreeing with `bag`, and the references it
    /// was decided on.
    pub(crate) fn lookup(
        &self,
        refs: &[AttributeRef],
        bag: &dyn Bag,
        now: Instant,
    ) -> Option<(CheckResult, RefSet)> {
        let signatures = self.signatures.read();
        for (i, set) in signatures.iter().enumerate() {
            let key = Self::key(i, set, refs, bag);
            let mut entries = self.entries.lock();
            let Some(entry) = entries.get_mut(&key) else {
                continue;
            };
            if entry.expires <= now || entry.uses_left <= 0 {
                entries.remove(&key);
                continue;
            }
            entry.uses_left -= 1;
            let mut result = entry.result.clone();
            // What is left of the reuse the result allowed.
            result.valid_duration = entry.expires.saturating_duration_since(now);
            result.valid_use_count = entry.uses_left;
            return Some((result, set.clone()));
        }
        None
    }

    /// Keeps `result`, decided on the references in `set`, for requests that
    /// agree with `bag` on them.
    pub(crate) fn insert(
        &self,
        refs: &[AttributeRef],
        set: &RefSet,
        bag: &dyn Bag,
        result: &CheckResult,
        now: Instant,
    ) {
        if result.valid_duration == Duration::ZERO || result.valid_use_count <= 0 {
            return;
        }
        let known = self.signatures.read().iter().position(|s| s == set);
        let signature = match known {
            Some(i) => i,
            None => {
                let mut signatures = self.signatures.write();
                match signatures.iter().position(|s| s == set) {
                    Some(i) => i,
                    None if signatures.len() < MAX_SIGNATURES => {
                        signatures.push(set.clone());
                        signatures.len() - 1
                    }
                    None => return,
                }
            }
        };
        let key = Self::key(signature, set, refs, bag);
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| e.expires > now && e.uses_left > 0);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Entry {
                result: result.clone(),
                signature,
                expires: now + result.valid_duration,
                uses_left: result.valid_use_count,
            },
        );
    }

    /// Entries held, by signature (for /debug/policyz).
    pub(crate) fn stats(&self) -> (usize, usize) {
        let entries = self.entries.lock();
        let signatures = entries
            .values()
            .map(|e| e.signature)
            .collect::<std::collections::HashSet<_>>()
            .len();
        (signatures, entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_sets_iterate_in_order_across_words() {
        let mut a = RefSet::for_table(10);
        a.insert(3);
        a.insert(130);
        let mut b = RefSet::default();
        b.insert(64);
        b.insert(3);
        a.union(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), [3, 64, 130]);
    }

    #[test]
    fn keys_tell_values_types_and_absence_apart() {
        use std::collections::BTreeMap;
        let r = |name: &str, key: Option<&str>| AttributeRef {
            name: name.into(),
            key: key.map(str::to_string),
            rescued: true,
        };
        let refs = [r("a", None), r("h", Some("x"))];
        let mut set = RefSet::default();
        set.insert(0);
        set.insert(1);
        let bag = |pairs: Vec<(&str, Value)>| -> BTreeMap<String, Value> {
            pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
        };
        let keys: Vec<Vec<u8>> = [
            bag(vec![]),
            bag(vec![("a", Value::from("1"))]),
            bag(vec![("a", Value::Int64(1))]),
            bag(vec![("a", Value::from(""))]),
            bag(vec![("h", Value::string_map([("x", "1")]))]),
            bag(vec![("h", Value::string_map([("y", "1")]))]),
        ]
        .iter()
        .map(|b| CheckCache::key(0, &set, &refs, b))
        .collect();
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        // Only the map without the read key equals the empty bag.
        assert_eq!(keys[0], keys[5]);
        assert_eq!(distinct.len(), 5);
    }
}
