//! `metav1.Status` errors, as the API server answers them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A failed API request: turned into a `metav1.Status` body with the same HTTP code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code (also the Status' `code`).
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `AlreadyExists`, `Conflict`, ...).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// `details` of the Status (name, group, kind), if any.
    pub details: Option<Value>,
}

impl ApiError {
    /// An error with the given code, the usual reason for that code and a message.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason_for_code(code).to_string(),
            message: message.into(),
            details: None,
        }
    }

    /// The same error with a different reason.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// The same error with Status `details` naming the object.
    pub fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.details = Some(json!({"group": group, "kind": kind, "name": name}));
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 404 NotFound for an object: `<resource>.<group> "<name>" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            404,
            format!("{} \"{name}\" not found", qualified(plural, group)),
        )
        .with_details(group, plural, name)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            format!("{} \"{name}\" already exists", qualified(plural, group)),
        )
        .with_reason("AlreadyExists")
        .with_details(group, plural, name)
    }

    /// 409 Conflict for a stale `resourceVersion` (optimistic concurrency).
    pub fn conflict(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                qualified(plural, group)
            ),
        )
        .with_details(group, plural, name)
    }

    /// 422 Invalid.
    pub fn invalid(kind: &str, name: &str, message: impl Into<String>) -> Self {
        Self::new(
            422,
            format!("{kind} \"{name}\" is invalid: {}", message.into()),
        )
        .with_details("", kind, name)
    }

    /// 410 Expired: a resource version older than the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, message).with_reason("Expired")
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, message)
    }

    /// The `metav1.Status` JSON of this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        crate::handler::json_response(code, &self.to_status())
    }
}

/// `plural.group`, or `plural` for the core group, as the server names resources in messages.
pub(crate) fn qualified(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

/// The `reason` the API server gives for an HTTP code.
pub fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Gone",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}
