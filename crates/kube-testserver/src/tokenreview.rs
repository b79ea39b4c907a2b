//! authentication.k8s.io TokenReviews, answered by the test's reviewer.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use k8s_openapi::api::authentication::v1::{TokenReviewSpec, TokenReviewStatus};
use serde_json::json;

use crate::handler::json_response;
use crate::patch::parse_body;
use crate::shared::Shared;
use crate::status::ApiError;

/// Answers a TokenReview with the installed reviewer (not stored, as on the real server).
pub(crate) fn answer(shared: &Arc<Shared>, body: &[u8]) -> Result<Response, ApiError> {
    let review = parse_body(body, false)?;
    let spec: TokenReviewSpec =
        serde_json::from_value(review.get("spec").cloned().unwrap_or_else(|| json!({})))
            .map_err(|e| ApiError::bad_request(format!("invalid TokenReview spec: {e}")))?;
    let reviewer = shared.token_reviewer.lock().clone();
    let status = match reviewer {
        Some(reviewer) => reviewer(&spec),
        None => TokenReviewStatus {
            authenticated: Some(false),
            error: Some("no token reviewer is installed in kube-testserver".to_string()),
            ..TokenReviewStatus::default()
        },
    };
    let response = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "metadata": review.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": spec,
        "status": status,
    });
    Ok(json_response(StatusCode::CREATED, &response))
}
