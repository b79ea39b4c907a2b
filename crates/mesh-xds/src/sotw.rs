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

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    Any, Snapshot,
    discovery::{DiscoveryRequest, DiscoveryResponse},
    resource::set_version,
    status::{Nack, TypeStatus},
};

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
    pub responses: Vec<DiscoveryResponse>,
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
    control_plane: Option<String>,
}

impl SotwStream {
    /// A new stream; `control_plane` names the server in every response.
    pub fn new(control_plane: Option<String>) -> Self {
        Self {
            control_plane,
            ..Self::default()
        }
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
    pub fn on_snapshot(&mut self, snapshot: &Snapshot, order: &[&str]) -> Vec<DiscoveryResponse> {
        let mut type_urls: Vec<String> = Vec::with_capacity(self.types.len());
        for t in order {
            if self.types.contains_key(*t) {
                type_urls.push((*t).to_string());
            }
        }
        for t in self.types.keys() {
            if !order.contains(&t.as_str()) {
                type_urls.push(t.clone());
            }
        }
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
                (
                    t.clone(),
                    TypeStatus {
                        wildcard: s.wildcard,
                        names: s.names.iter().cloned().collect(),
                        sent_version: s.sent_version.clone(),
                        sent_nonce: s.nonce.clone(),
                        acked_version: s.acked_version.clone(),
                        nack: s.nack.clone(),
                    },
                )
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
    ) -> Option<DiscoveryResponse> {
        let state = self.types.get(type_url)?;
        let set = snapshot.get(type_url);
        let (version, resources): (String, Vec<Any>) = if state.wildcard {
            match set {
                Some(set) => (
                    set.version.clone(),
                    set.items.values().map(|r| r.body.clone()).collect(),
                ),
                None => (set_version(std::iter::empty()), Vec::new()),
            }
        } else {
            let found: Vec<_> = state
                .names
                .iter()
                .filter_map(|n| set.and_then(|s| s.items.get(n)))
                .collect();
            let version = set_version(found.iter().map(|r| (r.name.as_str(), r.version.as_str())));
            (version, found.into_iter().map(|r| r.body.clone()).collect())
        };
        if !force && state.sent_version.as_deref() == Some(version.as_str()) {
            return None;
        }
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        let state = self.types.get_mut(type_url)?;
        state.nonce = Some(nonce.clone());
        state.sent_version = Some(version.clone());
        Some(DiscoveryResponse {
            version_info: version,
            resources,
            canary: false,
            type_url: type_url.to_string(),
            nonce,
            control_plane: self.control_plane.as_ref().map(|id| {
                mesh_api::envoy::envoy::config::core::v3::ControlPlane {
                    identifier: id.clone(),
                }
            }),
            resource_errors: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests;
