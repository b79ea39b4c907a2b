//! A SotW request as the server reads it: every field decoded but the subscribed
//! names, which stay the bytes they came in.
//!
//! Every SotW request repeats the client's whole subscription: an Envoy's EDS ACK
//! names every EDS cluster it holds (1,401 in the pilot load test). Decoding them
//! as strings took an allocation, a copy and a UTF-8 check per name, per ACK, per
//! proxy, and they almost always equal the set the stream already holds. Kept as
//! bytes in one buffer, they are compared with the held set in place and decoded
//! only when the subscription changed.

use bytes::{Buf, BufMut};
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len},
};

use crate::discovery::DiscoveryRequest;

/// `resource_names` is field 3 of DiscoveryRequest.
const RESOURCE_NAMES: u32 = 3;

/// A `DiscoveryRequest` whose `resource_names` are kept undecoded in [`names`]
/// (its own `resource_names` stays empty). Reads and writes the same wire format.
///
/// [`names`]: SotwRequest::names
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SotwRequest {
    /// Every other field of the request.
    pub request: DiscoveryRequest,
    /// The subscribed names, one after the other.
    bytes: Vec<u8>,
    /// Where each name ends in `bytes`.
    ends: Vec<u32>,
    /// Empty between reads of a name.
    scratch: Vec<u8>,
}

impl SotwRequest {
    /// A request with `request`'s fields, its names taken out as bytes.
    pub fn from_request(mut request: DiscoveryRequest) -> Self {
        let names = std::mem::take(&mut request.resource_names);
        let mut out = Self {
            request,
            ..Self::default()
        };
        for name in &names {
            out.push(name.as_bytes());
        }
        out
    }

    fn push(&mut self, name: &[u8]) {
        self.bytes.extend_from_slice(name);
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
    }

    /// The subscribed names in the order they came, as bytes.
    pub fn names(&self) -> Names<'_> {
        Names {
            bytes: &self.bytes,
            ends: self.ends.iter(),
            start: 0,
        }
    }
}

/// The names of a [`SotwRequest`], as bytes.
#[derive(Debug, Clone)]
pub struct Names<'a> {
    bytes: &'a [u8],
    ends: std::slice::Iter<'a, u32>,
    start: usize,
}

impl<'a> Iterator for Names<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let end = *self.ends.next()? as usize;
        let name = self.bytes.get(self.start..end).unwrap_or_default();
        self.start = end;
        Some(name)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.ends.size_hint()
    }
}

impl Message for SotwRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.request.encode_raw(buf);
        for name in self.names() {
            encode_key(RESOURCE_NAMES, WireType::LengthDelimited, buf);
            encode_varint(name.len() as u64, buf);
            buf.put_slice(name);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != RESOURCE_NAMES {
            return self.request.merge_field(tag, wire_type, buf, ctx);
        }
        // Read as a bytes field (prost checks the wire type and the length), into
        // a buffer kept for the next name.
        prost::encoding::bytes::merge(wire_type, &mut self.scratch, buf, ctx)?;
        self.bytes.extend_from_slice(&self.scratch);
        self.scratch.clear();
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.request.encoded_len()
            + self
                .names()
                .map(|n| key_len(RESOURCE_NAMES) + encoded_len_varint(n.len() as u64) + n.len())
                .sum::<usize>()
    }

    fn clear(&mut self) {
        self.request.clear();
        self.bytes.clear();
        self.ends.clear();
        self.scratch.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::discovery::DiscoveryRequest;

    fn request(names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: "v1".into(),
            type_url: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment".into(),
            response_nonce: "7".into(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            node: Some(mesh_api::envoy::envoy::config::core::v3::Node {
                id: "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn reads_and_writes_the_wire_format_of_a_discovery_request() {
        for names in [
            &[][..],
            &["a"][..],
            &["outbound|80||a.ns", "", "é", "b"][..],
        ] {
            let full = request(names);
            let wire = full.encode_to_vec();
            let raw = SotwRequest::decode(wire.as_slice()).unwrap();
            assert_eq!(raw.request.resource_names, Vec::<String>::new());
            assert_eq!(
                raw.names().collect::<Vec<_>>(),
                names.iter().map(|n| n.as_bytes()).collect::<Vec<_>>()
            );
            let mut rest = full.clone();
            rest.resource_names.clear();
            assert_eq!(raw.request, rest);
            assert_eq!(raw, SotwRequest::from_request(full.clone()));
            // Written back, it is the same request.
            assert_eq!(raw.encoded_len(), wire.len());
            assert_eq!(
                DiscoveryRequest::decode(raw.encode_to_vec().as_slice()).unwrap(),
                full
            );
        }
    }

    #[test]
    fn names_that_are_not_utf8_are_kept_and_broken_input_refused() {
        // Field 3 holding 0xff: prost refuses it as a string; here it is a name the
        // state machine refuses (no subscription can hold it).
        let wire = [0x1a, 0x01, 0xff];
        assert!(DiscoveryRequest::decode(wire.as_slice()).is_err());
        let raw = SotwRequest::decode(wire.as_slice()).unwrap();
        assert_eq!(raw.names().collect::<Vec<_>>(), vec![&[0xff][..]]);
        // A length past the end, or field 3 with another wire type.
        assert!(SotwRequest::decode([0x1a, 0x05, b'a'].as_slice()).is_err());
        assert!(SotwRequest::decode([0x18, 0x01].as_slice()).is_err());
    }
}
