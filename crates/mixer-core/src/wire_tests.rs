#![allow(clippy::unwrap_used)]

use std::{collections::BTreeMap, time::Duration};

use proptest::prelude::*;

use super::*;
use crate::manifest::Manifest;

/// The global index of `word`.
fn g(word: &str) -> i32 {
    i32::try_from(GLOBAL_WORDS.iter().position(|w| *w == word).unwrap()).unwrap()
}

fn all() -> u32 {
    u32::try_from(GLOBAL_WORDS.len()).unwrap()
}

#[test]
fn global_and_message_words_decode_into_typed_values() {
    let mut msg = CompressedAttributes {
        words: vec![
            "reviews.default.svc.cluster.local".into(),
            "x-user".into(),
            "jason".into(),
        ],
        ..CompressedAttributes::default()
    };
    msg.strings.insert(g("destination.service.host"), -1);
    msg.strings.insert(g("request.method"), g("GET"));
    msg.int64s.insert(g("response.code"), 200);
    msg.bools.insert(g("connection.mtls"), true);
    msg.bytes.insert(g("source.ip"), vec![10, 1, 2, 3]);
    msg.durations.insert(
        g("response.duration"),
        prost_types::Duration {
            seconds: 1,
            nanos: 500,
        },
    );
    msg.timestamps.insert(
        g("request.time"),
        prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 7,
        },
    );
    let mut headers = WireStringMap::default();
    headers.entries.insert(-2, -3);
    msg.string_maps.insert(g("request.headers"), headers);
    let bag = decode(&msg, all(), &[], &Manifest::standard()).unwrap();
    assert_eq!(bag.len(), 8);
    assert_eq!(
        bag.get("destination.service.host"),
        Some(Value::from("reviews.default.svc.cluster.local"))
    );
    assert_eq!(bag.get("request.method"), Some(Value::from("GET")));
    assert_eq!(bag.get("response.code"), Some(Value::Int64(200)));
    assert_eq!(bag.get("connection.mtls"), Some(Value::Bool(true)));
    assert_eq!(
        bag.get("source.ip"),
        Some(Value::Ip("10.1.2.3".parse().unwrap()))
    );
    assert_eq!(
        bag.get("response.duration"),
        Some(Value::Duration(Duration::new(1, 500)))
    );
    assert_eq!(
        bag.get("request.time"),
        Some(Value::Timestamp(
            UNIX_EPOCH + Duration::new(1_700_000_000, 7)
        ))
    );
    let Some(Value::StringMap(h)) = bag.get("request.headers") else {
        panic!("no headers")
    };
    assert_eq!(h.get("x-user").map(String::as_str), Some("jason"));
}

#[test]
fn report_default_words_stand_in_for_an_empty_list() {
    let mut msg = CompressedAttributes::default();
    msg.strings.insert(g("request.path"), -1);
    let bag = decode(&msg, all(), &["/api/v1".into()], &Manifest::standard()).unwrap();
    assert_eq!(bag.get("request.path"), Some(Value::from("/api/v1")));
}

#[test]
fn malformed_bags_are_refused_with_the_reason() {
    let types = Manifest::standard();
    let refuse =
        |msg: &CompressedAttributes, count: u32| decode(msg, count, &[], &types).unwrap_err();

    // A global word beyond what the client knows, a local word beyond the list.
    let mut msg = CompressedAttributes::default();
    msg.int64s.insert(g("response.code"), 1);
    assert!(matches!(refuse(&msg, 1), WireError::WordIndex { .. }));
    let mut msg = CompressedAttributes::default();
    msg.int64s.insert(-1, 1);
    assert!(matches!(
        refuse(&msg, all()),
        WireError::WordIndex { index: -1, .. }
    ));
    msg.int64s.clear();
    msg.int64s.insert(i32::MIN, 1);
    assert!(matches!(refuse(&msg, all()), WireError::WordIndex { .. }));
    // More global words than exist.
    assert_eq!(
        refuse(&CompressedAttributes::default(), all() + 1),
        WireError::GlobalWordCount(all() + 1)
    );
    // The same name twice.
    let mut msg = CompressedAttributes::default();
    msg.int64s.insert(g("response.code"), 200);
    msg.words = vec!["response.code".into()];
    msg.int64s.insert(-1, 404);
    assert_eq!(
        refuse(&msg, all()),
        WireError::Duplicate("response.code".into())
    );
    // A value in the wrong slot for its declared type.
    let mut msg = CompressedAttributes::default();
    msg.strings.insert(g("response.code"), g("GET"));
    assert!(matches!(
        refuse(&msg, all()),
        WireError::WrongType {
            declared: ValueType::Int64,
            sent: "string",
            ..
        }
    ));
    // An address of 5 bytes, a negative duration, nanos out of range.
    let mut msg = CompressedAttributes::default();
    msg.bytes.insert(g("source.ip"), vec![1, 2, 3, 4, 5]);
    assert!(matches!(
        refuse(&msg, all()),
        WireError::IpLength { len: 5, .. }
    ));
    let mut msg = CompressedAttributes::default();
    msg.durations.insert(
        g("response.duration"),
        prost_types::Duration {
            seconds: -1,
            nanos: 0,
        },
    );
    assert!(matches!(refuse(&msg, all()), WireError::Time { .. }));
    let mut msg = CompressedAttributes::default();
    msg.timestamps.insert(
        g("request.time"),
        prost_types::Timestamp {
            seconds: 0,
            nanos: 1_000_000_000,
        },
    );
    assert!(matches!(refuse(&msg, all()), WireError::Time { .. }));
}

#[test]
fn report_bags_are_deltas_of_the_one_before_unless_independent() {
    let bag = |pairs: &[(&str, i64)]| {
        let mut b = AttributeBag::new();
        for (n, v) in pairs {
            b.insert(n, Value::Int64(*v));
        }
        b
    };
    let first = bag(&[("response.code", 200), ("request.size", 10)]);
    let second = bag(&[("response.code", 503)]);
    let mut req = ReportRequest {
        attributes: vec![encode(&first, all()), encode(&second, all())],
        global_word_count: all(),
        ..ReportRequest::default()
    };
    let types = Manifest::standard();
    let bags = decode_report(&req, &types).unwrap();
    assert_eq!(bags[0], first);
    assert_eq!(
        bags[1],
        bag(&[("response.code", 503), ("request.size", 10)]),
        "the second bag keeps what it does not change"
    );
    req.set_repeated_attributes_semantics(RepeatedAttributesSemantics::IndependentEncoding);
    assert_eq!(decode_report(&req, &types).unwrap()[1], second);
    // A bad bag names its position.
    req.attributes[1].int64s.insert(-9, 1);
    let e = decode_report(&req, &types).unwrap_err();
    assert_eq!(e.index, 1);
    assert!(
        e.to_string().starts_with("attribute bag 1: word index -9"),
        "{e}"
    );
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z./-]{0,12}".prop_map(|s| Value::from(s.as_str())),
        prop_oneof![Just("GET"), Just("inbound"), Just("200")].prop_map(Value::from),
        any::<i64>().prop_map(Value::Int64),
        (-1e12f64..1e12).prop_map(Value::Double),
        any::<bool>().prop_map(Value::Bool),
        (
            -1_000_000_000_000i64..4_000_000_000_000,
            0u32..1_000_000_000
        )
            .prop_map(|(s, n)| {
                let base = if s >= 0 {
                    UNIX_EPOCH + Duration::from_secs(s.unsigned_abs())
                } else {
                    UNIX_EPOCH - Duration::from_secs(s.unsigned_abs())
                };
                Value::Timestamp(base + Duration::from_nanos(u64::from(n)))
            }),
        (0u64..1 << 40, 0u32..1_000_000_000)
            .prop_map(|(s, n)| Value::Duration(Duration::new(s, n))),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(|b| Value::Bytes(b.into())),
        proptest::collection::btree_map("[a-z-]{1,8}", "[a-z0-9]{0,8}", 0..4)
            .prop_map(|m| Value::StringMap(std::sync::Arc::new(m))),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..GLOBAL_WORDS.len()).prop_map(|i| GLOBAL_WORDS[i].to_string()),
        "myapp\\.[a-z]{1,6}",
    ]
}

proptest! {
    #[test]
    fn encode_then_decode_gives_the_bag_back(
        attrs in proptest::collection::btree_map(name(), value(), 0..20),
        known in 0..=GLOBAL_WORDS.len(),
    ) {
        let mut bag = AttributeBag::new();
        for (n, v) in &attrs {
            bag.insert(n, v.clone());
        }
        let count = u32::try_from(known).unwrap();
        let msg = encode(&bag, count);
        // No vocabulary: every value keeps the type of its slot.
        let types: BTreeMap<String, ValueType> = BTreeMap::new();
        let back = decode(&msg, count, &[], &types).unwrap();
        prop_assert_eq!(back, bag);
    }

    #[test]
    fn arbitrary_messages_decode_or_fail_cleanly(
        words in proptest::collection::vec("[a-z.]{0,6}", 0..5),
        strings in proptest::collection::btree_map(-8i32..300, -8i32..300, 0..6),
        ints in proptest::collection::btree_map(-8i32..300, any::<i64>(), 0..4),
        bytes in proptest::collection::btree_map(-8i32..300, proptest::collection::vec(any::<u8>(), 0..20), 0..4),
        secs in any::<i64>(),
        nanos in any::<i32>(),
        count in 0u32..400,
    ) {
        let mut msg = CompressedAttributes { words, strings, int64s: ints, bytes, ..Default::default() };
        msg.timestamps.insert(-1, prost_types::Timestamp { seconds: secs, nanos });
        msg.durations.insert(-2, prost_types::Duration { seconds: secs, nanos });
        let _ = decode(&msg, count, &[], &Manifest::standard());
    }
}

#[test]
fn a_bag_finds_attributes_by_text_and_by_compiled_name_however_many_it_holds() {
    let mut bag = AttributeBag::new();
    // Names of its own first, so that global words come past 254 entries.
    for i in 0..300 {
        bag.insert(&format!("custom.{i}"), Value::Int64(i));
    }
    bag.insert("source.ip", Value::from("first"));
    bag.insert("request.path", Value::from("/a"));
    let ip = AttrName::new("source.ip");
    let custom = AttrName::new("custom.7");
    let absent = AttrName::new("source.uid");
    assert_eq!(bag.get_attr(&ip), Some(Value::from("first")));
    assert_eq!(bag.get("source.ip"), Some(Value::from("first")));
    assert_eq!(bag.get_attr(&custom), Some(Value::Int64(7)));
    assert_eq!(bag.get_attr(&absent), None);
    assert_eq!(bag.get("custom.300"), None);
    // Setting again replaces, wherever the entry is.
    bag.insert("source.ip", Value::from("second"));
    bag.insert("custom.7", Value::Int64(70));
    assert_eq!(bag.get_attr(&ip), Some(Value::from("second")));
    assert_eq!(bag.get("custom.7"), Some(Value::Int64(70)));
    assert_eq!(bag.len(), 302);

    // Equality does not depend on the order attributes were set in.
    let mut a = AttributeBag::new();
    a.insert("request.path", Value::from("/x"));
    a.insert("source.ip", Value::from("1"));
    let mut b = AttributeBag::new();
    b.insert("source.ip", Value::from("1"));
    b.insert("request.path", Value::from("/x"));
    assert_eq!(a, b);
    b.insert("request.path", Value::from("/y"));
    assert_ne!(a, b);

    // A merge overrides and adds.
    let mut delta = AttributeBag::new();
    delta.insert("request.path", Value::from("/z"));
    delta.insert("custom.name", Value::from("c"));
    a.merge(delta);
    assert_eq!(a.get("request.path"), Some(Value::from("/z")));
    assert_eq!(a.get("custom.name"), Some(Value::from("c")));
    assert_eq!(a.len(), 3);
}

#[test]
fn a_global_word_sent_in_the_message_list_is_found_by_its_compiled_name() {
    // A client that does not know the dictionary sends every name as its own word.
    let msg = CompressedAttributes {
        words: vec!["source.ip".into(), "x".into(), "request.path".into()],
        strings: BTreeMap::from([(-1, -2), (-3, -2)]),
        ..CompressedAttributes::default()
    };
    let bag = decode(&msg, 0, &[], &Manifest::standard());
    // source.ip is an IP address in the vocabulary: a string there is refused.
    assert!(matches!(bag, Err(WireError::WrongType { .. })), "{bag:?}");
    let msg = CompressedAttributes {
        words: vec!["request.path".into(), "/p".into()],
        strings: BTreeMap::from([(-1, -2)]),
        ..CompressedAttributes::default()
    };
    let bag = decode(&msg, 0, &[], &Manifest::standard()).unwrap();
    assert_eq!(
        bag.get_attr(&AttrName::new("request.path")),
        Some(Value::from("/p"))
    );
    // And a duplicate through both lists is caught.
    let msg = CompressedAttributes {
        words: vec!["request.path".into(), "/p".into()],
        strings: BTreeMap::from([(-1, -2), (g("request.path"), -2)]),
        ..CompressedAttributes::default()
    };
    assert!(matches!(
        decode(&msg, all(), &[], &Manifest::standard()),
        Err(WireError::Duplicate(_))
    ));
}

/// Both ways of reading an encoded Report: in place, and decoded by prost first;
/// each bag re-encoded (so that a NaN double compares equal to itself).
type Canonical = Option<Vec<Vec<u8>>>;

fn both_ways(bytes: &[u8]) -> (Canonical, Canonical) {
    use prost::Message;
    let types = Manifest::standard();
    let canonical = |bags: Vec<AttributeBag>| -> Vec<Vec<u8>> {
        bags.iter()
            .map(|b| encode(b, all()).encode_to_vec())
            .collect()
    };
    let raw = raw::decode_report(bytes, &types).ok().map(canonical);
    let decoded = ReportRequest::decode(bytes)
        .ok()
        .and_then(|req| decode_report(&req, &types).ok())
        .map(canonical);
    (raw, decoded)
}

fn report_of(
    bags: Vec<CompressedAttributes>,
    semantics: i32,
    default_words: Vec<String>,
    count: u32,
) -> Vec<u8> {
    use prost::Message;
    ReportRequest {
        attributes: bags,
        repeated_attributes_semantics: semantics,
        default_words,
        global_word_count: count,
    }
    .encode_to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn reports_read_in_place_give_the_bags_decoding_gives(
        bags in proptest::collection::vec(proptest::collection::btree_map(name(), value(), 0..12), 0..6),
        known in 0..=GLOBAL_WORDS.len(),
        semantics in 0i32..3,
        default_words in proptest::collection::vec("[a-z.]{0,6}", 0..3),
    ) {
        let count = u32::try_from(known).unwrap();
        let msgs = bags
            .iter()
            .map(|attrs| {
                let mut bag = AttributeBag::new();
                for (n, v) in attrs {
                    bag.insert(n, v.clone());
                }
                encode(&bag, count)
            })
            .collect();
        let bytes = report_of(msgs, semantics, default_words, count);
        let (raw, decoded) = both_ways(&bytes);
        prop_assert_eq!(raw, decoded);
    }

    #[test]
    fn malformed_and_odd_reports_are_judged_alike(
        words in proptest::collection::vec("[a-z.]{0,6}", 0..4),
        strings in proptest::collection::btree_map(-6i32..300, -6i32..300, 0..6),
        ints in proptest::collection::btree_map(-6i32..300, any::<i64>(), 0..3),
        bytes in proptest::collection::btree_map(-6i32..300, proptest::collection::vec(any::<u8>(), 0..17), 0..3),
        maps in proptest::collection::btree_map(-6i32..300, proptest::collection::btree_map(-6i32..300, -6i32..300, 0..3), 0..2),
        secs in any::<i64>(),
        nanos in any::<i32>(),
        count in 0u32..400,
        cut in any::<proptest::sample::Index>(),
        flip in any::<(proptest::sample::Index, u8)>(),
    ) {
        let mut msg = CompressedAttributes { words, strings, int64s: ints, bytes, ..Default::default() };
        msg.string_maps = maps
            .into_iter()
            .map(|(k, entries)| (k, WireStringMap { entries }))
            .collect();
        msg.timestamps.insert(-1, prost_types::Timestamp { seconds: secs, nanos });
        msg.durations.insert(-2, prost_types::Duration { seconds: secs, nanos });
        let good = report_of(vec![msg.clone(), msg], 1, Vec::new(), count);
        let (raw, decoded) = both_ways(&good);
        prop_assert_eq!(raw, decoded);
        // Cut short, or with a byte changed: the same verdict either way.
        let short = &good[..cut.index(good.len() + 1)];
        let (raw, decoded) = both_ways(short);
        prop_assert_eq!(raw, decoded);
        let mut changed = good.clone();
        if !changed.is_empty() {
            let at = flip.0.index(changed.len());
            changed[at] ^= flip.1;
        }
        let (raw, decoded) = both_ways(&changed);
        prop_assert_eq!(raw, decoded);
    }
}

#[test]
fn repeated_map_keys_and_unknown_fields_read_as_protobuf_reads_them() {
    // strings {k: request.path, v: "a"} twice with different values, an unknown
    // field (15, varint) in the message, and fields out of order.
    let path = u64::from((g("request.path") as u32) << 1);
    let mut msg = Vec::new();
    let entry = |v: u64| {
        let mut e = vec![0x08];
        push_varint(&mut e, path);
        e.push(0x10);
        push_varint(&mut e, v);
        e
    };
    for (i, v) in [(0, 1u64), (1, 3u64)] {
        let e = entry(v);
        msg.push(0x12);
        msg.push(u8::try_from(e.len()).unwrap());
        msg.extend(&e);
        if i == 0 {
            msg.extend([0x78, 0x05]); // field 15, varint 5
        }
    }
    // words after the maps: "a" (-1 -> zigzag 1), "b" (-2 -> zigzag 3).
    msg.extend([0x0a, 0x01, b'a', 0x0a, 0x01, b'b']);
    let mut report = vec![0x0a, u8::try_from(msg.len()).unwrap()];
    report.extend(&msg);
    report.extend([0x18]);
    push_varint(&mut report, u64::from(all()));
    let (raw, decoded) = both_ways(&report);
    assert_eq!(raw, decoded);
    let bags = raw::decode_report(&report, &Manifest::standard()).unwrap();
    assert_eq!(bags[0].get("request.path"), Some(Value::from("b")));
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
