#![allow(clippy::unwrap_used)]

use super::*;
use mesh_model::{Kind, Spec};
use std::collections::HashSet;

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

#[test]
fn duplicate_in_one_file_keeps_the_first() {
    let mut store = ConfigStore::new(ParseOptions::default());
    let two = format!(
        "{}---\n{}",
        mk_se("one", "first.example.com"),
        mk_se("one", "second.example.com")
    );
    let errors = store.apply(mk_change("a.yaml", &two));
    assert_eq!(errors.len(), 1);
    let view = store.view();
    assert_eq!(hosts(&view, "one"), ["first.example.com"]);
    assert_eq!(view.errors.len(), 1);
    assert_eq!(view.errors[0].source.line, 17, "the second document");
}

#[test]
fn only_moved_resources_are_reported_changed() {
    let mut store = ConfigStore::new(ParseOptions::default());
    let two = format!(
        "{}---\n{}",
        mk_se("one", "one.example.com"),
        mk_se("two", "two.example.com")
    );
    store.apply(mk_change("a.yaml", &two));
    assert_eq!(store.take_changed().len(), 2);
    let edited = format!(
        "{}---\n{}",
        mk_se("one", "one.example.com"),
        mk_se("two", "deux.example.com")
    );
    store.apply(mk_change("a.yaml", &edited));
    assert_eq!(store.take_changed(), HashSet::from([key("two")]));
    // Rewriting identical content moves nothing.
    store.apply(mk_change("a.yaml", &edited));
    assert!(store.take_changed().is_empty());
    // A duplicate in a later file does not move the winner; deleting the winner does.
    store.apply(mk_change("b.yaml", &mk_se("one", "other.example.com")));
    assert!(store.take_changed().is_empty());
    store.apply(FileChange {
        path: "a.yaml".into(),
        content: None,
    });
    assert_eq!(
        store.take_changed(),
        HashSet::from([key("one"), key("two")])
    );
    assert_eq!(hosts(&store.view(), "one"), ["other.example.com"]);
}

#[test]
fn snapshot_builder_rebuilds_only_changed_collections() {
    use crate::snapshot::SnapshotBuilder;
    let mut store = ConfigStore::new(ParseOptions::default());
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: ns}\nspec:\n  hosts: [one.example.com]\n  http:\n  - route:\n    - destination: {host: one.example.com}\n";
    store.apply(mk_change("a.yaml", &mk_se("one", "one.example.com")));
    store.apply(mk_change("b.yaml", vs));
    let mut builder = SnapshotBuilder::new();
    let changed = store.take_changed();
    let first = builder.build(&store.view(), &changed);
    let se = Kind::ServiceEntry.collection();
    let vsc = Kind::VirtualService.collection();
    assert_eq!(first.get(se).unwrap().items.len(), 1);
    store.apply(mk_change(
        "b.yaml",
        &vs.replace("one.example.com", "uno.example.com"),
    ));
    let changed = store.take_changed();
    let second = builder.build(&store.view(), &changed);
    assert!(
        Arc::ptr_eq(first.get(se).unwrap(), second.get(se).unwrap()),
        "untouched collection reused"
    );
    assert_ne!(
        first.get(vsc).unwrap().version,
        second.get(vsc).unwrap().version
    );
    // The same as a build from scratch.
    let fresh = SnapshotBuilder::new().build_all(&store.view());
    assert_eq!(fresh, second);
}
