//! What every gRPC port serves besides its own API: `grpc.health.v1` (following the
//! component's readiness) and gRPC server reflection.

use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::readiness::Readiness;

/// Health and reflection for one gRPC port.
#[derive(Clone)]
pub struct GrpcSupport {
    reporter: HealthReporter,
}

impl GrpcSupport {
    /// Builds a tonic router with health and reflection added, and keeps the health
    /// status of `services` (and of the server as a whole, the empty name) in step
    /// with `readiness` until `shutdown`, when every service turns NOT_SERVING.
    pub fn router(
        services: &[&'static str],
        extra_descriptors: &[&'static [u8]],
        readiness: &Readiness,
        shutdown: CancellationToken,
    ) -> Result<(Self, Router), tonic_reflection::server::Error> {
        let (reporter, health) = tonic_health::server::health_reporter();
        let mut reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(mesh_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(mesh_api::ENVOY_FILE_DESCRIPTOR_SET);
        for fds in extra_descriptors {
            reflection = reflection.register_encoded_file_descriptor_set(fds);
        }
        let reflection = reflection.build_v1()?;
        let support = Self { reporter };
        support.follow(services.to_vec(), readiness.clone(), shutdown);
        let router = tonic::transport::Server::builder()
            .add_service(health)
            .add_service(reflection);
        Ok((support, router))
    }

    fn follow(
        &self,
        services: Vec<&'static str>,
        readiness: Readiness,
        shutdown: CancellationToken,
    ) {
        let reporter = self.reporter.clone();
        tokio::spawn(async move {
            let mut rx = readiness.subscribe();
            loop {
                let status = if *rx.borrow_and_update() {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                reporter.set_service_status("", status).await;
                for s in &services {
                    reporter.set_service_status(*s, status).await;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { break },
                    _ = shutdown.cancelled() => break,
                }
            }
            reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
            for s in &services {
                reporter
                    .set_service_status(*s, ServingStatus::NotServing)
                    .await;
            }
        });
    }
}

/// How long a server waits, after shutdown fires, for clients to close their
/// connections before it closes them itself.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Serves `router` on `listener` until `shutdown` fires, then drains: new
/// connections are refused, long-lived streams are ended by their handlers, and
/// connections still open after [`DRAIN_TIMEOUT`] are closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    // Small answers go out at once, not after the peer's delayed ACK.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    serve_incoming(incoming, router, shutdown).await
}

/// As [`serve`], on an mTLS port: connections are handshaken by `acceptor` (whose
/// identity source gives the current certificate, so a renewal needs no restart),
/// and every request carries the peer's [`mesh_tls::PeerInfo`].
pub async fn serve_mtls(
    listener: tokio::net::TcpListener,
    acceptor: mesh_tls::MtlsAcceptor,
    router: Router,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = mesh_tls::incoming(listener, acceptor, shutdown.clone());
    serve_incoming(incoming, router, shutdown).await
}

/// As [`serve`], on connections accepted elsewhere: an mTLS port hands over the
/// connections whose handshake succeeded (`mesh_tls::incoming`).
pub async fn serve_incoming<I, IO, IE>(
    incoming: I,
    router: Router,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful =
        router.serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    tokio::pin!(graceful);
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        result = &mut graceful => result,
        _ = deadline => {
            tracing::info!(timeout = ?DRAIN_TIMEOUT, "drain timeout reached; closing remaining gRPC connections");
            Ok(())
        }
    }
}
