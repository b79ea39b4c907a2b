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
//!   NACK) does not ACK it: the NACK stays recorded;
//! - only Listener and Cluster responses (and types no parent refers to, such as
//!   galley's collections) carry the complete state of the world; endpoints, routes
//!   and secrets are sent in parts, as the xDS protocol allows (see
//!   [`sends_complete_state`]).

use std::sync::Arc;

use crate::{
    Snapshot, TypeMap, TypedResources, XdsResource,
    discovery::{DiscoveryRequest, DiscoveryResponse},
    encode::{self, Encoded},
    names::{self, NameSet},
    resource::{SetDelta, Subset, diff_sorted},
    status::{self, Nack, TypeStatus},
};

/// Whether SotW responses of `type_url` carry the complete state of the world.
///
/// The xDS protocol requires it for Listener and Cluster: a resource missing from
/// their response is deleted. Responses of the other types may carry only what
/// changed, and for them the protocol has no way to delete: a resource goes away
/// when its parents stop naming it (a load assignment when the cluster that names
/// it is removed or changed, a route configuration when its listeners are, a
/// secret when nothing refers to it), and the client drops it then. So
/// ClusterLoadAssignment, RouteConfiguration and Secret responses carry only the
/// resources the client does not hold at their current version: a push sends
/// what changed, a new subscription what it adds, and a removal sends nothing.
/// Every other type (galley's collections have no parents to convey a removal) is
/// sent complete.
pub fn sends_complete_state(type_url: &str) -> bool {
    !matches!(
        type_url,
        crate::type_url::ENDPOINT | crate::type_url::ROUTE | crate::type_url::SECRET
    )
}

/// A response the state machine decided to send, not yet encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct SotwResponse {
    /// The type URL.
    pub type_url: String,
    /// Content hash of the resources sent.
    pub version_info: String,
    /// This stream's nonce for the response.
    pub nonce: String,
    /// The resources carried.
    payload: Payload,
}

/// What a response carries.
#[derive(Debug, Clone, PartialEq)]
enum Payload {
    /// A whole set or the subset of a named subscription (either encoded once and
    /// shared by every stream sent it).
    Set(Held),
    /// Changed resources of a type sent in parts, in name order.
    Changes(Vec<Arc<XdsResource>>),
}

impl SotwResponse {
    /// The resources carried, in name order.
    pub fn resources(&self) -> Vec<&Arc<XdsResource>> {
        match &self.payload {
            Payload::Set(held) => held.iter().collect(),
            Payload::Changes(list) => list.iter().collect(),
        }
    }

    /// The wire encoding: the shared body plus this stream's nonce.
    pub fn encode(&self, control_plane: Option<&str>) -> Encoded {
        let suffix = encode::sotw_suffix(&self.nonce, control_plane);
        match &self.payload {
            Payload::Set(Held::Whole(set)) => Encoded {
                chunks: vec![set.wildcard_body(&self.type_url), suffix],
            },
            Payload::Set(Held::Subset(subset)) => Encoded {
                chunks: vec![subset.sotw_body(&self.type_url), suffix],
            },
            // Each resource's shared entry, then this response's own fields.
            Payload::Changes(list) => {
                let mut chunks: Vec<bytes::Bytes> =
                    list.iter().map(|r| r.sotw_entry().clone()).collect();
                chunks.push(encode::sotw_body(
                    &self.version_info,
                    &self.type_url,
                    std::iter::empty(),
                ));
                chunks.push(suffix);
                Encoded { chunks }
            }
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
    /// Resource names are protobuf strings.
    #[error("a resource name is not valid UTF-8")]
    InvalidName,
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
    /// Types sent in parts: what the client holds if it refuses the response in
    /// flight (`sent` is what it holds once it takes it). None when nothing was
    /// known before it.
    before: Option<Held>,
}

status::reports_status!(TypeState);

impl TypeState {
    /// What the subscription selects from `set`.
    fn select(&self, set: Option<&Arc<TypedResources>>) -> Held {
        match (set, self.wildcard) {
            (Some(set), true) => Held::Whole(set.clone()),
            (Some(set), false) => Held::Subset(set.subset(&self.names)),
            (None, _) => Held::empty(),
        }
    }

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

    /// What going from `self` to `next` adds or changes, and the names it removes.
    /// Between two versions of a whole set, or two subsets shared by the streams
    /// of one subscription, the difference is computed once and shared.
    fn delta(&self, next: &Held) -> Arc<SetDelta> {
        match (self, next) {
            (Held::Whole(prev), Held::Whole(next)) => next.delta_from(prev),
            (Held::Subset(prev), Held::Subset(next)) => next.delta_from(prev),
            _ => Arc::new(diff_sorted(
                self.iter().map(|r| (r.name.as_str(), r)),
                next.iter().map(|r| (r.name.as_str(), r)),
            )),
        }
    }

    /// These resources without the names `d` (a delta from them) removes;
    /// built once per delta and shared by the streams that share it.
    fn without(&self, d: &SetDelta) -> Held {
        if d.removed.is_empty() {
            return self.clone();
        }
        let kept = d.kept.get_or_init(|| {
            let kept = self
                .iter()
                .filter(|r| d.removed.binary_search(&r.name).is_err())
                .cloned()
                .collect();
            Arc::new(Subset::new(kept))
        });
        Held::Subset(kept.clone())
    }
}

/// A response decided on but not yet given a nonce.
#[derive(Debug)]
struct Planned {
    type_url: String,
    version: String,
    /// What the client holds once it takes the response.
    held: Held,
    /// Types sent in parts: the resources to send (None: all of `held`).
    changes: Option<Vec<Arc<XdsResource>>>,
}

/// Protocol state of one state-of-the-world stream.
#[derive(Debug, Default)]
pub struct SotwStream {
    types: TypeMap<TypeState>,
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
        self.handle(
            req,
            req.resource_names.iter().map(String::as_bytes),
            snapshot,
        )
    }

    /// As [`SotwStream::on_request`], for a request read with its names undecoded
    /// (what the server does).
    pub fn on_sotw_request(
        &mut self,
        req: &SotwRequest,
        snapshot: Option<&Snapshot>,
    ) -> Result<Outcome, ProtocolError> {
        self.handle(&req.request, req.names(), snapshot)
    }

    /// Handles `req`, whose subscribed names are `names` (its own
    /// `resource_names` are not read).
    fn handle<'n>(
        &mut self,
        req: &DiscoveryRequest,
        names: impl Iterator<Item = &'n [u8]> + Clone,
        snapshot: Option<&Snapshot>,
    ) -> Result<Outcome, ProtocolError> {
        if req.type_url.is_empty() {
            return Err(ProtocolError::MissingTypeUrl);
        }
        let explicit_wildcard = names.clone().any(|n| n == b"*");
        let requested = || names.clone().filter(|n| *n != b"*");
        // Every request repeats the whole subscription: it is copied only when it
        // differs from the one held, and then shared with equal ones.
        let owned = || names::share_names(requested()).map_err(|_| ProtocolError::InvalidName);
        let state = self
            .types
            .get_or_insert_with(&req.type_url, TypeState::default);
        let was_refused = state.refused;

        let (kind, changed, nack) = if state.nonce.is_none() {
            state.wildcard = names.clone().next().is_none() || explicit_wildcard;
            state.names = owned()?;
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
                state.names = owned()?;
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
                        state.before = None;
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

        let partial = !sends_complete_state(&req.type_url);
        if partial && state.refused && !was_refused {
            // A type sent in parts: the client kept what it held before the
            // response it refused.
            state.sent = state.before.take();
        }
        let mut responses = Vec::new();
        if let (true, Some(snapshot)) = (changed || kind == RequestKind::Initial, snapshot) {
            let initial = kind == RequestKind::Initial;
            let planned = if partial {
                self.plan_changes(&req.type_url, snapshot, initial)
            } else {
                self.plan(&req.type_url, snapshot, initial)
            };
            if let Some(planned) = planned {
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
            if !sends_complete_state(&type_url) {
                // Sent in parts: what changed, in type order; nothing to remove.
                upserts.extend(self.plan_changes(&type_url, snapshot, first));
                continue;
            }
            let Some(target) = self.plan(&type_url, snapshot, first) else {
                continue;
            };
            let base = self.types.get(&type_url).and_then(TypeState::client_view);
            let delta = base.map(|base| base.delta(&target.held));
            let (changes, mut removed) = match &delta {
                Some(d) => (!d.changed.is_empty(), d.removed.clone()),
                None => (true, Vec::new()),
            };
            // A resource the client unsubscribed from goes at once: it asked for
            // that, and a set naming it would carry a name it no longer wants.
            if let Some(state) = self.types.get(&type_url) {
                removed.retain(|n| state.wildcard || state.names.contains(n));
            }
            match (base, &delta) {
                (Some(base), Some(d)) if !removed.is_empty() => {
                    let union = if removed.len() == d.removed.len() {
                        // The same for every stream sharing the delta.
                        d.union
                            .get_or_init(|| union(&target.held, base, &removed))
                            .clone()
                    } else {
                        union(&target.held, base, &removed)
                    };
                    let union = Planned {
                        type_url: type_url.clone(),
                        version: union.version.clone(),
                        held: Held::Subset(union),
                        changes: None,
                    };
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
    pub fn status(&self) -> TypeMap<TypeStatus> {
        status::status_of(&self.types)
    }

    /// Brings a status entry in line with this stream, reusing its allocations.
    pub fn write_status(&self, out: &mut TypeMap<TypeStatus>) {
        status::write_status(&self.types, out);
    }

    /// The set one type's subscription selects from `snapshot`, if its content differs
    /// from what was sent. `force` plans even an unchanged set (the first response of
    /// a stream).
    fn plan(&self, type_url: &str, snapshot: &Snapshot, force: bool) -> Option<Planned> {
        let state = self.types.get(type_url)?;
        let held = state.select(snapshot.get(type_url));
        let version = held.version().to_string();
        if !force && state.sent_version.as_deref() == Some(version.as_str()) {
            return None;
        }
        Some(Planned {
            type_url: type_url.to_string(),
            version,
            held,
            changes: None,
        })
    }

    /// For a type sent in parts: the resources the subscription selects that the
    /// client does not hold at their current version; None when there are none,
    /// unless `force` (a first response, always answered). Resources that left
    /// the selection are forgotten here as the client forgets them.
    fn plan_changes(
        &mut self,
        type_url: &str,
        snapshot: &Snapshot,
        force: bool,
    ) -> Option<Planned> {
        let state = self.types.get_mut(type_url)?;
        let target = state.select(snapshot.get(type_url));
        if !force {
            let held = state
                .sent
                .as_ref()
                .is_some_and(|v| v.version() == target.version());
            // Refused and unchanged since: not sent again.
            let refused = state.refused && state.sent_version.as_deref() == Some(target.version());
            if held || refused {
                return None;
            }
        }
        let (changes, before) = match &state.sent {
            None => (None, None),
            Some(view) => {
                let d = view.delta(&target);
                (Some(d.changed.clone()), Some(view.without(&d)))
            }
        };
        if !force && changes.as_ref().is_some_and(Vec::is_empty) {
            // Only removals, which the parents convey: the client drops them.
            if let Some(b) = state.before.take() {
                let d = b.delta(&target);
                state.before = Some(b.without(&d));
            }
            state.sent = Some(target);
            return None;
        }
        state.before = before;
        Some(Planned {
            type_url: type_url.to_string(),
            version: target.version().to_string(),
            held: target,
            changes,
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
        let payload = match planned.changes {
            Some(list) => Payload::Changes(list),
            None => Payload::Set(planned.held),
        };
        Some(SotwResponse {
            type_url: planned.type_url,
            version_info: planned.version,
            nonce,
            payload,
        })
    }
}

/// The new set plus the resources it removes from `base`, versioned as its own set.
/// `next` with the `removed` resources of `base` added back, in name order.
fn union(next: &Held, base: &Held, removed: &[String]) -> Arc<Subset> {
    let mut items: Vec<Arc<XdsResource>> = next
        .iter()
        .cloned()
        .chain(removed.iter().filter_map(|n| base.get(n).cloned()))
        .collect();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    Arc::new(Subset::new(items))
}

mod request;
pub use request::{Names, SotwRequest};

#[cfg(test)]
mod tests;
