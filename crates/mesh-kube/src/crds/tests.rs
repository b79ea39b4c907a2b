use serde_json::{Value, json};

use super::*;

/// plural, singular and short names of each kind.
fn expected_names(kind: Kind) -> (&'static str, &'static str, &'static [&'static str]) {
    match kind {
        Kind::VirtualService => ("virtualservices", "virtualservice", &["vs"]),
        Kind::DestinationRule => ("destinationrules", "destinationrule", &["dr"]),
        Kind::Gateway => ("gateways", "gateway", &["gw"]),
        Kind::ServiceEntry => ("serviceentries", "serviceentry", &["se"]),
        Kind::Sidecar => ("sidecars", "sidecar", &[]),
        Kind::PeerAuthentication => ("peerauthentications", "peerauthentication", &["pa"]),
        Kind::AuthorizationPolicy => ("authorizationpolicies", "authorizationpolicy", &["ap"]),
        Kind::RequestAuthentication => ("requestauthentications", "requestauthentication", &["ra"]),
        Kind::Handler => ("handlers", "handler", &[]),
        Kind::Instance => ("instances", "instance", &[]),
        Kind::Rule => ("rules", "rule", &[]),
        Kind::AttributeManifest => ("attributemanifests", "attributemanifest", &[]),
    }
}

fn mk_json(crd: &CustomResourceDefinition) -> Value {
    serde_json::to_value(crd).expect("CRD as JSON")
}

#[test]
fn every_kind_has_a_crd_matching_mesh_model() {
    for kind in Kind::ALL {
        let crd = crd(kind);
        let (plural, singular, short) = expected_names(kind);
        assert_eq!(crd.spec.group, kind.group(), "{kind}");
        assert_eq!(crd.spec.names.kind, kind.as_str());
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(crd.spec.names.singular.as_deref(), Some(singular));
        assert_eq!(
            crd.spec.names.short_names.clone().unwrap_or_default(),
            short,
            "{kind}"
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{plural}.{}", kind.group()).as_str())
        );
        assert_eq!(file_name(&crd), format!("{plural}.{}.yaml", kind.group()));
        let versions: Vec<&str> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(versions, kind.versions(), "{kind}");
        assert!(crd.spec.versions.iter().all(|v| v.served), "{kind}");
        let stored: Vec<&str> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.storage)
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(
            stored,
            [storage_version(kind)],
            "{kind}: one storage version"
        );
        for v in &crd.spec.versions {
            assert!(
                v.subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some(),
                "{kind} {}: status subresource",
                v.name
            );
            // One schema for every version.
            assert_eq!(v.schema, crd.spec.versions[0].schema, "{kind} {}", v.name);
        }
    }
    assert_eq!(storage_version(Kind::VirtualService), "v1");
    assert_eq!(storage_version(Kind::PeerAuthentication), "v1");
    assert_eq!(storage_version(Kind::Rule), "v1alpha2");
}

/// Every node of a structural schema states its type, or preserves unknown fields.
fn assert_structural(node: &Value, path: &str) {
    let object = node
        .as_object()
        .unwrap_or_else(|| panic!("{path}: not a schema object"));
    assert!(!object.contains_key("$ref"), "{path}: $ref");
    let preserves = object.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    let int_or_string = object.get("x-kubernetes-int-or-string") == Some(&json!(true));
    assert!(
        object.contains_key("type") || preserves || int_or_string,
        "{path}: no type and no x-kubernetes-preserve-unknown-fields: {node}"
    );
    if let Some(properties) = object.get("properties").and_then(Value::as_object) {
        assert!(
            !object.contains_key("additionalProperties"),
            "{path}: properties and additionalProperties"
        );
        for (name, schema) in properties {
            assert_structural(schema, &format!("{path}.{name}"));
        }
    }
    if let Some(items) = object.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    if let Some(values) = object.get("additionalProperties").filter(|v| v.is_object()) {
        assert_structural(values, &format!("{path}{{}}"));
    }
    for keyword in ["anyOf", "oneOf", "allOf", "not"] {
        assert!(!object.contains_key(keyword), "{path}: {keyword}");
    }
}

#[test]
fn every_schema_is_structural() {
    for crd in all() {
        let crd = mk_json(&crd);
        let name = crd["metadata"]["name"].as_str().unwrap_or("?").to_string();
        for version in crd["spec"]["versions"].as_array().expect("versions") {
            let schema = &version["schema"]["openAPIV3Schema"];
            assert_structural(schema, &format!("{name}/{}", version["name"]));
            assert_eq!(schema["properties"]["spec"]["type"], "object", "{name}");
            assert_eq!(
                schema["properties"]["status"]["x-kubernetes-preserve-unknown-fields"], true,
                "{name}: open status"
            );
        }
    }
}

#[test]
fn top_level_fields_are_typed_and_details_left_open() {
    let vs = mk_json(&crd(Kind::VirtualService));
    let spec =
        &vs["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for list in ["hosts", "gateways", "exportTo"] {
        assert_eq!(spec[list]["type"], "array", "{list}");
        assert_eq!(spec[list]["items"]["type"], "string", "{list}");
    }
    for routes in ["http", "tls", "tcp"] {
        assert_eq!(spec[routes]["type"], "array", "{routes}");
        assert_eq!(spec[routes]["items"]["type"], "object", "{routes}");
        assert_eq!(
            spec[routes]["items"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
    }
    assert!(spec["hosts"]["description"].is_string(), "described");

    let gw = mk_json(&crd(Kind::Gateway));
    let server = &gw["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["servers"]["items"]["properties"];
    assert_eq!(server["port"]["properties"]["number"]["type"], "integer");
    assert_eq!(server["tls"]["x-kubernetes-preserve-unknown-fields"], true);

    let rule = mk_json(&crd(Kind::Rule));
    let spec = &rule["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["match"]["type"], "string");
}

#[test]
fn documents_resolve_by_api_version_and_kind() {
    let doc = json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
    });
    let resource = IstioResource::from_value(doc).expect("a VirtualService");
    assert_eq!(resource.kind(), Kind::VirtualService);
    let back = resource.to_value().expect("JSON");
    assert_eq!(
        back["apiVersion"], "networking.istio.io/v1",
        "stored version"
    );
    assert_eq!(
        back["spec"]["http"][0]["route"][0]["destination"]["host"],
        "reviews"
    );

    let err = IstioResource::from_value(json!({
        "apiVersion": "networking.istio.io/v2", "kind": "VirtualService",
        "metadata": {"name": "x"}, "spec": {}
    }))
    .expect_err("unknown version");
    assert!(err.to_string().contains("v2"), "{err}");
    let err = IstioResource::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "x"}, "spec": {"mtls": "STRICT"}
    }))
    .expect_err("mtls is an object");
    assert!(err.to_string().starts_with("PeerAuthentication: "), "{err}");
}

#[test]
fn write_all_replaces_stale_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("old.networking.istio.io.yaml"), "stale").expect("write");
    std::fs::write(dir.path().join("README"), "kept").expect("write");
    let written = write_all(dir.path()).expect("write CRDs");
    assert_eq!(written.len(), 12);
    let mut present: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    let mut expected = written.clone();
    expected.push("README".to_string());
    expected.sort();
    assert_eq!(present, expected);
}
