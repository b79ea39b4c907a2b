//! galley's debug endpoints.

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};
use mesh_xds::SyncStatus;
use parking_lot::RwLock;
use serde_json::{Value, json};

use crate::GalleyState;

#[derive(Clone)]
struct DebugState {
    galley: Arc<RwLock<GalleyState>>,
    status: Arc<SyncStatus>,
}

/// `/debug/configz`, `/debug/syncz`, `/debug/analyze` and `/debug/errors`.
pub fn routes(galley: Arc<RwLock<GalleyState>>, status: Arc<SyncStatus>) -> Router {
    Router::new()
        .route("/debug/configz", get(configz))
        .route("/debug/syncz", get(syncz))
        .route("/debug/analyze", get(analyze))
        .route("/debug/errors", get(errors))
        .with_state(DebugState { galley, status })
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
    Json(json!({ "clients": streams }))
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
