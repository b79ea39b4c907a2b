//! A map keyed by type URL, for the handful of types one stream subscribes to.
//!
//! Every connected stream keeps one per protocol state and one in its sync status.
//! A stream subscribes to a few types (four for a sidecar), and a `BTreeMap` node
//! has room for eleven entries whatever it holds: with thousands of streams that
//! room was a measurable share of pilot's memory. Entries here are kept in a
//! vector sorted by type URL, so iteration order is the same as a `BTreeMap`'s.

use std::ops::Index;

use serde::{Serialize, Serializer, ser::SerializeMap};

/// Values by type URL, in type URL order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMap<V> {
    entries: Vec<(String, V)>,
}

impl<V> Default for TypeMap<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<V> TypeMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    fn position(&self, type_url: &str) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|(t, _)| t.as_str().cmp(type_url))
    }

    /// The value of `type_url`.
    pub fn get(&self, type_url: &str) -> Option<&V> {
        self.position(type_url).ok().map(|i| &self.entries[i].1)
    }

    /// The value of `type_url`, mutably.
    pub fn get_mut(&mut self, type_url: &str) -> Option<&mut V> {
        self.position(type_url).ok().map(|i| &mut self.entries[i].1)
    }

    /// The value of `type_url`, inserted with `make` when absent (the key is
    /// copied only then).
    pub fn get_or_insert_with(&mut self, type_url: &str, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.position(type_url) {
            Ok(i) => i,
            Err(i) => {
                self.entries.insert(i, (type_url.to_string(), make()));
                i
            }
        };
        &mut self.entries[i].1
    }

    /// Type URLs in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> + Clone {
        self.entries.iter().map(|(t, _)| t)
    }

    /// Values in type URL order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    /// Entries in type URL order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.entries.iter().map(|(t, v)| (t, v))
    }

    /// Number of types.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no type is present.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps only the types `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.entries.retain(|(t, _)| keep(t));
    }
}

impl<V> Index<&str> for TypeMap<V> {
    type Output = V;

    fn index(&self, type_url: &str) -> &V {
        match self.get(type_url) {
            Some(v) => v,
            None => panic!("no entry for type {type_url}"),
        }
    }
}

impl<V> FromIterator<(String, V)> for TypeMap<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        let mut entries: Vec<(String, V)> = iter.into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
        Self { entries }
    }
}

impl<V: Serialize> Serialize for TypeMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (t, v) in &self.entries {
            map.serialize_entry(t, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keeps_type_url_order_and_inserts_once() {
        let mut m: TypeMap<u32> = TypeMap::new();
        for t in ["c", "a", "b", "a"] {
            *m.get_or_insert_with(t, || 0) += 1;
        }
        assert_eq!(
            m.keys().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(m["a"], 2);
        assert_eq!(m.get("b"), Some(&1));
        assert_eq!(m.get("d"), None);
        *m.get_mut("c").unwrap() = 7;
        assert_eq!(m.values().copied().collect::<Vec<_>>(), [2, 1, 7]);
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"a":2,"b":1,"c":7}"#);
    }

    #[test]
    fn retain_keeps_order_and_values() {
        let mut m: TypeMap<u32> = [("c", 3), ("a", 1), ("b", 2)]
            .into_iter()
            .map(|(t, v)| (t.to_string(), v))
            .collect();
        m.retain(|t| t != "b");
        assert_eq!(
            m.iter().map(|(t, v)| (t.as_str(), *v)).collect::<Vec<_>>(),
            [("a", 1), ("c", 3)]
        );
    }
}
