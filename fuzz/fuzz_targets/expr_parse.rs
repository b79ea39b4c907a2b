//! Arbitrary UTF-8 through mixer-core's expression parser: no panic; whatever
//! parses has a canonical text that parses back to the same tree; whatever
//! type-checks against a small vocabulary compiles and evaluates on a small
//! bag without panicking, the same way twice, `evaluate_bool` agreeing with
//! `evaluate`.

#![no_main]

use std::{collections::BTreeMap, sync::Arc};

use libfuzzer_sys::fuzz_target;
use mixer_core::{
    Value, ValueType,
    expr::{check, compile, parse},
};

fn vocab() -> BTreeMap<String, ValueType> {
    [
        ("ok", ValueType::Bool),
        ("host", ValueType::String),
        ("absent", ValueType::String),
        ("n", ValueType::Int64),
        ("x", ValueType::Double),
        ("headers", ValueType::StringMap),
        ("src.ip", ValueType::IpAddress),
        ("when", ValueType::Timestamp),
        ("blob", ValueType::Bytes),
        ("user", ValueType::EmailAddress),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn bag() -> BTreeMap<String, Value> {
    let headers: BTreeMap<String, String> = [("x-user", "jason"), ("ip", "10.0.0.1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    [
        ("ok", Value::Bool(true)),
        ("host", Value::from("reviews.default")),
        ("n", Value::Int64(7)),
        ("x", Value::Double(0.5)),
        ("headers", Value::StringMap(Arc::new(headers))),
        ("src.ip", Value::Ip([10, 0, 0, 1].into())),
        ("when", Value::Timestamp(std::time::UNIX_EPOCH)),
        ("blob", Value::Bytes(Arc::from(&b"ab"[..]))),
        ("user", Value::from("a@b.c")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expr) = parse(text) else {
        return;
    };
    let canonical = expr.to_string();
    match parse(&canonical) {
        Ok(again) => assert_eq!(again, expr, "{text:?} -> {canonical:?}"),
        Err(e) => panic!("{text:?} -> {canonical:?} does not parse: {e}"),
    }
    let vocab = vocab();
    let Ok(t) = check(&expr, &vocab) else {
        return;
    };
    let compiled = match compile(text, &vocab) {
        Ok(c) => c,
        Err(e) => panic!("{text:?} checks but does not compile: {e}"),
    };
    assert_eq!(compiled.result_type(), t);
    let bag = bag();
    let first = compiled.evaluate(&bag);
    assert_eq!(first, compiled.evaluate(&bag));
    if t == ValueType::Bool {
        let fast = compiled.evaluate_bool(&bag);
        assert_eq!(first.map(|v| v == Value::Bool(true)), fast);
    }
    let _ = compiled.probe_references(&bag);
});
