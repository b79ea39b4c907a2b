//! JSON patches (RFC 6902) between an object and its mutated form.

use serde_json::Value;

/// The operations turning `before` into `after`. Applying them to `before` (with
/// any RFC 6902 implementation) gives exactly `after`; equal values give no
/// operations.
pub fn diff(before: &Value, after: &Value) -> json_patch::Patch {
    json_patch::diff(before, after)
}

/// Applies `patch` to a copy of `value`.
pub fn apply(value: &Value, patch: &json_patch::Patch) -> Result<Value, json_patch::PatchError> {
    let mut out = value.clone();
    json_patch::patch(&mut out, patch)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_diff_applied_gives_the_target() {
        let before = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web"}]}});
        let after = json!({
            "metadata": {"labels": {"app": "web", "mode": "x/y~z"}, "annotations": {"a": "1"}},
            "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "web"}, {"name": "proxy"}]}
        });
        let patch = diff(&before, &after);
        assert!(!patch.0.is_empty());
        assert_eq!(apply(&before, &patch).expect("applies"), after);
        assert!(diff(&after, &after).0.is_empty());
    }
}
