#![allow(clippy::unwrap_used)]

use super::*;
use crate::{Any, TypedResources, XdsResource};
use mesh_api::envoy::google::rpc::Status as RpcStatus;
use prost::Message;

const T: &str = "type.example/Thing";

fn mk_res(name: &str, body: &str) -> XdsResource {
    XdsResource::new(
        name,
        Any {
            type_url: T.into(),
            value: body.as_bytes().to_vec(),
        },
    )
}

fn mk_snap(items: &[(&str, &str)]) -> Snapshot {
    Snapshot::new().with(
        T,
        TypedResources::new(items.iter().map(|(n, b)| mk_res(n, b))),
    )
}

fn mk_req(sub: &[&str], unsub: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: T.into(),
        resource_names_subscribe: sub.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: unsub.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn sent(r: &DeltaResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn wildcard_gets_all_then_only_changes_and_removals() {
    let mut s = DeltaStream::new();
    let r = s
        .on_request(
            &mk_req(&[], &[], ""),
            Some(&mk_snap(&[("a", "A"), ("b", "B")])),
        )
        .unwrap();
    assert_eq!(r.kind, RequestKind::Initial);
    assert_eq!(sent(&r.responses[0]), ["a", "b"]);
    let ack = s
        .on_request(&mk_req(&[], &[], &r.responses[0].nonce), None)
        .unwrap();
    assert!(ack.responses.is_empty());
    assert_eq!(s.status()[T].state(), "SYNCED");

    let r = s.on_snapshot(&mk_snap(&[("a", "A2"), ("c", "C")]), &[]);
    assert_eq!(sent(&r[0]), ["a", "c"]);
    assert_eq!(r[0].removed_resources, ["b"]);
    // Unchanged: nothing.
    assert!(
        s.on_snapshot(&mk_snap(&[("a", "A2"), ("c", "C")]), &[])
            .is_empty()
    );
}

#[test]
fn initial_versions_are_honoured() {
    let snap = mk_snap(&[("a", "A"), ("b", "B")]);
    let a_version = snap.get(T).unwrap().items["a"].version.clone();
    let mut req = mk_req(&[], &[], "");
    req.initial_resource_versions.insert("a".into(), a_version);
    req.initial_resource_versions
        .insert("gone".into(), "v0".into());
    let mut s = DeltaStream::new();
    let r = s.on_request(&req, Some(&snap)).unwrap().responses.remove(0);
    assert_eq!(sent(&r), ["b"]);
    assert_eq!(r.removed_resources, ["gone"]);
}

#[test]
fn explicit_names_missing_are_reported_removed_once_and_pushed_when_they_appear() {
    let mut s = DeltaStream::new();
    let r = s
        .on_request(&mk_req(&["x", "a"], &[], ""), Some(&mk_snap(&[("a", "A")])))
        .unwrap();
    let r = &r.responses[0];
    assert_eq!(sent(r), ["a"]);
    assert_eq!(r.removed_resources, ["x"]);
    assert!(
        s.on_snapshot(&mk_snap(&[("a", "A"), ("b", "B")]), &[])
            .is_empty()
    );
    let r = s.on_snapshot(&mk_snap(&[("a", "A"), ("x", "X")]), &[]);
    assert_eq!(sent(&r[0]), ["x"]);
}

#[test]
fn subscription_changes_apply_even_with_a_stale_nonce() {
    let mut s = DeltaStream::new();
    let snap = mk_snap(&[("a", "A"), ("b", "B")]);
    s.on_request(&mk_req(&["a"], &[], ""), Some(&snap)).unwrap();
    let r = s
        .on_request(&mk_req(&["b"], &[], "999"), Some(&snap))
        .unwrap();
    assert_eq!(r.kind, RequestKind::Stale);
    assert_eq!(sent(&r.responses[0]), ["b"]);
}

#[test]
fn unsubscribe_forgets_without_removal_notice() {
    let mut s = DeltaStream::new();
    let snap = mk_snap(&[("a", "A"), ("b", "B")]);
    s.on_request(&mk_req(&["a", "b"], &[], ""), Some(&snap))
        .unwrap();
    let r = s.on_request(&mk_req(&[], &["a"], ""), Some(&snap)).unwrap();
    assert!(r.responses.is_empty());
    // Changing "a" now reaches nobody.
    assert!(
        s.on_snapshot(&mk_snap(&[("a", "A2"), ("b", "B")]), &[])
            .is_empty()
    );
}

#[test]
fn nack_is_recorded_and_unchanged_resources_not_resent() {
    let mut s = DeltaStream::new();
    let r = s
        .on_request(&mk_req(&[], &[], ""), Some(&mk_snap(&[("a", "A")])))
        .unwrap();
    s.on_request(&mk_req(&[], &[], &r.responses[0].nonce), None)
        .unwrap();
    let bad = s.on_snapshot(&mk_snap(&[("a", "BAD")]), &[]).remove(0);
    let mut nack = mk_req(&[], &[], &bad.nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "nope".into(),
        details: vec![],
    });
    let out = s.on_request(&nack, None).unwrap();
    assert_eq!(out.kind, RequestKind::Nack);
    assert_eq!(s.status()[T].nack.as_ref().unwrap().error, "nope");
    assert!(s.on_snapshot(&mk_snap(&[("a", "BAD")]), &[]).is_empty());
    assert_eq!(
        sent(&s.on_snapshot(&mk_snap(&[("a", "GOOD")]), &[])[0]),
        ["a"]
    );
}

#[test]
fn encoding_decodes_as_the_response() {
    let mut s = DeltaStream::new();
    s.on_request(&mk_req(&["a", "x"], &[], ""), Some(&mk_snap(&[("a", "A")])))
        .unwrap();
    let r = s
        .on_snapshot(&mk_snap(&[("a", "A2"), ("x", "X")]), &[])
        .remove(0);
    let r2 = s.on_snapshot(&mk_snap(&[("a", "A2")]), &[]).remove(0);
    for resp in [r, r2] {
        let decoded =
            DeltaDiscoveryResponse::decode(resp.encode(Some("cp")).to_vec().as_slice()).unwrap();
        assert_eq!(decoded, resp.to_proto(Some("cp")));
    }
}

mod model {
    //! Property: whatever the sequence of snapshots and subscription changes, a
    //! client applying every response holds exactly the current set restricted to
    //! its subscription, and never receives a resource it already holds.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Step {
        Snapshot(Vec<(u8, u8)>),
        Subscribe(u8),
        Unsubscribe(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            proptest::collection::vec((0u8..8, 0u8..3), 0..8).prop_map(Step::Snapshot),
            (0u8..8).prop_map(Step::Subscribe),
            (0u8..8).prop_map(Step::Unsubscribe),
        ]
    }

    fn name(n: u8) -> String {
        format!("r{n}")
    }

    proptest! {
        #[test]
        fn client_converges_to_the_subscribed_set(wildcard in any::<bool>(), steps in proptest::collection::vec(step(), 1..25)) {
            let mut stream = DeltaStream::new();
            let mut snap = mk_snap(&[]);
            let mut subscribed: std::collections::BTreeSet<String> = Default::default();
            let mut held: BTreeMap<String, String> = BTreeMap::new();
            let first = mk_req(if wildcard { &[] } else { &["r0"] }, &[], "");
            if !wildcard { subscribed.insert("r0".into()); }
            let apply = |held: &mut BTreeMap<String, String>, r: &DeltaResponse| {
                for res in &r.resources {
                    prop_assert_ne!(held.get(&res.name), Some(&res.version), "resent an unchanged resource");
                    held.insert(res.name.clone(), res.version.clone());
                }
                for gone in &r.removed_resources { held.remove(gone); }
                Ok(())
            };
            for r in stream.on_request(&first, Some(&snap)).unwrap().responses { apply(&mut held, &r)?; }
            for s in steps {
                let responses = match s {
                    Step::Snapshot(items) => {
                        let items: Vec<(String, String)> = items.iter().map(|(n, v)| (name(*n), format!("v{v}"))).collect();
                        let refs: Vec<(&str, &str)> = items.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                        snap = mk_snap(&refs);
                        stream.on_snapshot(&snap, &[])
                    }
                    Step::Subscribe(n) => {
                        subscribed.insert(name(n));
                        stream.on_request(&mk_req(&[&name(n)], &[], ""), Some(&snap)).unwrap().responses
                    }
                    Step::Unsubscribe(n) => {
                        subscribed.remove(&name(n));
                        held.remove(&name(n)); // the client forgets what it unsubscribes
                        stream.on_request(&mk_req(&[], &[&name(n)], ""), Some(&snap)).unwrap().responses
                    }
                };
                for r in &responses { apply(&mut held, r)?; }
                if wildcard {
                    // Unsubscribing a name does not narrow a wildcard subscription.
                    let expected: BTreeMap<String, String> = snap.get(T).unwrap().items.values()
                        .map(|r| (r.name.clone(), r.version.clone())).collect();
                    // The client may have forgotten names it unsubscribed from itself.
                    for (n, v) in &held { prop_assert_eq!(Some(v), expected.get(n)); }
                } else {
                    let expected: BTreeMap<String, String> = snap.get(T).unwrap().items.values()
                        .filter(|r| subscribed.contains(&r.name))
                        .map(|r| (r.name.clone(), r.version.clone())).collect();
                    prop_assert_eq!(&held, &expected);
                }
            }
        }
    }
}

#[test]
fn large_updates_are_split_into_bounded_responses() {
    let big = "x".repeat(300 * 1024);
    let names = ["a", "b", "c", "d", "e"];
    let items: Vec<(&str, &str)> = names.iter().map(|n| (*n, big.as_str())).collect();
    let mut s = DeltaStream::new();
    let mut req = mk_req(&[], &[], "");
    req.initial_resource_versions
        .insert("gone".into(), "v0".into());
    let out = s
        .on_request(&req, Some(&mk_snap(&items)))
        .unwrap()
        .responses;
    assert!(out.len() >= 2, "split: {} response(s)", out.len());
    let mut all: Vec<&str> = out.iter().flat_map(|r| sent(r)).collect();
    all.sort();
    assert_eq!(all, names);
    for r in &out {
        let size: usize = r.resources.iter().map(|x| x.delta_entry().len()).sum();
        assert!(
            size <= MAX_RESPONSE_BYTES || r.resources.len() == 1,
            "{size}"
        );
    }
    let (last, rest) = out.split_last().unwrap();
    assert_eq!(last.removed_resources, ["gone"]);
    assert!(
        !last.system_version_info.is_empty(),
        "the last part carries the version"
    );
    assert!(
        rest.iter()
            .all(|r| r.removed_resources.is_empty() && r.system_version_info.is_empty())
    );
    // Only the last nonce is current: ACKing it syncs the stream.
    s.on_request(&mk_req(&[], &[], &last.nonce), None).unwrap();
    assert_eq!(s.status()[T].state(), "SYNCED");
}

#[test]
fn acking_every_part_of_a_split_update_leaves_nothing_pending() {
    let body = "x".repeat(1024);
    let names: Vec<String> = (0..300).map(|i| format!("r{i}")).collect();
    let items: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), body.as_str())).collect();
    let mut s = DeltaStream::new();
    let out = s
        .on_request(&mk_req(&[], &[], ""), Some(&mk_snap(&items)))
        .unwrap()
        .responses;
    assert!(out.len() >= 4, "split: {} response(s)", out.len());
    assert_eq!(s.types[T].pending.len(), out.len());
    for r in &out {
        s.on_request(&mk_req(&[], &[], &r.nonce), None).unwrap();
    }
    assert_eq!(s.status()[T].state(), "SYNCED");
    let state = &s.types[T];
    assert!(state.pending.is_empty());
    assert_eq!(state.pending.capacity(), 0, "no queue kept once in sync");
}

mod make_before_break {
    use super::*;

    const C: &str = crate::type_url::CLUSTER;
    const E: &str = crate::type_url::ENDPOINT;
    const L: &str = crate::type_url::LISTENER;
    const ORDER: [&str; 3] = [C, E, L];

    fn mk(t: &str, items: &[(&str, &str)]) -> TypedResources {
        TypedResources::new(items.iter().map(|(n, b)| {
            XdsResource::new(
                *n,
                Any {
                    type_url: t.into(),
                    value: b.as_bytes().to_vec(),
                },
            )
        }))
    }

    fn snap3(c: &[(&str, &str)], e: &[(&str, &str)], l: &[(&str, &str)]) -> Snapshot {
        Snapshot::new()
            .with(C, mk(C, c))
            .with(E, mk(E, e))
            .with(L, mk(L, l))
    }

    fn req(t: &str, nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: t.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn synced(snap: &Snapshot) -> DeltaStream {
        let mut s = DeltaStream::new();
        for t in ORDER {
            let out = s.on_request(&req(t, ""), Some(snap)).unwrap();
            for r in out.responses {
                s.on_request(&req(t, &r.nonce), None).unwrap();
            }
        }
        s
    }

    #[test]
    fn removals_follow_every_upsert_in_reverse_type_order() {
        let before = snap3(&[("a", "A"), ("b", "B")], &[("a", "1")], &[("x", "X")]);
        let mut s = synced(&before);
        let after = snap3(&[("a", "A"), ("c", "C")], &[], &[("y", "Y")]);
        let out = s.on_snapshot(&after, &ORDER);
        let got: Vec<(&str, Vec<&str>, Vec<&str>)> = out
            .iter()
            .map(|r| {
                (
                    r.type_url.as_str(),
                    sent(r),
                    r.removed_resources.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (C, vec!["c"], vec![]),
                // The last type carries its own removals: nothing follows them.
                (L, vec!["y"], vec!["x"]),
                (E, vec![], vec!["a"]),
                (C, vec![], vec!["b"]),
            ]
        );
        // Only the part that completes a type carries its version.
        assert!(out[0].system_version_info.is_empty());
        assert_eq!(out[3].system_version_info, after.get(C).unwrap().version);
        for r in &out {
            s.on_request(&req(&r.type_url, &r.nonce), None).unwrap();
        }
        for t in ORDER {
            assert_eq!(s.status()[t].state(), "SYNCED", "{t}");
        }
    }

    #[test]
    fn nack_of_a_response_that_is_not_the_latest_is_recorded_and_undone() {
        let before = snap3(&[("a", "A"), ("b", "B")], &[], &[("x", "X")]);
        let mut s = synced(&before);
        let bad = snap3(&[("a", "BAD")], &[], &[("x", "X2")]);
        let out = s.on_snapshot(&bad, &ORDER);
        // Clusters: a (refused by the client), then listeners, then b's removal.
        assert_eq!(out.len(), 3);
        let mut nack = req(C, &out[0].nonce);
        nack.error_detail = Some(RpcStatus {
            code: 3,
            message: "bad a".into(),
            details: vec![],
        });
        assert_eq!(s.on_request(&nack, None).unwrap().kind, RequestKind::Nack);
        s.on_request(&req(L, &out[1].nonce), None).unwrap();
        let ack = s.on_request(&req(C, &out[2].nonce), None).unwrap();
        assert_eq!(ack.kind, RequestKind::Ack);
        assert_eq!(
            s.status()[C].state(),
            "NACKED",
            "an ACK of the same push does not clear it"
        );
        // Nothing changed for clusters: nothing is sent.
        let other = snap3(&[("a", "BAD")], &[], &[("x", "X3")]);
        assert!(
            s.on_snapshot(&other, &ORDER)
                .iter()
                .all(|r| r.type_url != C)
        );
        // Clusters change: the client still holds the old a, so a comes again.
        let fixed = snap3(&[("a", "BAD"), ("d", "D")], &[], &[("x", "X3")]);
        let out = s.on_snapshot(&fixed, &ORDER);
        assert_eq!(out.len(), 1);
        assert_eq!(sent(&out[0]), ["a", "d"]);
        s.on_request(&req(C, &out[0].nonce), None).unwrap();
        assert_eq!(s.status()[C].state(), "SYNCED");
    }
}
