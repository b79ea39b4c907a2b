//! The process scaffold every Dromon component runs on.
//!
//! One place for what each of galley, pilot, citadel, the mixers and the injector
//! needs around its own logic: clap flag groups with environment twins, tracing
//! logs (text or JSON) with optional OpenTelemetry export over OTLP, a Prometheus
//! registry, the monitoring HTTP server (`/metrics`, `/healthz`, `/ready`, plus each
//! component's `/debug/*` routes), `grpc.health.v1` and gRPC server reflection on
//! every gRPC port, readiness gating, and graceful drain on SIGTERM or Ctrl-C.

pub mod admin;
pub mod args;
pub mod grpc;
pub mod readiness;
pub mod shutdown;
pub mod telemetry;

pub use admin::{AdminServer, serve_admin};
pub use args::{LogArgs, LogFormat};
pub use grpc::GrpcSupport;
pub use readiness::Readiness;
pub use shutdown::shutdown_on_signal;
pub use telemetry::{TelemetryGuard, init_telemetry};

/// Binds a TCP listener, naming the address in the error.
pub async fn bind(
    addr: std::net::SocketAddr,
    what: &str,
) -> Result<tokio::net::TcpListener, BindError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BindError {
            what: what.to_string(),
            addr,
            source,
        })
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for {what} on {addr}: {source}")]
pub struct BindError {
    /// What the port is for.
    pub what: String,
    /// The address.
    pub addr: std::net::SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}
