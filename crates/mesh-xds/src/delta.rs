//! The delta (incremental) protocol state machine for one ADS stream.
//!
//! The server tracks which version of each resource the client holds and sends only
//! what changed, plus the names of resources that went away. Subscription changes
//! are applied from every request, even one with a stale nonce (dropping them would
//! lose them: the client never repeats a delta subscription); only the ACK/NACK part
//! of a stale request is ignored.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use crate::{
    Snapshot, TypedResources, XdsResource,
    discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource},
    encode::{self, Encoded},
    resource::SetDelta,
    resource::set_version,
    sotw::{ProtocolError, RequestKind, push_order},
    status::{Nack, TypeStatus},
};

#[derive(Debug, Default, Clone)]
struct TypeState {
    initialized: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// The set the client was last brought in line with: it holds exactly the
    /// resources of this set that `held_cover` covered. No per-resource state is
    /// kept per client, so a stream costs the same whatever the size of the set.
    held: Option<Arc<TypedResources>>,
    held_cover: Cover,
    /// Versions the client declared on connecting, until the first comparison.
    initial: HashMap<String, String>,
    /// Explicitly subscribed names the client was told do not exist.
    absent: BTreeSet<String>,
    /// The subscription moved since `held`: the next response compares in full.
    resubscribed: bool,
    nonce: Option<String>,
    sent_version: Option<String>,
    acked_version: Option<String>,
    nack: Option<Nack>,
}

/// Which names a subscription covers.
#[derive(Debug, Default, Clone)]
struct Cover {
    wildcard: bool,
    names: BTreeSet<String>,
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
    types: BTreeMap<String, TypeState>,
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
        let state = self.types.entry(req.type_url.clone()).or_default();
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
            if state.nonce.as_deref() == Some(req.response_nonce.as_str()) {
                if let Some(status) = &req.error_detail {
                    let n = Nack {
                        version: state.sent_version.clone().unwrap_or_default(),
                        error: status.message.clone(),
                    };
                    state.nack = Some(n.clone());
                    nack = Some(n);
                    kind = RequestKind::Nack;
                } else {
                    state.acked_version = state.sent_version.clone();
                    state.nack = None;
                }
            } else {
                kind = RequestKind::Stale;
            }
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                changed |= !state.wildcard;
                state.wildcard = true;
            } else {
                changed |= state.names.insert(name.clone());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                changed |= state.wildcard;
                state.wildcard = false;
            } else {
                changed |= state.names.remove(name);
            }
        }
        if changed {
            // The subscription moved: the next response compares in full.
            state.resubscribed = true;
        }
        let mut responses = Vec::new();
        if let (true, Some(snapshot)) = (changed, snapshot) {
            let type_url = req.type_url.clone();
            let force = kind == RequestKind::Initial;
            responses.extend(self.respond(&type_url, snapshot, force));
        }
        Ok(DeltaOutcome {
            kind,
            responses,
            nack,
        })
    }

    /// Handles a new snapshot: the changes for every subscribed type, types listed in
    /// `order` first.
    pub fn on_snapshot(&mut self, snapshot: &Snapshot, order: &[&str]) -> Vec<DeltaResponse> {
        let type_urls = push_order(self.types.keys(), order);
        type_urls
            .iter()
            .flat_map(|t| {
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

    /// Computes what the client lacks; None when nothing changed (unless `force`,
    /// which answers a first request even with nothing to send, so the client knows
    /// it is synced).
    fn respond(&mut self, type_url: &str, snapshot: &Snapshot, force: bool) -> Vec<DeltaResponse> {
        let Some(state) = self.types.get_mut(type_url) else {
            return Vec::new();
        };
        let set = snapshot.get(type_url).cloned().unwrap_or_default();
        let (resources, mut removed) = match &state.held {
            Some(prev) if !force && !state.resubscribed => {
                if Arc::ptr_eq(prev, &set) || prev.version == set.version {
                    return Vec::new();
                }
                // The usual push: apply the difference between two versions of the
                // set, computed once and shared by every stream.
                state.apply(&set.delta_from(prev))
            }
            _ => state.compare(&set),
        };
        state.held = Some(set.clone());
        state.held_cover = Cover {
            wildcard: state.wildcard,
            names: state.names.clone(),
        };
        state.resubscribed = false;
        if resources.is_empty() && removed.is_empty() && !force {
            return Vec::new();
        }
        let version = if state.names.is_empty() {
            set.version.clone()
        } else {
            let mut names: BTreeSet<&str> = state.names.iter().map(String::as_str).collect();
            if state.wildcard {
                names.extend(set.items.keys().map(String::as_str));
            }
            set_version(
                names
                    .into_iter()
                    .filter_map(|n| set.items.get(n))
                    .map(|r| (r.name.as_str(), r.version.as_str())),
            )
        };
        removed.sort();
        removed.dedup();
        // Large updates go out as several responses of bounded size, so a client
        // (re)connecting to a big set never makes the server hold it all at once.
        let mut chunks: Vec<Vec<Arc<XdsResource>>> = vec![Vec::new()];
        let mut bytes = 0;
        for r in resources {
            let len = r.delta_entry().len();
            if bytes + len > MAX_RESPONSE_BYTES && chunks.last().is_some_and(|c| !c.is_empty()) {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += len;
            if let Some(last) = chunks.last_mut() {
                last.push(r);
            }
        }
        let last_chunk = chunks.len() - 1;
        let mut out = Vec::with_capacity(chunks.len());
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.nonces += 1;
            let nonce = self.nonces.to_string();
            state.nonce = Some(nonce.clone());
            // Only the last part of a split update carries the version: a client can
            // tell when it holds the whole set.
            out.push(DeltaResponse {
                type_url: type_url.to_string(),
                system_version_info: if i == last_chunk {
                    version.clone()
                } else {
                    String::new()
                },
                nonce,
                resources: chunk,
                removed_resources: if i == last_chunk {
                    std::mem::take(&mut removed)
                } else {
                    Vec::new()
                },
            });
        }
        state.sent_version = Some(version);
        out
    }
}

impl TypeState {
    fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// The version of `name` the client holds, if any.
    fn holds(&self, name: &str) -> Option<&str> {
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
        // Explicit names that do not exist, told once.
        self.absent
            .retain(|n| self.names.contains(n) && !set.items.contains_key(n));
        for name in &self.names {
            if !set.items.contains_key(name) && self.absent.insert(name.clone()) {
                removed.push(name.clone());
            }
        }
        self.initial.clear();
        (resources, removed)
    }
}

#[cfg(test)]
mod tests;
