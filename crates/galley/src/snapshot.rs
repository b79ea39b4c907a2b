//! Turning the merged configuration into an MCP snapshot: one collection (type URL)
//! per kind, each resource encoded once and reused until it changes.

use std::{collections::HashMap, sync::Arc};

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

/// Builds snapshots, re-encoding only resources that changed since the last build.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    encoded: HashMap<ResourceKey, (Arc<Resource>, Arc<XdsResource>)>,
}

impl SnapshotBuilder {
    /// A builder with an empty encoding cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The snapshot of `view`: every collection is present, empty ones included.
    pub fn build(&mut self, view: &ConfigView) -> Snapshot {
        let mut by_kind: HashMap<Kind, Vec<Arc<XdsResource>>> = HashMap::new();
        let mut next = HashMap::with_capacity(view.resources.len());
        for (key, resource) in &view.resources {
            let encoded = match self.encoded.get(key) {
                Some((old, enc)) if Arc::ptr_eq(old, resource) => enc.clone(),
                _ => Arc::new(encode(resource)),
            };
            by_kind.entry(key.kind).or_default().push(encoded.clone());
            next.insert(key.clone(), (resource.clone(), encoded));
        }
        self.encoded = next;
        let mut snapshot = Snapshot::new();
        for kind in Kind::ALL {
            let items = by_kind.remove(&kind).unwrap_or_default();
            snapshot.insert(
                kind.collection(),
                Arc::new(TypedResources::from_shared(items)),
            );
        }
        snapshot
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
