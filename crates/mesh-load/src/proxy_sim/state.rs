//! One simulated proxy's protocol state, without transport: responses in, requests
//! out, so the ACK and subscription logic is testable with plain values.
//!
//! It behaves as Envoy does on ADS:
//! - a sidecar subscribes to every cluster (CDS) and listener (LDS), then to the EDS
//!   assignment of each EDS cluster and to the route configurations its listeners
//!   name; a proxyless gRPC client asks for its listeners (`<host>:<port>`) by name,
//!   then their route configurations, the clusters their virtual hosts route to, and
//!   those clusters' endpoints;
//! - it ACKs every response (it never NACKs), with the names it wants at that
//!   moment; the node goes on the first request of a stream only;
//! - on a new stream it subscribes again, a SotW proxy naming the versions it holds,
//!   a delta proxy listing the resource versions it holds (`initial_resource_versions`).
//!
//! A proxy is *complete* once, on its current stream, every type it follows has been
//! answered and it holds every name it asked for.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Instant,
};

use bytes::Bytes;
use mesh_api::envoy::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest},
};
use prost::Message;

use super::decode::{DeltaHead, Held, HeldSet, Kind, SetStore, SotwHead, derive};

/// The xDS protocol variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// State of the world.
    Sotw,
    /// Incremental.
    Delta,
}

impl Protocol {
    /// Name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Sotw => "sotw",
            Protocol::Delta => "delta",
        }
    }
}

/// A request to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// State of the world.
    Sotw(DiscoveryRequest),
    /// Delta.
    Delta(DeltaDiscoveryRequest),
}

/// What a proxy subscribes to for one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// Everything.
    Wildcard,
    /// These names (empty: nothing, no request is sent).
    Names(Arc<BTreeSet<Arc<str>>>),
}

impl Want {
    fn same(&self, other: &Want) -> bool {
        match (self, other) {
            (Want::Wildcard, Want::Wildcard) => true,
            (Want::Names(a), Want::Names(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }

    fn names(&self) -> Vec<String> {
        match self {
            Want::Wildcard => Vec::new(),
            Want::Names(n) => n.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn is_nothing(&self) -> bool {
        matches!(self, Want::Names(n) if n.is_empty())
    }
}

/// The response could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// Not a protobuf of the expected shape.
    #[error("undecodable response: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A type the proxy never asked for.
    #[error("response of unrequested type {0}")]
    UnknownType(String),
}

#[derive(Debug, Default)]
struct TypeState {
    /// Subscribed on the current stream, with this subscription.
    sub: Option<Want>,
    /// Held resources.
    set: Arc<HeldSet>,
    /// Version of the last response received whole (and ACKed).
    version: String,
    nonce: String,
    /// Answered at least once, whole, on the current stream.
    answered: bool,
    /// When `version` last changed.
    changed_at: Option<Instant>,
    /// Delta: earlier parts of a split update.
    pending: Vec<Bytes>,
    /// Delta: subscribed names the server said do not exist.
    absent: BTreeSet<Arc<str>>,
}

/// Per-type view of a proxy, for the load tool's bookkeeping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeView {
    /// Version held (SotW `version_info`, delta `system_version_info`).
    pub version: String,
    /// When it last changed.
    pub changed_at: Option<Instant>,
    /// Resources held.
    pub resources: usize,
}

/// A proxy's protocol state.
pub struct ProxyState {
    protocol: Protocol,
    node: Node,
    /// Proxyless: the listeners it asks for; sidecar: None.
    listeners: Option<Arc<BTreeSet<Arc<str>>>>,
    listener_domains: Vec<String>,
    store: Arc<SetStore>,
    types: [TypeState; 4],
    node_sent: bool,
}

impl ProxyState {
    /// A proxy sending `node`; `listeners` makes it a proxyless client asking for
    /// those listeners.
    pub fn new(
        protocol: Protocol,
        node: Node,
        listeners: Option<Vec<String>>,
        store: Arc<SetStore>,
    ) -> Self {
        let listener_domains = listeners.clone().unwrap_or_default();
        Self {
            protocol,
            node,
            listeners: listeners
                .map(|l| Arc::new(l.into_iter().map(|s| Arc::from(s.as_str())).collect())),
            listener_domains,
            store,
            types: Default::default(),
            node_sent: false,
        }
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn wanted(&self, kind: Kind) -> Want {
        let held = |k: Kind| &self.types[k.index()].set;
        match (&self.listeners, kind) {
            (None, Kind::Cds | Kind::Lds) => Want::Wildcard,
            (_, Kind::Eds) => Want::Names(held(Kind::Cds).referenced()),
            (_, Kind::Rds) => Want::Names(held(Kind::Lds).referenced()),
            (Some(l), Kind::Lds) => Want::Names(l.clone()),
            (Some(_), Kind::Cds) => Want::Names(Arc::new(
                held(Kind::Rds).clusters_for(&self.listener_domains),
            )),
        }
    }

    /// Starts a new stream: forgets per-stream state and returns the first requests.
    pub fn start_stream(&mut self) -> Vec<Request> {
        self.node_sent = false;
        for t in &mut self.types {
            t.sub = None;
            t.nonce.clear();
            t.answered = false;
            t.pending.clear();
        }
        self.resubscribe()
    }

    /// Requests for every type whose wanted subscription differs from the current one.
    fn resubscribe(&mut self) -> Vec<Request> {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            let want = self.wanted(kind);
            let t = &self.types[kind.index()];
            let unchanged = t.sub.as_ref().is_some_and(|s| s.same(&want));
            // Never subscribe to nothing (an empty SotW list would mean everything);
            // Envoy only asks for EDS once it has EDS clusters.
            if unchanged || (t.sub.is_none() && want.is_nothing()) {
                continue;
            }
            if let Some(req) = self.subscription(kind, want) {
                out.push(req);
            }
        }
        out
    }

    fn subscription(&mut self, kind: Kind, want: Want) -> Option<Request> {
        let node = (!self.node_sent).then(|| self.node.clone());
        self.node_sent = true;
        let protocol = self.protocol;
        let t = &mut self.types[kind.index()];
        let previous = t.sub.replace(want.clone());
        let req = match protocol {
            Protocol::Sotw => Request::Sotw(DiscoveryRequest {
                node,
                type_url: kind.type_url().into(),
                version_info: t.version.clone(),
                response_nonce: t.nonce.clone(),
                resource_names: want.names(),
                ..Default::default()
            }),
            Protocol::Delta => {
                let mut req = DeltaDiscoveryRequest {
                    node,
                    type_url: kind.type_url().into(),
                    ..Default::default()
                };
                match previous {
                    None => {
                        req.resource_names_subscribe = want.names();
                        req.initial_resource_versions = t
                            .set
                            .items
                            .iter()
                            .filter(|(name, _)| match &want {
                                Want::Wildcard => true,
                                Want::Names(n) => n.contains(*name),
                            })
                            .map(|(name, held)| (name.to_string(), held.version.to_string()))
                            .collect();
                    }
                    Some(prev) => {
                        let empty = BTreeSet::new();
                        let (old, new) = match (&prev, &want) {
                            (Want::Names(o), Want::Names(n)) => (o.as_ref(), n.as_ref()),
                            (Want::Wildcard, Want::Names(n)) => (&empty, n.as_ref()),
                            (Want::Names(o), Want::Wildcard) => (o.as_ref(), &empty),
                            (Want::Wildcard, Want::Wildcard) => return None,
                        };
                        req.resource_names_subscribe =
                            new.difference(old).map(|s| s.to_string()).collect();
                        req.resource_names_unsubscribe =
                            old.difference(new).map(|s| s.to_string()).collect();
                        t.absent.retain(|n| new.contains(n));
                    }
                }
                Request::Delta(req)
            }
        };
        Some(req)
    }

    /// Handles one encoded response received at `now`; returns the ACK and any
    /// subscription changes it leads to.
    pub fn on_response(
        &mut self,
        body: Bytes,
        now: Instant,
    ) -> Result<Vec<Request>, ResponseError> {
        match self.protocol {
            Protocol::Sotw => self.on_sotw(body, now),
            Protocol::Delta => self.on_delta(body, now),
        }
    }

    fn on_sotw(&mut self, body: Bytes, now: Instant) -> Result<Vec<Request>, ResponseError> {
        let head = SotwHead::decode(body.clone())?;
        let kind = Kind::from_type_url(&head.type_url)
            .ok_or_else(|| ResponseError::UnknownType(head.type_url.clone()))?;
        let set = match self.store.get(kind, &head.version_info) {
            Some(set) => set,
            None => {
                let full =
                    mesh_api::envoy::envoy::service::discovery::v3::DiscoveryResponse::decode(
                        body,
                    )?;
                // Clusters and listeners come complete; endpoints and routes only
                // as they change, merged into what the proxy holds of them (less
                // what it no longer asks for: their parents stopped naming them).
                let mut items = std::collections::BTreeMap::new();
                if matches!(kind, Kind::Eds | Kind::Rds) {
                    let t = &self.types[kind.index()];
                    items.extend(
                        t.set
                            .items
                            .iter()
                            .filter(|(name, _)| match &t.sub {
                                Some(Want::Wildcard) => true,
                                Some(Want::Names(n)) => n.contains(*name),
                                None => false,
                            })
                            .map(|(name, held)| (name.clone(), held.clone())),
                    );
                }
                for any in &full.resources {
                    let name = ResourceName::decode(any.value.as_slice())?.name;
                    items.insert(
                        Arc::from(name.as_str()),
                        Held {
                            version: Arc::from(""),
                            derived: Arc::new(derive(kind, any)),
                        },
                    );
                }
                self.store
                    .put(kind, &head.version_info, HeldSet::new(items))
            }
        };
        let t = &mut self.types[kind.index()];
        t.set = set;
        if t.version != head.version_info {
            t.changed_at = Some(now);
            t.version = head.version_info;
        }
        t.nonce = head.nonce;
        t.answered = true;
        let ack = Request::Sotw(DiscoveryRequest {
            type_url: kind.type_url().into(),
            version_info: t.version.clone(),
            response_nonce: t.nonce.clone(),
            resource_names: t.sub.as_ref().map(Want::names).unwrap_or_default(),
            ..Default::default()
        });
        let mut out = vec![ack];
        out.extend(self.resubscribe());
        Ok(out)
    }

    fn on_delta(&mut self, body: Bytes, now: Instant) -> Result<Vec<Request>, ResponseError> {
        let head = DeltaHead::decode(body.clone())?;
        let kind = Kind::from_type_url(&head.type_url)
            .ok_or_else(|| ResponseError::UnknownType(head.type_url.clone()))?;
        let ack = Request::Delta(DeltaDiscoveryRequest {
            type_url: kind.type_url().into(),
            response_nonce: head.nonce.clone(),
            ..Default::default()
        });
        let t = &mut self.types[kind.index()];
        t.nonce = head.nonce;
        for name in &head.removed_resources {
            let subscribed = matches!(&t.sub, Some(Want::Names(n)) if n.contains(name.as_str()));
            if subscribed {
                t.absent.insert(Arc::from(name.as_str()));
            }
        }
        t.pending.push(body);
        if head.system_version_info.is_empty() {
            // A part of a split update: the last part carries the version.
            return Ok(vec![ack]);
        }
        let parts = std::mem::take(&mut t.pending);
        let set = match self.store.get(kind, &head.system_version_info) {
            Some(set) => set,
            None => {
                let mut items = t.set.items.clone();
                for part in parts {
                    let full = DeltaDiscoveryResponse::decode(part)?;
                    for r in full.resources {
                        let Some(body) = r.resource else { continue };
                        items.insert(
                            Arc::from(r.name.as_str()),
                            Held {
                                version: Arc::from(r.version.as_str()),
                                derived: Arc::new(derive(kind, &body)),
                            },
                        );
                    }
                    for name in &full.removed_resources {
                        items.remove(name.as_str());
                    }
                }
                self.store
                    .put(kind, &head.system_version_info, HeldSet::new(items))
            }
        };
        for name in set.items.keys() {
            t.absent.remove(name);
        }
        t.set = set;
        if t.version != head.system_version_info {
            t.changed_at = Some(now);
            t.version = head.system_version_info;
        }
        t.answered = true;
        let mut out = vec![ack];
        out.extend(self.resubscribe());
        Ok(out)
    }

    fn type_complete(&self, kind: Kind) -> bool {
        let t = &self.types[kind.index()];
        match &t.sub {
            None => self.wanted(kind).is_nothing(),
            Some(Want::Wildcard) => t.answered && t.pending.is_empty(),
            Some(Want::Names(names)) => {
                names.is_empty()
                    || (t.answered
                        && t.pending.is_empty()
                        && names
                            .iter()
                            .all(|n| t.set.items.contains_key(n) || t.absent.contains(n)))
            }
        }
    }

    /// Whether the proxy holds everything it asked for on its current stream.
    pub fn complete(&self) -> bool {
        Kind::ALL.into_iter().all(|k| self.type_complete(k))
    }

    /// The proxy's view of one type.
    pub fn view(&self, kind: Kind) -> TypeView {
        let t = &self.types[kind.index()];
        TypeView {
            version: t.version.clone(),
            changed_at: t.changed_at,
            resources: t.set.items.len(),
        }
    }

    /// Resource versions held of one type (delta; empty versions in SotW).
    pub fn resource_versions(&self, kind: Kind) -> HashMap<String, String> {
        self.types[kind.index()]
            .set
            .items
            .iter()
            .map(|(n, h)| (n.to_string(), h.version.to_string()))
            .collect()
    }

    /// Whether the named resource is held with the given derived names (tests).
    #[cfg(test)]
    fn derived(&self, kind: Kind, name: &str) -> Option<Arc<super::decode::Derived>> {
        self.types[kind.index()]
            .set
            .items
            .get(name)
            .map(|h| h.derived.clone())
    }
}

/// The name of any of the four resource types: field 1 of each.
#[derive(Clone, PartialEq, prost::Message)]
struct ResourceName {
    #[prost(string, tag = "1")]
    name: String,
}

#[cfg(test)]
mod tests;
