//! An HTTPS server for an axum router: HTTP/1.1 and HTTP/2 (by ALPN), each
//! handshake in its own task under a timeout, connections drained on shutdown.

use std::time::Duration;

use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::tls::ServingCert;

/// How long a client may take over its TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may take to finish once shutdown begins.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS configuration cannot be built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Serves a router over TLS with a certificate that may rotate.
#[derive(Debug, Clone)]
pub struct HttpsServer {
    cert: ServingCert,
    handshake_timeout: Duration,
    drain_timeout: Duration,
}

impl HttpsServer {
    /// A server presenting `cert`.
    pub fn new(cert: ServingCert) -> Self {
        Self {
            cert,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }

    /// The same server with another handshake timeout.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Accepts connections on `listener` until `shutdown`, then waits (up to the
    /// drain timeout) for open connections to finish their requests.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: axum::Router,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        let acceptor = TlsAcceptor::from(self.cert.server_config()?);
        let graceful = GracefulShutdown::new();
        loop {
            let (tcp, remote) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(router.clone());
            let watcher = graceful.watcher();
            let handshake_timeout = self.handshake_timeout;
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
                let builder = auto::Builder::new(TokioExecutor::new());
                let connection = builder.serve_connection(TokioIo::new(tls), service);
                if let Err(e) = watcher.watch(connection).await {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(self.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the drain timeout");
        }
        Ok(())
    }
}

/// The largest review a webhook accepts: an object may be 1.5 MiB, and updates
/// carry two.
pub const MAX_REVIEW_BYTES: usize = 8 * 1024 * 1024;

/// Answers one webhook request body: decodes the review, lets `judge` answer the
/// request (with an outcome of its own, for metrics and logs), and encodes the
/// answer in the review's version. A review that cannot be read is answered
/// `invalid` and gives no outcome; without even a uid to match, the HTTP status
/// is 400.
pub fn respond<T>(
    body: &[u8],
    judge: impl FnOnce(&crate::AdmissionRequest) -> (crate::AdmissionResponse, T),
) -> (axum::response::Response, Option<T>) {
    use axum::{
        http::{StatusCode, header},
        response::IntoResponse,
    };
    let (status, version, response, outcome) = match crate::decode_review(body) {
        Ok((version, request)) => {
            let (response, outcome) = judge(&request);
            (StatusCode::OK, version, response, Some(outcome))
        }
        Err(e) => {
            tracing::debug!(error = %e, "malformed AdmissionReview");
            let status = if e.uid.is_empty() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            (status, e.version, e.response(), None)
        }
    };
    let body = crate::encode_review(version, &response);
    (
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        outcome,
    )
}
