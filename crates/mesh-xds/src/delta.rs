//! The delta (incremental) protocol state machine for one ADS stream.
//!
//! The server tracks which version of each resource the client holds and sends only
//! what changed, plus the names of resources that went away. Subscription changes
//! are applied from every request, even one with a stale nonce (dropping them would
//! lose them: the client never repeats a delta subscription); only the ACK/NACK part
//! of a stale request is ignored.
//!
//! Every response in flight is remembered with the versions the client held before
//! it, so the ACK or NACK of any of them (not only the latest) is understood, and a
//! NACK puts the server's view of the client back exactly: what was refused is sent
//! again only once the type's content or the subscription changes. Within a push,
//! removals go out after every type's additions and changes (make before break).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::Arc,
};

use crate::{
    Snapshot, TypeMap, TypedResources, XdsResource,
    discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource},
    encode::{self, Encoded},
    names::{self, NameSet},
    resource::SetDelta,
    resource::set_version,
    sotw::{ProtocolError, RequestKind, push_order},
    status::{self, Nack, TypeStatus},
};

#[derive(Debug, Default, Clone)]
struct TypeState {
    initialized: bool,
    wildcard: bool,
    /// Shared with `held_cover` until the subscription changes.
    names: Arc<NameSet>,
    /// The set the client was last brought in line with: it holds exactly the
    /// resources of this set that `held_cover` covered. No per-resource state is
    /// kept per client, so a stream costs the same whatever the size of the set.
    held: Option<Arc<TypedResources>>,
    held_cover: Cover,
    /// Hash of `held_cover`, computed on first use after it changes.
    cover_version: Option<String>,
    /// Versions the client declared on connecting, until the first comparison.
    initial: HashMap<String, String>,
    /// Explicitly subscribed names the client was told do not exist.
    absent: BTreeSet<String>,
    /// The subscription moved since `held`: the next response compares in full.
    resubscribed: bool,
    /// What the server knows the client holds where it differs from `held`: the
    /// version (or absence) a NACK left in place. Empty unless a NACK happened.
    overrides: BTreeMap<String, Option<String>>,
    /// Responses sent and not yet answered, oldest first.
    pending: VecDeque<Pending>,
    /// The last nonce sent when the current NACK was received: only the ACK of a
    /// later response clears it.
    nacked_at: u64,
    nonce: Option<String>,
    sent_version: Option<String>,
    acked_version: Option<String>,
    nack: Option<Nack>,
}

status::reports_status!(TypeState);

/// A response awaiting its ACK or NACK, with what the client held before it, so a
/// NACK can be undone exactly.
#[derive(Debug, Clone)]
struct Pending {
    nonce: u64,
    /// The version the response carried (only the last part of an update has one).
    version: Option<String>,
    /// Every name the response touched, with the version the client held before.
    priors: Vec<(Touched, Option<String>)>,
}

/// A name a response touched: a resource it carried (shared, not copied: a first
/// response carries thousands), or a name it removed.
#[derive(Debug, Clone)]
enum Touched {
    Resource(Arc<XdsResource>),
    Removed(String),
}

impl Touched {
    fn name(&self) -> &str {
        match self {
            Touched::Resource(r) => &r.name,
            Touched::Removed(n) => n,
        }
    }
}

/// Responses per type remembered for their ACK; a client that answers none loses
/// the oldest (their NACKs are then taken as stale).
const MAX_PENDING: usize = 64;

/// Which names a subscription covers.
#[derive(Debug, Default, Clone)]
struct Cover {
    wildcard: bool,
    names: Arc<NameSet>,
}

impl Cover {
    fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// Largest encoded size of the resources in one delta response (one resource
/// larger than this still goes out, alone).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A delta response the state machine decided to send, not yet encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaResponse {
    /// The type URL.
    pub type_url: String,
    /// Content hash of the client's whole subscribed set after this response.
    pub system_version_info: String,
    /// This stream's nonce for the response.
    pub nonce: String,
    /// Resources added or changed.
    pub resources: Vec<Arc<XdsResource>>,
    /// Names removed (or that do not exist).
    pub removed_resources: Vec<String>,
}

impl DeltaResponse {
    fn head(&self, control_plane: Option<&str>) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: self.system_version_info.clone(),
            type_url: self.type_url.clone(),
            removed_resources: self.removed_resources.clone(),
            nonce: self.nonce.clone(),
            control_plane: control_plane.map(|id| {
                mesh_api::envoy::envoy::config::core::v3::ControlPlane {
                    identifier: id.to_string(),
                }
            }),
            ..DeltaDiscoveryResponse::default()
        }
    }

    /// The wire encoding: each resource's pre-encoded entry plus this response's fields.
    pub fn encode(&self, control_plane: Option<&str>) -> Encoded {
        let mut chunks: Vec<bytes::Bytes> = self
            .resources
            .iter()
            .map(|r| r.delta_entry().clone())
            .collect();
        chunks.push(encode::delta_tail(&self.head(control_plane)));
        Encoded { chunks }
    }

    /// The response as a protobuf message (tests and tools).
    pub fn to_proto(&self, control_plane: Option<&str>) -> DeltaDiscoveryResponse {
        let mut head = self.head(control_plane);
        head.resources = self
            .resources
            .iter()
            .map(|r| Resource {
                name: r.name.clone(),
                version: r.version.clone(),
                resource: Some(r.body.clone()),
                ..Resource::default()
            })
            .collect();
        head
    }
}

/// What handling one delta request produced.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaOutcome {
    /// How the request was classified.
    pub kind: RequestKind,
    /// Responses to send.
    pub responses: Vec<DeltaResponse>,
    /// The NACK recorded, when the request was one.
    pub nack: Option<Nack>,
}

/// Protocol state of one delta stream.
#[derive(Debug, Default)]
pub struct DeltaStream {
    types: TypeMap<TypeState>,
    nonces: u64,
}

impl DeltaStream {
    /// A new stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles one request against the current snapshot (None: not computed yet).
    pub fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        snapshot: Option<&Snapshot>,
    ) -> Result<DeltaOutcome, ProtocolError> {
        if req.type_url.is_empty() {
            return Err(ProtocolError::MissingTypeUrl);
        }
        let state = self
            .types
            .get_or_insert_with(&req.type_url, TypeState::default);
        let mut kind = RequestKind::Ack;
        let mut nack = None;
        let mut changed = false;
        if !state.initialized {
            state.initialized = true;
            state.wildcard = req.resource_names_subscribe.is_empty()
                || req.resource_names_subscribe.iter().any(|n| n == "*");
            state.initial = req.initial_resource_versions.clone();
            kind = RequestKind::Initial;
            changed = true;
        } else if !req.response_nonce.is_empty() {
            // Answers come in order: anything older than the answered response was
            // answered already or skipped.
            // Nonces are sent as decimal numbers: any other spelling is none of ours.
            let nonce = req
                .response_nonce
                .parse::<u64>()
                .ok()
                .filter(|n| n.to_string() == req.response_nonce);
            let answered = state
                .pending
                .iter()
                .position(|p| Some(p.nonce) == nonce)
                .and_then(|pos| state.pending.drain(..=pos).next_back());
            if state.pending.is_empty() {
                // In sync: a connect's burst of responses leaves no queue behind.
                state.pending = VecDeque::new();
            }
            match answered {
                Some(p) => {
                    if let Some(status) = &req.error_detail {
                        let n = Nack {
                            version: p
                                .version
                                .clone()
                                .or_else(|| state.sent_version.clone())
                                .unwrap_or_default(),
                            error: status.message.clone(),
                        };
                        state.rollback(p);
                        state.nack = Some(n.clone());
                        state.nacked_at = self.nonces;
                        nack = Some(n);
                        kind = RequestKind::Nack;
                    } else {
                        if p.version.is_some() {
                            state.acked_version = p.version;
                        }
                        if p.nonce > state.nacked_at {
                            state.nack = None;
                        }
                    }
                }
                None => kind = RequestKind::Stale,
            }
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                changed |= !state.wildcard;
                state.wildcard = true;
            } else {
                if !state.names.contains(name) {
                    Arc::make_mut(&mut state.names).insert(name.clone());
                    changed = true;
                }
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                changed |= state.wildcard;
                state.wildcard = false;
            } else {
                if state.names.contains(name) {
                    Arc::make_mut(&mut state.names).remove(name);
                    changed = true;
                }
            }
        }
        if changed {
            // Shared with every stream subscribing to the same names.
            state.names = names::share(std::mem::take(&mut state.names));
            // The subscription moved: the next response compares in full, and what
            // the client no longer subscribes to it has forgotten.
            state.resubscribed = true;
            let (wildcard, names) = (state.wildcard, &state.names);
            state.overrides.retain(|n, _| wildcard || names.contains(n));
        }
        let mut responses = Vec::new();
        if let (true, Some(snapshot)) = (changed, snapshot) {
            let force = kind == RequestKind::Initial;
            if let Some(p) = self.plan(&req.type_url, snapshot, force) {
                responses = self.emit(&p, true, true, true);
            }
        }
        Ok(DeltaOutcome {
            kind,
            responses,
            nack,
        })
    }

    /// Handles a new snapshot: the changes for every subscribed type, types listed in
    /// `order` first.
    ///
    /// Make before break: every type's added and changed resources go out first, in
    /// that order; the removals follow in a second pass, in reverse order (routes,
    /// listeners, endpoints, clusters), so nothing is removed while a resource sent
    /// before may still refer to it. The type sent last in the first pass carries
    /// its own removals when no other type's removals would have to follow them.
    pub fn on_snapshot(&mut self, snapshot: &Snapshot, order: &[&str]) -> Vec<DeltaResponse> {
        let mut plans = Vec::new();
        for type_url in push_order(self.types.keys(), order) {
            let first = self
                .types
                .get(&type_url)
                .is_some_and(|s| s.sent_version.is_none());
            plans.extend(self.plan(&type_url, snapshot, first));
        }
        let upserting = |p: &Planned| !p.resources.is_empty() || p.removed.is_empty();
        let last_upsert = plans.iter().rposition(upserting);
        let last_removal = plans.iter().rposition(|p| !p.removed.is_empty());
        let whole = last_upsert.filter(|i| Some(*i) == last_removal);
        let mut out = Vec::new();
        let mut deferred = Vec::new();
        for (i, p) in plans.iter().enumerate() {
            if Some(i) == whole || p.removed.is_empty() {
                out.extend(self.emit(p, true, true, true));
                continue;
            }
            if !p.resources.is_empty() {
                out.extend(self.emit(p, true, false, false));
            }
            deferred.push(p);
        }
        for p in deferred.into_iter().rev() {
            out.extend(self.emit(p, false, true, true));
        }
        out
    }

    /// The status of every type, for `/debug/syncz`.
    pub fn status(&self) -> TypeMap<TypeStatus> {
        status::status_of(&self.types)
    }

    /// Brings a status entry in line with this stream, reusing its allocations.
    pub fn write_status(&self, out: &mut TypeMap<TypeStatus>) {
        status::write_status(&self.types, out);
    }

    /// Computes what the client lacks (and the versions it held before); None when
    /// nothing changed, unless `force`, which answers a first request even with
    /// nothing to send, so the client knows it is synced.
    fn plan(&mut self, type_url: &str, snapshot: &Snapshot, force: bool) -> Option<Planned> {
        let state = self.types.get_mut(type_url)?;
        let set = snapshot.get(type_url).cloned().unwrap_or_default();
        let mut same_cover = false;
        let (resources, mut removed) = match &state.held {
            Some(prev) if !force && !state.resubscribed => {
                if Arc::ptr_eq(prev, &set) || prev.version == set.version {
                    return None;
                }
                // The subscription is the one `held_cover` recorded.
                same_cover = true;
                if state.overrides.is_empty() {
                    // The usual push: apply the difference between two versions of
                    // the set, computed once and shared by every stream.
                    state.apply(&set.delta_from(prev))
                } else {
                    // After a NACK the client's copy differs from `held`: compare.
                    state.compare(&set)
                }
            }
            _ => state.compare(&set),
        };
        removed.sort();
        removed.dedup();
        let resource_priors = resources
            .iter()
            .map(|r| state.holds(&r.name).map(str::to_string))
            .collect();
        let removed_priors = removed
            .iter()
            .map(|n| state.holds(n).map(str::to_string))
            .collect();
        state.held = Some(set.clone());
        if !same_cover {
            state.held_cover = Cover {
                wildcard: state.wildcard,
                names: state.names.clone(),
            };
            state.cover_version = None;
        }
        state.resubscribed = false;
        // Dropped, not cleared: a reconnecting client may declare thousands.
        state.initial = HashMap::new();
        // Either path leaves the server's view of the client exact again.
        state.overrides.clear();
        if resources.is_empty() && removed.is_empty() && !force {
            return None;
        }
        // The version names the set and the subscription it was seen through: a
        // pure wildcard sees the whole set; otherwise the subscription's own hash
        // (computed once per subscription) is combined with the set's.
        let version = if state.names.is_empty() {
            set.version.clone()
        } else {
            let cover = state
                .cover_version
                .get_or_insert_with(|| {
                    // The names' own hash is computed once per shared subscription.
                    let wildcard = if state.held_cover.wildcard { "1" } else { "0" };
                    set_version(
                        [("*", wildcard), ("names", state.held_cover.names.version())].into_iter(),
                    )
                })
                .clone();
            set_version([("set", set.version.as_str()), ("cover", cover.as_str())].into_iter())
        };
        Some(Planned {
            type_url: type_url.to_string(),
            version,
            resources,
            removed,
            resource_priors,
            removed_priors,
        })
    }

    /// Sends part of a planned update: `resources` in responses of bounded size, the
    /// last carrying `removed` and, when `last`, the version of the whole update.
    fn emit(
        &mut self,
        plan: &Planned,
        with_resources: bool,
        with_removed: bool,
        last: bool,
    ) -> Vec<DeltaResponse> {
        let Some(state) = self.types.get_mut(&plan.type_url) else {
            return Vec::new();
        };
        // Large updates go out as several responses of bounded size, so a client
        // (re)connecting to a big set never makes the server hold it all at once.
        // Each chunk: resources with the version the client held before.
        let mut chunks: Vec<Vec<(&Arc<XdsResource>, &Option<String>)>> = vec![Vec::new()];
        let mut bytes = 0;
        let resources = plan.resources.iter().zip(&plan.resource_priors);
        for r in resources.take(if with_resources { usize::MAX } else { 0 }) {
            let len = r.0.delta_entry().len();
            if bytes + len > MAX_RESPONSE_BYTES && chunks.last().is_some_and(|c| !c.is_empty()) {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += len;
            if let Some(last) = chunks.last_mut() {
                last.push(r);
            }
        }
        let mut removed: Vec<(&String, &Option<String>)> = if with_removed {
            plan.removed.iter().zip(&plan.removed_priors).collect()
        } else {
            Vec::new()
        };
        let last_chunk = chunks.len() - 1;
        let mut out = Vec::with_capacity(chunks.len());
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.nonces += 1;
            let nonce = self.nonces;
            state.nonce = Some(nonce.to_string());
            // Only the last part of an update carries the version: a client can tell
            // when it holds the whole set.
            let version = (last && i == last_chunk).then(|| plan.version.clone());
            let removed = if i == last_chunk {
                std::mem::take(&mut removed)
            } else {
                Vec::new()
            };
            let priors = chunk
                .iter()
                .map(|(r, prior)| (Touched::Resource((*r).clone()), (*prior).clone()))
                .chain(
                    removed
                        .iter()
                        .map(|(n, prior)| (Touched::Removed((*n).clone()), (*prior).clone())),
                )
                .collect();
            if state.pending.len() >= MAX_PENDING {
                state.pending.pop_front();
            }
            state.pending.push_back(Pending {
                nonce,
                version: version.clone(),
                priors,
            });
            if let Some(v) = &version {
                state.sent_version = Some(v.clone());
            }
            out.push(DeltaResponse {
                type_url: plan.type_url.clone(),
                system_version_info: version.unwrap_or_default(),
                nonce: nonce.to_string(),
                resources: chunk.into_iter().map(|(r, _)| r.clone()).collect(),
                removed_resources: removed.into_iter().map(|(n, _)| n.clone()).collect(),
            });
        }
        out
    }
}

/// One type's share of a push, computed but not yet sent.
#[derive(Debug)]
struct Planned {
    type_url: String,
    version: String,
    resources: Vec<Arc<XdsResource>>,
    removed: Vec<String>,
    /// The version of each of `resources` the client held before.
    resource_priors: Vec<Option<String>>,
    /// The version of each of `removed` the client held before.
    removed_priors: Vec<Option<String>>,
}

impl TypeState {
    fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// The version of `name` the client holds, if any.
    fn holds(&self, name: &str) -> Option<&str> {
        if let Some(version) = self.overrides.get(name) {
            return version.as_deref();
        }
        match &self.held {
            Some(held) if self.held_cover.covers(name) => {
                held.items.get(name).map(|r| r.version.as_str())
            }
            Some(_) => None,
            None => self.initial.get(name).map(String::as_str),
        }
    }

    /// Applies a precomputed difference between two versions of the set (the
    /// subscription unchanged): work in proportion to what changed.
    fn apply(&mut self, delta: &SetDelta) -> (Vec<Arc<XdsResource>>, Vec<String>) {
        let mut resources = Vec::new();
        let mut removed = Vec::new();
        for r in &delta.changed {
            if self.covers(&r.name) {
                self.absent.remove(r.name.as_str());
                resources.push(r.clone());
            }
        }
        for name in &delta.removed {
            if self.covers(name) {
                if self.names.contains(name) {
                    self.absent.insert(name.clone());
                }
                removed.push(name.clone());
            }
        }
        (resources, removed)
    }

    /// Undoes a NACKed response in the server's view of the client: each name it
    /// touched is back at its prior version, or, when a later response still in
    /// flight touches it too, that response's prior becomes this one.
    fn rollback(&mut self, nacked: Pending) {
        for (touched, prior) in nacked.priors {
            let name = touched.name();
            let later = self
                .pending
                .iter_mut()
                .find_map(|p| p.priors.iter_mut().find(|(n, _)| n.name() == name));
            match later {
                Some((_, later_prior)) => *later_prior = prior,
                None => {
                    self.overrides.insert(name.to_string(), prior);
                }
            }
        }
    }

    /// Compares the whole set with what the client holds: the first response, or
    /// after the subscription moved.
    fn compare(&mut self, set: &TypedResources) -> (Vec<Arc<XdsResource>>, Vec<String>) {
        let mut resources = Vec::new();
        let mut removed = Vec::new();
        let wanted: Vec<&Arc<XdsResource>> = if self.wildcard {
            set.items.values().collect()
        } else {
            self.names.iter().filter_map(|n| set.items.get(n)).collect()
        };
        for r in wanted {
            if self.holds(&r.name) != Some(r.version.as_str()) {
                resources.push(r.clone());
            }
        }
        // What the client holds that is gone from the set (unsubscribed ones are
        // simply forgotten by both sides).
        let held_names: Vec<String> = match &self.held {
            Some(held) => held
                .items
                .keys()
                .filter(|n| self.held_cover.covers(n))
                .cloned()
                .collect(),
            None => self.initial.keys().cloned().collect(),
        };
        for name in held_names {
            if self.covers(&name) && !set.items.contains_key(&name) {
                removed.push(name);
            }
        }
        // What a NACK left with the client that is gone now.
        for (name, version) in &self.overrides {
            if version.is_some() && self.covers(name) && !set.items.contains_key(name) {
                removed.push(name.clone());
            }
        }
        // Explicit names that do not exist, told once.
        self.absent
            .retain(|n| self.names.contains(n) && !set.items.contains_key(n));
        for name in self.names.iter() {
            if !set.items.contains_key(name) && self.absent.insert(name.clone()) {
                removed.push(name.clone());
            }
        }
        (resources, removed)
    }
}

#[cfg(test)]
mod tests;
