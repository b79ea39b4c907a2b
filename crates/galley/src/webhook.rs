//! galley's validating admission webhook: `POST /validate`.
//!
//! On Kubernetes, the API server asks galley before it stores an Istio resource;
//! galley answers with the same rules as its own pipeline and `meshctl
//! validate`, so `kubectl apply` of a bad resource is refused with the message
//! galley would log for it (without a file and line, since there is no file).
//! Resources of other API groups, deletions and connects are allowed unchanged.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    response::Response,
    routing::post,
};
use mesh_admission::{AdmissionRequest, AdmissionResponse, Operation};
use mesh_model::parse::{ParseOptions, parse_document_set};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// What a review came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// A resource galley owns, valid.
    Allowed,
    /// A resource galley owns, refused.
    Denied,
    /// Not galley's to judge (another group, a delete): allowed unchanged.
    Ignored,
    /// The review itself could not be read.
    Invalid,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
            Verdict::Ignored => "ignored",
            Verdict::Invalid => "invalid",
        }
    }
}

/// Judges one request: the object is read and validated as galley reads a
/// document of its configuration directory.
pub fn review(request: &AdmissionRequest, default_namespace: &str) -> (AdmissionResponse, Verdict) {
    let uid = request.uid.as_str();
    if !matches!(request.operation, Operation::Create | Operation::Update)
        || request
            .sub_resource
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    {
        return (AdmissionResponse::allow(uid), Verdict::Ignored);
    }
    let Some(object) = request.object.as_ref() else {
        return (
            AdmissionResponse::invalid(uid, "the review has no object"),
            Verdict::Invalid,
        );
    };
    let mut object = object.clone();
    // The namespace is the request's when the object does not carry one (kubectl
    // sends objects as written).
    if let (Some(ns), Some(metadata)) = (
        request.namespace.as_deref().filter(|n| !n.is_empty()),
        object.get_mut("metadata").and_then(|m| m.as_object_mut()),
    ) {
        metadata
            .entry("namespace")
            .or_insert_with(|| serde_json::Value::String(ns.to_string()));
    }
    let text = object.to_string();
    let name = format!(
        "{}/{}",
        request.kind.kind,
        request.name.as_deref().unwrap_or("")
    );
    let set = parse_document_set(
        &name,
        &text,
        &ParseOptions {
            default_namespace: default_namespace.to_string(),
        },
    );
    let errors: Vec<String> = set.errors().map(|e| e.without_source()).collect();
    if !errors.is_empty() {
        return (
            AdmissionResponse::denied(uid, errors.join("; ")),
            Verdict::Denied,
        );
    }
    if set.accepted.is_empty() {
        return (AdmissionResponse::allow(uid), Verdict::Ignored);
    }
    (AdmissionResponse::allow(uid), Verdict::Allowed)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

/// Reviews answered, by verdict.
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    reviews: Family<VerdictLabels, Counter>,
}

impl WebhookMetrics {
    /// Registers the counters.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "galley_validation_reviews",
            "Admission reviews answered by galley's validating webhook, by verdict",
            metrics.reviews.clone(),
        );
        metrics
    }

    fn record(&self, verdict: Verdict) {
        self.reviews
            .get_or_create(&VerdictLabels {
                verdict: verdict.as_str(),
            })
            .inc();
    }
}

#[derive(Clone)]
struct WebhookState {
    default_namespace: Arc<str>,
    metrics: WebhookMetrics,
}

/// The webhook's routes: `POST /validate`.
pub fn router(default_namespace: &str, metrics: WebhookMetrics) -> Router {
    Router::new()
        .route("/validate", post(handle))
        .layer(DefaultBodyLimit::max(
            mesh_admission::serve::MAX_REVIEW_BYTES,
        ))
        .with_state(WebhookState {
            default_namespace: default_namespace.into(),
            metrics,
        })
}

async fn handle(State(state): State<WebhookState>, body: Bytes) -> Response {
    let (response, verdict) = mesh_admission::serve::respond(&body, |request| {
        let (response, verdict) = review(request, &state.default_namespace);
        if verdict == Verdict::Denied {
            let message = response.status.as_ref().map(|s| s.message.as_str());
            tracing::info!(uid = %response.uid, message, "resource refused by the validating webhook");
        }
        (response, verdict)
    });
    state.metrics.record(verdict.unwrap_or(Verdict::Invalid));
    response
}

#[cfg(test)]
mod tests {
    use mesh_admission::{GroupVersionKind, GroupVersionResource};
    use serde_json::{Value, json};

    use super::*;

    fn request(operation: Operation, object: Value) -> AdmissionRequest {
        AdmissionRequest {
            uid: "u-1".into(),
            kind: GroupVersionKind {
                group: "networking.istio.io".into(),
                version: "v1".into(),
                kind: object["kind"].as_str().unwrap_or_default().into(),
            },
            resource: GroupVersionResource::default(),
            sub_resource: None,
            name: object["metadata"]["name"].as_str().map(str::to_string),
            namespace: Some("shop".into()),
            operation,
            object: Some(object),
            old_object: None,
            dry_run: None,
        }
    }

    fn virtual_service(port: u64) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews"},
            "spec": {
                "hosts": ["reviews"],
                "http": [{"route": [{"destination": {"host": "reviews", "port": {"number": port}}}]}]
            }
        })
    }

    #[test]
    fn valid_resources_are_allowed_and_bad_ones_refused_with_galleys_message() {
        let (response, verdict) = review(
            &request(Operation::Create, virtual_service(9080)),
            "default",
        );
        assert_eq!(verdict, Verdict::Allowed);
        assert!(response.allowed);

        let (response, verdict) = review(
            &request(Operation::Update, virtual_service(700_000)),
            "default",
        );
        assert_eq!(verdict, Verdict::Denied);
        assert!(!response.allowed);
        let message = response.status.expect("status").message;
        assert!(
            message.starts_with("VirtualService shop/reviews: "),
            "{message}"
        );
        assert!(message.contains("port"), "{message}");
        assert!(!message.contains(".yaml"), "{message}");
    }

    #[test]
    fn other_groups_and_deletes_are_not_judged() {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {}});
        assert_eq!(
            review(&request(Operation::Create, deployment), "default").1,
            Verdict::Ignored
        );
        assert_eq!(
            review(
                &request(Operation::Delete, virtual_service(700_000)),
                "default"
            )
            .1,
            Verdict::Ignored
        );
        let mut no_object = request(Operation::Create, virtual_service(1));
        no_object.object = None;
        assert_eq!(review(&no_object, "default").1, Verdict::Invalid);
    }
}
