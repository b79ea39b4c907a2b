#![allow(clippy::unwrap_used)]

use super::*;
use crate::{Any, TypedResources, XdsResource};
use mesh_api::envoy::google::rpc::Status as RpcStatus;
use prost::Message;

const T: &str = "type.example/Thing";
const U: &str = "type.example/Other";

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

fn mk_req(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: T.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn names_of(resp: &SotwResponse) -> Vec<String> {
    resp.resources()
        .iter()
        .map(|r| String::from_utf8(r.body.value.clone()).unwrap())
        .collect()
}

#[test]
fn initial_wildcard_request_gets_everything() {
    let snap = mk_snap(&[("a", "A"), ("b", "B")]);
    let mut s = SotwStream::new();
    let out = s.on_request(&mk_req(&[], "", ""), Some(&snap)).unwrap();
    assert_eq!(out.kind, RequestKind::Initial);
    assert_eq!(out.responses.len(), 1);
    assert_eq!(names_of(&out.responses[0]), ["A", "B"]);
    assert_eq!(out.responses[0].version_info, snap.get(T).unwrap().version);
}

#[test]
fn pure_ack_gets_no_response_and_is_recorded() {
    let snap = mk_snap(&[("a", "A")]);
    let mut s = SotwStream::new();
    let r = s
        .on_request(&mk_req(&[], "", ""), Some(&snap))
        .unwrap()
        .responses
        .remove(0);
    let out = s
        .on_request(&mk_req(&[], &r.version_info, &r.nonce), Some(&snap))
        .unwrap();
    assert_eq!(out.kind, RequestKind::Ack);
    assert!(out.responses.is_empty());
    let st = &s.status()[T];
    assert_eq!(st.acked_version.as_deref(), Some(r.version_info.as_str()));
    assert_eq!(st.state(), "SYNCED");
}

#[test]
fn stale_nonce_is_ignored() {
    let snap = mk_snap(&[("a", "A")]);
    let mut s = SotwStream::new();
    let first = s
        .on_request(&mk_req(&[], "", ""), Some(&snap))
        .unwrap()
        .responses
        .remove(0);
    let second = s.on_snapshot(&mk_snap(&[("a", "A2")]), &[]).remove(0);
    // An ACK of the first response (stale) even asking for other names is ignored.
    let out = s
        .on_request(
            &mk_req(&["x"], &first.version_info, &first.nonce),
            Some(&snap),
        )
        .unwrap();
    assert_eq!(out.kind, RequestKind::Stale);
    assert!(out.responses.is_empty());
    assert_eq!(
        s.status()[T].sent_nonce.as_deref(),
        Some(second.nonce.as_str())
    );
    assert!(s.status()[T].wildcard);
}

#[test]
fn nack_is_recorded_and_not_resent_until_content_changes() {
    let good = mk_snap(&[("a", "A")]);
    let mut s = SotwStream::new();
    let r1 = s
        .on_request(&mk_req(&[], "", ""), Some(&good))
        .unwrap()
        .responses
        .remove(0);
    s.on_request(&mk_req(&[], &r1.version_info, &r1.nonce), Some(&good))
        .unwrap();
    let bad = mk_snap(&[("a", "BAD")]);
    let r2 = s.on_snapshot(&bad, &[]).remove(0);
    let mut nack = mk_req(&[], &r1.version_info, &r2.nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad thing".into(),
        details: vec![],
    });
    let out = s.on_request(&nack, Some(&bad)).unwrap();
    assert_eq!(out.kind, RequestKind::Nack);
    assert!(out.responses.is_empty());
    assert_eq!(out.nack.as_ref().unwrap().version, r2.version_info);
    let st = &s.status()[T];
    assert_eq!(st.state(), "NACKED");
    assert_eq!(
        st.acked_version.as_deref(),
        Some(r1.version_info.as_str()),
        "last good stays"
    );
    // The same snapshot again, or an equal one rebuilt: nothing is sent.
    assert!(s.on_snapshot(&bad, &[]).is_empty());
    assert!(s.on_snapshot(&mk_snap(&[("a", "BAD")]), &[]).is_empty());
    // A real change is sent.
    let fixed = s.on_snapshot(&mk_snap(&[("a", "A3")]), &[]);
    assert_eq!(fixed.len(), 1);
    assert_eq!(names_of(&fixed[0]), ["A3"]);
}

#[test]
fn unchanged_set_is_never_resent() {
    let mut s = SotwStream::new();
    let snap = mk_snap(&[("a", "A")]);
    s.on_request(&mk_req(&[], "", ""), Some(&snap)).unwrap();
    assert!(s.on_snapshot(&snap, &[]).is_empty());
    // Another type changing does not resend this one.
    let other = mk_snap(&[("a", "A")]).with(U, TypedResources::new([mk_res("z", "Z")]));
    assert!(s.on_snapshot(&other, &[]).is_empty());
}

#[test]
fn subscription_to_names_gets_only_those_and_waits_for_missing_ones() {
    let mut s = SotwStream::new();
    let snap = mk_snap(&[("a", "A"), ("b", "B")]);
    let r = s
        .on_request(&mk_req(&["b", "c"], "", ""), Some(&snap))
        .unwrap()
        .responses
        .remove(0);
    assert_eq!(names_of(&r), ["B"]);
    s.on_request(&mk_req(&["b", "c"], &r.version_info, &r.nonce), Some(&snap))
        .unwrap();
    // "a" changing is invisible to this subscriber.
    assert!(
        s.on_snapshot(&mk_snap(&[("a", "A2"), ("b", "B")]), &[])
            .is_empty()
    );
    // "c" appearing is pushed.
    let r2 = s.on_snapshot(&mk_snap(&[("a", "A2"), ("b", "B"), ("c", "C")]), &[]);
    assert_eq!(names_of(&r2[0]), ["B", "C"]);
}

#[test]
fn changed_subscription_on_ack_gets_new_set() {
    let mut s = SotwStream::new();
    let snap = mk_snap(&[("a", "A"), ("b", "B")]);
    let r = s
        .on_request(&mk_req(&["a"], "", ""), Some(&snap))
        .unwrap()
        .responses
        .remove(0);
    let out = s
        .on_request(&mk_req(&["a", "b"], &r.version_info, &r.nonce), Some(&snap))
        .unwrap();
    assert_eq!(out.kind, RequestKind::Ack);
    assert_eq!(names_of(&out.responses[0]), ["A", "B"]);
}

#[test]
fn removal_is_a_smaller_complete_set() {
    let mut s = SotwStream::new();
    s.on_request(
        &mk_req(&[], "", ""),
        Some(&mk_snap(&[("a", "A"), ("b", "B")])),
    )
    .unwrap();
    let r = s.on_snapshot(&mk_snap(&[("b", "B")]), &[]);
    assert_eq!(names_of(&r[0]), ["B"]);
    let empty = s.on_snapshot(&mk_snap(&[]), &[]);
    assert_eq!(empty.len(), 1);
    assert!(empty[0].resources().is_empty());
}

#[test]
fn snapshot_pushes_follow_the_given_order() {
    let mut s = SotwStream::new();
    let mut req_u = mk_req(&[], "", "");
    req_u.type_url = U.into();
    s.on_request(&req_u, None).unwrap();
    s.on_request(&mk_req(&[], "", ""), None).unwrap();
    let snap = mk_snap(&[("a", "A")]).with(U, TypedResources::new([mk_res("z", "Z")]));
    let order = s.on_snapshot(&snap, &[U, T]);
    assert_eq!(
        order
            .iter()
            .map(|r| r.type_url.as_str())
            .collect::<Vec<_>>(),
        [U, T]
    );
    let mut s2 = SotwStream::new();
    s2.on_request(&req_u, None).unwrap();
    s2.on_request(&mk_req(&[], "", ""), None).unwrap();
    let order = s2.on_snapshot(&snap, &[T, U]);
    assert_eq!(
        order
            .iter()
            .map(|r| r.type_url.as_str())
            .collect::<Vec<_>>(),
        [T, U]
    );
}

#[test]
fn missing_type_url_is_a_protocol_error() {
    let mut s = SotwStream::new();
    let mut req = mk_req(&[], "", "");
    req.type_url.clear();
    assert_eq!(s.on_request(&req, None), Err(ProtocolError::MissingTypeUrl));
}

#[test]
fn nonces_are_unique_per_stream() {
    let mut s = SotwStream::new();
    let mut nonces = std::collections::HashSet::new();
    s.on_request(&mk_req(&[], "", ""), Some(&mk_snap(&[("a", "0")])))
        .unwrap();
    for i in 1..50 {
        let body = i.to_string();
        for r in s.on_snapshot(&mk_snap(&[("a", &body)]), &[]) {
            assert!(nonces.insert(r.nonce));
        }
    }
    assert_eq!(nonces.len(), 49);
}

#[test]
fn shared_encoding_decodes_as_the_response() {
    let snap = mk_snap(&[("a", "A"), ("b", "B")]);
    for names in [&[][..], &["b", "missing"][..]] {
        let mut s = SotwStream::new();
        let r = s
            .on_request(&mk_req(names, "", ""), Some(&snap))
            .unwrap()
            .responses
            .remove(0);
        for cp in [None, Some("galley")] {
            let bytes = r.encode(cp).to_vec();
            let decoded = DiscoveryResponse::decode(bytes.as_slice()).unwrap();
            assert_eq!(decoded, r.to_proto(cp));
        }
    }
}

mod make_before_break {
    use super::*;

    const C: &str = crate::type_url::CLUSTER;
    const L: &str = crate::type_url::LISTENER;
    const ORDER: [&str; 2] = [C, L];

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

    fn mk_two(clusters: &[(&str, &str)], listeners: &[(&str, &str)]) -> Snapshot {
        Snapshot::new()
            .with(C, mk(C, clusters))
            .with(L, mk(L, listeners))
    }

    fn req(t: &str, version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: t.into(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn names(r: &SotwResponse) -> Vec<&str> {
        r.resources().iter().map(|r| r.name.as_str()).collect()
    }

    /// A stream holding clusters a, b and listener l (ACKed).
    fn synced() -> (SotwStream, Snapshot) {
        let snap = mk_two(&[("a", "A"), ("b", "B")], &[("l", "to a and b")]);
        let mut s = SotwStream::new();
        for t in ORDER {
            let r = s.on_request(&req(t, "", ""), Some(&snap)).unwrap();
            let r = &r.responses[0];
            s.on_request(&req(t, &r.version_info, &r.nonce), Some(&snap))
                .unwrap();
        }
        (s, snap)
    }

    #[test]
    fn removed_cluster_stays_until_the_listeners_no_longer_need_it() {
        let (mut s, _) = synced();
        let next = mk_two(&[("a", "A"), ("c", "C")], &[("l", "to a and c")]);
        let out = s.on_snapshot(&next, &ORDER);
        let got: Vec<(&str, Vec<&str>)> = out
            .iter()
            .map(|r| (r.type_url.as_str(), names(r)))
            .collect();
        assert_eq!(
            got,
            [
                (C, vec!["a", "b", "c"]),
                (L, vec!["l"]),
                (C, vec!["a", "c"])
            ]
        );
        let (union, fin) = (&out[0], &out[2]);
        assert_eq!(fin.version_info, next.get(C).unwrap().version);
        assert_ne!(
            union.version_info, fin.version_info,
            "the union is its own set"
        );
        assert_ne!(union.nonce, fin.nonce);
        // The status follows the final set: the union's ACK is stale, the final's
        // syncs the stream.
        assert_eq!(s.status()[C].sent_version.as_ref(), Some(&fin.version_info));
        let stale = s
            .on_request(&req(C, &union.version_info, &union.nonce), Some(&next))
            .unwrap();
        assert_eq!(stale.kind, RequestKind::Stale);
        s.on_request(&req(C, &fin.version_info, &fin.nonce), Some(&next))
            .unwrap();
        assert_eq!(s.status()[C].state(), "SYNCED");
    }

    #[test]
    fn pure_removal_needs_no_union_and_goes_last() {
        let (mut s, _) = synced();
        let next = mk_two(&[("a", "A")], &[("l", "to a")]);
        let out = s.on_snapshot(&next, &ORDER);
        let got: Vec<(&str, Vec<&str>)> = out
            .iter()
            .map(|r| (r.type_url.as_str(), names(r)))
            .collect();
        assert_eq!(got, [(L, vec!["l"]), (C, vec!["a"])]);
    }

    #[test]
    fn a_push_touching_only_the_shrinking_type_sends_its_final_set_alone() {
        let (mut s, _) = synced();
        let next = mk_two(&[("a", "A2"), ("c", "C")], &[("l", "to a and b")]);
        let out = s.on_snapshot(&next, &ORDER);
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), ["a", "c"]);
    }

    #[test]
    fn a_request_naming_the_older_version_after_a_nack_keeps_the_nack() {
        let (mut s, _) = synced();
        let good = s.status()[C].acked_version.clone().unwrap();
        let bad = mk_two(&[("a", "BAD"), ("b", "B")], &[("l", "to a and b")]);
        let r = s.on_snapshot(&bad, &ORDER).remove(0);
        let mut nack = req(C, &good, &r.nonce);
        nack.error_detail = Some(RpcStatus {
            code: 3,
            message: "bad a".into(),
            details: vec![],
        });
        s.on_request(&nack, Some(&bad)).unwrap();
        // Envoy's next request (a new subscription, say) carries the nonce and the
        // version it still holds: it does not take the refused set.
        let mut again = req(C, &good, &r.nonce);
        again.resource_names = vec!["*".into()];
        let out = s.on_request(&again, Some(&bad)).unwrap();
        assert_eq!(out.kind, RequestKind::Ack);
        assert!(out.responses.is_empty());
        assert_eq!(s.status()[C].state(), "NACKED");
        // A push dropping b now compares with what the client holds (a, b): b goes
        // after the listener, the union carrying it with the new a.
        let next = mk_two(&[("a", "A3")], &[("l", "to a")]);
        let out = s.on_snapshot(&next, &ORDER);
        let got: Vec<(&str, Vec<&str>)> = out
            .iter()
            .map(|r| (r.type_url.as_str(), names(r)))
            .collect();
        assert_eq!(got, [(C, vec!["a", "b"]), (L, vec!["l"]), (C, vec!["a"])]);
    }
}

/// Endpoints and routes are sent in parts: what changed, never a removal.
mod in_parts {
    use super::*;
    use crate::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

    fn mk_eds(items: &[(&str, &str)]) -> Snapshot {
        Snapshot::new().with(
            ENDPOINT,
            TypedResources::new(items.iter().map(|(n, b)| mk_res(n, b))),
        )
    }

    fn eds_req(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: ENDPOINT.into(),
            ..mk_req(names, version, nonce)
        }
    }

    /// A stream subscribed to `names`, in sync with `snap`.
    fn synced(names: &[&str], snap: &Snapshot) -> (SotwStream, SotwResponse) {
        let mut s = SotwStream::new();
        let r = s
            .on_request(&eds_req(names, "", ""), Some(snap))
            .unwrap()
            .responses
            .remove(0);
        s.on_request(&eds_req(names, &r.version_info, &r.nonce), Some(snap))
            .unwrap();
        (s, r)
    }

    #[test]
    fn only_listeners_and_clusters_are_sent_complete() {
        assert!(sends_complete_state(CLUSTER));
        assert!(sends_complete_state(LISTENER));
        assert!(
            sends_complete_state(T),
            "types without parents stay complete"
        );
        assert!(!sends_complete_state(ENDPOINT));
        assert!(!sends_complete_state(ROUTE));
    }

    #[test]
    fn a_push_sends_only_what_changed_and_a_removal_sends_nothing() {
        let snap = mk_eds(&[("a", "A"), ("b", "B"), ("c", "C")]);
        let (mut s, first) = synced(&["a", "b", "c"], &snap);
        assert_eq!(
            names_of(&first),
            ["A", "B", "C"],
            "the first response has all"
        );

        let next = mk_eds(&[("a", "A"), ("b", "B2"), ("c", "C")]);
        let out = s.on_snapshot(&next, &[]);
        assert_eq!(out.len(), 1);
        assert_eq!(names_of(&out[0]), ["B2"]);
        // The version names everything the client then holds.
        let whole = next.get(ENDPOINT).unwrap().subset(&s.types[ENDPOINT].names);
        assert_eq!(out[0].version_info, whole.version);
        let decoded = DiscoveryResponse::decode(out[0].encode(None).to_vec().as_slice()).unwrap();
        assert_eq!(decoded, out[0].to_proto(None), "the wire form is the same");
        s.on_request(
            &eds_req(&["a", "b", "c"], &out[0].version_info, &out[0].nonce),
            Some(&next),
        )
        .unwrap();

        // c removed: its parent conveys that; nothing is sent.
        let gone = mk_eds(&[("a", "A"), ("b", "B2")]);
        assert!(s.on_snapshot(&gone, &[]).is_empty());
        // c back, unchanged: the client dropped it, so it is sent again.
        let out = s.on_snapshot(&next, &[]);
        assert_eq!(names_of(&out[0]), ["C"]);
    }

    #[test]
    fn a_new_name_is_sent_alone_and_a_refused_change_waits_for_the_next_one() {
        let snap = mk_eds(&[("a", "A"), ("b", "B")]);
        let (mut s, first) = synced(&["a"], &snap);
        let out = s
            .on_request(
                &eds_req(&["a", "b"], &first.version_info, &first.nonce),
                Some(&snap),
            )
            .unwrap();
        assert_eq!(names_of(&out.responses[0]), ["B"]);
        let r = &out.responses[0];
        s.on_request(
            &eds_req(&["a", "b"], &r.version_info, &r.nonce),
            Some(&snap),
        )
        .unwrap();

        let bad = mk_eds(&[("a", "BAD"), ("b", "B")]);
        let r = s.on_snapshot(&bad, &[]).remove(0);
        assert_eq!(names_of(&r), ["BAD"]);
        let mut nack = eds_req(&["a", "b"], &first.version_info, &r.nonce);
        nack.error_detail = Some(RpcStatus {
            code: 3,
            message: "bad a".into(),
            details: vec![],
        });
        assert!(
            s.on_request(&nack, Some(&bad))
                .unwrap()
                .responses
                .is_empty()
        );
        assert!(
            s.on_snapshot(&bad, &[]).is_empty(),
            "unchanged: not re-sent"
        );
        // The client kept the old a: a change of b sends the new a as well.
        let next = mk_eds(&[("a", "A2"), ("b", "B2")]);
        let out = s.on_snapshot(&next, &[]);
        assert_eq!(names_of(&out[0]), ["A2", "B2"]);
    }
}
