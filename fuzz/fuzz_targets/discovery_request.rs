//! Arbitrary request sequences through the ADS protocol state machines.
//!
//! Input: one mode byte, then chunks each prefixed by a one-byte length. Bit 0 of
//! the mode selects delta (`DeltaDiscoveryRequest`) or SotW (`DiscoveryRequest`, read
//! as the server reads it: `SotwRequest`, names undecoded);
//! bit 1 withholds the snapshot until the middle (as before the first snapshot is
//! computed). Chunks that do not decode are skipped. Halfway through, the snapshot
//! changes (changed, added and removed resources of every Envoy type).
//!
//! Nothing may panic, and every response must be one the protocol allows: nonces
//! unique on the stream, only for a type the client asked for (the requested one
//! when answering a request), no resource named twice, every resource sent as it is
//! in the current snapshot, and the shared encoding decoding as the response.

#![no_main]

use std::collections::{BTreeSet, HashSet};

use libfuzzer_sys::fuzz_target;
use mesh_xds::{
    Any, Snapshot, TypedResources, XdsResource,
    delta::{DeltaResponse, DeltaStream},
    discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse},
    sotw::{SotwRequest, SotwResponse, SotwStream},
    type_url,
};
use prost::Message;

const ORDER: [&str; 4] = [
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
];

fn snapshot(items: &[(&str, &str)]) -> Snapshot {
    let mut snap = Snapshot::new();
    for t in ORDER {
        snap = snap.with(
            t,
            TypedResources::new(items.iter().map(|(n, v)| {
                XdsResource::new(
                    *n,
                    Any {
                        type_url: t.into(),
                        value: v.as_bytes().to_vec(),
                    },
                )
            })),
        );
    }
    snap
}

/// The requests of an input, decoded.
fn chunks(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = usize::from(len).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        out.push(chunk);
        data = tail;
    }
    out
}

/// What every response, whichever the protocol, must respect.
struct Checker {
    nonces: HashSet<String>,
    requested: BTreeSet<String>,
}

impl Checker {
    fn response(&mut self, type_url: &str, nonce: &str, names: &[&str]) {
        assert!(
            self.nonces.insert(nonce.to_string()),
            "nonce {nonce} reused"
        );
        assert!(
            self.requested.contains(type_url),
            "response for {type_url}, never requested"
        );
        let mut seen = HashSet::new();
        for n in names {
            assert!(seen.insert(*n), "{n} named twice in one response");
        }
    }

    /// `snaps`: the current snapshot and the one before it (a make-before-break
    /// union still carries the resources it removes).
    fn sotw(&mut self, r: &SotwResponse, snaps: [&Snapshot; 2]) {
        let resources = r.resources();
        let names: Vec<&str> = resources.iter().map(|x| x.name.as_str()).collect();
        self.response(&r.type_url, &r.nonce, &names);
        for x in &resources {
            assert!(
                snaps.iter().any(|s| s
                    .get(&r.type_url)
                    .and_then(|t| t.items.get(&x.name))
                    .is_some_and(|c| c.version == x.version)),
                "{} sent as no snapshot has it",
                x.name
            );
        }
        let decoded = DiscoveryResponse::decode(r.encode(Some("fuzz")).to_vec().as_slice())
            .expect("a response decodes");
        assert_eq!(decoded, r.to_proto(Some("fuzz")));
    }

    fn delta(&mut self, r: &DeltaResponse, snap: &Snapshot) {
        let names: Vec<&str> = r.resources.iter().map(|x| x.name.as_str()).collect();
        self.response(&r.type_url, &r.nonce, &names);
        for x in &r.resources {
            let current = snap.get(&r.type_url).and_then(|s| s.items.get(&x.name));
            assert_eq!(
                current.map(|c| &c.version),
                Some(&x.version),
                "delta sends {} as it is now",
                x.name
            );
            assert!(!r.removed_resources.contains(&x.name), "{} sent and removed", x.name);
        }
        let removed: HashSet<&String> = r.removed_resources.iter().collect();
        assert_eq!(removed.len(), r.removed_resources.len(), "a name removed twice");
        let decoded = DeltaDiscoveryResponse::decode(r.encode(Some("fuzz")).to_vec().as_slice())
            .expect("a response decodes");
        assert_eq!(decoded, r.to_proto(Some("fuzz")));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let delta = mode & 1 == 1;
    let late = mode & 2 == 2;
    let before = snapshot(&[("a", "A"), ("b", "B"), ("c", "C")]);
    let after = snapshot(&[("a", "A2"), ("c", "C"), ("d", "D")]);
    let requests = chunks(rest);
    let middle = requests.len() / 2;
    let mut checker = Checker {
        nonces: HashSet::new(),
        requested: BTreeSet::new(),
    };
    let mut sotw = SotwStream::new();
    let mut dstream = DeltaStream::new();
    for (i, bytes) in requests.iter().enumerate() {
        let snap = if i < middle { &before } else { &after };
        if i == middle {
            if delta {
                for r in dstream.on_snapshot(snap, &ORDER) {
                    checker.delta(&r, snap);
                }
            } else {
                for r in sotw.on_snapshot(snap, &ORDER) {
                    checker.sotw(&r, [snap, &before]);
                }
            }
        }
        let current = (!late || i >= middle).then_some(snap);
        if delta {
            let Ok(req) = DeltaDiscoveryRequest::decode(*bytes) else {
                continue;
            };
            let Ok(out) = dstream.on_request(&req, current) else {
                // The server ends the stream on a protocol error.
                assert!(req.type_url.is_empty());
                return;
            };
            checker.requested.insert(req.type_url.clone());
            for r in &out.responses {
                assert_eq!(r.type_url, req.type_url, "answers are for the requested type");
                checker.delta(r, snap);
            }
            let _ = dstream.status();
        } else {
            // Read as the server reads it, the names left undecoded; whatever
            // prost reads as a request reads the same way here.
            let Ok(raw) = SotwRequest::decode(*bytes) else {
                assert!(DiscoveryRequest::decode(*bytes).is_err());
                continue;
            };
            if let Ok(full) = DiscoveryRequest::decode(*bytes) {
                assert_eq!(raw, SotwRequest::from_request(full));
            }
            let req = &raw.request;
            let Ok(out) = sotw.on_sotw_request(&raw, current) else {
                assert!(
                    req.type_url.is_empty()
                        || raw.names().any(|n| std::str::from_utf8(n).is_err())
                );
                return;
            };
            checker.requested.insert(req.type_url.clone());
            for r in &out.responses {
                assert_eq!(r.type_url, req.type_url, "answers are for the requested type");
                checker.sotw(r, [snap, &before]);
            }
            let _ = sotw.status();
        }
    }
});
