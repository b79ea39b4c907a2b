//! The state-of-the-world protocol state machine for one ADS stream.
//!
//! Transport-free: it takes requests and snapshots and returns the responses to
//! send, so every protocol rule is testable with plain values:
//! - the first request for a type subscribes and is answered with the current set;
//! - a request whose nonce is not the last one sent for its type is stale and ignored;
//! - a request carrying the last nonce ACKs it, or NACKs it when it has `error_detail`;
//!   a pure ACK gets no response, a changed subscription gets the new set;
//! - a response is only sent when the set's content hash differs from the last sent
//!   one, so an unchanged (or NACKed and unchanged) set is never re-sent;
//! - names requested before they exist are remembered and sent when they appear.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use crate::{
    Snapshot, TypedResources, XdsResource,
    discovery::{DiscoveryRequest, DiscoveryResponse},
    encode::{self, Encoded},
    resource::set_version,
    status::{Nack, TypeStatus},
};

/// A response the state machine decided to send, not yet encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct SotwResponse {
    /// The type URL.
    pub type_url: String,
    /// Content hash of the resources sent.
    pub version_info: String,
    /// This stream's nonce for the response.
    pub nonce: String,
    /// A whole set (encoded once, shared by every stream), or
    whole: Option<Arc<TypedResources>>,
    /// the resources of a named subscription.
    subset: Vec<Arc<XdsResource>>,
}

impl SotwResponse {
    /// The resources carried, in name order.
    pub fn resources(&self) -> Vec<&Arc<XdsResource>> {
        match &self.whole {
            Some(set) => set.items.values().collect(),
            None => self.subset.iter().collect(),
        }
    }

    /// The wire encoding: the shared body plus this stream's nonce.
    pub fn encode(&self, control_plane: Option<&str>) -> Encoded {
        let body = match &self.whole {
            Some(set) => set.wildcard_body(&self.type_url),
            None => encode::sotw_body(
                &self.version_info,
                &self.type_url,
                self.subset.iter().map(|r| r.sotw_entry()),
            ),
        };
        Encoded {
            chunks: vec![body, encode::sotw_suffix(&self.nonce, control_plane)],
        }
    }

    /// The response as a protobuf message (tests and tools).
    pub fn to_proto(&self, control_plane: Option<&str>) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: self.version_info.clone(),
            resources: self
                .resources()
                .into_iter()
                .map(|r| r.body.clone())
                .collect(),
            type_url: self.type_url.clone(),
            nonce: self.nonce.clone(),
            control_plane: control_plane.map(|id| {
                mesh_api::envoy::envoy::config::core::v3::ControlPlane {
                    identifier: id.to_string(),
                }
            }),
            ..DiscoveryResponse::default()
        }
    }
}

/// The subscribed type URLs in push order: those listed in `order` first, in that
/// order, then the rest.
pub(crate) fn push_order<'a>(
    subscribed: impl Iterator<Item = &'a String> + Clone,
    order: &[&str],
) -> Vec<String> {
    let mut out: Vec<String> = order
        .iter()
        .filter(|t| subscribed.clone().any(|s| s == **t))
        .map(|t| (*t).to_string())
        .collect();
    out.extend(subscribed.filter(|t| !order.contains(&t.as_str())).cloned());
    out
}

/// How a request was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// First request for a type on this stream.
    Initial,
    /// Confirms the last response.
    Ack,
    /// Rejects the last response.
    Nack,
    /// Carries a nonce other than the last one sent: ignored.
    Stale,
}

impl RequestKind {
    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Initial => "initial",
            RequestKind::Ack => "ack",
            RequestKind::Nack => "nack",
            RequestKind::Stale => "stale",
        }
    }
}

/// What handling one request produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// How the request was classified.
    pub kind: RequestKind,
    /// Responses to send, in order.
    pub responses: Vec<SotwResponse>,
    /// The NACK recorded, when the request was one.
    pub nack: Option<Nack>,
}

/// A request the protocol does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// ADS requests must name their type.
    #[error("type_url is required on every request of an aggregated stream")]
    MissingTypeUrl,
}

#[derive(Debug, Default, Clone)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    nonce: Option<String>,
    sent_version: Option<String>,
    acked_version: Option<String>,
    nack: Option<Nack>,
}

/// Protocol state of one state-of-the-world stream.
#[derive(Debug, Default)]
pub struct SotwStream {
    types: BTreeMap<String, TypeState>,
    nonces: u64,
}

impl SotwStream {
    /// A new stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles one request against the current snapshot (None: not computed yet).
    pub fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        snapshot: Option<&Snapshot>,
    ) -> Result<Outcome, ProtocolError> {
        if req.type_url.is_empty() {
            return Err(ProtocolError::MissingTypeUrl);
        }
        let explicit_wildcard = req.resource_names.iter().any(|n| n == "*");
        let names: BTreeSet<String> = req
            .resource_names
            .iter()
            .filter(|n| *n != "*")
            .cloned()
            .collect();
        let state = self.types.entry(req.type_url.clone()).or_default();

        let (kind, changed, nack) = if state.nonce.is_none() {
            state.wildcard = req.resource_names.is_empty() || explicit_wildcard;
            state.names = names;
            (RequestKind::Initial, true, None)
        } else if state.nonce.as_deref() != Some(req.response_nonce.as_str()) {
            return Ok(Outcome {
                kind: RequestKind::Stale,
                responses: Vec::new(),
                nack: None,
            });
        } else {
            let wildcard = explicit_wildcard || (names.is_empty() && state.wildcard);
            let changed = wildcard != state.wildcard || names != state.names;
            state.wildcard = wildcard;
            state.names = names;
            match &req.error_detail {
                Some(status) => {
                    let nack = Nack {
                        version: state.sent_version.clone().unwrap_or_default(),
                        error: status.message.clone(),
                    };
                    state.nack = Some(nack.clone());
                    (RequestKind::Nack, changed, Some(nack))
                }
                None => {
                    state.acked_version = Some(req.version_info.clone());
                    state.nack = None;
                    (RequestKind::Ack, changed, None)
                }
            }
        };

        let mut responses = Vec::new();
        if let (true, Some(snapshot)) = (changed || kind == RequestKind::Initial, snapshot) {
            let type_url = req.type_url.clone();
            let initial = kind == RequestKind::Initial;
            if let Some(r) = self.respond(&type_url, snapshot, initial) {
                responses.push(r);
            }
        }
        Ok(Outcome {
            kind,
            responses,
            nack,
        })
    }

    /// Handles a new snapshot: the responses for every subscribed type whose content
    /// changed, types listed in `order` first (in that order), the rest after.
    pub fn on_snapshot(&mut self, snapshot: &Snapshot, order: &[&str]) -> Vec<SotwResponse> {
        let type_urls = push_order(self.types.keys(), order);
        type_urls
            .iter()
            .filter_map(|t| {
                let first = self.types.get(t).is_some_and(|s| s.sent_version.is_none());
                self.respond(t, snapshot, first)
            })
            .collect()
    }

    /// The status of every type, for `/debug/syncz`.
    pub fn status(&self) -> BTreeMap<String, TypeStatus> {
        self.types
            .iter()
            .map(|(t, s)| {
                let status = TypeStatus::new(
                    s.wildcard,
                    &s.names,
                    &s.sent_version,
                    &s.nonce,
                    &s.acked_version,
                    &s.nack,
                );
                (t.clone(), status)
            })
            .collect()
    }

    /// Builds the response for one type if its content differs from what was sent.
    /// `force` sends even an unchanged set (the first response of a stream).
    fn respond(
        &mut self,
        type_url: &str,
        snapshot: &Snapshot,
        force: bool,
    ) -> Option<SotwResponse> {
        let state = self.types.get(type_url)?;
        let set = snapshot.get(type_url);
        let (version, whole, subset) = if state.wildcard {
            match set {
                Some(set) => (set.version.clone(), Some(set.clone()), Vec::new()),
                None => (set_version(std::iter::empty()), None, Vec::new()),
            }
        } else {
            let found: Vec<Arc<XdsResource>> = state
                .names
                .iter()
                .filter_map(|n| set.and_then(|s| s.items.get(n)).cloned())
                .collect();
            let version = set_version(found.iter().map(|r| (r.name.as_str(), r.version.as_str())));
            (version, None, found)
        };
        if !force && state.sent_version.as_deref() == Some(version.as_str()) {
            return None;
        }
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        let state = self.types.get_mut(type_url)?;
        state.nonce = Some(nonce.clone());
        state.sent_version = Some(version.clone());
        Some(SotwResponse {
            type_url: type_url.to_string(),
            version_info: version,
            nonce,
            whole,
            subset,
        })
    }
}

#[cfg(test)]
mod tests;
