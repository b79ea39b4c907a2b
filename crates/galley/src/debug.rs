//! galley's debug endpoints.

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};
use mesh_xds::SyncStatus;
use parking_lot::RwLock;
use serde_json::{Value, json};

use crate::{GalleyState, source::KubeStatus};

#[derive(Clone)]
struct DebugState {
    galley: Arc<RwLock<GalleyState>>,
    status: Arc<SyncStatus>,
    kube: KubeStatus,
}

/// `/debug/configz`, `/debug/syncz`, `/debug/analyze` and `/debug/errors`;
/// `/debug/syncz` also shows the Kubernetes source's watches when there are any.
pub fn routes(
    galley: Arc<RwLock<GalleyState>>,
    status: Arc<SyncStatus>,
    kube: KubeStatus,
) -> Router {
    Router::new()
        .route("/debug/configz", get(configz))
        .route("/debug/syncz", get(syncz))
        .route("/debug/analyze", get(analyze))
        .route("/debug/errors", get(errors))
        .with_state(DebugState {
            galley,
            status,
            kube,
        })
}

async fn configz(State(s): State<DebugState>) -> Json<Value> {
    let g = s.galley.read();
    let collections: Vec<Value> = g
        .versions
        .iter()
        .map(|(c, v, n)| json!({"collection": c, "version": v, "resources": n}))
        .collect();
    let resources: Vec<Value> = g
        .view
        .resources
        .values()
        .map(|r| {
            json!({
                "apiVersion": r.api_version,
                "kind": r.kind().as_str(),
                "metadata": r.meta,
                "source": r.source.to_string(),
                "spec": r.spec.to_value(),
            })
        })
        .collect();
    Json(json!({"collections": collections, "resources": resources}))
}

async fn syncz(State(s): State<DebugState>) -> Json<Value> {
    let streams = s.status.streams();
    let watches = s.kube.watches();
    if watches.is_empty() {
        Json(json!({ "clients": streams }))
    } else {
        Json(json!({ "clients": streams, "kubernetes": watches }))
    }
}

async fn analyze(State(s): State<DebugState>) -> Json<Value> {
    let g = s.galley.read();
    Json(json!({ "messages": g.analysis }))
}

async fn errors(State(s): State<DebugState>) -> Json<Value> {
    let g = s.galley.read();
    let errors: Vec<Value> = g
        .view
        .errors
        .iter()
        .map(|e| json!({"message": e.to_string(), "detail": e}))
        .collect();
    Json(json!({"errors": errors, "kept": g.view.kept, "skipped_documents": g.view.skipped}))
}
