//! Envoy resources as JSON, for `/debug/config_dump`.
//!
//! Resources are decoded with Envoy's descriptors (the part of Envoy's API pilot
//! uses, built into `mesh-api`) and written in protobuf's canonical JSON mapping, as
//! Envoy's own admin config dump writes them.

use std::sync::OnceLock;

use mesh_xds::Any;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::{Value, json};

fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(mesh_api::ENVOY_CONFIG_FILE_DESCRIPTOR_SET)
            .map_err(|e| tracing::warn!(error = %e, "Envoy descriptors do not load"))
            .ok()
    })
    .as_ref()
}

/// One resource as JSON with its `@type`; a resource that does not decode is shown
/// by type and size with the reason.
pub fn resource_json(any: &Any) -> Value {
    match decode(any) {
        Ok(v) => v,
        Err(error) => json!({"@type": any.type_url, "bytes": any.value.len(), "error": error}),
    }
}

fn decode(any: &Any) -> Result<Value, String> {
    let pool = pool().ok_or("Envoy descriptors unavailable")?;
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let desc = pool
        .get_message_by_name(name)
        .ok_or_else(|| format!("unknown type {name}"))?;
    let msg = DynamicMessage::decode(desc, any.value.as_slice()).map_err(|e| e.to_string())?;
    let opts = SerializeOptions::new().skip_default_fields(true);
    let mut value = msg
        .serialize_with_options(serde_json::value::Serializer, &opts)
        .map_err(|e| e.to_string())?;
    if let Value::Object(map) = &mut value {
        map.insert("@type".into(), Value::String(any.type_url.clone()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translated_resources_decode_with_nested_any_filters() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a, namespace: a}\nspec:\n  hosts: [a.example.com]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.0.0.1}]\n";
        let set = mesh_model::parse_document_set("t.yaml", yaml, &Default::default());
        let refs: Vec<&mesh_model::Resource> = set.accepted.iter().collect();
        let envoy = crate::translate(&refs);
        let (_, listener) = &envoy.listeners[0];
        let v = resource_json(listener);
        assert_eq!(v["name"], "a.example.com:80");
        assert_eq!(
            v["apiListener"]["apiListener"]["@type"],
            crate::translate::listeners::HCM_TYPE_URL,
            "{v}"
        );
        assert_eq!(
            v["apiListener"]["apiListener"]["rds"]["routeConfigName"],
            "80"
        );
        let (_, cluster) = &envoy.clusters[0];
        let v = resource_json(cluster);
        assert_eq!(v["type"], "EDS", "{v}");
        let bad = resource_json(&Any {
            type_url: "type.googleapis.com/no.such.Type".into(),
            value: vec![1, 2, 3],
        });
        assert!(
            bad["error"]
                .as_str()
                .is_some_and(|e| e.contains("unknown type"))
        );
    }
}
