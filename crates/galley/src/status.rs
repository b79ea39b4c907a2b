//! Analysis messages as a resource's status, the way Istio writes its `IstioStatus`
//! (`istio.meta.v1alpha1`): `status.validationMessages` (each an
//! `istio.analysis.v1alpha1.AnalysisMessageBase`: `level`, `type.code`, `type.name`,
//! plus galley's own `description` and `field`) and `status.observedGeneration`, the
//! generation the messages were computed for.
//!
//! This module is the pure part: what a resource's status should say and the merge
//! patch that gets it there from what the object holds ([`status_patch`]). The
//! Kubernetes side, run by the one replica holding the Lease, is [`writer`].

pub mod writer;

use mesh_model::{AnalysisMessage, Level};
use serde_json::{Map, Value, json};

/// The status field holding the analysis messages.
pub const MESSAGES_FIELD: &str = "validationMessages";
/// The status field holding the generation the messages were computed for.
pub const GENERATION_FIELD: &str = "observedGeneration";

/// Istio's name of a level (`AnalysisMessageBase.Level`).
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "ERROR",
        Level::Warning => "WARNING",
        Level::Info => "INFO",
    }
}

/// One entry of `status.validationMessages`: Istio's `AnalysisMessageBase` (`level`,
/// `type: {code, name}`) with galley's text as `description` and the field concerned
/// as `field`.
pub fn validation_message(message: &AnalysisMessage) -> Value {
    let mut entry = Map::new();
    entry.insert("level".into(), json!(level_name(message.level)));
    entry.insert(
        "type".into(),
        json!({"code": message.code, "name": message.name}),
    );
    entry.insert("description".into(), json!(message.message));
    if let Some(field) = &message.field {
        entry.insert("field".into(), json!(field));
    }
    Value::Object(entry)
}

/// `status.observedGeneration` of a status, as an integer or a numeric string (the
/// Istio CRDs allow both).
fn observed_generation(status: &Value) -> Option<i64> {
    match status.get(GENERATION_FIELD)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The merge patch (`{"status": {...}}`, for the `/status` subresource) that makes
/// `current` (the object's status, if any) say what analysis of `generation` found:
/// `messages` (entries of [`validation_message`], in order). `None` when it already
/// does, so a steady state makes no write.
///
/// - Messages: `validationMessages` set to them and `observedGeneration` to
///   `generation`, unless both already are.
/// - No messages: `validationMessages` removed if present (and `observedGeneration`
///   set); a status without messages whose `observedGeneration` galley wrote before
///   gets it moved to `generation`; no status at all stays so.
///
/// Fields of the status galley does not own (conditions, anything else) are never
/// in the patch, so they are kept.
pub fn status_patch(messages: &[Value], generation: i64, current: Option<&Value>) -> Option<Value> {
    let current = current.filter(|s| s.is_object());
    let current_messages = current
        .and_then(|s| s.get(MESSAGES_FIELD))
        .filter(|m| !m.is_null());
    let current_generation = current.and_then(observed_generation);
    let patch = |messages: Value| json!({"status": {MESSAGES_FIELD: messages, GENERATION_FIELD: generation}});
    if !messages.is_empty() {
        let same = current_messages
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            == Some(messages)
            && current_generation == Some(generation);
        return (!same).then(|| patch(Value::Array(messages.to_vec())));
    }
    if current_messages.is_some() {
        return Some(patch(Value::Null));
    }
    match current_generation {
        Some(g) if g != generation => Some(json!({"status": {GENERATION_FIELD: generation}})),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use mesh_model::{Kind, ResourceKey};

    use super::*;

    fn mk_message(code: &'static str, level: Level, field: Option<&str>) -> AnalysisMessage {
        AnalysisMessage {
            code,
            name: "GatewayNotFound",
            level,
            resource: ResourceKey {
                kind: Kind::VirtualService,
                namespace: "shop".into(),
                name: "cart".into(),
            },
            source: None,
            field: field.map(str::to_string),
            message: "gateway shop/missing does not exist".into(),
        }
    }

    fn mk_messages() -> Vec<Value> {
        vec![validation_message(&mk_message(
            "GAL0103",
            Level::Error,
            Some("spec.gateways[0]"),
        ))]
    }

    #[test]
    fn messages_follow_istio_analysis_message_base() {
        assert_eq!(
            validation_message(&mk_message(
                "GAL0103",
                Level::Error,
                Some("spec.gateways[0]")
            )),
            json!({
                "level": "ERROR",
                "type": {"code": "GAL0103", "name": "GatewayNotFound"},
                "description": "gateway shop/missing does not exist",
                "field": "spec.gateways[0]"
            })
        );
        let info = validation_message(&mk_message("GAL0110", Level::Info, None));
        assert_eq!(info["level"], "INFO");
        assert!(info.get("field").is_none());
        assert_eq!(level_name(Level::Warning), "WARNING");
    }

    #[test]
    fn new_messages_are_written_with_their_generation() {
        let wanted = mk_messages();
        let expected = json!({"status": {"validationMessages": wanted, "observedGeneration": 3}});
        assert_eq!(status_patch(&wanted, 3, None), Some(expected.clone()));
        // A status holding only fields of others gets the messages beside them.
        let other = json!({"conditions": [{"type": "Reconciled", "status": "True"}]});
        assert_eq!(status_patch(&wanted, 3, Some(&other)), Some(expected));
    }

    #[test]
    fn a_status_already_saying_it_needs_no_write() {
        let wanted = mk_messages();
        let current =
            json!({"validationMessages": wanted, "observedGeneration": 3, "conditions": []});
        assert_eq!(status_patch(&wanted, 3, Some(&current)), None);
        // observedGeneration as a string, as the CRD allows.
        let current = json!({"validationMessages": wanted, "observedGeneration": "3"});
        assert_eq!(status_patch(&wanted, 3, Some(&current)), None);
    }

    #[test]
    fn changed_messages_or_generation_are_rewritten() {
        let wanted = mk_messages();
        let current = json!({"validationMessages": wanted, "observedGeneration": 2});
        let patch = status_patch(&wanted, 3, Some(&current)).unwrap();
        assert_eq!(patch["status"]["observedGeneration"], 3);
        let mut other = wanted.clone();
        other[0]["description"] = json!("something else");
        let current = json!({"validationMessages": other, "observedGeneration": 3});
        let patch = status_patch(&wanted, 3, Some(&current)).unwrap();
        assert_eq!(patch["status"]["validationMessages"], json!(wanted));
    }

    #[test]
    fn messages_that_went_away_are_removed_and_other_fields_kept() {
        let current = json!({"validationMessages": mk_messages(), "observedGeneration": 2,
                             "conditions": [{"type": "Reconciled"}]});
        let patch = status_patch(&[], 3, Some(&current)).unwrap();
        // A merge patch: null removes the messages, conditions are not mentioned.
        assert_eq!(
            patch,
            json!({"status": {"validationMessages": null, "observedGeneration": 3}})
        );
        // An empty list left by another writer is removed too.
        let current = json!({"validationMessages": []});
        assert!(status_patch(&[], 1, Some(&current)).is_some());
    }

    #[test]
    fn no_messages_and_no_status_of_ours_needs_no_write() {
        assert_eq!(status_patch(&[], 1, None), None);
        assert_eq!(status_patch(&[], 1, Some(&Value::Null)), None);
        let others = json!({"conditions": [{"type": "Reconciled"}]});
        assert_eq!(status_patch(&[], 1, Some(&others)), None);
        let cleared = json!({"observedGeneration": 4});
        assert_eq!(status_patch(&[], 4, Some(&cleared)), None);
        // A generation galley wrote before follows the object.
        assert_eq!(
            status_patch(&[], 5, Some(&cleared)),
            Some(json!({"status": {"observedGeneration": 5}}))
        );
    }
}
