//! The `/inject` webhook: an `AdmissionReview` in, the review's answer out.
//!
//! Only pod creations are injected; any other request the webhook happens to be
//! sent is allowed unchanged. A review or pod that cannot be read is answered
//! `invalid` (never a panic, never a dropped connection); a bad traffic
//! annotation refuses the pod with the annotation's name.

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    response::Response,
    routing::post,
};
use mesh_admission::{AdmissionRequest, AdmissionResponse, Operation};
use parking_lot::RwLock;
use serde_json::Value;

use crate::{
    inject::{InjectError, Injection, Injector},
    metrics::Metrics,
    policy::SkipReason,
};

/// The injector in use; swapped whole when the configuration file changes.
pub type SharedInjector = Arc<RwLock<Arc<Injector>>>;

/// What a review came to, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pod was injected.
    Injected,
    /// The pod was left alone.
    Skipped(SkipReason),
    /// Not a pod creation: allowed unchanged.
    Ignored,
    /// Refused: the review or pod could not be read, or injection failed.
    Failed(&'static str),
}

/// Answers one request.
pub fn review(injector: &Injector, request: &AdmissionRequest) -> (AdmissionResponse, Outcome) {
    let uid = request.uid.as_str();
    let is_pod = request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.resource.resource == "pods"
        && request.sub_resource.as_deref().is_none_or(str::is_empty);
    if !is_pod || request.operation != Operation::Create {
        return (AdmissionResponse::allow(uid), Outcome::Ignored);
    }
    let Some(pod) = request.object.as_ref() else {
        return (
            AdmissionResponse::invalid(uid, "the review has no object"),
            Outcome::Failed("invalid_pod"),
        );
    };
    let namespace = request
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str))
        .unwrap_or("default");
    match injector.inject(pod, namespace, None) {
        Ok(Injection::Injected {
            pod: injected,
            warnings,
        }) => {
            let patch = mesh_admission::patch::diff(pod, &injected);
            let mut response = AdmissionResponse::allow(uid).with_patch(&patch);
            response.warnings = warnings;
            (response, Outcome::Injected)
        }
        Ok(Injection::Skipped { reason, warnings }) => {
            let mut response = AdmissionResponse::allow(uid);
            response.warnings = warnings;
            (response, Outcome::Skipped(reason))
        }
        Err(e @ InjectError::Template(_)) => (
            AdmissionResponse::internal(uid, format!("sidecar injection failed: {e}")),
            Outcome::Failed(e.reason()),
        ),
        Err(e) => (
            AdmissionResponse::invalid(uid, format!("sidecar injection refused: {e}")),
            Outcome::Failed(e.reason()),
        ),
    }
}

#[derive(Clone)]
struct WebhookState {
    injector: SharedInjector,
    metrics: Arc<Metrics>,
}

/// The webhook's routes: `POST /inject`.
pub fn router(injector: SharedInjector, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/inject", post(handle))
        .route("/inject/", post(handle))
        .layer(DefaultBodyLimit::max(
            mesh_admission::serve::MAX_REVIEW_BYTES,
        ))
        .with_state(WebhookState { injector, metrics })
}

async fn handle(State(state): State<WebhookState>, body: Bytes) -> Response {
    let started = Instant::now();
    let injector = state.injector.read().clone();
    let (response, outcome) = mesh_admission::serve::respond(&body, |request| {
        let (response, outcome) = review(&injector, request);
        if let Outcome::Failed(reason) = &outcome {
            let message = response.status.as_ref().map(|s| s.message.as_str());
            tracing::info!(uid = %response.uid, reason, message, "pod refused");
        }
        (response, outcome)
    });
    let outcome = outcome.unwrap_or(Outcome::Failed("invalid_review"));
    state.metrics.record(&outcome, started.elapsed());
    response
}
