//! `AdmissionReview` requests and responses, `admission.k8s.io/v1` and `v1beta1`.
//!
//! Both versions share one shape; a response must repeat the version and the uid
//! of its request. Decoding is total: any input gives either a request or a
//! [`ReviewError`] naming what is wrong, with the uid and version when they could
//! be read, so that even a malformed review gets an answer the API server can use.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The `apiVersion` of a review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReviewVersion {
    /// `admission.k8s.io/v1`.
    #[default]
    V1,
    /// `admission.k8s.io/v1beta1`.
    V1Beta1,
}

impl ReviewVersion {
    /// The `apiVersion` string.
    pub fn api_version(self) -> &'static str {
        match self {
            ReviewVersion::V1 => "admission.k8s.io/v1",
            ReviewVersion::V1Beta1 => "admission.k8s.io/v1beta1",
        }
    }

    fn parse(api_version: &str) -> Option<Self> {
        match api_version {
            "admission.k8s.io/v1" => Some(ReviewVersion::V1),
            "admission.k8s.io/v1beta1" => Some(ReviewVersion::V1Beta1),
            _ => None,
        }
    }
}

/// The operation under review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// An object is created.
    Create,
    /// An object is replaced or patched.
    Update,
    /// An object is deleted.
    Delete,
    /// A connect (exec, attach, port-forward, proxy).
    Connect,
}

/// A group, version and kind.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct GroupVersionKind {
    /// API group (`""` for the core group).
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default)]
    pub version: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
}

/// A group, version and resource.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct GroupVersionResource {
    /// API group (`""` for the core group).
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default)]
    pub version: String,
    /// Resource (plural, lower case).
    #[serde(default)]
    pub resource: String,
}

/// One admission request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Identifies this request; the response repeats it.
    pub uid: String,
    /// The kind of the object.
    pub kind: GroupVersionKind,
    /// The resource being requested.
    pub resource: GroupVersionResource,
    /// The subresource, if any (`status`, `scale`...).
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// The object's name; empty on a create with `generateName`.
    #[serde(default)]
    pub name: Option<String>,
    /// The namespace of the object (absent for cluster-scoped objects).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The operation.
    pub operation: Operation,
    /// The object as it would be stored (absent on delete).
    #[serde(default)]
    pub object: Option<Value>,
    /// The object before an update or delete.
    #[serde(default)]
    pub old_object: Option<Value>,
    /// Whether nothing will be persisted (side effects must be skipped).
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// Why a review could not be read. Carries what could be read of it, so the answer
/// still names the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReviewError {
    /// The request's uid, when it could be read.
    pub uid: String,
    /// The review's version (v1 when it could not be read).
    pub version: ReviewVersion,
    /// What is wrong.
    pub message: String,
}

impl ReviewError {
    /// The `invalid` response answering this review.
    pub fn response(&self) -> AdmissionResponse {
        AdmissionResponse::invalid(
            &self.uid,
            format!("malformed AdmissionReview: {}", self.message),
        )
    }
}

/// Reads an `AdmissionReview` request body.
pub fn decode_review(body: &[u8]) -> Result<(ReviewVersion, AdmissionRequest), ReviewError> {
    let fail = |uid: &str, version, message: String| ReviewError {
        uid: uid.to_string(),
        version,
        message,
    };
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| fail("", ReviewVersion::V1, format!("not JSON: {e}")))?;
    let Value::Object(mut review) = value else {
        return Err(fail("", ReviewVersion::V1, "not a JSON object".into()));
    };
    let uid = review
        .get("request")
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let version = match review.get("apiVersion") {
        Some(Value::String(v)) => ReviewVersion::parse(v).ok_or_else(|| {
            fail(
                &uid,
                ReviewVersion::V1,
                format!("apiVersion {v:?} is not admission.k8s.io/v1 or admission.k8s.io/v1beta1"),
            )
        })?,
        Some(_) => {
            return Err(fail(
                &uid,
                ReviewVersion::V1,
                "apiVersion is not a string".into(),
            ));
        }
        None => {
            return Err(fail(
                &uid,
                ReviewVersion::V1,
                "apiVersion is missing".into(),
            ));
        }
    };
    match review.get("kind") {
        Some(Value::String(k)) if k == "AdmissionReview" => {}
        Some(other) => {
            return Err(fail(
                &uid,
                version,
                format!("kind is {other}, not \"AdmissionReview\""),
            ));
        }
        None => return Err(fail(&uid, version, "kind is missing".into())),
    }
    let request = match review.remove("request") {
        Some(request @ Value::Object(_)) => request,
        Some(_) => return Err(fail(&uid, version, "request is not an object".into())),
        None => return Err(fail(&uid, version, "request is missing".into())),
    };
    let request: AdmissionRequest = serde_json::from_value(request)
        .map_err(|e| fail(&uid, version, format!("request: {e}")))?;
    if request.uid.is_empty() {
        return Err(fail(&uid, version, "request.uid is empty".into()));
    }
    Ok((version, request))
}

/// The status of a refused request (`metav1.Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseStatus {
    /// HTTP-like code (400 invalid, 403 denied, 500 internal).
    pub code: u16,
    /// Machine-readable reason (`BadRequest`, `Forbidden`, `InternalError`).
    pub reason: &'static str,
    /// What a user reads.
    pub message: String,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionResponse {
    /// The request's uid.
    pub uid: String,
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Why not, when refused.
    pub status: Option<ResponseStatus>,
    /// A JSON patch (RFC 6902) to apply, serialized.
    pub patch: Option<Vec<u8>>,
    /// Warnings shown to the client (kubectl prints them).
    pub warnings: Vec<String>,
}

impl AdmissionResponse {
    /// Lets the request through unchanged.
    pub fn allow(uid: &str) -> Self {
        Self {
            uid: uid.to_string(),
            allowed: true,
            status: None,
            patch: None,
            warnings: Vec::new(),
        }
    }

    /// Refuses a request that cannot be read or is not a valid object (400).
    pub fn invalid(uid: &str, message: impl Into<String>) -> Self {
        Self::refused(uid, 400, "BadRequest", message)
    }

    /// Refuses a valid request by policy (403).
    pub fn denied(uid: &str, message: impl Into<String>) -> Self {
        Self::refused(uid, 403, "Forbidden", message)
    }

    /// Refuses a request the webhook failed to handle (500).
    pub fn internal(uid: &str, message: impl Into<String>) -> Self {
        Self::refused(uid, 500, "InternalError", message)
    }

    fn refused(uid: &str, code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            uid: uid.to_string(),
            allowed: false,
            status: Some(ResponseStatus {
                code,
                reason,
                message: message.into(),
            }),
            patch: None,
            warnings: Vec::new(),
        }
    }

    /// The same response carrying a JSON patch; an empty patch is left out.
    pub fn with_patch(mut self, patch: &json_patch::Patch) -> Self {
        self.patch = if patch.0.is_empty() {
            None
        } else {
            serde_json::to_vec(patch).ok()
        };
        self
    }

    /// The same response with a warning.
    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    /// The decoded patch operations, if any (for tests and tools).
    pub fn patch_operations(&self) -> Option<json_patch::Patch> {
        self.patch
            .as_deref()
            .and_then(|p| serde_json::from_slice(p).ok())
    }
}

/// The `AdmissionReview` answering a request, in its version.
pub fn encode_review(version: ReviewVersion, response: &AdmissionResponse) -> Vec<u8> {
    let mut out = Map::new();
    out.insert("uid".into(), Value::String(response.uid.clone()));
    out.insert("allowed".into(), Value::Bool(response.allowed));
    if let Some(status) = &response.status {
        out.insert(
            "status".into(),
            json!({
                "status": "Failure",
                "code": status.code,
                "reason": status.reason,
                "message": status.message,
            }),
        );
    }
    if let Some(patch) = &response.patch {
        out.insert("patchType".into(), Value::String("JSONPatch".into()));
        out.insert(
            "patch".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(patch)),
        );
    }
    if !response.warnings.is_empty() {
        out.insert("warnings".into(), json!(response.warnings));
    }
    let review = json!({
        "apiVersion": version.api_version(),
        "kind": "AdmissionReview",
        "response": Value::Object(out),
    });
    // A `Value` of strings, numbers and booleans always serializes.
    serde_json::to_vec(&review).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(version: &str) -> Value {
        json!({
            "apiVersion": version,
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": "CREATE",
                "userInfo": {"username": "admin"},
                "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"}},
                "oldObject": null,
                "dryRun": false
            }
        })
    }

    #[test]
    fn decodes_both_versions() {
        for (text, version) in [
            ("admission.k8s.io/v1", ReviewVersion::V1),
            ("admission.k8s.io/v1beta1", ReviewVersion::V1Beta1),
        ] {
            let body = serde_json::to_vec(&review(text)).expect("json");
            let (v, request) = decode_review(&body).expect("decodes");
            assert_eq!(v, version);
            assert_eq!(request.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
            assert_eq!(request.kind.kind, "Pod");
            assert_eq!(request.namespace.as_deref(), Some("shop"));
            assert_eq!(request.operation, Operation::Create);
            assert_eq!(request.old_object, None);
            assert!(request.object.is_some());
        }
    }

    #[test]
    fn malformed_reviews_keep_uid_and_version_when_readable() {
        let mut bad = review("admission.k8s.io/v1beta1");
        bad["request"]["operation"] = json!("EXPLODE");
        let err = decode_review(&serde_json::to_vec(&bad).expect("json")).expect_err("bad op");
        assert_eq!(err.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(err.version, ReviewVersion::V1Beta1);
        assert!(err.message.contains("EXPLODE"), "{}", err.message);

        let mut bad = review("admission.k8s.io/v2");
        bad["request"]["uid"] = json!("u1");
        let err = decode_review(&serde_json::to_vec(&bad).expect("json")).expect_err("version");
        assert_eq!(err.uid, "u1");
        assert!(
            err.message.contains("admission.k8s.io/v2"),
            "{}",
            err.message
        );

        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{",
            b"{\"apiVersion\":\"admission.k8s.io/v1\"}",
            b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":7}",
            b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"\",\"kind\":{},\"resource\":{},\"operation\":\"CREATE\"}}",
        ] {
            let err = decode_review(body).expect_err("malformed");
            assert!(!err.message.is_empty());
            let response = err.response();
            assert!(!response.allowed);
            assert_eq!(response.status.as_ref().map(|s| s.code), Some(400));
        }
    }

    #[test]
    fn responses_repeat_version_and_uid_and_encode_patches_in_base64() {
        let patch: json_patch::Patch = serde_json::from_value(
            json!([{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]),
        )
        .expect("patch");
        let response = AdmissionResponse::allow("u-1")
            .with_patch(&patch)
            .with_warning("careful");
        let body = encode_review(ReviewVersion::V1Beta1, &response);
        let value: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(value["apiVersion"], "admission.k8s.io/v1beta1");
        assert_eq!(value["kind"], "AdmissionReview");
        assert_eq!(value["response"]["uid"], "u-1");
        assert_eq!(value["response"]["allowed"], true);
        assert_eq!(value["response"]["patchType"], "JSONPatch");
        assert_eq!(value["response"]["warnings"], json!(["careful"]));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value["response"]["patch"].as_str().expect("patch"))
            .expect("base64");
        let back: json_patch::Patch = serde_json::from_slice(&decoded).expect("patch json");
        assert_eq!(back, patch);

        let empty = AdmissionResponse::allow("u-2").with_patch(&json_patch::Patch(Vec::new()));
        let value: Value =
            serde_json::from_slice(&encode_review(ReviewVersion::V1, &empty)).expect("json");
        assert!(value["response"].get("patch").is_none());
        assert!(value["response"].get("patchType").is_none());

        let denied = AdmissionResponse::denied("u-3", "no");
        let value: Value =
            serde_json::from_slice(&encode_review(ReviewVersion::V1, &denied)).expect("json");
        assert_eq!(value["response"]["allowed"], false);
        assert_eq!(value["response"]["status"]["code"], 403);
        assert_eq!(value["response"]["status"]["message"], "no");
    }
}
