#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

/// The full parser's tree for `doc`, if it accepts it.
fn full(doc: &str) -> Option<Node<'static>> {
    serde_norway::from_str::<serde_norway::Value>(doc)
        .ok()
        .map(Node::from_yaml)
}

/// Trees compared through `Debug`, which treats NaN as equal to itself and borrowed
/// and owned strings alike.
fn same(a: &Node<'_>, b: &Node<'_>) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Holds the fast reader to the full parser: whenever it produces a tree, the full
/// parser accepts the document and produces the same tree.
#[track_caller]
fn check_agrees(doc: &str) -> bool {
    match parse(doc) {
        Ok(fast) => {
            let slow = full(doc);
            assert!(
                slow.as_ref().is_some_and(|slow| same(&fast, slow)),
                "fast reader disagrees with the full parser on {doc:?}:\n fast: {fast:?}\n full: {slow:?}"
            );
            true
        }
        Err(Unsupported) => false,
    }
}

#[track_caller]
fn assert_fast(doc: &str) {
    assert!(
        check_agrees(doc),
        "expected the fast reader to handle {doc:?}"
    );
}

#[track_caller]
fn assert_unsupported(doc: &str) {
    assert_eq!(
        parse(doc).map(|_| ()),
        Err(Unsupported),
        "expected {doc:?} to be left to the full parser"
    );
}

#[test]
fn reads_block_mappings_and_sequences() {
    assert_fast("a: 1\nb:\n  c: x\n  d:\n  - 1\n  - two\ne: [1, \"2\", '3']\nf: {g: h, i: j}\n");
    assert_fast("hosts:\n- a\n- b\nname: x\n");
    assert_fast(
        "items:\n- name: a\n  value: 1\n- name: b\n  list:\n  - x\n  nested:\n    deep: true\n- plain\n-\n  k: v\n",
    );
    assert_fast("- a\n- b: c\n  d: e\n");
    assert_fast("key:\nother: ~\nlast: null\n");
    assert_fast("  indented: root\n  second: 2\n");
    assert_fast("a: 1 # comment\n# whole line\nb: \"x # y\" # c\nc: a#b\n");
    assert_fast("empty_seq: []\nempty_map: {}\nnested: [[1, 2], {a: b}]\n");
    assert_fast("\"quoted key\": 1\n'single': 2\n8080: port\n-1: neg\n");
    assert_fast(
        "url: https://example.com:8080/path?q=1\nexpr: a == \"b\" && c != d\nglob: /api/*\n",
    );
}

#[test]
fn resolves_scalars_like_the_full_parser() {
    let doc = "a: 1\nb: -2\nc: 1.5\nd: 1e3\ne: .inf\nf: -.inf\ng: .nan\nh: 0x1F\ni: 0o17\nj: 0b101\nk: 017\nl: +5\n\
               m: true\nn: False\no: yes\np: ~\nq: 1_000\nr: 10s\ns: 127.0.0.1\nt: 1.\nu: .5\nv: -0\nw: +.5\nx: inf\n\
               y: nan\nz: -0x10\naa: 99999999999999999999\nbb: 1.7976931348623157e309\n";
    // Every scalar either resolves as the full parser would, or the document is left
    // to it; check them one by one so one rare form does not hide the others.
    for line in doc.lines() {
        let one = format!("{line}\n");
        check_agrees(&one);
    }
    assert_fast("a: 1\nb: -2\nc: 1.5\nk: 017\nr: 10s\nm: true\no: yes\np: ~\ns: 127.0.0.1\n");
}

#[test]
fn unescapes_quoted_scalars() {
    assert_fast("a: \"tab\\there \\\"q\\\" \\\\ \\u00e9 \\x41 \\/\"\nb: 'it''s'\nc: \"\"\nd: ''\n");
    assert_fast("a: \"ünïcødé ✓\"\nb: plain ünï\n");
}

#[test]
fn leaves_the_rest_to_the_full_parser() {
    for doc in [
        "a: &anchor 1\nb: *anchor\n",
        "a: !tag x\n",
        "a: |\n  literal\n",
        "a: >\n  folded\n",
        "a: multi\n  line\n",
        "a: \"multi\n  line\"\n",
        "a: [1,\n  2]\n",
        "? complex\n: key\n",
        "a:\tb\n",
        "a: 1\r\nb: 2\r\n",
        "a: 1\na: 2\n",
        "<<: {a: 1}\n",
        "just a scalar\n",
        "- - nested\n",
        "a: b: c\n",
        "a: \"\\q\"\n",
        "a: [http://x]\n",
        "a: [1, 2,]\n",
        "a: \u{85}\n",
        "a:\n   b: 1\n  c: 2\n",
        "%YAML 1.2\na: 1\n",
        "a: @x\n",
        "a: -\n",
        "a: \"x\"y\n",
        "a: [b]c\n",
    ] {
        assert_unsupported(doc);
        // The full parser decides these documents, whatever it makes of them.
        let _ = full(doc);
    }
}

/// Regression (found by the `fast_yaml` fuzz target): a bracket inside a plain scalar
/// in a flow collection is a flow indicator to the full parser, which refuses
/// `{app: reviews, ver{ion: v1}`; the fast reader used to take `ver{ion` as a key.
#[test]
fn brackets_inside_flow_plain_scalars_are_left_to_the_full_parser() {
    for doc in [
        "labels: {app: reviews, ver{ion: v1}\n",
        "hosts: [a[b], c]\n",
        "hosts: [a{b]\n",
        "m: {k: v[1]}\n",
    ] {
        assert_unsupported(doc);
    }
    let set = crate::parse::parse_document_set(
        "t.yaml",
        "apiVersion: networking.istio.io/v1alpha3\nkind: Sidecar\nmetadata:\n  name: s\nspec:\n  workloadSelector:\n    labels: {app: reviews, ver{ion: v1}\n  egress:\n  - hosts: [\"./*\"]\n",
        &crate::parse::ParseOptions::default(),
    );
    assert!(set.accepted.is_empty());
    let message = set
        .errors()
        .next()
        .map(|e| e.message.clone())
        .unwrap_or_default();
    assert!(message.starts_with("invalid YAML"), "{message}");
}

#[test]
fn refuses_deep_nesting_without_recursing_far() {
    let deep = format!("a: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    assert_unsupported(&deep);
    let mut block = String::new();
    for depth in 0..200 {
        block.push_str(&" ".repeat(depth));
        block.push_str("a:\n");
    }
    assert_unsupported(&block);
}

#[test]
fn the_sample_configuration_takes_the_fast_path() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (_, doc) in crate::parse::split_documents(&text) {
            assert_fast(doc);
        }
    }
}

/// A line of YAML-ish text: indentation, an optional `- `, an optional key and an
/// optional value, each drawn from forms that hit the reader's corners.
fn yamlish_line() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "", "a", "b", "key", "a b", "-x", "01", "1", "1.5", "~", "true", "'q'", "\"d\"",
        "\"a: b\"", "k#", "é", "x y z",
    ]);
    let sep = prop::sample::select(vec![": ", ":", ":  "]);
    let value = prop::sample::select(vec![
        "",
        "v",
        "1",
        "-1",
        "0x1F",
        "0o7",
        "1.5",
        "1e3",
        ".inf",
        "-.inf",
        ".nan",
        "01",
        "+5",
        "-0",
        "~",
        "null",
        "True",
        "yes",
        "10s",
        "a b",
        "'s'",
        "'it''s'",
        "\"d\"",
        "\"\\u00e9\\t\"",
        "\"\\q\"",
        "[a, 1]",
        "{a: b}",
        "[]",
        "{}",
        "[a: b]",
        "[[1], {x: y}]",
        "a: b",
        "a #b",
        "a#b",
        "http://x",
        "[http://x]",
        "\"x\"y",
        "&a x",
        "*a",
        "!t x",
        "|",
        ">",
        "- x",
        "-",
        "a:",
        "é",
        "[a,",
        "{a: 1, a: 2}",
        "'unclosed",
        "\"unclosed",
        "# c",
        "x # c",
        "'q' # c",
        "[1, 2,]",
    ]);
    (
        prop::sample::select(vec![0usize, 0, 2, 2, 4, 1, 3]),
        any::<bool>(),
        key,
        sep,
        value,
    )
        .prop_map(|(indent, dash, key, sep, value)| {
            let mut line = " ".repeat(indent);
            if dash {
                line.push_str("- ");
            }
            if !key.is_empty() {
                line.push_str(key);
                line.push_str(sep);
            }
            line.push_str(value);
            line
        })
}

/// A random document tree, rendered in block style with random layout choices.
#[derive(Debug, Clone)]
enum Tree {
    Leaf(&'static str),
    Seq(Vec<Tree>),
    Map(Vec<(&'static str, Tree)>),
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop::sample::select(vec![
        "v",
        "1",
        "-2",
        "1.5",
        "~",
        "true",
        "'s'",
        "\"d\\\"q\"",
        "[a, 1]",
        "{a: b}",
        "[]",
        "{}",
        "a b",
        "10s",
        "x # c",
        "https://a:1/b",
        "é",
        "01",
        "''",
        "\"\"",
    ])
    .prop_map(Tree::Leaf);
    leaf.prop_recursive(4, 40, 4, |inner| {
        let key = prop::sample::select(vec!["a", "b", "c", "key", "'q'", "\"d\"", "1", "x y"]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Tree::Seq),
            prop::collection::vec((key, inner), 0..4).prop_map(Tree::Map),
        ]
    })
}

/// Renders `t` as the value of a key or item at `indent`; `style` picks layouts.
fn render(t: &Tree, indent: usize, style: &mut u64, out: &mut String) {
    fn flip(style: &mut u64) -> bool {
        *style = style.rotate_left(1);
        *style & 1 == 1
    }
    match t {
        Tree::Leaf(v) => {
            out.push(' ');
            out.push_str(v);
            out.push('\n');
        }
        Tree::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        Tree::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Tree::Seq(items) => {
            out.push('\n');
            let at = if flip(style) { indent } else { indent + 2 };
            for item in items {
                out.push_str(&" ".repeat(at));
                out.push('-');
                match item {
                    Tree::Map(entries) if !entries.is_empty() && flip(style) => {
                        // Compact `- key: value` item.
                        for (i, (k, v)) in entries.iter().enumerate() {
                            if i == 0 {
                                out.push(' ');
                            } else {
                                out.push_str(&" ".repeat(at + 2));
                            }
                            out.push_str(k);
                            out.push(':');
                            render(v, at + 2, style, out);
                        }
                    }
                    other => render(other, at + 2, style, out),
                }
            }
        }
        Tree::Map(entries) => {
            out.push('\n');
            for (k, v) in entries {
                out.push_str(&" ".repeat(indent + 2));
                out.push_str(k);
                out.push(':');
                render(v, indent + 2, style, out);
                if flip(style) && flip(style) {
                    out.push_str(&" ".repeat(indent));
                    out.push_str("# comment\n");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// Whatever the fast reader accepts, the full parser reads the same way.
    #[test]
    fn agrees_with_the_full_parser(lines in prop::collection::vec(yamlish_line(), 1..8)) {
        let mut doc = lines.join("\n");
        doc.push('\n');
        check_agrees(&doc);
    }

    /// Well-formed documents of any shape are read by the fast reader exactly as the
    /// full parser reads them.
    #[test]
    fn reads_random_trees_like_the_full_parser(t in tree(), style in any::<u64>()) {
        let mut doc = String::from("root:");
        let mut style = style;
        render(&t, 0, &mut style, &mut doc);
        check_agrees(&doc);
    }
}

#[test]
fn from_yaml_str_reads_with_either_reader_alike() {
    // Plain block YAML (fast reader) and YAML it leaves to the full parser (a block
    // scalar) give the same values as the full parser.
    for doc in [
        "a: 1\nb: [x, \"y\\u003cz\", {c: true}]\nd:\n- e: 2.5\n  f: null\n",
        "a: |\n  text\nb: &x 1\nc: *x\n",
    ] {
        let fast: serde_json::Value = crate::parse::from_yaml_str(doc).expect("reads");
        let full: serde_json::Value = serde_norway::from_str(doc).expect("reads");
        assert_eq!(fast, full, "{doc}");
    }
    assert!(crate::parse::from_yaml_str::<serde_json::Value>("a: [").is_err());
}
