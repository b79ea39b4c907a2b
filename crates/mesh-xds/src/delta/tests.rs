#![allow(clippy::unwrap_used)]

use super::*;
use crate::{Any, TypedResources, XdsResource};
use mesh_api::envoy::google::rpc::Status as RpcStatus;

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

fn sent(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn wildcard_gets_all_then_only_changes_and_removals() {
    let mut s = DeltaStream::new(None);
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
    let mut s = DeltaStream::new(None);
    let r = s.on_request(&req, Some(&snap)).unwrap().responses.remove(0);
    assert_eq!(sent(&r), ["b"]);
    assert_eq!(r.removed_resources, ["gone"]);
}

#[test]
fn explicit_names_missing_are_reported_removed_once_and_pushed_when_they_appear() {
    let mut s = DeltaStream::new(None);
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
    let mut s = DeltaStream::new(None);
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
    let mut s = DeltaStream::new(None);
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
    let mut s = DeltaStream::new(None);
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
