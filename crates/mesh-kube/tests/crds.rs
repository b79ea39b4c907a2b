//! The Istio CRDs under `charts/dromon/crds/`:
//!
//! - the committed files are exactly what the generator writes now;
//! - each passes `kubernetes-validate --strict` for Kubernetes 1.31 (the validator is
//!   in the repository's `.venv`, installed by `scripts/install-test-deps.sh`);
//! - every sample resource (`examples/`, `tests/fixtures/`) decodes into its Rust
//!   custom resource type, serializes back without losing a field, and what it
//!   serializes to passes galley's validation.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use mesh_kube::crds::{self, IstioResource};
use mesh_model::{
    Kind,
    parse::{ParseOptions, parse_document_set},
};
use serde::Deserialize;
use serde_json::Value;

/// The Kubernetes version the CRDs are validated against.
const KUBERNETES_VERSION: &str = "1.31.0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn crd_dir() -> PathBuf {
    repo().join("charts/dromon/crds")
}

fn kubernetes_validate() -> PathBuf {
    let path = repo().join(".venv/bin/kubernetes-validate");
    assert!(
        path.is_file(),
        "{} missing: run scripts/install-test-deps.sh",
        path.display()
    );
    path
}

/// Runs kubernetes-validate on `files`: whether all passed without a warning, and its report.
fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let warned = report
        .lines()
        .any(|l| l.starts_with("WARN") || l.starts_with("ERROR"));
    (out.status.success() && !warned, report)
}

fn yaml_documents(text: &str, origin: &Path) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .filter_map(|doc| {
            let value = serde_norway::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", origin.display()));
            (!value.is_null()).then(|| serde_json::to_value(value).expect("YAML as JSON"))
        })
        .collect()
}

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(path);
        }
    }
}

#[test]
fn committed_crds_are_what_the_generator_writes_now() {
    let dir = crd_dir();
    let expected = crds::rendered().expect("CRDs as YAML");
    let mut stale = Vec::new();
    for (name, text) in &expected {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(committed) if committed == *text => {}
            Ok(_) => stale.push(format!("{name} differs")),
            Err(e) => stale.push(format!("{name}: {e}")),
        }
    }
    let names: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    for entry in std::fs::read_dir(&dir).expect("charts/dromon/crds") {
        let file = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if !names.contains(file.as_str()) {
            stale.push(format!("{file} is not generated"));
        }
    }
    assert!(
        stale.is_empty(),
        "charts/dromon/crds is out of date ({}); regenerate with `{}`",
        stale.join("; "),
        crds::REGENERATE
    );
}

#[test]
fn committed_crds_pass_kubernetes_validate() {
    let files: Vec<PathBuf> = crds::all()
        .iter()
        .map(|crd| crd_dir().join(crds::file_name(crd)))
        .collect();
    let (ok, report) = validate(&files);
    assert!(ok, "kubernetes-validate refused the CRDs:\n{report}");
    assert_eq!(
        report.lines().filter(|l| l.contains(" passed ")).count(),
        files.len(),
        "{report}"
    );

    // The check is real: a misspelt field in a CRD is refused.
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(&files[0]).expect("read CRD");
    std::fs::write(&broken, text.replace("  scope: ", "  scopes: ")).expect("write");
    let (ok, report) = validate(&[broken]);
    assert!(!ok, "a CRD with `scopes` was accepted:\n{report}");
}

#[test]
fn sample_resources_decode_and_round_trip() {
    let mut files = Vec::new();
    yaml_files(&repo().join("examples"), &mut files);
    yaml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        &mut files,
    );
    let mut seen = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read sample");
        for original in yaml_documents(&text, file) {
            let api_version = original["apiVersion"].as_str().unwrap_or("").to_string();
            if !api_version.contains(".istio.io/") {
                continue;
            }
            let name = format!(
                "{}: {} {}",
                file.display(),
                original["kind"].as_str().unwrap_or("?"),
                original["metadata"]["name"].as_str().unwrap_or("?")
            );
            let resource = IstioResource::from_value(original.clone())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let kind = resource.kind();
            seen.insert(kind);
            let mut back = resource.to_value().expect("serialize");
            // What the API server would hand galley passes galley's own validation.
            let json = serde_json::to_string(&back).expect("JSON");
            let parsed = parse_document_set(&name, &json, &ParseOptions::default());
            let errors: Vec<String> = parsed.errors().map(ToString::to_string).collect();
            assert!(errors.is_empty(), "{name}: galley refuses it: {errors:?}");
            assert_eq!(parsed.accepted.len(), 1, "{name}");
            assert_eq!(
                back["apiVersion"],
                format!("{}/{}", kind.group(), crds::storage_version(kind)),
                "{name}: written at the storage version"
            );
            // Only the version may change (every version shares one schema).
            back["apiVersion"] = Value::from(api_version);
            assert_eq!(back, original, "{name}: fields lost or changed");
        }
    }
    let missing: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| !seen.contains(k))
        .collect();
    assert!(missing.is_empty(), "no sample of {missing:?}");
}
