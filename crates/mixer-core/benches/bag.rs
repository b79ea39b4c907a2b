//! Attribute bags per Check: decoding a realistic 20-attribute compressed bag (the
//! shape `mesh-load mixer` sends, with a 5-entry `request.headers` map, a
//! timestamp and two names from the message's own word list) against the
//! standard vocabulary, then reading 15 attributes from it as a policy does.
//!
//! `before/*` is the decoder as it was before the bag became a hash map keyed by
//! unallocated dictionary words (kept here, trimmed to the slots this bag uses,
//! as a baseline in the same run): a `BTreeMap<Arc<str>, Value>`, every name
//! copied, types looked up in a `BTreeMap<String, ValueType>`.

#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    hint::black_box,
    net::IpAddr,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mixer_core::{
    AttributeTypes, Bag, Value, ValueType,
    dictionary::GLOBAL_WORDS,
    manifest::Manifest,
    wire::{AttributeBag, CompressedAttributes, decode, encode},
};

/// The 20 attributes.
fn bag() -> AttributeBag {
    let ip = |last: u8| Value::Ip(IpAddr::from([10, 1, 0, last]));
    let mut b = AttributeBag::new();
    b.insert("source.ip", ip(7));
    b.insert("source.port", Value::Int64(43_210));
    b.insert("source.namespace", Value::from("load"));
    b.insert(
        "source.principal",
        Value::from("cluster.local/ns/load/sa/client"),
    );
    b.insert(
        "source.labels",
        Value::string_map([("app", "client"), ("version", "v2")]),
    );
    b.insert("destination.ip", ip(9));
    b.insert("destination.port", Value::Int64(8080));
    b.insert("destination.namespace", Value::from("load"));
    b.insert(
        "destination.service.host",
        Value::from("svc-7.load.svc.cluster.local"),
    );
    b.insert("destination.labels", Value::string_map([("app", "server")]));
    b.insert("request.method", Value::from("GET"));
    b.insert("request.path", Value::from("/api/7/items"));
    b.insert("request.scheme", Value::from("http"));
    b.insert("request.id", Value::from("req-7"));
    b.insert("request.size", Value::Int64(512));
    b.insert(
        "request.time",
        Value::Timestamp(std::time::UNIX_EPOCH + Duration::new(1_700_000_000, 123)),
    );
    b.insert(
        "request.headers",
        Value::string_map([
            ("x-user", "jason"),
            (":authority", "server.load"),
            ("user-agent", "mesh-load"),
            ("accept", "*/*"),
            ("x-request-id", "req-7"),
        ]),
    );
    b.insert("connection.mtls", Value::Bool(true));
    // Names outside the global dictionary travel in the message's word list.
    b.insert("myapp.tenant", Value::from("acme"));
    b.insert("myapp.retries", Value::Int64(2));
    b
}

/// What a policy reads: 13 present attributes, 2 absent.
const READS: [&str; 15] = [
    "destination.service.host",
    "request.method",
    "request.path",
    "source.namespace",
    "source.labels",
    "request.headers",
    "source.ip",
    "destination.ip",
    "destination.port",
    "source.principal",
    "destination.namespace",
    "request.scheme",
    "myapp.tenant",
    "context.reporter.uid",
    "request.auth.principal",
];

fn reads(bag: &AttributeBag) -> usize {
    READS
        .iter()
        .filter(|n| bag.get(black_box(n)).is_some())
        .count()
}

/// The decoder before: ordered maps, every name copied.
mod before {
    use super::*;

    /// The bag before.
    pub struct OldBag(pub BTreeMap<Arc<str>, Value>);

    impl Bag for OldBag {
        fn get(&self, name: &str) -> Option<Value> {
            self.0.get(name).cloned()
        }
    }

    fn word<'a>(local: &'a [String], global: &'a [&'static str], i: i32) -> Option<&'a str> {
        if i >= 0 {
            usize::try_from(i).ok().and_then(|i| global.get(i).copied())
        } else {
            usize::try_from(-(i64::from(i)) - 1)
                .ok()
                .and_then(|i| local.get(i).map(String::as_str))
        }
    }

    /// `wire::decode` as it was, for the slots the bench's bag uses.
    pub fn decode(
        msg: &CompressedAttributes,
        global_word_count: u32,
        types: &dyn AttributeTypes,
    ) -> Option<OldBag> {
        let global = GLOBAL_WORDS.get(..usize::try_from(global_word_count).ok()?)?;
        let w = |i: i32| word(&msg.words, global, i);
        let mut bag = BTreeMap::new();
        let mut put = |name: &str, value: Value| -> Option<()> {
            let value = match (types.type_of(name), value) {
                (None, v) => v,
                (Some(ValueType::IpAddress), Value::Bytes(b)) => {
                    let a: [u8; 4] = (*b).try_into().ok()?;
                    Value::Ip(IpAddr::from(a))
                }
                (Some(d), v) if v.value_type() == d || d.is_text() => v,
                _ => return None,
            };
            bag.insert(Arc::from(name), value).is_none().then_some(())
        };
        for (k, v) in &msg.strings {
            put(w(*k)?, Value::from(w(*v)?))?;
        }
        for (k, v) in &msg.int64s {
            put(w(*k)?, Value::Int64(*v))?;
        }
        for (k, v) in &msg.bools {
            put(w(*k)?, Value::Bool(*v))?;
        }
        for (k, v) in &msg.timestamps {
            let nanos = u32::try_from(v.nanos).ok()?;
            let t = UNIX_EPOCH.checked_add(Duration::new(u64::try_from(v.seconds).ok()?, nanos))?;
            put(w(*k)?, Value::Timestamp(t))?;
        }
        for (k, v) in &msg.bytes {
            put(w(*k)?, Value::Bytes(Arc::from(v.as_slice())))?;
        }
        for (k, v) in &msg.string_maps {
            let mut map = BTreeMap::new();
            for (mk, mv) in &v.entries {
                map.insert(w(*mk)?.to_string(), w(*mv)?.to_string());
            }
            put(w(*k)?, Value::StringMap(Arc::new(map)))?;
        }
        Some(OldBag(bag))
    }
}

fn reads_before(bag: &before::OldBag) -> usize {
    READS
        .iter()
        .filter(|n| bag.get(black_box(n)).is_some())
        .count()
}

fn wire() -> (CompressedAttributes, u32) {
    let words = u32::try_from(GLOBAL_WORDS.len()).unwrap();
    let msg = encode(&bag(), words);
    assert_eq!(bag().len(), 20);
    assert!(
        msg.words.iter().any(|w| w == "myapp.tenant"),
        "a name travels as a message word"
    );
    (msg, words)
}

fn bench(c: &mut Criterion) {
    let (msg, words) = wire();
    let types = Manifest::standard();
    let decoded = decode(&msg, words, &[], &types).unwrap();
    assert_eq!(decoded, bag());
    assert_eq!(reads(&decoded), 13);

    // The vocabulary as it was stored before.
    let old_types: BTreeMap<String, ValueType> =
        types.iter().map(|(n, t)| (n.to_string(), t)).collect();
    let old = before::decode(&msg, words, &old_types).unwrap();
    assert_eq!(old.0.len(), 20);
    for (name, value) in decoded.iter() {
        assert_eq!(old.get(name).as_ref(), Some(value), "{name}");
    }
    assert_eq!(reads_before(&old), 13);

    let mut group = c.benchmark_group("bag");
    group.throughput(Throughput::Elements(1));
    group.bench_function("before/decode_20", |b| {
        b.iter(|| before::decode(black_box(&msg), words, &old_types).unwrap())
    });
    group.bench_function("before/get_15", |b| {
        b.iter(|| reads_before(black_box(&old)))
    });
    group.bench_function("before/decode_20_get_15", |b| {
        b.iter(|| reads_before(&before::decode(black_box(&msg), words, &old_types).unwrap()))
    });
    group.bench_function("decode_20", |b| {
        b.iter(|| decode(black_box(&msg), words, &[], &types).unwrap())
    });
    group.bench_function("get_15", |b| b.iter(|| reads(black_box(&decoded))));
    group.bench_function("decode_20_get_15", |b| {
        b.iter(|| reads(&decode(black_box(&msg), words, &[], &types).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
