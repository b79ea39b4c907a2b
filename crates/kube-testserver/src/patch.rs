//! PATCH bodies: JSON merge patch, JSON patch, strategic merge patch (applied as a
//! JSON merge patch) and server-side apply (merged into the existing object).

use serde_json::Value;

use crate::status::ApiError;

/// The patch types the server understands, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/strategic-merge-patch+json`: treated as a merge patch, so lists
    /// are replaced whole rather than merged by key, and `$patch` directives are not
    /// interpreted.
    StrategicMerge,
    /// `application/apply-patch+yaml`: server-side apply, simplified to a merge of the
    /// applied configuration into the live object (no field ownership, no conflicts).
    Apply,
}

impl PatchKind {
    /// The patch type named by a `Content-Type` header.
    pub(crate) fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(Self::Apply),
            other => Err(ApiError::new(
                415,
                format!(
                    "the body of the request was in an unknown format - accepted media types \
                     include: application/json-patch+json, application/merge-patch+json, \
                     application/apply-patch+yaml, application/strategic-merge-patch+json \
                     (got {other:?})"
                ),
            )),
        }
    }
}

/// Reads a request body as JSON, or (for apply patches) YAML.
pub(crate) fn parse_body(body: &[u8], yaml: bool) -> Result<Value, ApiError> {
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(json_err) if yaml => serde_norway::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("error decoding YAML: {e} (as JSON: {json_err})"))
        }),
        Err(e) => Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: {e}"
        ))),
    }
}

/// Applies a patch to a live object.
pub(crate) fn apply_patch(
    kind: PatchKind,
    live: &Value,
    patch: &Value,
    what: &str,
) -> Result<Value, ApiError> {
    let mut target = live.clone();
    match kind {
        PatchKind::Merge | PatchKind::StrategicMerge | PatchKind::Apply => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(format!(
                    "the patch for {what} must be a JSON object"
                )));
            }
            json_patch::merge(&mut target, patch);
        }
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| {
                ApiError::bad_request(format!("invalid JSON patch for {what}: {e}"))
            })?;
            json_patch::patch(&mut target, &ops).map_err(|e| {
                ApiError::new(
                    422,
                    format!("the JSON patch for {what} does not apply: {e}"),
                )
            })?;
        }
    }
    Ok(target)
}
