//! Adapters: what a handler runs on the instances a rule sends it.
//!
//! Each adapter is configured from its handler's `params` (refused with a clear
//! error when they do not fit) and answers with a [`CheckResult`] (checknothing,
//! listentry, authorization templates) or a [`QuotaResult`] (quota template).

use std::time::Duration;

pub mod denier;
pub mod listchecker;
pub mod memquota;
pub mod rbac;
pub mod sqlquota;

/// gRPC status codes adapters answer with (google.rpc.Code).
pub mod code {
    /// Allowed.
    pub const OK: i32 = 0;
    /// The request is not allowed.
    pub const PERMISSION_DENIED: i32 = 7;
    /// Quota exhausted.
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// A precondition failed (Istio's default for a denier).
    pub const FAILED_PRECONDITION: i32 = 9;
    /// The adapter could not decide (e.g. its list could not be fetched).
    pub const UNAVAILABLE: i32 = 14;
    /// The instance did not carry what the adapter needs.
    pub const INVALID_ARGUMENT: i32 = 3;
}

/// An adapter's answer to a precondition check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// gRPC status code ([`code::OK`] allows).
    pub code: i32,
    /// Why, when refused.
    pub message: String,
    /// How long the answer may be reused for the same referenced attributes.
    pub valid_duration: Duration,
    /// How many times it may be reused.
    pub valid_use_count: i32,
}

impl CheckResult {
    /// Allowed, reusable for `valid_duration` and `valid_use_count` uses.
    pub fn ok(valid_duration: Duration, valid_use_count: i32) -> Self {
        Self {
            code: code::OK,
            message: String::new(),
            valid_duration,
            valid_use_count,
        }
    }

    /// Whether the request may proceed.
    pub fn is_ok(&self) -> bool {
        self.code == code::OK
    }
}

/// An adapter's answer to a quota allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaResult {
    /// Amount granted (0: none).
    pub granted: i64,
    /// How long the grant holds.
    pub valid_duration: Duration,
}

/// Handler `params` an adapter cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{adapter} params: {reason}")]
pub struct ParamsError {
    /// The adapter.
    pub adapter: &'static str,
    /// What is wrong, naming the field.
    pub reason: String,
}

impl ParamsError {
    pub(crate) fn new(adapter: &'static str, reason: impl Into<String>) -> Self {
        Self {
            adapter,
            reason: reason.into(),
        }
    }
}

/// Decodes `params` (null is `{}`) into an adapter's typed configuration.
pub(crate) fn decode_params<T: serde::de::DeserializeOwned + Default>(
    adapter: &'static str,
    params: &serde_json::Value,
) -> Result<T, ParamsError> {
    if params.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(params.clone()).map_err(|e| ParamsError::new(adapter, e.to_string()))
}

/// Parses a duration written as in Istio's params (`"10s"`, `"1m"`, `"500ms"`).
pub(crate) fn parse_duration(
    adapter: &'static str,
    field: &str,
    text: &str,
) -> Result<Duration, ParamsError> {
    humantime::parse_duration(text)
        .map_err(|e| ParamsError::new(adapter, format!("{field}: {text:?} is not a duration: {e}")))
}
