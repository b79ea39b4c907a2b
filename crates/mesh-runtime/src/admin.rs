//! The monitoring HTTP server: `/metrics`, `/healthz`, `/ready` and a component's
//! own `/debug/*` routes.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::registry::Registry;
use std::future::IntoFuture;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::readiness::Readiness;

/// What the monitoring server serves.
#[derive(Clone)]
pub struct AdminServer {
    registry: Arc<Registry>,
    readiness: Readiness,
    extra: Router,
}

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

impl AdminServer {
    /// A server for `registry` and `readiness`, with no extra routes.
    pub fn new(registry: Arc<Registry>, readiness: Readiness) -> Self {
        Self {
            registry,
            readiness,
            extra: Router::new(),
        }
    }

    /// Adds a component's own routes (e.g. `/debug/configz`).
    pub fn with_routes(mut self, routes: Router) -> Self {
        self.extra = self.extra.merge(routes);
        self
    }

    /// The axum router (for tests and embedding).
    pub fn router(&self) -> Router {
        let state = AdminState {
            registry: self.registry.clone(),
            readiness: self.readiness.clone(),
        };
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/ready", get(ready))
            .with_state(state)
            .merge(self.extra.clone())
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn ready(State(state): State<AdminState>) -> Response {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: sources are still loading\n",
        )
            .into_response()
    }
}

/// Serves the monitoring endpoints on `listener` until `shutdown` fires.
pub async fn serve_admin(
    listener: TcpListener,
    server: AdminServer,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::debug!(?addr, "monitoring server listening");
    let graceful = axum::serve(listener, server.router())
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(crate::grpc::DRAIN_TIMEOUT).await;
    };
    // Connections still open after the drain timeout are closed.
    tokio::select! {
        result = graceful.into_future() => result,
        _ = deadline => Ok(()),
    }
}
