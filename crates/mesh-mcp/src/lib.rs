//! MCP: how galley hands configuration to pilot and the mixers.
//!
//! Every resource travels as a `dromon.mcp.v1.Resource` (metadata, apiVersion,
//! kind, spec as JSON) inside `Any`, one collection (type URL) per kind, over the
//! xDS transport. This crate holds the codec both ends share, and [`McpStore`]: the
//! receiving end, a [`mesh_xds::client::DeltaHandler`] that keeps the typed
//! resources and publishes each new version of the set to its readers.

mod store;

use std::sync::Arc;

use mesh_api::mcp::v1 as mcp;
use mesh_model::{Kind, Resource, hash::content_hash};
use mesh_xds::{Any, XdsResource};
use prost::Message;

pub use store::{McpStore, McpView};

/// Every collection galley serves, one per kind.
pub fn collections() -> Vec<String> {
    Kind::ALL
        .iter()
        .map(|k| k.collection().to_string())
        .collect()
}

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

/// Decodes an MCP resource back into a typed resource.
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
