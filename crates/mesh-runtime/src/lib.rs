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
pub mod http_client;
pub mod readiness;
pub mod shutdown;
pub mod telemetry;

pub use admin::{AdminServer, serve_admin};
pub use args::{LogArgs, LogFormat, RuntimeArgs};
pub use grpc::GrpcSupport;
pub use readiness::Readiness;
pub use shutdown::shutdown_on_signal;
pub use telemetry::{TelemetryGuard, init_telemetry};

/// Binds a TCP listener, naming the address in the error.
pub async fn bind(
    addr: std::net::SocketAddr,
    what: &str,
) -> Result<tokio::net::TcpListener, BindError> {
    let listen = || -> std::io::Result<tokio::net::TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| BindError {
        what: what.to_string(),
        addr,
        source,
    })
}

/// Pending connections a listener queues: thousands of proxies reconnecting at once
/// after a restart must not be refused (the kernel caps it at `somaxconn`).
pub const LISTEN_BACKLOG: u32 = 8192;

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

/// Runs a component's `main`: builds the async runtime, installs logging and trace
/// export inside it (exporters spawn on it), runs `main` with a token cancelled on
/// SIGTERM or Ctrl-C, flushes telemetry, and maps the outcome to an exit code
/// (1 on error, 2 when telemetry cannot be set up).
pub fn run_main<F, Fut, E>(log: &LogArgs, service: &str, main: F) -> std::process::ExitCode
where
    F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    run_main_with(log, &RuntimeArgs::default(), service, main)
}

/// The async runtime `args` describe.
pub fn build_runtime(args: &RuntimeArgs) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match args.worker_threads.map(std::num::NonZeroUsize::get) {
        // One thread: the main thread runs every task, in the order they were
        // woken. A connection's task then runs after the requests it started
        // have answered, and writes their answers together; a one-worker
        // multi-thread runtime would run it after each answer (its LIFO slot),
        // costing a write per answer.
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

/// As [`run_main`], on a runtime shaped by `runtime`.
pub fn run_main_with<F, Fut, E>(
    log: &LogArgs,
    runtime: &RuntimeArgs,
    service: &str,
    main: F,
) -> std::process::ExitCode
where
    F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let runtime = match build_runtime(runtime) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{service}: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Declared after the runtime, so it is dropped (and flushed) before it.
    let _telemetry = {
        let _context = runtime.enter();
        match init_telemetry(log, service) {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("{service}: {e}");
                return std::process::ExitCode::from(2);
            }
        }
    };
    runtime.block_on(async move {
        let shutdown = shutdown_on_signal();
        match main(shutdown).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "{service} stopped");
                eprintln!("{service}: {e:#}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::num::NonZeroUsize;
    use tokio::runtime::RuntimeFlavor;

    fn flavor(threads: Option<usize>) -> (RuntimeFlavor, usize) {
        let args = RuntimeArgs {
            worker_threads: threads.and_then(NonZeroUsize::new),
        };
        let rt = build_runtime(&args).unwrap();
        let m = rt.metrics();
        (rt.handle().runtime_flavor(), m.num_workers())
    }

    #[test]
    fn one_worker_thread_is_a_current_thread_runtime() {
        assert_eq!(flavor(Some(1)), (RuntimeFlavor::CurrentThread, 1));
        assert_eq!(flavor(Some(3)), (RuntimeFlavor::MultiThread, 3));
        assert_eq!(flavor(None).0, RuntimeFlavor::MultiThread);
    }
}
