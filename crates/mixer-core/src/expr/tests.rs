//! Evaluator tests: every operator and function, absence and `|`, map index,
//! and properties of random well-typed expressions.

#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use proptest::prelude::*;

use super::*;
use crate::value::{Bag, Value, ValueType};

fn mk_vocab() -> BTreeMap<String, ValueType> {
    [
        ("ok", ValueType::Bool),
        ("no", ValueType::Bool),
        ("host", ValueType::String),
        ("path", ValueType::String),
        ("missing.str", ValueType::String),
        ("missing.bool", ValueType::Bool),
        ("missing.map", ValueType::StringMap),
        ("count", ValueType::Int64),
        ("ratio", ValueType::Double),
        ("headers", ValueType::StringMap),
        ("src.ip", ValueType::IpAddress),
        ("when", ValueType::Timestamp),
        ("took", ValueType::Duration),
        ("user", ValueType::EmailAddress),
        ("name", ValueType::DnsName),
        ("link", ValueType::Uri),
        ("blob", ValueType::Bytes),
        ("bad.type", ValueType::String),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn mk_bag() -> BTreeMap<String, Value> {
    let headers: BTreeMap<String, String> = [("x-user", "jason"), ("x-empty", "")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    [
        ("ok", Value::Bool(true)),
        ("no", Value::Bool(false)),
        ("host", Value::from("reviews.default.svc.cluster.local")),
        ("path", Value::from("/api/v1/books")),
        ("count", Value::Int64(42)),
        ("ratio", Value::Double(0.5)),
        ("headers", Value::StringMap(Arc::new(headers))),
        ("src.ip", Value::Ip(ip)),
        (
            "when",
            Value::Timestamp(UNIX_EPOCH + Duration::from_secs(1_420_211_045)),
        ),
        ("took", Value::Duration(Duration::from_millis(10))),
        ("user", Value::from("jason@example.com")),
        ("name", Value::from("reviews.default")),
        ("link", Value::from("http://example.com/")),
        ("blob", Value::Bytes(Arc::from(&b"abc"[..]))),
        ("bad.type", Value::Int64(1)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn eval(text: &str) -> Result<Value, EvalError> {
    let c = compile(text, &mk_vocab()).unwrap_or_else(|e| panic!("{text}: {e}"));
    c.evaluate(&mk_bag())
}

fn truth(text: &str) -> bool {
    let c = compile(text, &mk_vocab()).unwrap_or_else(|e| panic!("{text}: {e}"));
    let fast = c
        .evaluate_bool(&mk_bag())
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(c.evaluate(&mk_bag()).unwrap(), Value::Bool(fast), "{text}");
    fast
}

#[test]
fn boolean_operators() {
    assert!(truth("ok && !no"));
    assert!(!truth("ok && no"));
    assert!(truth("no || ok"));
    assert!(!truth("no || !ok"));
    assert!(truth("!!ok"));
    // Short circuit: the missing attribute is never read.
    assert!(truth("ok || missing.bool"));
    assert!(!truth("no && missing.bool"));
}

#[test]
fn equality_of_each_type() {
    assert!(truth("host == \"reviews.default.svc.cluster.local\""));
    assert!(truth("host != \"ratings\""));
    assert!(truth("count == 42 && count != 41"));
    assert!(truth("ratio == 0.5"));
    assert!(truth("ok == true && no != true"));
    assert!(truth("src.ip == ip(\"10.0.0.1\")"));
    assert!(truth("src.ip == ip(\"::ffff:10.0.0.1\")"));
    assert!(truth("src.ip != ip(\"10.0.0.2\")"));
    assert!(truth("when == timestamp(\"2015-01-02T15:04:05Z\")"));
    assert!(truth("when == timestamp(\"2015-01-02T16:04:05+01:00\")"));
    assert!(truth("took == took"));
    assert!(truth("headers == headers"));
    assert!(truth("user == email(\"jason@example.com\")"));
    assert!(truth("name == dnsName(\"reviews.default\")"));
    assert!(truth("link == uri(\"http://example.com/\")"));
    assert!(truth("host == host && path != host"));
}

#[test]
fn map_index_and_default() {
    assert_eq!(eval("headers[\"x-user\"]").unwrap(), Value::from("jason"));
    assert!(truth("headers[\"x-user\"] | \"\" == \"jason\""));
    assert!(truth("headers[\"x-nope\"] | \"dflt\" == \"dflt\""));
    assert!(truth("headers[\"x-empty\"] | \"dflt\" == \"\""));
    assert!(truth("missing.str | host == host"));
    assert!(truth("missing.str | missing.str | \"z\" == \"z\""));
    assert!(truth("missing.map[\"k\"] | \"d\" == \"d\""));
    assert!(truth("headers[path | \"x-user\"] | \"d\" == \"d\""));
    assert!(truth("headers[missing.str | \"x-user\"] == \"jason\""));
    assert!(truth("missing.bool | ok"));
    assert_eq!(eval("missing.str | \"v\"").unwrap(), Value::from("v"));
    assert_eq!(
        eval("headers[\"x-nope\"]"),
        Err(EvalError::KeyNotFound {
            map: Some("headers".into()),
            key: "x-nope".into()
        })
    );
    assert_eq!(
        eval("headers[\"a\" | \"b\"]").unwrap_err().to_string(),
        "key `a` not found in `headers`"
    );
    assert_eq!(
        eval("missing.str == \"a\""),
        Err(EvalError::AttributeNotFound {
            name: "missing.str".into()
        })
    );
    assert!(eval("missing.str == \"a\"").unwrap_err().is_absence());
    assert_eq!(
        eval("conditional(ok, headers, headers)[\"zz\"]"),
        Err(EvalError::KeyNotFound {
            map: None,
            key: "zz".into()
        })
    );
}

#[test]
fn functions() {
    assert!(truth("match(path, \"/api/*\")"));
    assert!(truth("match(host, \"*.cluster.local\")"));
    assert!(!truth("match(path, \"/api\")"));
    assert!(truth("match(path, path)"));
    assert!(truth("match(path, conditional(ok, \"/api*\", \"x\"))"));
    assert!(truth(
        "path.startsWith(\"/api/\") && path.endsWith(\"books\")"
    ));
    assert!(!truth("path.startsWith(\"/x\")"));
    assert!(truth("path.startsWith(conditional(ok, \"/a\", \"/b\"))"));
    assert!(truth("path.endsWith(path)"));
    assert!(truth("headers[\"x-user\"].startsWith(\"ja\")"));
    assert_eq!(eval("conditional(ok, 1, 2)").unwrap(), Value::Int64(1));
    assert_eq!(eval("conditional(no, 1, 2)").unwrap(), Value::Int64(2));
    assert!(truth("conditional(no, missing.bool, ok)"));
    assert_eq!(eval("size(headers)").unwrap(), Value::Int64(2));
    assert_eq!(eval("size(path)").unwrap(), Value::Int64(13));
    assert_eq!(eval("size(blob)").unwrap(), Value::Int64(3));
    assert_eq!(eval("size(headers[\"x-user\"])").unwrap(), Value::Int64(5));
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    assert_eq!(eval("ip(\"10.0.0.1\")").unwrap(), Value::Ip(ip));
    assert_eq!(
        eval("ip(headers[\"x-nope\"] | \"10.0.0.1\")").unwrap(),
        Value::Ip(ip)
    );
    assert!(matches!(
        eval("ip(headers[\"x-user\"])"),
        Err(EvalError::Conversion { func: "ip", .. })
    ));
    assert!(matches!(
        eval("timestamp(host)"),
        Err(EvalError::Conversion { .. })
    ));
    assert!(eval("email(host)").is_err());
    assert_eq!(
        eval("dnsName(host)").unwrap(),
        Value::from("reviews.default.svc.cluster.local")
    );
    assert!(eval("uri(host)").is_err());
    assert_eq!(
        eval("uri(headers[\"x-link\"] | \"http://example.com/\")").unwrap(),
        Value::from("http://example.com/")
    );
    assert_eq!(
        eval("timestamp(\"1970-01-01T00:00:01Z\")").unwrap(),
        Value::Timestamp(UNIX_EPOCH + Duration::from_secs(1))
    );
}

#[test]
fn bag_values_of_the_wrong_type_fail_cleanly() {
    assert!(matches!(
        eval("bad.type == \"1\""),
        Err(EvalError::WrongType {
            expected: ValueType::String,
            found: ValueType::Int64
        })
    ));
    let c = compile("count", &mk_vocab()).unwrap();
    assert!(c.evaluate_bool(&mk_bag()).is_err());
}

#[test]
fn compile_errors_carry_columns() {
    let e = compile("ok && count", &mk_vocab()).unwrap_err();
    assert_eq!(e.offset(), 6);
    assert!(
        e.to_string().starts_with("column 7: `count` is INT64"),
        "{e}"
    );
    let e = compile("ok &&", &mk_vocab()).unwrap_err();
    assert!(matches!(e, ExprError::Parse(_)));
    let e = compile("ok && ip(\"nope\") == src.ip", &mk_vocab()).unwrap_err();
    assert!(matches!(e, ExprError::Check { column: 7, .. }), "{e}");
}

#[test]
fn referenced_attributes_and_presence() {
    let c = compile(
        "host == \"a\" && headers[\"x-user\"] | \"\" == \"jason\" || missing.str | host == path",
        &mk_vocab(),
    )
    .unwrap();
    let refs: Vec<_> = c
        .referenced_attributes()
        .iter()
        .map(|r| (r.name.as_str(), r.key.as_deref(), r.rescued))
        .collect();
    assert_eq!(
        refs,
        [
            ("headers", Some("x-user"), true),
            ("host", None, false),
            ("missing.str", None, true),
            ("path", None, false),
        ]
    );
    let presence: Vec<bool> = c
        .probe_references(&mk_bag())
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(presence, [true, true, false, true]);
    assert_eq!(c.result_type(), ValueType::Bool);
    assert!(c.source().starts_with("host =="));
}

/// A bag of generated values for the vocabulary of [`mk_vocab`].
fn arb_bag() -> impl Strategy<Value = BTreeMap<String, Value>> {
    let text = prop::sample::select(vec!["", "a", "ab", "/api/x", "10.0.0.1", "x-user"]);
    (
        prop::option::of(any::<bool>()),
        prop::option::of(text.clone()),
        prop::option::of(text.clone()),
        prop::option::of(-3i64..3),
        prop::option::of(prop::collection::btree_map(text.clone(), text, 0..3)),
    )
        .prop_map(|(ok, host, path, count, headers)| {
            let mut bag = BTreeMap::new();
            if let Some(b) = ok {
                bag.insert("ok".to_string(), Value::Bool(b));
            }
            if let Some(h) = host {
                bag.insert("host".to_string(), Value::from(h));
            }
            if let Some(p) = path {
                bag.insert("path".to_string(), Value::from(p));
            }
            if let Some(c) = count {
                bag.insert("count".to_string(), Value::Int64(c));
            }
            if let Some(h) = headers {
                let m = h
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                bag.insert("headers".to_string(), Value::StringMap(Arc::new(m)));
            }
            bag
        })
}

/// Well-typed STRING expressions.
fn arb_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("host".to_string()),
        Just("path".to_string()),
        Just("missing.str".to_string()),
        prop::sample::select(vec!["\"\"", "\"a\"", "\"/api/*\"", "`x-user`", "\"*a\""])
            .prop_map(str::to_string),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} | {b}")),
            inner.clone().prop_map(|k| format!("headers[{k}]")),
            (arb_leaf_bool(), inner.clone(), inner)
                .prop_map(|(c, a, b)| format!("conditional({c}, {a}, {b})")),
        ]
    })
}

fn arb_leaf_bool() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["ok", "true", "false", "missing.bool", "(count == 1)"])
        .prop_map(str::to_string)
}

/// Well-typed BOOL expressions.
fn arb_bool() -> impl Strategy<Value = String> {
    arb_leaf_bool().prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} && {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} || {b})")),
            inner.clone().prop_map(|a| format!("!({a})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("(({a}) | ({b})) == ({a})")),
            (arb_text(), arb_text()).prop_map(|(a, b)| format!("({a}) == ({b})")),
            (arb_text(), arb_text()).prop_map(|(a, b)| format!("match({a}, {b})")),
            (arb_text(), arb_text()).prop_map(|(a, b)| format!("({a}).startsWith({b})")),
            (arb_text(), arb_text()).prop_map(|(a, b)| format!("({a}).endsWith({b})")),
            arb_text().prop_map(|a| format!("size({a}) != 0")),
        ]
    })
}

proptest! {
    #[test]
    fn well_typed_expressions_never_panic_and_are_deterministic(
        text in arb_bool(),
        bag in arb_bag(),
    ) {
        let vocab = mk_vocab();
        let c = compile(&text, &vocab).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        let first = c.evaluate(&bag);
        prop_assert_eq!(&first, &c.evaluate(&bag));
        let fast = c.evaluate_bool(&bag);
        prop_assert_eq!(first.map(|v| v == Value::Bool(true)), fast.clone());
        // The canonical text parses back to the same tree and evaluates alike.
        let e = parse(&text).unwrap();
        let again = parse(&e.to_string()).unwrap();
        prop_assert_eq!(&e, &again);
        let c2 = compile(&e.to_string(), &vocab).unwrap();
        prop_assert_eq!(fast, c2.evaluate_bool(&bag));
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,64}") {
        if let Ok(e) = parse(&text) {
            prop_assert_eq!(parse(&e.to_string()).ok(), Some(e));
        }
        let _ = compile(&text, &mk_vocab()).map(|c| c.evaluate(&mk_bag()));
    }
}

/// A bag whose reads are counted, to show `Bag` stays object safe here.
#[test]
fn any_bag_implementation_works() {
    struct One;
    impl Bag for One {
        fn get(&self, name: &str) -> Option<Value> {
            (name == "host").then(|| Value::from("h"))
        }
    }
    let c = compile("host == \"h\" && missing.str | \"\" == \"\"", &mk_vocab()).unwrap();
    assert!(c.evaluate_bool(&One).unwrap());
}

#[test]
fn compiled_expressions_are_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Compiled>();
    assert_send_sync::<ExprError>();
}

#[test]
fn trees_at_the_size_limits_evaluate() {
    let chain = vec!["no"; MAX_DEPTH - 1].join(" || ") + " || ok";
    assert!(truth(&chain));
    let mut nested = "headers[\"x-nope\"] | path".to_string();
    for _ in 0..(MAX_NESTING / 2 - 1) {
        nested = format!("conditional(ok, ({nested}) | host, host)");
    }
    assert_eq!(eval(&nested).unwrap(), Value::from("/api/v1/books"));
}

#[test]
fn duration_literals_stand_beside_durations() {
    let vocab = mk_vocab();
    let c = compile(r#"missing.took | "1.5s""#, &vocab);
    // An unknown attribute is still an error.
    assert!(c.is_err());
    let mut vocab = vocab;
    vocab.insert("missing.took".into(), ValueType::Duration);
    let c = compile(r#"missing.took | "1.5s""#, &vocab).unwrap();
    assert_eq!(c.result_type(), ValueType::Duration);
    assert_eq!(
        c.evaluate(&mk_bag()).unwrap(),
        Value::Duration(Duration::from_millis(1500))
    );
    // `took` is 10ms in the test bag.
    let literal = "10ms";
    for text in [
        format!(r#"took == "{literal}""#),
        format!(r#""{literal}" == took"#),
        format!(r#"conditional(ok, took, "{literal}") == took"#),
        format!(r#"conditional(ok, "{literal}", took) == took"#),
    ] {
        let c = compile(&text, &vocab).unwrap();
        assert!(c.evaluate_bool(&mk_bag()).unwrap(), "{text}");
    }
    // Text that is not a duration is not one.
    assert!(compile(r#"took | "soon""#, &vocab).is_err());
    assert!(compile(r#"took == "10""#, &vocab).is_err());
}

#[test]
fn go_durations_parse() {
    use super::text::parse_duration;
    let ms = |n: u64| Some(Duration::from_millis(n));
    assert_eq!(parse_duration("0ms"), ms(0));
    assert_eq!(parse_duration("0"), ms(0));
    assert_eq!(parse_duration("1.5s"), ms(1500));
    assert_eq!(parse_duration("2h45m"), ms((2 * 3600 + 45 * 60) * 1000));
    assert_eq!(parse_duration("300us"), Some(Duration::from_micros(300)));
    for bad in ["", "10", "s", "1.2.3s", "5 s", "10d", "-1s"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}
