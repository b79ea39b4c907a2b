//! The server side: accepting mTLS connections for a tonic server.
//!
//! ```text
//! let acceptor = MtlsAcceptor::new(identity, ClientAuth::Required);
//! router.serve_with_incoming_shutdown(incoming(listener, acceptor, shutdown.clone()), shutdown.cancelled_owned())
//! ```
//!
//! Handshakes run in their own tasks with a timeout, so a slow or hostile client
//! never holds up the others; a failed handshake is logged (debug) and counted and
//! never ends the stream of connections.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use parking_lot::Mutex;
use rustls::{ServerConfig, server::WebPkiClientVerifier};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use crate::{
    IdentitySource, PeerInfo, TlsError, TlsIdentity, cert,
    metrics::{HandshakeResult, TlsMetrics},
};

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client certificate chaining to a trusted root is required.
    Required,
    /// A client certificate is verified if presented; anonymous clients are let in
    /// (their [`PeerInfo`] has no identity). For ports whose callers authenticate
    /// otherwise, like citadel's CA port (JWT).
    Optional,
}

/// How long a client may take to complete its handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once on one port; more connections wait in the
/// listen backlog.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 1024;

/// Why one connection's handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The server has no usable identity.
    #[error("no server identity: {0}")]
    NoIdentity(#[source] TlsError),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    /// The client did not complete the handshake in time.
    #[error("TLS handshake timed out after {0:?}")]
    Timeout(Duration),
}

/// Accepts mTLS connections with the current identity of an [`IdentitySource`];
/// the rustls configuration is rebuilt when the identity changes, trusting every
/// root it lists.
#[derive(Clone)]
pub struct MtlsAcceptor {
    source: Arc<dyn IdentitySource>,
    auth: ClientAuth,
    handshake_timeout: Duration,
    metrics: Arc<TlsMetrics>,
    cached: Arc<Mutex<Option<CachedConfig>>>,
}

/// A configuration and the identity it was built from.
type CachedConfig = (Arc<TlsIdentity>, Arc<ServerConfig>);

impl std::fmt::Debug for MtlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsAcceptor")
            .field("auth", &self.auth)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("identity", &self.source.current())
            .finish()
    }
}

impl MtlsAcceptor {
    /// An acceptor presenting `source`'s identity.
    pub fn new(source: Arc<dyn IdentitySource>, auth: ClientAuth) -> Self {
        Self {
            source,
            auth,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            metrics: TlsMetrics::unregistered(),
            cached: Arc::new(Mutex::new(None)),
        }
    }

    /// The same acceptor with another handshake timeout.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The same acceptor counting handshakes in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<TlsMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The handshake counters.
    pub fn metrics(&self) -> &Arc<TlsMetrics> {
        &self.metrics
    }

    /// The rustls configuration for the current identity (built once per identity).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let identity = self.source.current().ok_or(TlsError::NoIdentity)?;
        let mut cached = self.cached.lock();
        if let Some((id, config)) = cached.as_ref()
            && Arc::ptr_eq(id, &identity)
        {
            return Ok(config.clone());
        }
        let config = Arc::new(server_config(&identity, self.auth)?);
        tracing::debug!(identity = ?identity, "TLS server configuration built");
        *cached = Some((identity, config.clone()));
        Ok(config)
    }

    /// Runs the handshake on `tcp`, within the handshake timeout.
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsConnection, HandshakeError> {
        let remote_addr = tcp.peer_addr().ok();
        let config = match self.server_config() {
            Ok(config) => config,
            Err(e) => {
                self.metrics.record(HandshakeResult::NoIdentity);
                return Err(HandshakeError::NoIdentity(e));
            }
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let stream = match tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                self.metrics.record(HandshakeResult::Failed);
                return Err(HandshakeError::Tls(e));
            }
            Err(_) => {
                self.metrics.record(HandshakeResult::Timeout);
                return Err(HandshakeError::Timeout(self.handshake_timeout));
            }
        };
        self.metrics.record(HandshakeResult::Ok);
        let certificates: Option<Arc<[_]>> = stream
            .get_ref()
            .1
            .peer_certificates()
            .filter(|c| !c.is_empty())
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
        let identity = certificates
            .as_ref()
            .and_then(|c| c.first())
            .and_then(|leaf| cert::spiffe_id_of(leaf).ok());
        Ok(TlsConnection {
            stream,
            info: PeerInfo {
                remote_addr,
                certificates,
                identity,
            },
        })
    }
}

fn server_config(identity: &TlsIdentity, auth: ClientAuth) -> Result<ServerConfig, TlsError> {
    let provider = cert::provider();
    let roots = Arc::new(identity.root_store()?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    let verifier = match auth {
        ClientAuth::Required => verifier.build(),
        ClientAuth::Optional => verifier.allow_unauthenticated().build(),
    }
    .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain().to_vec(), identity.key().clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The connections accepted on `listener`, handshaken by `acceptor`, for tonic's
/// `serve_with_incoming_shutdown`. Accepting stops when `shutdown` fires.
pub fn incoming(
    listener: TcpListener,
    acceptor: MtlsAcceptor,
    shutdown: CancellationToken,
) -> impl Stream<Item = io::Result<TlsConnection>> + Send + Unpin + 'static {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, acceptor, tx, shutdown));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: MtlsAcceptor,
    tx: mpsc::Sender<io::Result<TlsConnection>>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tx.closed() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tx.closed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
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
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor.accept(tcp).await {
                Ok(conn) => {
                    let _ = tx.send(Ok(conn)).await;
                }
                Err(e) => tracing::debug!(peer = %addr, error = %e, "mTLS handshake failed"),
            }
        });
    }
}

/// An accepted mTLS connection; tonic reads its [`PeerInfo`] into every request.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl TlsConnection {
    /// The peer.
    pub fn peer(&self) -> &PeerInfo {
        &self.info
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.info.remote_addr
    }
}

impl std::fmt::Debug for TlsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnection")
            .field("remote_addr", &self.info.remote_addr)
            .field("identity", &self.info.identity)
            .finish()
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
