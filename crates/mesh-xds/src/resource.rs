//! Versioned resources and immutable snapshots of them.

use std::{collections::BTreeMap, sync::Arc};

use sha2::{Digest, Sha256};

use crate::Any;

/// One named resource, encoded once and shared by every stream that sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct XdsResource {
    /// The resource name clients subscribe to.
    pub name: String,
    /// Content hash of the encoded body.
    pub version: String,
    /// The encoded resource.
    pub body: Any,
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
        }
    }
}

/// All resources of one type URL, with the content hash of the whole set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypedResources {
    /// Content hash of every (name, version) pair in name order.
    pub version: String,
    /// Resources by name.
    pub items: BTreeMap<String, Arc<XdsResource>>,
}

impl TypedResources {
    /// Builds a set; a later resource with the same name replaces an earlier one.
    pub fn new(items: impl IntoIterator<Item = XdsResource>) -> Self {
        let items: BTreeMap<String, Arc<XdsResource>> = items
            .into_iter()
            .map(|r| (r.name.clone(), Arc::new(r)))
            .collect();
        let version = set_version(
            items
                .values()
                .map(|r| (r.name.as_str(), r.version.as_str())),
        );
        Self { version, items }
    }
}

impl TypedResources {
    /// Builds a set from shared resources (encoded once, reused across snapshots).
    pub fn from_shared(items: impl IntoIterator<Item = Arc<XdsResource>>) -> Self {
        let items: BTreeMap<String, Arc<XdsResource>> =
            items.into_iter().map(|r| (r.name.clone(), r)).collect();
        let version = set_version(
            items
                .values()
                .map(|r| (r.name.as_str(), r.version.as_str())),
        );
        Self { version, items }
    }
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
