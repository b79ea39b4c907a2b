//! The pure part of caBundle patching: the bundle a webhook configuration should
//! carry, and the JSON merge patch that brings one there, changing nothing but the
//! `clientConfig.caBundle` of its entries.

use base64::Engine;
use serde_json::{Value, json};

/// The API's form of a bundle: the PEM roots, base64 (a `[]byte` field in JSON).
pub fn encode_bundle(roots_pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(roots_pem.as_bytes())
}

/// The names of the entries whose `caBundle` differs from `bundle` (base64).
pub fn stale_entries(config: &Value, bundle: &str) -> Vec<String> {
    entries(config)
        .iter()
        .filter(|w| w.pointer("/clientConfig/caBundle").and_then(Value::as_str) != Some(bundle))
        .map(|w| {
            w.get("name")
                .and_then(Value::as_str)
                .unwrap_or("<unnamed>")
                .to_string()
        })
        .collect()
}

fn entries(config: &Value) -> &[Value] {
    config
        .get("webhooks")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A JSON merge patch setting every entry's `clientConfig.caBundle` to `bundle`,
/// or `None` when all already carry it. A merge patch replaces lists whole, so the
/// patch holds the entries as read with only `caBundle` changed, and the
/// `resourceVersion` read as a precondition: a configuration changed meanwhile
/// makes the server answer 409 instead of losing that change.
pub fn patch(config: &Value, bundle: &str) -> Option<Value> {
    if stale_entries(config, bundle).is_empty() {
        return None;
    }
    let webhooks: Vec<Value> = entries(config)
        .iter()
        .map(|w| {
            let mut w = w.clone();
            if let Some(obj) = w.as_object_mut() {
                let client = obj
                    .entry("clientConfig")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(client) = client.as_object_mut() {
                    client.insert("caBundle".into(), Value::String(bundle.into()));
                }
            }
            w
        })
        .collect();
    let mut patch = json!({ "webhooks": webhooks });
    if let Some(rv) = config.pointer("/metadata/resourceVersion") {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    Some(patch)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(bundles: &[Option<&str>]) -> Value {
        let webhooks: Vec<Value> = bundles
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut client = json!({"service": {"name": "galley", "namespace": "istio-system", "path": "/validate"}});
                if let Some(b) = b {
                    client["caBundle"] = json!(b);
                }
                json!({"name": format!("w{i}.dromon.io"), "clientConfig": client,
                       "sideEffects": "None", "admissionReviewVersions": ["v1"]})
            })
            .collect();
        json!({"apiVersion": "admissionregistration.k8s.io/v1",
               "kind": "ValidatingWebhookConfiguration",
               "metadata": {"name": "galley", "resourceVersion": "7"},
               "webhooks": webhooks})
    }

    #[test]
    fn the_bundle_is_the_pem_roots_in_base64() {
        let b = encode_bundle("-----BEGIN CERTIFICATE-----\n");
        assert_eq!(b, "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==");
    }

    #[test]
    fn only_entries_with_another_bundle_are_stale() {
        let c = config(&[Some("QQ=="), None, Some("garbage")]);
        assert_eq!(stale_entries(&c, "QQ=="), ["w1.dromon.io", "w2.dromon.io"]);
        assert!(patch(&config(&[Some("QQ=="), Some("QQ==")]), "QQ==").is_none());
        assert!(patch(&json!({"metadata": {"name": "empty"}}), "QQ==").is_none());
    }

    #[test]
    fn the_patch_changes_only_ca_bundles_and_is_conditional() {
        let c = config(&[Some("QQ=="), None]);
        let p = patch(&c, "Qg==").unwrap();
        assert_eq!(p["metadata"], json!({"resourceVersion": "7"}));
        assert_eq!(p.as_object().unwrap().len(), 2, "{p}");
        let (before, after) = (
            c["webhooks"].as_array().unwrap(),
            p["webhooks"].as_array().unwrap(),
        );
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(after) {
            assert_eq!(a["clientConfig"]["caBundle"], "Qg==");
            let mut a = a.clone();
            let mut b = b.clone();
            a["clientConfig"]
                .as_object_mut()
                .unwrap()
                .remove("caBundle");
            b["clientConfig"]
                .as_object_mut()
                .unwrap()
                .remove("caBundle");
            assert_eq!(a, b, "nothing else changes");
        }
    }
}
