#![allow(clippy::unwrap_used)]

use mesh_model::{Level, ParseOptions, parse_document_set};

use super::*;

/// Parses `yaml` (every document must be valid) and analyses it.
fn run(yaml: &str) -> Vec<AnalysisMessage> {
    let set = parse_document_set("t.yaml", yaml, &ParseOptions::default());
    let errs: Vec<_> = set.errors().map(ToString::to_string).collect();
    assert!(errs.is_empty(), "{errs:#?}");
    let resources: Vec<&Resource> = set.accepted.iter().collect();
    analyze(&resources)
}

/// (code, resource name, field) of each message.
fn found(yaml: &str) -> Vec<(&'static str, String, Option<String>)> {
    run(yaml)
        .into_iter()
        .map(|m| (m.code, m.resource.name, m.field))
        .collect()
}

fn mk_rule(name: &str, match_expr: &str) -> String {
    format!(
        "apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: {name}, namespace: istio-system}}
spec:
  match: '{match_expr}'
"
    )
}

fn mk_instance(name: &str, template: &str, params: &str) -> String {
    format!(
        "apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: {name}, namespace: istio-system}}
spec:
  compiledTemplate: {template}
  params:
{params}"
    )
}

fn one(yaml: &str, name: &str, field: &str) -> AnalysisMessage {
    let messages = run(yaml);
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let m = messages.into_iter().next().unwrap();
    assert_eq!(
        (m.code, m.name, m.level),
        ("GAL0111", "MixerExpressionInvalid", Level::Error)
    );
    assert_eq!(m.resource.name, name);
    assert_eq!(m.field.as_deref(), Some(field));
    m
}

const MANIFEST: &str = "apiVersion: config.istio.io/v1alpha2
kind: attributemanifest
metadata: {name: shop, namespace: istio-system}
spec:
  attributes:
    shop.tier: {valueType: STRING}
    shop.vip: {valueType: BOOL}
";

#[test]
fn well_typed_config_has_no_findings() {
    let yaml = [
        MANIFEST.to_string(),
        mk_rule(
            "deny",
            r#"request.headers["x-user"] | "" == "jason" && shop.vip"#,
        ),
        "apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: everything, namespace: istio-system}
spec: {}
"
        .to_string(),
        mk_instance("version", "listentry", "    value: source.labels[\"version\"] | \"unknown\"\n"),
        mk_instance(
            "count",
            "quota",
            "    dimensions:\n      destination: destination.service.host | \"unknown\"\n      tier: shop.tier | \"\"\n",
        ),
        mk_instance(
            "requests",
            "metric",
            "    value: \"1\"\n    dimensions:\n      code: response.code | 200\n",
        ),
        mk_instance(
            "access",
            "logentry",
            "    severity: '\"info\"'\n    timestamp: request.time\n    variables:\n      path: request.path | \"\"\n      size: request.size | 0\n",
        ),
        mk_instance(
            "span",
            "tracespan",
            "    traceId: request.headers[\"x-b3-traceid\"] | \"\"\n    startTime: request.time\n    rewriteClientSpanId: false\n    spanTags:\n      http.method: request.method | \"\"\n",
        ),
        mk_instance("nothing", "checknothing", "    {}\n"),
        // Not a template this analyzer knows: left alone.
        mk_instance("custom", "mytemplate", "    value: \"((\"\n"),
    ]
    .join("---\n");
    assert_eq!(run(&yaml), Vec::new());
}

#[test]
fn a_match_of_mismatched_types_is_reported_with_its_column() {
    let m = one(&mk_rule("bad", "source.name == 3"), "bad", "spec.match");
    assert!(m.message.contains("column "), "{}", m.message);
    assert!(m.message.contains("source.name == 3"), "{}", m.message);

    let m = one(
        &mk_rule("bad", r#"request.size == "x""#),
        "bad",
        "spec.match",
    );
    assert!(m.message.contains("column "), "{}", m.message);
}

#[test]
fn a_match_that_is_not_bool_names_its_type() {
    let m = one(&mk_rule("bad", "source.name"), "bad", "spec.match");
    assert!(m.message.contains("BOOL"), "{}", m.message);
    assert!(m.message.contains("STRING"), "{}", m.message);
}

#[test]
fn an_unparsable_or_unknown_match_is_reported() {
    let m = one(&mk_rule("bad", "source.name == "), "bad", "spec.match");
    assert!(m.message.contains("column "), "{}", m.message);
    let m = one(&mk_rule("bad", "nosuch.attribute"), "bad", "spec.match");
    assert!(m.message.contains("nosuch.attribute"), "{}", m.message);
}

#[test]
fn listentry_needs_a_valid_value() {
    one(
        &mk_instance("l", "listentry", "    value: source.labels == 1\n"),
        "l",
        "spec.params.value",
    );
    let m = one(
        &mk_instance("l", "listentry", "    other: source.name\n"),
        "l",
        "spec.params.value",
    );
    assert!(m.message.contains("required"), "{}", m.message);
}

#[test]
fn quota_dimensions_are_expressions() {
    one(
        &mk_instance(
            "q",
            "quota",
            "    dimensions:\n      source: source.name | 7\n      ok: source.name\n",
        ),
        "q",
        "spec.params.dimensions.source",
    );
    let m = one(
        &mk_instance("q", "quota", "    dimensions:\n      n: 3\n"),
        "q",
        "spec.params.dimensions.n",
    );
    assert!(m.message.contains("a number"), "{}", m.message);
}

#[test]
fn metric_value_and_dimensions_are_checked() {
    one(
        &mk_instance("m", "metric", "    value: request.size +\n"),
        "m",
        "spec.params.value",
    );
    one(
        &mk_instance(
            "m",
            "metric",
            "    value: \"1\"\n    dimensions:\n      user: request.nosuch\n",
        ),
        "m",
        "spec.params.dimensions.user",
    );
}

#[test]
fn logentry_fields_are_checked_with_their_types() {
    one(
        &mk_instance(
            "log",
            "logentry",
            "    variables:\n      who: source.name == 1\n",
        ),
        "log",
        "spec.params.variables.who",
    );
    let m = one(
        &mk_instance("log", "logentry", "    timestamp: request.path\n"),
        "log",
        "spec.params.timestamp",
    );
    assert!(m.message.contains("TIMESTAMP"), "{}", m.message);
    one(
        &mk_instance("log", "logentry", "    severity: request.size\n"),
        "log",
        "spec.params.severity",
    );
}

#[test]
fn tracespan_fields_written_as_strings_are_checked() {
    one(
        &mk_instance(
            "t",
            "tracespan",
            "    spanName: request.nosuch\n    clientSpan: true\n",
        ),
        "t",
        "spec.params.spanName",
    );
    one(
        &mk_instance(
            "t",
            "tracespan",
            "    spanTags:\n      user: source.name ==\n",
        ),
        "t",
        "spec.params.spanTags.user",
    );
}

#[test]
fn the_template_field_is_read_when_compiled_template_is_empty() {
    let yaml = "apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: l, namespace: istio-system}
spec:
  template: listentry
  params: {value: 'source.name == 3'}
";
    one(yaml, "l", "spec.params.value");
}

#[test]
fn attributes_an_attributemanifest_declares_are_known() {
    let rule = mk_rule("vip", "shop.vip");
    one(&rule, "vip", "spec.match");
    assert_eq!(run(&format!("{MANIFEST}---\n{rule}")), Vec::new());
}

#[test]
fn an_attributemanifest_that_cannot_extend_the_vocabulary_is_reported() {
    let yaml = "apiVersion: config.istio.io/v1alpha2
kind: attributemanifest
metadata: {name: clash, namespace: istio-system}
spec:
  attributes:
    source.name: {valueType: INT64}
";
    let m = one(yaml, "clash", "spec.attributes.source.name");
    assert!(m.message.contains("STRING"), "{}", m.message);
}

#[test]
fn messages_are_sorted_by_resource() {
    let yaml = [mk_rule("b", "source.name"), mk_rule("a", "1")].join("---\n");
    assert_eq!(
        found(&yaml),
        vec![
            ("GAL0111", "a".to_string(), Some("spec.match".to_string())),
            ("GAL0111", "b".to_string(), Some("spec.match".to_string())),
        ]
    );
}
