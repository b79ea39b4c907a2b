//! The delta (incremental) protocol state machine for one ADS stream.
//!
//! The server tracks which version of each resource the client holds and sends only
//! what changed, plus the names of resources that went away. Subscription changes
//! are applied from every request, even one with a stale nonce (dropping them would
//! lose them: the client never repeats a delta subscription); only the ACK/NACK part
//! of a stale request is ignored.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{
    Snapshot,
    discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource},
    resource::set_version,
    sotw::{ProtocolError, RequestKind},
    status::{Nack, TypeStatus},
};

#[derive(Debug, Default, Clone)]
struct TypeState {
    initialized: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the client holds: name -> version, or None when told it does not exist.
    known: HashMap<String, Option<String>>,
    nonce: Option<String>,
    sent_version: Option<String>,
    acked_version: Option<String>,
    nack: Option<Nack>,
}

/// What handling one delta request produced.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaOutcome {
    /// How the request was classified.
    pub kind: RequestKind,
    /// Responses to send.
    pub responses: Vec<DeltaDiscoveryResponse>,
    /// The NACK recorded, when the request was one.
    pub nack: Option<Nack>,
}

/// Protocol state of one delta stream.
#[derive(Debug, Default)]
pub struct DeltaStream {
    types: BTreeMap<String, TypeState>,
    nonces: u64,
    control_plane: Option<String>,
}

impl DeltaStream {
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
            state.known = req
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect();
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
            // The client forgets unsubscribed resources; so does the server.
            if !state.wildcard {
                state.known.remove(name);
            }
        }
        let mut responses = Vec::new();
        if let (true, Some(snapshot)) = (changed, snapshot) {
            let type_url = req.type_url.clone();
            let force = kind == RequestKind::Initial;
            if let Some(r) = self.respond(&type_url, snapshot, force) {
                responses.push(r);
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
    pub fn on_snapshot(
        &mut self,
        snapshot: &Snapshot,
        order: &[&str],
    ) -> Vec<DeltaDiscoveryResponse> {
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

    /// Computes what the client lacks; None when nothing changed (unless `force`,
    /// which answers a first request even with nothing to send, so the client knows
    /// it is synced).
    fn respond(
        &mut self,
        type_url: &str,
        snapshot: &Snapshot,
        force: bool,
    ) -> Option<DeltaDiscoveryResponse> {
        let state = self.types.get_mut(type_url)?;
        let set = snapshot.get(type_url);
        let mut resources = Vec::new();
        let mut removed = Vec::new();

        let mut wanted: BTreeSet<&str> = state.names.iter().map(String::as_str).collect();
        if let (true, Some(set)) = (state.wildcard, set) {
            wanted.extend(set.items.keys().map(String::as_str));
        }
        let mut pairs = Vec::with_capacity(wanted.len());
        for name in &wanted {
            match set.and_then(|s| s.items.get(*name)) {
                Some(r) => {
                    pairs.push((r.name.as_str(), r.version.as_str()));
                    if state.known.get(*name).and_then(|v| v.as_deref()) != Some(r.version.as_str())
                    {
                        resources.push(Resource {
                            name: r.name.clone(),
                            version: r.version.clone(),
                            resource: Some(r.body.clone()),
                            ..Resource::default()
                        });
                    }
                }
                None => {
                    let explicit = state.names.contains(*name);
                    let told_absent = matches!(state.known.get(*name), Some(None));
                    if explicit && !told_absent {
                        removed.push((*name).to_string());
                    }
                }
            }
        }
        // Resources the client holds that are gone (or no longer covered).
        for (name, version) in &state.known {
            if version.is_some()
                && !wanted.contains(name.as_str())
                && !removed.contains(name)
                && (state.wildcard || state.names.contains(name))
            {
                removed.push(name.clone());
            }
        }
        let version = set_version(pairs.into_iter());
        if resources.is_empty() && removed.is_empty() && !force {
            return None;
        }
        for r in &resources {
            state.known.insert(r.name.clone(), Some(r.version.clone()));
        }
        for name in &removed {
            if state.names.contains(name) {
                state.known.insert(name.clone(), None);
            } else {
                state.known.remove(name);
            }
        }
        removed.sort();
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        state.nonce = Some(nonce.clone());
        state.sent_version = Some(version.clone());
        Some(DeltaDiscoveryResponse {
            system_version_info: version,
            resources,
            type_url: type_url.to_string(),
            removed_resources: removed,
            nonce,
            control_plane: self.control_plane.as_ref().map(|id| {
                mesh_api::envoy::envoy::config::core::v3::ControlPlane {
                    identifier: id.clone(),
                }
            }),
            ..DeltaDiscoveryResponse::default()
        })
    }
}

#[cfg(test)]
mod tests;
