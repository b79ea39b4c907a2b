//! Protobuf encoding done once and shared.
//!
//! A resource is encoded once as a `resources` entry of a SotW or delta response;
//! a full set is encoded once per version as the body of a wildcard SotW response.
//! Each stream then appends only its own fields (nonce, control plane) — protobuf
//! messages concatenate by merging, so `shared ++ suffix` decodes as one response.
//! That keeps the cost of a push to N clients at one encode plus N memcpys.

use bytes::{BufMut, Bytes, BytesMut};
use prost::{
    Message,
    encoding::{WireType, encode_key, encode_varint, encoded_len_varint},
};

use crate::{
    Any,
    discovery::{DeltaDiscoveryResponse, DiscoveryResponse, Resource},
};

/// `resources` is field 2 in both DiscoveryResponse and DeltaDiscoveryResponse.
const RESOURCES_FIELD: u32 = 2;

/// A length-delimited field entry `tag | len | payload`.
pub fn field_entry(tag: u32, payload: &[u8]) -> Bytes {
    let mut buf =
        BytesMut::with_capacity(payload.len() + 2 + encoded_len_varint(payload.len() as u64));
    encode_key(tag, WireType::LengthDelimited, &mut buf);
    encode_varint(payload.len() as u64, &mut buf);
    buf.put_slice(payload);
    buf.freeze()
}

/// The `resources` entry of a SotW response carrying `any`.
pub fn sotw_entry(any: &Any) -> Bytes {
    field_entry(RESOURCES_FIELD, &any.encode_to_vec())
}

/// The `resources` entry of a delta response carrying a named, versioned resource.
pub fn delta_entry(name: &str, version: &str, any: &Any) -> Bytes {
    let resource = Resource {
        name: name.to_string(),
        version: version.to_string(),
        resource: Some(any.clone()),
        ..Resource::default()
    };
    field_entry(RESOURCES_FIELD, &resource.encode_to_vec())
}

/// The shared part of a SotW response: version, resources and type URL.
///
/// Sized exactly: these bodies are cached for as long as their set is current,
/// and a buffer grown by doubling would keep up to twice the bytes it holds.
pub fn sotw_body<'a>(
    version: &str,
    type_url: &str,
    entries: impl Iterator<Item = &'a Bytes> + Clone,
) -> Bytes {
    let head = DiscoveryResponse {
        version_info: version.to_string(),
        type_url: type_url.to_string(),
        ..DiscoveryResponse::default()
    };
    let len = entries.clone().map(Bytes::len).sum::<usize>() + head.encoded_len();
    let mut buf = BytesMut::with_capacity(len);
    for entry in entries {
        buf.put_slice(entry);
    }
    head.encode(&mut buf).unwrap_or_default();
    debug_assert_eq!(buf.len(), len);
    buf.freeze()
}

/// The per-stream part of a SotW response.
pub fn sotw_suffix(nonce: &str, control_plane: Option<&str>) -> Bytes {
    let tail = DiscoveryResponse {
        nonce: nonce.to_string(),
        control_plane: control_plane.map(|id| {
            mesh_api::envoy::envoy::config::core::v3::ControlPlane {
                identifier: id.to_string(),
            }
        }),
        ..DiscoveryResponse::default()
    };
    Bytes::from(tail.encode_to_vec())
}

/// The fields of a delta response other than its resources.
pub fn delta_tail(head: &DeltaDiscoveryResponse) -> Bytes {
    Bytes::from(head.encode_to_vec())
}

/// An encoded message, written as its chunks in order.
#[derive(Debug, Clone, Default)]
pub struct Encoded {
    /// The chunks.
    pub chunks: Vec<Bytes>,
}

impl Encoded {
    /// Total encoded length.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    /// True when nothing is encoded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message as one buffer (tests and tools).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        out
    }
}
