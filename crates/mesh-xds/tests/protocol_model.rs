//! The xDS protocol rules, checked against a reference model.
//!
//! Random sequences of snapshot changes (the four Envoy types), subscription changes
//! (wildcard, named, names that do not exist yet, unsubscribe), stale nonces,
//! duplicate answers and reconnects drive a [`SotwStream`] or a [`DeltaStream`]
//! directly. An honest client applies every response and ACKs it, or NACKs it when
//! it carries a resource it cannot accept (value [`BAD`]), keeping its last good
//! state. A SotW client replaces its clusters and listeners with each response
//! (complete state) and merges the endpoints and routes of each response into what
//! it holds (sent in parts); it drops an endpoint or route when the snapshot loses
//! it (in a real mesh, when its parent cluster or listener stops naming it, which
//! the server conveys and the model leaves implicit) or when it unsubscribes.
//! After every step:
//! - the client holds what the model says: for each type, the snapshot restricted
//!   to its subscription; where that contains a bad resource, SotW holds the last
//!   good such set (for endpoints and routes, less what it dropped since), delta
//!   at least nothing bad;
//! - pure ACKs, NACKs, stale nonces and duplicates get no response;
//! - after a NACK nothing more is sent for that type until its content or the
//!   subscription changes;
//! - delta never re-sends a resource the client holds at that version, SotW never
//!   sends the same set of clusters or listeners twice in a row, nor an endpoint or
//!   route the client took on this stream and holds at that version;
//! - within a push, resources are added and changed in type order (clusters,
//!   endpoints, listeners, routes) and everything is removed after that, in reverse
//!   type order;
//! - nonces are unique on a stream, and the status reports NACKED exactly while a
//!   NACK is unresolved, SYNCED otherwise.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashSet};

use mesh_api::envoy::google::rpc::Status as RpcStatus;
use mesh_xds::{
    Any, Snapshot, TypeMap, TypedResources, XdsResource,
    delta::{DeltaResponse, DeltaStream},
    discovery::{DeltaDiscoveryRequest, DiscoveryRequest},
    sotw::{RequestKind, SotwRequest, SotwResponse, SotwStream, sends_complete_state},
    status::TypeStatus,
    type_url,
};
use proptest::prelude::*;
use prost::Message;

/// The types in push order.
const TYPES: [&str; 4] = [
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
];
/// Names that may exist: `n0`..`n4`; `n5` is subscribable but never exists.
const EXISTING: u8 = 5;
/// A resource value the client refuses.
const BAD: u8 = 7;

/// Whether SotW sends type `t` in parts (endpoints, routes).
fn in_parts(t: usize) -> bool {
    !sends_complete_state(TYPES[t])
}

fn name(n: u8) -> String {
    format!("n{n}")
}

fn mk_res(t: usize, name: &str, value: u8) -> XdsResource {
    XdsResource::new(
        name,
        Any {
            type_url: TYPES[t].into(),
            value: format!("{name}={value}").into_bytes(),
        },
    )
}

/// The value a resource carries.
fn value_of(r: &XdsResource) -> u8 {
    let body = String::from_utf8(r.body.value.clone()).unwrap();
    let (n, v) = body.split_once('=').unwrap();
    assert_eq!(n, r.name, "a resource's body belongs to its name");
    v.parse().unwrap()
}

/// A subscription to one type.
#[derive(Debug, Clone, Default, PartialEq)]
struct Sub {
    wildcard: bool,
    names: BTreeSet<String>,
}

impl Sub {
    fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    fn is_empty(&self) -> bool {
        !self.wildcard && self.names.is_empty()
    }
}

type Values = BTreeMap<String, u8>;

/// The reference model: the snapshot, the client's subscriptions, and what a
/// state-of-the-world client keeps while its current set is refused.
#[derive(Debug, Clone, Default)]
struct Model {
    snapshot: [Values; 4],
    subs: [Sub; 4],
    last_good: [Values; 4],
}

impl Model {
    /// The resources of type `t` the client subscribes to.
    fn selected(&self, t: usize) -> Values {
        self.snapshot[t]
            .iter()
            .filter(|(n, _)| self.subs[t].covers(n))
            .map(|(n, v)| (n.clone(), *v))
            .collect()
    }

    fn settle(&mut self) {
        for t in 0..4 {
            let sel = self.selected(t);
            if !sel.values().any(|v| *v == BAD) {
                self.last_good[t] = sel;
            } else if in_parts(t) {
                // A SotW client keeps what it took of a type sent in parts, less
                // what left the selection (removed or unsubscribed).
                self.last_good[t].retain(|n, _| sel.contains_key(n));
            }
        }
    }

    fn to_snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::new();
        for (t, values) in self.snapshot.iter().enumerate() {
            snap = snap.with(
                TYPES[t],
                TypedResources::new(values.iter().map(|(n, v)| mk_res(t, n, *v))),
            );
        }
        snap
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// Resources added or changed (Some) or removed (None): (type, name, value).
    Edit(Vec<(usize, u8, Option<u8>)>),
    /// (Un)subscribe a name, or `*` (None); delta may send it with a stale nonce.
    Sub {
        t: usize,
        name: Option<u8>,
        subscribe: bool,
        stale: bool,
    },
    /// A request carrying a nonce already answered, or never sent.
    Stale(usize),
    /// The client's last answer for a type, again.
    Duplicate(usize),
    /// A new stream; delta resumes with the versions the client holds.
    Reconnect,
}

fn value() -> impl Strategy<Value = u8> {
    // One value in eight is refused by the client.
    0u8..=BAD
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => proptest::collection::vec(
            (0usize..4, 0u8..EXISTING, proptest::option::weighted(0.7, value())),
            1..6
        )
        .prop_map(Step::Edit),
        3 => (0usize..4, proptest::option::weighted(0.85, 0u8..=EXISTING), any::<bool>(), proptest::bool::weighted(0.2))
            .prop_map(|(t, name, subscribe, stale)| Step::Sub { t, name, subscribe, stale }),
        1 => (0usize..4).prop_map(Step::Stale),
        1 => (0usize..4).prop_map(Step::Duplicate),
        1 => Just(Step::Reconnect),
    ]
}

fn initial_sub() -> impl Strategy<Value = Sub> {
    (
        any::<bool>(),
        proptest::collection::btree_set(0u8..=EXISTING, 1..3),
    )
        .prop_map(|(wildcard, names)| Sub {
            wildcard,
            names: if wildcard {
                BTreeSet::new()
            } else {
                names.into_iter().map(name).collect()
            },
        })
}

fn initial_snapshot() -> impl Strategy<Value = [Values; 4]> {
    proptest::collection::vec(
        proptest::collection::btree_map((0u8..EXISTING).prop_map(name), 0u8..BAD, 0..4),
        4,
    )
    .prop_map(|v| [v[0].clone(), v[1].clone(), v[2].clone(), v[3].clone()])
}

/// One response, as the client sees it.
#[derive(Debug, Clone)]
struct View {
    t: usize,
    nonce: String,
    version: String,
    /// (name, value, version)
    resources: Vec<(String, u8, String)>,
    removed: Vec<String>,
}

impl View {
    fn from_sotw(r: &SotwResponse) -> View {
        View {
            t: type_index(&r.type_url),
            nonce: r.nonce.clone(),
            version: r.version_info.clone(),
            resources: r
                .resources()
                .into_iter()
                .map(|x| (x.name.clone(), value_of(x), x.version.clone()))
                .collect(),
            removed: Vec::new(),
        }
    }

    fn from_delta(r: &DeltaResponse) -> View {
        View {
            t: type_index(&r.type_url),
            nonce: r.nonce.clone(),
            version: r.system_version_info.clone(),
            resources: r
                .resources
                .iter()
                .map(|x| (x.name.clone(), value_of(x), x.version.clone()))
                .collect(),
            removed: r.removed_resources.clone(),
        }
    }
}

fn type_index(url: &str) -> usize {
    TYPES.iter().position(|t| *t == url).unwrap()
}

/// What the client holds of one type: name -> (value, version).
type Held = BTreeMap<String, (u8, String)>;

/// How the client answered a response.
#[derive(Debug, Clone)]
struct Answer {
    nonce: String,
    /// The version the client holds after it (SotW `version_info`).
    version: String,
    nack: bool,
}

/// The honest client, protocol-independent.
#[derive(Debug, Default)]
struct Client {
    held: [Held; 4],
    /// SotW: the version of the set held.
    accepted_version: [String; 4],
    /// Per stream: the latest nonce received per type, every nonce received, and
    /// the last answer per type.
    latest: [Option<String>; 4],
    nonces: HashSet<String>,
    answered: [Vec<String>; 4],
    last_answer: [Option<Answer>; 4],
    /// Whether the type was requested on this stream.
    opened: [bool; 4],
    /// A NACK the server has not yet seen resolved by a later ACK.
    nack_open: [bool; 4],
    /// Responses received after the NACK: only their ACK resolves it.
    since_nack: [bool; 4],
    /// A NACK was recorded and neither the content nor the subscription changed
    /// since: nothing may be sent for the type.
    quiet: [bool; 4],
    /// SotW: the version of the last response per type on this stream.
    last_sent_version: [Option<String>; 4],
    /// SotW: the last set received per type on this stream, and whether one was
    /// taken. A SotW server cannot know what a client that refused everything on
    /// a new stream kept from before; for the push order it stands for it.
    last_received: [Option<Held>; 4],
    taken: [bool; 4],
    /// SotW, types sent in parts: what the client took on this stream (the
    /// server knows it holds these).
    taken_here: [Held; 4],
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Protocol {
    Sotw,
    Delta,
}

/// One protocol's stream, driven with plain requests.
enum Stream {
    Sotw(SotwStream),
    Delta(DeltaStream),
}

type Outcome = (RequestKind, Vec<View>);

impl Stream {
    fn new(p: Protocol) -> Self {
        match p {
            Protocol::Sotw => Stream::Sotw(SotwStream::new()),
            Protocol::Delta => Stream::Delta(DeltaStream::new()),
        }
    }

    fn sotw(&mut self, req: DiscoveryRequest, snap: &Snapshot) -> Outcome {
        let Stream::Sotw(s) = self else {
            unreachable!()
        };
        // As the server reads it: off the wire, the names left undecoded.
        let wire = SotwRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        let o = s.on_sotw_request(&wire, Some(snap)).unwrap();
        (o.kind, o.responses.iter().map(View::from_sotw).collect())
    }

    fn delta(&mut self, req: DeltaDiscoveryRequest, snap: &Snapshot) -> Outcome {
        let Stream::Delta(s) = self else {
            unreachable!()
        };
        let o = s.on_request(&req, Some(snap)).unwrap();
        (o.kind, o.responses.iter().map(View::from_delta).collect())
    }

    fn push(&mut self, snap: &Snapshot) -> Vec<View> {
        match self {
            Stream::Sotw(s) => s
                .on_snapshot(snap, &TYPES)
                .iter()
                .map(View::from_sotw)
                .collect(),
            Stream::Delta(s) => s
                .on_snapshot(snap, &TYPES)
                .iter()
                .map(View::from_delta)
                .collect(),
        }
    }

    fn status(&self) -> TypeMap<TypeStatus> {
        match self {
            Stream::Sotw(s) => s.status(),
            Stream::Delta(s) => s.status(),
        }
    }

    fn write_status(&self, out: &mut TypeMap<TypeStatus>) {
        match self {
            Stream::Sotw(s) => s.write_status(out),
            Stream::Delta(s) => s.write_status(out),
        }
    }
}

fn nack_status() -> RpcStatus {
    RpcStatus {
        code: 3,
        message: "value 7 is not acceptable".into(),
        details: vec![],
    }
}

/// The test's world: model, client and stream.
struct World {
    p: Protocol,
    model: Model,
    client: Client,
    stream: Stream,
    snap: Snapshot,
    /// The status entry refreshed in place after every step, as the server does.
    reported: std::cell::RefCell<TypeMap<TypeStatus>>,
}

impl World {
    fn new(p: Protocol, snapshot: [Values; 4], subs: [Sub; 4]) -> Result<Self, TestCaseError> {
        let mut model = Model {
            snapshot,
            subs,
            last_good: Default::default(),
        };
        model.settle();
        // Nothing is held before the first response.
        model.last_good = Default::default();
        let snap = model.to_snapshot();
        let mut w = World {
            p,
            model,
            client: Client::default(),
            stream: Stream::new(p),
            snap,
            reported: Default::default(),
        };
        w.connect()?;
        Ok(w)
    }

    /// Opens every type the client subscribes to on the current stream.
    fn connect(&mut self) -> Result<(), TestCaseError> {
        for t in 0..4 {
            if !self.model.subs[t].is_empty() {
                self.open(t)?;
            }
        }
        self.model.settle();
        Ok(())
    }

    /// The first request for a type on this stream.
    fn open(&mut self, t: usize) -> Result<(), TestCaseError> {
        let sub = self.model.subs[t].clone();
        let mut names: Vec<String> = sub.names.iter().cloned().collect();
        if sub.wildcard && (!names.is_empty() || self.p == Protocol::Sotw) {
            names.insert(0, "*".into());
        }
        let (kind, responses) = match self.p {
            Protocol::Sotw => self.stream.sotw(
                DiscoveryRequest {
                    type_url: TYPES[t].into(),
                    resource_names: names,
                    version_info: self.client.accepted_version[t].clone(),
                    ..Default::default()
                },
                &self.snap,
            ),
            Protocol::Delta => self.stream.delta(
                DeltaDiscoveryRequest {
                    type_url: TYPES[t].into(),
                    resource_names_subscribe: names,
                    initial_resource_versions: self.client.held[t]
                        .iter()
                        .map(|(n, (_, v))| (n.clone(), v.clone()))
                        .collect(),
                    ..Default::default()
                },
                &self.snap,
            ),
        };
        prop_assert_eq!(kind, RequestKind::Initial);
        prop_assert!(!responses.is_empty(), "a first request is always answered");
        self.client.opened[t] = true;
        self.client.quiet[t] = false;
        self.receive(responses, false)
    }

    /// The client applies responses in order, then answers each.
    fn receive(&mut self, responses: Vec<View>, push: bool) -> Result<(), TestCaseError> {
        if push {
            self.check_push_order(&responses)?;
        }
        let mut answers = Vec::new();
        for r in &responses {
            let t = r.t;
            prop_assert!(
                !self.client.quiet[t],
                "type {} re-sent after a NACK with nothing changed: {:?}",
                t,
                r
            );
            prop_assert!(
                self.client.nonces.insert(r.nonce.clone()),
                "nonce {} reused",
                r.nonce
            );
            self.client.latest[t] = Some(r.nonce.clone());
            if self.client.nack_open[t] {
                self.client.since_nack[t] = true;
            }
            let held = &mut self.client.held[t];
            match self.p {
                Protocol::Sotw if in_parts(t) => {
                    for (n, _, v) in &r.resources {
                        prop_assert_ne!(
                            self.client.taken_here[t].get(n).map(|h| &h.1),
                            Some(v),
                            "{} re-sent unchanged",
                            n
                        );
                    }
                    self.client.last_sent_version[t] = Some(r.version.clone());
                    self.client.last_received[t] = Some(
                        r.resources
                            .iter()
                            .map(|(n, v, ver)| (n.clone(), (*v, ver.clone())))
                            .collect(),
                    );
                    let mut names = HashSet::new();
                    for (n, _, _) in &r.resources {
                        prop_assert!(names.insert(n), "{} named twice", n);
                        prop_assert!(self.model.subs[t].covers(n), "{} not subscribed", n);
                    }
                }
                Protocol::Sotw => {
                    prop_assert_ne!(
                        self.client.last_sent_version[t].as_ref(),
                        Some(&r.version),
                        "the same set sent twice in a row"
                    );
                    self.client.last_sent_version[t] = Some(r.version.clone());
                    self.client.last_received[t] = Some(
                        r.resources
                            .iter()
                            .map(|(n, v, ver)| (n.clone(), (*v, ver.clone())))
                            .collect(),
                    );
                    let mut names = HashSet::new();
                    for (n, _, _) in &r.resources {
                        prop_assert!(names.insert(n), "{} named twice", n);
                        prop_assert!(self.model.subs[t].covers(n), "{} not subscribed", n);
                    }
                }
                Protocol::Delta => {
                    for (n, _, v) in &r.resources {
                        prop_assert_ne!(
                            held.get(n).map(|h| &h.1),
                            Some(v),
                            "{} re-sent unchanged",
                            n
                        );
                        prop_assert!(self.model.subs[t].covers(n), "{} not subscribed", n);
                    }
                }
            }
            let nack = r.resources.iter().any(|(_, v, _)| *v == BAD);
            if !nack {
                match self.p {
                    Protocol::Sotw if in_parts(t) => {
                        for (n, v, ver) in &r.resources {
                            held.insert(n.clone(), (*v, ver.clone()));
                            self.client.taken_here[t].insert(n.clone(), (*v, ver.clone()));
                        }
                        self.client.accepted_version[t] = r.version.clone();
                        self.client.taken[t] = true;
                    }
                    Protocol::Sotw => {
                        *held = r
                            .resources
                            .iter()
                            .map(|(n, v, ver)| (n.clone(), (*v, ver.clone())))
                            .collect();
                        self.client.accepted_version[t] = r.version.clone();
                        self.client.taken[t] = true;
                    }
                    Protocol::Delta => {
                        for (n, v, ver) in &r.resources {
                            held.insert(n.clone(), (*v, ver.clone()));
                        }
                        for n in &r.removed {
                            held.remove(n);
                        }
                    }
                }
            }
            answers.push(Answer {
                nonce: r.nonce.clone(),
                version: self.client.accepted_version[t].clone(),
                nack,
            });
        }
        for (r, a) in responses.iter().zip(answers) {
            let t = r.t;
            let latest = self.client.latest[t].as_deref() == Some(a.nonce.as_str());
            let (kind, out) = self.answer(t, &a);
            prop_assert!(out.is_empty(), "an answer got a response: {:?}", out);
            let expected = if self.p == Protocol::Sotw && !latest {
                RequestKind::Stale
            } else if a.nack {
                RequestKind::Nack
            } else {
                RequestKind::Ack
            };
            prop_assert_eq!(kind, expected, "answer {:?}", a);
            if kind == RequestKind::Nack {
                self.client.nack_open[t] = true;
                self.client.since_nack[t] = false;
                self.client.quiet[t] = true;
            } else if kind == RequestKind::Ack && self.client.since_nack[t] {
                self.client.nack_open[t] = false;
            }
            self.client.answered[t].push(a.nonce.clone());
            self.client.last_answer[t] = Some(a);
        }
        Ok(())
    }

    /// Sends an answer (ACK or NACK) for a type.
    fn answer(&mut self, t: usize, a: &Answer) -> Outcome {
        let error_detail = a.nack.then(nack_status);
        match self.p {
            Protocol::Sotw => {
                let sub = &self.model.subs[t];
                let mut names: Vec<String> = sub.names.iter().cloned().collect();
                if sub.wildcard {
                    names.insert(0, "*".into());
                }
                self.stream.sotw(
                    DiscoveryRequest {
                        type_url: TYPES[t].into(),
                        resource_names: names,
                        version_info: a.version.clone(),
                        response_nonce: a.nonce.clone(),
                        error_detail,
                        ..Default::default()
                    },
                    &self.snap,
                )
            }
            Protocol::Delta => self.stream.delta(
                DeltaDiscoveryRequest {
                    type_url: TYPES[t].into(),
                    response_nonce: a.nonce.clone(),
                    error_detail,
                    ..Default::default()
                },
                &self.snap,
            ),
        }
    }

    /// Type order for what is added or changed, all removals after, in reverse.
    fn check_push_order(&self, responses: &[View]) -> Result<(), TestCaseError> {
        let mut shadow = self.client.held.clone();
        if self.p == Protocol::Sotw {
            for (t, known) in shadow.iter_mut().enumerate() {
                if let (false, Some(received)) =
                    (self.client.taken[t], &self.client.last_received[t])
                {
                    *known = received.clone();
                }
            }
        }
        // SotW: a resource of the set the client last refused is not news when it
        // comes again.
        let refused: Vec<Held> = (0..4)
            .map(|t| match (self.p, &self.client.last_received[t]) {
                (Protocol::Sotw, Some(r)) => r.clone(),
                _ => Held::new(),
            })
            .collect();
        let mut last_upsert: Option<usize> = None;
        let mut last_removal: Option<usize> = None;
        for r in responses {
            let t = r.t;
            let upserts = r.resources.iter().any(|(n, _, v)| {
                shadow[t].get(n).map(|h| &h.1) != Some(v)
                    && refused[t].get(n).map(|h| &h.1) != Some(v)
            });
            let removals = match self.p {
                // Sent in parts: nothing is removed by a response.
                Protocol::Sotw if in_parts(t) => false,
                // A name the client unsubscribed from may go at any point.
                Protocol::Sotw => shadow[t].keys().any(|n| {
                    self.model.subs[t].covers(n) && !r.resources.iter().any(|(m, _, _)| m == n)
                }),
                Protocol::Delta => !r.removed.is_empty(),
            };
            if upserts {
                prop_assert!(
                    last_removal.is_none(),
                    "type {} changed after a removal in the same push: {:?}",
                    t,
                    responses
                );
                prop_assert!(
                    last_upsert.is_none_or(|u| u <= t),
                    "type order broken: {:?}",
                    responses
                );
                last_upsert = Some(t);
            }
            if removals {
                prop_assert!(
                    last_removal.is_none_or(|u| u >= t),
                    "removals not in reverse type order: {:?}",
                    responses
                );
                last_removal = Some(t);
            }
            match self.p {
                Protocol::Sotw if in_parts(t) => {
                    for (n, v, ver) in &r.resources {
                        shadow[t].insert(n.clone(), (*v, ver.clone()));
                    }
                }
                Protocol::Sotw => {
                    shadow[t] = r
                        .resources
                        .iter()
                        .map(|(n, v, ver)| (n.clone(), (*v, ver.clone())))
                        .collect();
                }
                Protocol::Delta => {
                    for (n, v, ver) in &r.resources {
                        shadow[t].insert(n.clone(), (*v, ver.clone()));
                    }
                    for n in &r.removed {
                        shadow[t].remove(n);
                    }
                }
            }
        }
        Ok(())
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Edit(edits) => {
                let before = self.model.snapshot.clone();
                for (t, n, v) in edits {
                    match v {
                        Some(v) => self.model.snapshot[*t].insert(name(*n), *v),
                        None => self.model.snapshot[*t].remove(&name(*n)),
                    };
                }
                for (t, before) in before.iter().enumerate() {
                    if *before != self.model.snapshot[t] {
                        self.client.quiet[t] = false;
                    }
                    if self.p == Protocol::Sotw && in_parts(t) {
                        // Its parent no longer names it: the client drops it.
                        let now = &self.model.snapshot[t];
                        self.client.held[t].retain(|n, _| now.contains_key(n));
                        self.client.taken_here[t].retain(|n, _| now.contains_key(n));
                    }
                }
                self.snap = self.model.to_snapshot();
                let responses = self.stream.push(&self.snap);
                self.receive(responses, true)?;
            }
            Step::Sub {
                t,
                name: n,
                subscribe,
                stale,
            } => self.change_sub(*t, n.map(name), *subscribe, *stale)?,
            Step::Stale(t) => {
                let t = *t;
                let latest = self.client.latest[t].clone();
                let nonce = self.client.answered[t]
                    .iter()
                    .find(|n| Some(*n) != latest.as_ref())
                    .cloned()
                    .unwrap_or_else(|| "never-sent".into());
                let a = Answer {
                    nonce,
                    version: self.client.accepted_version[t].clone(),
                    nack: false,
                };
                if self.client.opened[t] {
                    let (kind, out) = self.answer(t, &a);
                    prop_assert_eq!(kind, RequestKind::Stale);
                    prop_assert!(out.is_empty(), "a stale nonce got a response");
                }
            }
            Step::Duplicate(t) => {
                if let (true, Some(a)) =
                    (self.client.opened[*t], self.client.last_answer[*t].clone())
                {
                    let (kind, out) = self.answer(*t, &a);
                    prop_assert!(out.is_empty(), "a duplicate answer got a response");
                    if self.p == Protocol::Delta {
                        prop_assert_eq!(kind, RequestKind::Stale, "already answered");
                    }
                }
            }
            Step::Reconnect => {
                self.stream = Stream::new(self.p);
                let held = std::mem::take(&mut self.client.held);
                let accepted = std::mem::take(&mut self.client.accepted_version);
                self.client = Client {
                    held,
                    accepted_version: accepted,
                    ..Client::default()
                };
                self.connect()?;
            }
        }
        self.model.settle();
        self.check_state()
    }

    fn change_sub(
        &mut self,
        t: usize,
        n: Option<String>,
        subscribe: bool,
        stale: bool,
    ) -> Result<(), TestCaseError> {
        let old = self.model.subs[t].clone();
        let mut new = old.clone();
        match (&n, subscribe) {
            (None, true) => new.wildcard = true,
            (None, false) => new.wildcard = false,
            (Some(n), true) => {
                new.names.insert(n.clone());
            }
            (Some(n), false) => {
                new.names.remove(n);
            }
        }
        // SotW cannot leave a wildcard subscription for nothing: an empty list
        // keeps the wildcard.
        if self.p == Protocol::Sotw && old.wildcard && new.is_empty() {
            return Ok(());
        }
        if new == old {
            return Ok(());
        }
        self.model.subs[t] = new.clone();
        self.client.quiet[t] = false;
        if self.p == Protocol::Sotw && in_parts(t) {
            // The client forgets what it no longer subscribes to.
            self.client.held[t].retain(|name, _| new.covers(name));
            self.client.taken_here[t].retain(|name, _| new.covers(name));
        }
        if !self.client.opened[t] {
            if new.is_empty() {
                return Ok(());
            }
            return self.open(t);
        }
        let (kind, responses) = match self.p {
            Protocol::Sotw => {
                let a = Answer {
                    nonce: self.client.latest[t].clone().unwrap_or_default(),
                    version: self.client.accepted_version[t].clone(),
                    nack: false,
                };
                self.answer(t, &a)
            }
            Protocol::Delta => {
                // The client forgets what it no longer subscribes to.
                self.client.held[t].retain(|name, _| new.covers(name));
                let nonce = if stale {
                    self.client.answered[t].first().cloned().unwrap_or_default()
                } else {
                    String::new()
                };
                let name = n.unwrap_or_else(|| "*".into());
                let (sub, unsub) = if subscribe {
                    (vec![name], vec![])
                } else {
                    (vec![], vec![name])
                };
                self.stream.delta(
                    DeltaDiscoveryRequest {
                        type_url: TYPES[t].into(),
                        resource_names_subscribe: sub,
                        resource_names_unsubscribe: unsub,
                        response_nonce: nonce,
                        ..Default::default()
                    },
                    &self.snap,
                )
            }
        };
        prop_assert_ne!(kind, RequestKind::Nack);
        self.receive(responses, false)
    }

    /// The client's state against the model's, and the status against the client's
    /// view of its own answers.
    fn check_state(&self) -> Result<(), TestCaseError> {
        let status = self.stream.status();
        let mut reported = self.reported.borrow_mut();
        self.stream.write_status(&mut reported);
        prop_assert_eq!(&*reported, &status, "status refreshed in place");
        drop(reported);
        for t in 0..4 {
            let held: Values = self.client.held[t]
                .iter()
                .map(|(n, (v, _))| (n.clone(), *v))
                .collect();
            let selected = self.model.selected(t);
            let refused = selected.values().any(|v| *v == BAD);
            match self.p {
                Protocol::Sotw => {
                    prop_assert_eq!(&held, &self.model.last_good[t], "type {} (SotW)", t);
                }
                Protocol::Delta if !refused => {
                    prop_assert_eq!(&held, &selected, "type {} (delta)", t);
                }
                Protocol::Delta => {
                    prop_assert!(!held.values().any(|v| *v == BAD));
                    prop_assert!(held.keys().all(|n| self.model.subs[t].covers(n)));
                }
            }
            if self.client.opened[t] {
                let st = &status[TYPES[t]];
                let expected = if self.client.nack_open[t] {
                    "NACKED"
                } else {
                    "SYNCED"
                };
                prop_assert_eq!(st.state(), expected, "status of type {}: {:?}", t, st);
                prop_assert_eq!(st.wildcard, self.model.subs[t].wildcard);
            }
        }
        Ok(())
    }
}

fn run(
    p: Protocol,
    snapshot: [Values; 4],
    subs: Vec<Sub>,
    steps: Vec<Step>,
) -> Result<(), TestCaseError> {
    let subs = [
        subs[0].clone(),
        subs[1].clone(),
        subs[2].clone(),
        subs[3].clone(),
    ];
    let mut w = World::new(p, snapshot, subs)?;
    w.check_state()?;
    for s in &steps {
        w.step(s)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn sotw_client_follows_the_model(
        snapshot in initial_snapshot(),
        subs in proptest::collection::vec(initial_sub(), 4),
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        run(Protocol::Sotw, snapshot, subs, steps)?;
    }

    #[test]
    fn delta_client_follows_the_model(
        snapshot in initial_snapshot(),
        subs in proptest::collection::vec(initial_sub(), 4),
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        run(Protocol::Delta, snapshot, subs, steps)?;
    }
}

fn sub_of(names: &[u8]) -> Sub {
    Sub {
        wildcard: false,
        names: names.iter().copied().map(name).collect(),
    }
}

/// A SotW client unsubscribes from a name while its current set is refused; the
/// next push must follow the smaller subscription.
#[test]
fn sotw_unsubscribe_while_nacked_is_followed() {
    let steps = vec![
        Step::Edit(vec![(0, 1, Some(0))]),
        Step::Sub {
            t: 3,
            name: None,
            subscribe: true,
            stale: false,
        },
        Step::Edit(vec![(0, 0, Some(BAD))]),
        Step::Sub {
            t: 0,
            name: Some(1),
            subscribe: false,
            stale: false,
        },
        Step::Edit(vec![(3, 0, Some(0)), (0, 0, Some(0))]),
    ];
    let subs = vec![sub_of(&[0, 1]), sub_of(&[0]), sub_of(&[0]), sub_of(&[0])];
    run(Protocol::Sotw, Default::default(), subs, steps).unwrap();
}
