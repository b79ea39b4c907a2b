#![allow(clippy::unwrap_used)]

use super::*;
use mesh_model::{Kind, Spec};

fn mk_change(path: &str, content: &str) -> FileChange {
    FileChange {
        path: path.into(),
        content: Some(content.into()),
    }
}

fn mk_se(name: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n  namespace: ns\nspec:\n  hosts: [\"{host}\"]\n  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n  resolution: STATIC\n  location: MESH_INTERNAL\n  endpoints:\n  - address: 127.0.0.1\n"
    )
}

fn key(name: &str) -> ResourceKey {
    ResourceKey {
        kind: Kind::ServiceEntry,
        namespace: "ns".into(),
        name: name.into(),
    }
}

fn hosts(view: &ConfigView, name: &str) -> Vec<String> {
    match &view.resources[&key(name)].spec {
        Spec::ServiceEntry(se) => se.hosts.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn accepted_resources_are_served_and_deletion_removes_them() {
    let mut store = ConfigStore::new(ParseOptions::default());
    assert!(
        store
            .apply(mk_change("a.yaml", &mk_se("one", "one.example.com")))
            .is_empty()
    );
    assert_eq!(store.view().resources.len(), 1);
    store.apply(FileChange {
        path: "a.yaml".into(),
        content: None,
    });
    assert!(store.view().resources.is_empty());
}

#[test]
fn refused_change_keeps_last_good_version() {
    let mut store = ConfigStore::new(ParseOptions::default());
    store.apply(mk_change("a.yaml", &mk_se("one", "one.example.com")));
    let bad = mk_se("one", "one.example.com").replace("number: 80", "number: 700000");
    let errors = store.apply(mk_change("a.yaml", &bad));
    assert!(!errors.is_empty());
    let view = store.view();
    assert_eq!(hosts(&view, "one"), ["one.example.com"]);
    assert_eq!(view.kept.len(), 1);
    assert!(!view.errors.is_empty());
    // Fixing it replaces the kept version.
    store.apply(mk_change("a.yaml", &mk_se("one", "two.example.com")));
    let view = store.view();
    assert_eq!(hosts(&view, "one"), ["two.example.com"]);
    assert!(view.kept.is_empty() && view.errors.is_empty());
}

#[test]
fn unreadable_file_keeps_everything_it_had() {
    let mut store = ConfigStore::new(ParseOptions::default());
    let two = format!(
        "{}---\n{}",
        mk_se("one", "one.example.com"),
        mk_se("two", "two.example.com")
    );
    store.apply(mk_change("a.yaml", &two));
    let broken = format!("{}---\nkind: [unclosed\n", mk_se("one", "uno.example.com"));
    let errors = store.apply(mk_change("a.yaml", &broken));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].message.contains("invalid YAML"), "{}", errors[0]);
    let view = store.view();
    assert_eq!(
        hosts(&view, "one"),
        ["uno.example.com"],
        "readable documents still update"
    );
    assert_eq!(
        hosts(&view, "two"),
        ["two.example.com"],
        "unreadable part keeps what it had"
    );
}

#[test]
fn resource_removed_from_a_valid_file_is_removed() {
    let mut store = ConfigStore::new(ParseOptions::default());
    let two = format!(
        "{}---\n{}",
        mk_se("one", "one.example.com"),
        mk_se("two", "two.example.com")
    );
    store.apply(mk_change("a.yaml", &two));
    store.apply(mk_change("a.yaml", &mk_se("one", "one.example.com")));
    let view = store.view();
    assert_eq!(view.resources.len(), 1);
    assert!(view.resources.contains_key(&key("one")));
}

#[test]
fn duplicates_across_files_keep_the_first_path() {
    let mut store = ConfigStore::new(ParseOptions::default());
    store.apply(mk_change("b.yaml", &mk_se("one", "b.example.com")));
    store.apply(mk_change("a.yaml", &mk_se("one", "a.example.com")));
    let view = store.view();
    assert_eq!(hosts(&view, "one"), ["a.example.com"]);
    assert_eq!(view.errors.len(), 1);
    assert!(view.errors[0].message.contains("duplicate resource"));
    assert_eq!(&*view.errors[0].source.file, "b.yaml");
}

#[test]
fn other_api_groups_are_skipped_not_refused() {
    let mut store = ConfigStore::new(ParseOptions::default());
    let doc = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n";
    assert!(store.apply(mk_change("a.yaml", doc)).is_empty());
    let view = store.view();
    assert!(view.resources.is_empty() && view.errors.is_empty());
    assert_eq!(view.skipped, 1);
}
