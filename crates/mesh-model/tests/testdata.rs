//! The bookinfo-like sample configuration under `testdata/` parses, validates,
//! round-trips through JSON and analyses clean.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use mesh_model::{Kind, Level, ParseOptions, Resource, Spec, analyze, parse_document_set};

fn load_all() -> Vec<Resource> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "testdata files missing: {files:?}");
    let mut resources = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let set = parse_document_set(&name, &text, &ParseOptions::default());
        let errors: Vec<String> = set.errors().map(ToString::to_string).collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        resources.extend(set.accepted);
    }
    resources
}

#[test]
fn samples_parse_and_validate_without_errors() {
    let resources = load_all();
    for kind in Kind::ALL {
        assert!(
            resources.iter().any(|r| r.kind() == kind),
            "no {kind} in testdata"
        );
    }
}

#[test]
fn samples_analyse_without_findings() {
    let resources = load_all();
    let refs: Vec<&Resource> = resources.iter().collect();
    let messages = analyze(&refs);
    assert!(
        !messages.iter().any(|m| m.level == Level::Error),
        "{messages:#?}"
    );
    assert!(
        messages.is_empty(),
        "expected a clean analysis, got {messages:#?}"
    );
}

#[test]
fn samples_round_trip_through_json() {
    for r in load_all() {
        let json = r.spec.to_json();
        let back = Spec::from_json(r.kind(), &json).unwrap();
        assert_eq!(back, r.spec, "{}", String::from_utf8_lossy(&json));
        // Compact: nothing unset is written.
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(compact(&value), "{value}");
    }
}

/// No nulls, empty lists or empty strings anywhere.
fn compact(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => false,
        serde_json::Value::String(s) => !s.is_empty(),
        serde_json::Value::Array(a) => !a.is_empty() && a.iter().all(compact),
        serde_json::Value::Object(o) => o.values().all(compact),
        _ => true,
    }
}

#[test]
fn skipped_documents_are_reported() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let text = std::fs::read_to_string(dir.join("bookinfo-services.yaml")).unwrap();
    let set = parse_document_set("bookinfo-services.yaml", &text, &ParseOptions::default());
    assert_eq!(set.skipped.len(), 2);
    assert_eq!(set.accepted.len(), 5);
}
