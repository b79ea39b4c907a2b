//! Turning the merged configuration into an MCP snapshot: one collection (type URL)
//! per kind, each resource encoded once and reused until it changes.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use mesh_api::mcp::v1 as mcp;
use mesh_model::{Kind, Resource, ResourceKey, hash::content_hash};
use mesh_xds::{Any, Snapshot, TypedResources, XdsResource};
use prost::Message;

use crate::store::ConfigView;

/// Encodes a resource as an MCP `Resource` wrapped in `Any`.
pub fn encode(resource: &Resource) -> XdsResource {
    let spec_json = resource.spec.to_json();
    let meta = &resource.meta;
    let mut parts: Vec<&[u8]> = vec![
        resource.api_version.as_bytes(),
        resource.kind().as_str().as_bytes(),
        meta.namespace.as_bytes(),
        meta.name.as_bytes(),
    ];
    for (k, v) in meta.labels.iter().chain(meta.annotations.iter()) {
        parts.push(k.as_bytes());
        parts.push(v.as_bytes());
    }
    parts.push(&spec_json);
    let version = content_hash(parts);
    let name = format!("{}/{}", meta.namespace, meta.name);
    let body = mcp::Resource {
        metadata: Some(mcp::Metadata {
            name: name.clone(),
            version,
            labels: meta.labels.clone(),
            annotations: meta.annotations.clone(),
        }),
        api_version: resource.api_version.clone(),
        kind: resource.kind().as_str().to_string(),
        spec_json,
    };
    XdsResource::new(
        name,
        Any {
            type_url: mcp::RESOURCE_TYPE_URL.to_string(),
            value: body.encode_to_vec(),
        },
    )
}

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

/// Decodes an MCP resource received from galley back into a typed resource.
pub fn decode(any: &Any) -> Result<Resource, String> {
    if any.type_url != mcp::RESOURCE_TYPE_URL {
        return Err(format!("unexpected resource type {:?}", any.type_url));
    }
    let res = mcp::Resource::decode(any.value.as_slice())
        .map_err(|e| format!("cannot decode MCP resource: {e}"))?;
    let meta = res.metadata.unwrap_or_default();
    let (namespace, name) = meta
        .name
        .split_once('/')
        .unwrap_or(("", meta.name.as_str()));
    let kind = Kind::resolve(&res.api_version, &res.kind).map_err(|e| e.to_string())?;
    let spec = mesh_model::Spec::from_json(kind, &res.spec_json)?;
    Ok(Resource {
        api_version: res.api_version,
        meta: mesh_model::ObjectMeta {
            name: name.to_string(),
            namespace: namespace.to_string(),
            labels: meta.labels,
            annotations: meta.annotations,
        },
        spec,
        source: mesh_model::SourceLocation {
            file: Arc::from("mcp"),
            line: 0,
        },
    })
}
