//! Builders shared by the validation tests: a spec written as YAML becomes a full
//! document, is parsed and validated, and the errors are returned as `field: message`.

use crate::{
    error::ConfigError,
    kind::Kind,
    parse::{DocumentSet, ParseOptions, parse_document_set},
};

/// A full document of `kind` named `name` in namespace `ns` with the given spec YAML.
pub(crate) fn mk_doc(kind: Kind, ns: &str, name: &str, spec: &str) -> String {
    let mut doc = format!(
        "apiVersion: {}/{}\nkind: {}\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n",
        kind.group(),
        kind.canonical_version(),
        kind.as_str()
    );
    for line in spec.lines() {
        doc.push_str("  ");
        doc.push_str(line);
        doc.push('\n');
    }
    doc
}

/// Parses and validates one resource of `kind` with the given spec.
pub(crate) fn mk_set(kind: Kind, spec: &str) -> DocumentSet {
    parse_document_set(
        "test.yaml",
        &mk_doc(kind, "default", "example", spec),
        &ParseOptions::default(),
    )
}

/// The errors of one resource of `kind` with the given spec, as `field: message`.
pub(crate) fn errors(kind: Kind, spec: &str) -> Vec<String> {
    mk_set(kind, spec)
        .errors()
        .map(|e: &ConfigError| format!("{}: {}", e.field.as_deref().unwrap_or("-"), e.message))
        .collect()
}

/// Asserts the spec parses and validates without errors.
#[track_caller]
pub(crate) fn assert_clean(kind: Kind, spec: &str) {
    let errs = errors(kind, spec);
    assert!(errs.is_empty(), "expected no errors, got {errs:#?}");
}

/// Asserts some error is reported at exactly `field`.
#[track_caller]
pub(crate) fn assert_error_at(kind: Kind, spec: &str, field: &str) {
    let errs = errors(kind, spec);
    assert!(
        errs.iter()
            .any(|e| e.split_once(": ").is_some_and(|(f, _)| f == field)),
        "expected an error at {field}, got {errs:#?}"
    );
}

/// Asserts some error at exactly `field` mentions `text`.
#[track_caller]
pub(crate) fn assert_error_with(kind: Kind, spec: &str, field: &str, text: &str) {
    let errs = errors(kind, spec);
    assert!(
        errs.iter().any(|e| e
            .split_once(": ")
            .is_some_and(|(f, m)| f == field && m.contains(text))),
        "expected an error at {field} mentioning {text:?}, got {errs:#?}"
    );
}
