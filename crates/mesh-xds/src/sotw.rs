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
//! - names requested before they exist are remembered and sent when they appear;
//! - make before break: a push that removes resources of a type while adding or
//!   changing some first sends that type as the union of both, and its final set
//!   after every other type (see [`SotwStream::on_snapshot`]);
//! - a request still naming an older version than the one sent (Envoy after a
//!   NACK) does not ACK it: the NACK stays recorded.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    Snapshot, TypedResources, XdsResource,
    discovery::{DiscoveryRequest, DiscoveryResponse},
    encode::{self, Encoded},
    names::{self, NameSet},
    resource::Subset,
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
    /// A whole set or the subset of a named subscription (either encoded once and
    /// shared by every stream sent it).
    payload: Held,
}

impl SotwResponse {
    /// The resources carried, in name order.
    pub fn resources(&self) -> Vec<&Arc<XdsResource>> {
        self.payload.iter().collect()
    }

    /// The wire encoding: the shared body plus this stream's nonce.
    pub fn encode(&self, control_plane: Option<&str>) -> Encoded {
        let body = match &self.payload {
            Held::Whole(set) => set.wildcard_body(&self.type_url),
            Held::Subset(subset) => subset.sotw_body(&self.type_url),
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
    /// The explicit names, shared with every stream subscribing to the same ones.
    names: Arc<NameSet>,
    nonce: Option<String>,
    sent_version: Option<String>,
    acked_version: Option<String>,
    nack: Option<Nack>,
    /// The resources of the last response sent.
    sent: Option<Held>,
    /// The resources of the last response the client ACKed.
    acked: Option<Held>,
    /// The client answered the last response without taking it (a NACK, or a
    /// request still naming an older version).
    refused: bool,
}

impl TypeState {
    /// What the client holds as far as the server knows: the last set sent (taken,
    /// or not answered yet), or the last one ACKed when it refused what followed.
    /// A client that refused everything sent on this stream holds what it had
    /// before it, which a SotW server cannot know: the last set sent stands in.
    fn client_view(&self) -> Option<&Held> {
        if self.refused {
            self.acked.as_ref().or(self.sent.as_ref())
        } else {
            self.sent.as_ref()
        }
    }
}

/// The resources of one SotW response: a whole set, or a list in name order (both
/// shared between the streams sent them).
#[derive(Debug, Clone, PartialEq)]
enum Held {
    Whole(Arc<TypedResources>),
    Subset(Arc<Subset>),
}

impl Held {
    fn empty() -> Self {
        Held::Subset(Arc::new(Subset::new(Vec::new())))
    }

    fn version(&self) -> &str {
        match self {
            Held::Whole(set) => &set.version,
            Held::Subset(subset) => &subset.version,
        }
    }

    fn get(&self, name: &str) -> Option<&Arc<XdsResource>> {
        match self {
            Held::Whole(set) => set.items.get(name),
            Held::Subset(subset) => subset.get(name),
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &Arc<XdsResource>> + '_> {
        match self {
            Held::Whole(set) => Box::new(set.items.values()),
            Held::Subset(subset) => Box::new(subset.items.iter()),
        }
    }

    /// Whether going from `self` to `next` adds or changes any resource, and the
    /// names it removes.
    fn diff(&self, next: &Held) -> (bool, Vec<String>) {
        if let (Held::Whole(prev), Held::Whole(next)) = (self, next) {
            // Two versions of a whole set: the difference computed once and shared.
            let d = next.delta_from(prev);
            return (!d.changed.is_empty(), d.removed.clone());
        }
        let upserts = next
            .iter()
            .any(|r| self.get(&r.name).is_none_or(|h| h.version != r.version));
        let removed = self
            .iter()
            .filter(|r| next.get(&r.name).is_none())
            .map(|r| r.name.clone())
            .collect();
        (upserts, removed)
    }
}

/// A response decided on but not yet given a nonce.
#[derive(Debug)]
struct Planned {
    type_url: String,
    version: String,
    held: Held,
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
        let requested = || {
            req.resource_names
                .iter()
                .filter(|n| *n != "*")
                .map(String::as_str)
        };
        // Every request repeats the whole subscription: it is copied only when it
        // differs from the one held, and then shared with equal ones.
        let owned = || names::share(Arc::new(requested().map(str::to_string).collect()));
        let state = self.types.entry(req.type_url.clone()).or_default();

        let (kind, changed, nack) = if state.nonce.is_none() {
            state.wildcard = req.resource_names.is_empty() || explicit_wildcard;
            state.names = owned();
            (RequestKind::Initial, true, None)
        } else if state.nonce.as_deref() != Some(req.response_nonce.as_str()) {
            return Ok(Outcome {
                kind: RequestKind::Stale,
                responses: Vec::new(),
                nack: None,
            });
        } else {
            let same = names::same_names(&state.names, requested());
            let wildcard = explicit_wildcard || (requested().next().is_none() && state.wildcard);
            let changed = wildcard != state.wildcard || !same;
            state.wildcard = wildcard;
            if !same {
                state.names = owned();
            }
            match &req.error_detail {
                Some(status) => {
                    let nack = Nack {
                        version: state.sent_version.clone().unwrap_or_default(),
                        error: status.message.clone(),
                    };
                    state.nack = Some(nack.clone());
                    state.refused = true;
                    (RequestKind::Nack, changed, Some(nack))
                }
                None => {
                    state.acked_version = Some(req.version_info.clone());
                    if state.sent_version.as_deref() == Some(req.version_info.as_str()) {
                        state.acked = state.sent.clone();
                        state.refused = false;
                        state.nack = None;
                    } else {
                        // After a NACK, Envoy's next requests carry the nonce with
                        // the last version it accepted: not an ACK of what was sent.
                        state.refused = true;
                    }
                    (RequestKind::Ack, changed, None)
                }
            }
        };

        let mut responses = Vec::new();
        if let (true, Some(snapshot)) = (changed || kind == RequestKind::Initial, snapshot) {
            let initial = kind == RequestKind::Initial;
            if let Some(planned) = self.plan(&req.type_url, snapshot, initial) {
                responses.extend(self.emit(planned));
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
    ///
    /// Make before break: a SotW set is complete, so a response leaving out a
    /// resource the client holds removes it. When a type loses resources and also
    /// gains or changes some, it is first sent as the union of the new set and the
    /// removed resources (its own version), and its final set goes out only after
    /// every other type, in reverse order: a cluster still referenced by the old
    /// listeners and routes stays until the new ones no longer need it.
    pub fn on_snapshot(&mut self, snapshot: &Snapshot, order: &[&str]) -> Vec<SotwResponse> {
        let mut upserts: Vec<Planned> = Vec::new();
        let mut removals: Vec<Planned> = Vec::new();
        for type_url in push_order(self.types.keys(), order) {
            let first = self
                .types
                .get(&type_url)
                .is_some_and(|s| s.sent_version.is_none());
            let Some(target) = self.plan(&type_url, snapshot, first) else {
                continue;
            };
            let base = self.types.get(&type_url).and_then(TypeState::client_view);
            let (changes, mut removed) = match base {
                Some(base) => base.diff(&target.held),
                None => (true, Vec::new()),
            };
            // A resource the client unsubscribed from goes at once: it asked for
            // that, and a set naming it would carry a name it no longer wants.
            if let Some(state) = self.types.get(&type_url) {
                removed.retain(|n| state.wildcard || state.names.contains(n));
            }
            match base {
                Some(base) if !removed.is_empty() => {
                    let union = union(&type_url, &target.held, base, &removed);
                    // Unless nothing is added or changed, or the union is exactly the
                    // set last sent (and refused).
                    let sent = self
                        .types
                        .get(&type_url)
                        .and_then(|s| s.sent_version.as_ref());
                    if changes && sent != Some(&union.version) {
                        upserts.push(union);
                    }
                    removals.push(target);
                }
                _ => upserts.push(target),
            }
        }
        removals.reverse();
        // A union immediately followed by its own final set is pointless.
        if let (Some(u), Some(r)) = (upserts.last(), removals.first())
            && u.type_url == r.type_url
        {
            upserts.pop();
        }
        upserts
            .into_iter()
            .chain(removals)
            .filter_map(|p| self.emit(p))
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

    /// The set one type's subscription selects from `snapshot`, if its content differs
    /// from what was sent. `force` plans even an unchanged set (the first response of
    /// a stream).
    fn plan(&self, type_url: &str, snapshot: &Snapshot, force: bool) -> Option<Planned> {
        let state = self.types.get(type_url)?;
        let set = snapshot.get(type_url);
        let held = match (set, state.wildcard) {
            (Some(set), true) => Held::Whole(set.clone()),
            (Some(set), false) => Held::Subset(set.subset(&state.names)),
            (None, _) => Held::empty(),
        };
        let version = held.version().to_string();
        if !force && state.sent_version.as_deref() == Some(version.as_str()) {
            return None;
        }
        Some(Planned {
            type_url: type_url.to_string(),
            version,
            held,
        })
    }

    /// Gives a planned response this stream's next nonce and records it as sent.
    fn emit(&mut self, planned: Planned) -> Option<SotwResponse> {
        let state = self.types.get_mut(&planned.type_url)?;
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        state.nonce = Some(nonce.clone());
        state.sent_version = Some(planned.version.clone());
        state.sent = Some(planned.held.clone());
        state.refused = false;
        Some(SotwResponse {
            type_url: planned.type_url,
            version_info: planned.version,
            nonce,
            payload: planned.held,
        })
    }
}

/// The new set plus the resources it removes from `base`, versioned as its own set.
fn union(type_url: &str, next: &Held, base: &Held, removed: &[String]) -> Planned {
    let mut items: Vec<Arc<XdsResource>> = next
        .iter()
        .cloned()
        .chain(removed.iter().filter_map(|n| base.get(n).cloned()))
        .collect();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    let subset = Subset::new(items);
    Planned {
        type_url: type_url.to_string(),
        version: subset.version.clone(),
        held: Held::Subset(Arc::new(subset)),
    }
}

#[cfg(test)]
mod tests;
