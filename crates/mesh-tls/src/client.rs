//! The client side: tonic channels that dial mTLS and check the server's SPIFFE
//! identity.
//!
//! Mesh certificates carry a SPIFFE URI SAN and usually no DNS name, so the usual
//! hostname check cannot apply: [`SpiffeServerVerifier`] verifies the chain against
//! the trusted roots (server-auth usage, validity), then checks the leaf's SPIFFE
//! ID against a [`ServerIdentity`]. DNS SANs a certificate may also carry are
//! ignored.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::CryptoProvider,
    server::ParsedCertificate,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tonic::{
    codegen::http::Uri,
    transport::{Channel, Endpoint},
};

use crate::{IdentitySource, SpiffeId, TlsError, TlsIdentity, cert};

/// Which server identity a client accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerIdentity {
    /// Exactly this SPIFFE ID.
    Exact(SpiffeId),
    /// Any SPIFFE ID of this trust domain.
    TrustDomain(String),
}

impl ServerIdentity {
    /// `expected` exactly when given, otherwise any identity of the trust domain
    /// of `own`'s current certificate (`None` when that names no SPIFFE ID).
    pub fn expected_or_same_domain(
        expected: Option<&SpiffeId>,
        own: &dyn IdentitySource,
    ) -> Option<ServerIdentity> {
        match expected {
            Some(id) => Some(ServerIdentity::Exact(id.clone())),
            None => own
                .current()
                .as_ref()
                .and_then(|i| i.spiffe_id())
                .map(|id| ServerIdentity::TrustDomain(id.trust_domain().to_string())),
        }
    }

    /// Whether `id` is acceptable.
    pub fn accepts(&self, id: &SpiffeId) -> bool {
        match self {
            ServerIdentity::Exact(want) => want == id,
            ServerIdentity::TrustDomain(td) => id.trust_domain() == td,
        }
    }
}

impl std::fmt::Display for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerIdentity::Exact(id) => write!(f, "{id}"),
            ServerIdentity::TrustDomain(td) => write!(f, "any identity in trust domain {td}"),
        }
    }
}

/// What a client presents and trusts.
#[derive(Clone)]
pub enum ClientCredentials {
    /// The current identity of a source: its certificate is presented, its roots
    /// trusted. Read again at every connect, so a reconnect uses a renewed one.
    Identity(Arc<dyn IdentitySource>),
    /// No client certificate (the caller authenticates otherwise, e.g. a JWT to
    /// citadel); only these roots are trusted.
    RootsOnly(Vec<CertificateDer<'static>>),
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientCredentials::Identity(source) => {
                f.debug_tuple("Identity").field(&source.current()).finish()
            }
            ClientCredentials::RootsOnly(roots) => f
                .debug_tuple("RootsOnly")
                .field(&format_args!("{} root(s)", roots.len()))
                .finish(),
        }
    }
}

/// The server certificate's SPIFFE ID is not the expected one.
#[derive(Debug, thiserror::Error)]
#[error("server identity {got} is not {expected}")]
pub struct IdentityMismatch {
    /// What was expected.
    pub expected: ServerIdentity,
    /// What the server presented.
    pub got: SpiffeId,
}

/// Verifies a server's chain against trusted roots, then its SPIFFE ID.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expect: ServerIdentity,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    /// A verifier trusting `roots` and accepting `expect`.
    pub fn new(roots: Arc<RootCertStore>, expect: ServerIdentity) -> Self {
        Self {
            roots,
            expect,
            provider: cert::provider(),
        }
    }
}

fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(e),
    )))
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let got = cert::spiffe_id_of(end_entity).map_err(invalid)?;
        if !self.expect.accepts(&got) {
            return Err(invalid(IdentityMismatch {
                expected: self.expect.clone(),
                got,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// How long dialing (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connector for tonic's `Endpoint::connect_with_connector`: dials TCP, then
/// TLS with the credentials' current identity, ALPN `h2`.
#[derive(Clone, Debug)]
pub struct MtlsConnector {
    credentials: ClientCredentials,
    expect: ServerIdentity,
    cached: Arc<Mutex<Option<CachedConfig>>>,
}

/// A configuration and the identity it was built from (`None`: roots only).
type CachedConfig = (Option<Arc<TlsIdentity>>, Arc<ClientConfig>);

impl MtlsConnector {
    /// A connector presenting `credentials` and accepting servers named by `expect`.
    pub fn new(credentials: ClientCredentials, expect: ServerIdentity) -> Self {
        Self {
            credentials,
            expect,
            cached: Arc::new(Mutex::new(None)),
        }
    }

    /// The rustls configuration for the current identity (built once per identity).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let identity = match &self.credentials {
            ClientCredentials::Identity(source) => {
                Some(source.current().ok_or(TlsError::NoIdentity)?)
            }
            ClientCredentials::RootsOnly(_) => None,
        };
        let mut cached = self.cached.lock();
        if let Some((id, config)) = cached.as_ref() {
            let same = match (id, &identity) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if same {
                return Ok(config.clone());
            }
        }
        let roots = match (&identity, &self.credentials) {
            (Some(id), _) => id.root_store()?,
            (None, ClientCredentials::RootsOnly(roots)) => roots_store(roots)?,
            (None, ClientCredentials::Identity(_)) => return Err(TlsError::NoIdentity),
        };
        let provider = cert::provider();
        let verifier = SpiffeServerVerifier::new(Arc::new(roots), self.expect.clone());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match &identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain().to_vec(), id.key().clone_key())
                .map_err(|e| TlsError::Config(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let config = Arc::new(config);
        *cached = Some((identity, config.clone()));
        Ok(config)
    }

    /// Dials `uri`'s host and port and runs the handshake.
    pub async fn connect(
        &self,
        uri: &Uri,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "endpoint has no host"))?;
        let port = uri.port_u16().unwrap_or(443);
        let config = self.client_config().map_err(io::Error::other)?;
        // Sent as SNI only; the verifier checks the SPIFFE ID, not this name.
        let server_name = ServerName::try_from(host.clone())
            .or_else(|_| ServerName::try_from("mesh.invalid".to_string()))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
    }
}

fn roots_store(roots: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    if roots.is_empty() {
        return Err(TlsError::Pem {
            file: crate::material::ROOT_CERT_FILE,
            reason: "no certificate".into(),
        });
    }
    let mut store = RootCertStore::empty();
    for (index, root) in roots.iter().enumerate() {
        store.add(root.clone()).map_err(|e| TlsError::Certificate {
            file: crate::material::ROOT_CERT_FILE,
            index,
            reason: format!("not usable as a trust anchor: {e}"),
        })?;
    }
    Ok(store)
}

impl tower::Service<Uri> for MtlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.connect(&uri).await.map(TokioIo::new) })
    }
}

/// A lazily connecting tonic channel to `endpoint` (`https://host:port`) that
/// presents `source`'s current identity and accepts a server named by `expect`.
pub fn channel(
    endpoint: &str,
    source: Arc<dyn IdentitySource>,
    expect: ServerIdentity,
) -> Result<Channel, TlsError> {
    channel_with(endpoint, ClientCredentials::Identity(source), expect)
}

/// A component's certificate and what it serves with it: a port that requires
/// client certificates, and following galley over `https://`.
#[derive(Debug, Clone)]
pub struct ServingTls {
    /// Directory with `cert-chain.pem`, `key.pem` and `root-cert.pem`, renewed in
    /// place by citadel's agent.
    pub dir: std::path::PathBuf,
    /// The mTLS listen address: clients present a certificate of the mesh's
    /// trust domain.
    pub mtls_addr: std::net::SocketAddr,
    /// The identity galley's certificate must name (default: any identity of the
    /// trust domain).
    pub galley_identity: Option<SpiffeId>,
}

/// The channel `component` follows galley over: none (plaintext, tonic's own)
/// for an `http://` endpoint; for `https://`, mTLS with the component's
/// `identity`, accepting the server certificate naming `expected` (default: any
/// identity of the component's own trust domain).
pub fn follower_channel(
    component: &str,
    endpoint: &str,
    identity: Option<&Arc<dyn IdentitySource>>,
    expected: Option<&SpiffeId>,
) -> Result<Option<Channel>, TlsError> {
    if !endpoint.starts_with("https://") {
        return Ok(None);
    }
    let Some(identity) = identity else {
        return Err(TlsError::Settings(format!(
            "galley endpoint {endpoint} is https: {component} needs a certificate (--tls-dir)"
        )));
    };
    let expect =
        ServerIdentity::expected_or_same_domain(expected, identity.as_ref()).ok_or_else(|| {
            TlsError::Settings(format!(
                "{component}'s certificate names no SPIFFE identity"
            ))
        })?;
    channel(endpoint, identity.clone(), expect).map(Some)
}

/// As [`channel`], with any [`ClientCredentials`].
pub fn channel_with(
    endpoint: &str,
    credentials: ClientCredentials,
    expect: ServerIdentity,
) -> Result<Channel, TlsError> {
    let ep = tls_endpoint(endpoint)?;
    Ok(ep.connect_with_connector_lazy(MtlsConnector::new(credentials, expect)))
}

/// A tonic `Endpoint` for `endpoint` (`https://host:port`) to use with an
/// [`MtlsConnector`]: requests name the `https` origin, while tonic itself dials
/// plain TCP through the connector (its own TLS never touches the connection).
pub fn tls_endpoint(endpoint: &str) -> Result<Endpoint, TlsError> {
    let bad = |reason: &str| TlsError::Endpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = endpoint
        .parse()
        .map_err(|e: tonic::codegen::http::uri::InvalidUri| bad(&e.to_string()))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("must start with https://"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.port_u16().is_none() {
        return Err(bad("no port"));
    }
    let origin: Uri = format!("https://{authority}")
        .parse()
        .map_err(|e: tonic::codegen::http::uri::InvalidUri| bad(&e.to_string()))?;
    let ep = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| bad(&e.to_string()))?
        .origin(origin)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    Ok(ep)
}
