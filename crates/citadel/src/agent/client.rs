//! Obtaining a certificate from citadel: a fresh ECDSA P-256 key and CSR each
//! time, `CreateCertificate` over TLS, authenticated by the current certificate
//! (mTLS) when the agent holds a valid one, by a bearer token otherwise or when
//! mTLS renewal fails.

use std::{path::PathBuf, sync::Arc, time::Duration};

use mesh_api::ca::v1::{
    IstioCertificateRequest, istio_certificate_service_client::IstioCertificateServiceClient,
};
use mesh_tls::{ClientCredentials, IdentitySource, ServerIdentity, SharedIdentity};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use zeroize::Zeroizing;

use super::{AgentError, CertBundle, TokenSource};

/// How long one `CreateCertificate` call may take, connecting included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The credential a certificate was obtained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The bearer token.
    Token,
    /// The current certificate, over mTLS.
    Mtls,
}

impl Via {
    /// `token` or `mtls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Token => "token",
            Via::Mtls => "mtls",
        }
    }
}

/// Talks to citadel's CA port.
#[derive(Debug, Clone)]
pub struct CaClient {
    /// `https://host:port`.
    pub addr: String,
    /// Trust domain citadel's serving certificate must belong to.
    pub trust_domain: String,
    /// Roots to trust for citadel before the agent holds any (PEM file).
    pub ca_root: Option<PathBuf>,
    /// The token for first issuance.
    pub token: Option<TokenSource>,
    /// Requested lifetime.
    pub ttl: Duration,
}

impl CaClient {
    /// A new certificate: renewed over mTLS with `current` when it is valid,
    /// else (or when that fails and a token is configured) with the token.
    pub async fn obtain(
        &self,
        current: Option<&CertBundle>,
    ) -> Result<(CertBundle, Via), AgentError> {
        let now = std::time::SystemTime::now();
        let usable = current.filter(|c| !c.expired_at(now));
        if let Some(cert) = usable {
            match self.obtain_mtls(cert).await {
                Ok(bundle) => return Ok((bundle, Via::Mtls)),
                Err(e) if self.token.is_some() => {
                    tracing::warn!(error = %e, "mTLS renewal failed; falling back to the token");
                }
                Err(e) => return Err(e),
            }
        }
        // The roots learnt from the CA with the last certificate, and those of the
        // --ca-root file (read again, so an operator can point the agent at a CA
        // that was re-rooted): a server certificate from either is accepted.
        let mut roots = current.map(CertBundle::root_ders).unwrap_or_default();
        match self.file_roots() {
            Ok(file) => {
                for root in file {
                    if !roots.contains(&root) {
                        roots.push(root);
                    }
                }
            }
            Err(e) if roots.is_empty() => return Err(e),
            Err(e) => tracing::debug!(error = %e, "using the roots learnt from the CA"),
        }
        let bundle = self.obtain_token(roots).await?;
        Ok((bundle, Via::Token))
    }

    fn file_roots(&self) -> Result<Vec<CertificateDer<'static>>, AgentError> {
        let path = self
            .ca_root
            .as_ref()
            .ok_or_else(|| AgentError::Config("no CA root to trust: give --ca-root".into()))?;
        let pem = std::fs::read(path).map_err(|source| AgentError::Io {
            path: path.clone(),
            source,
        })?;
        let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))?;
        if roots.is_empty() {
            return Err(AgentError::Config(format!(
                "{}: no CERTIFICATE block",
                path.display()
            )));
        }
        Ok(roots)
    }

    async fn obtain_mtls(&self, current: &CertBundle) -> Result<CertBundle, AgentError> {
        let source: Arc<dyn IdentitySource> =
            Arc::new(SharedIdentity::new(Some(current.tls_identity()?)));
        // A new channel per renewal: a connection kept from an earlier renewal
        // would still present an older certificate.
        self.call(
            ClientCredentials::Identity(source),
            None,
            current.spiffe_id.as_ref().map(|id| id.uri()),
        )
        .await
    }

    async fn obtain_token(
        &self,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<CertBundle, AgentError> {
        let token = match &self.token {
            Some(source) => source.read()?,
            None => return Err(AgentError::NoCredentials),
        };
        self.call(ClientCredentials::RootsOnly(roots), Some(token), None)
            .await
    }

    async fn call(
        &self,
        credentials: ClientCredentials,
        token: Option<crate::authn::Secret>,
        san: Option<String>,
    ) -> Result<CertBundle, AgentError> {
        let via = if token.is_some() { "token" } else { "mtls" };
        let (key_pem, csr) = new_key_and_csr(san)?;
        let channel = mesh_tls::channel_with(
            &self.addr,
            credentials,
            ServerIdentity::TrustDomain(self.trust_domain.clone()),
        )
        .map_err(|e| AgentError::Config(e.to_string()))?;
        let mut client = IstioCertificateServiceClient::new(channel);
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr,
            validity_duration: i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX),
            metadata: None,
        });
        request.set_timeout(CALL_TIMEOUT);
        if let Some(token) = token {
            let value = format!("Bearer {}", token.expose())
                .parse()
                .map_err(|_| AgentError::BadToken("not a valid header value".into()))?;
            request.metadata_mut().insert("authorization", value);
        }
        let response = tokio::time::timeout(CALL_TIMEOUT, client.create_certificate(request))
            .await
            .map_err(|_| AgentError::Timeout(CALL_TIMEOUT))?
            .map_err(|status| AgentError::Refused {
                via,
                code: status.code(),
                message: status.message().to_string(),
            })?
            .into_inner();
        CertBundle::from_response(&response, key_pem, std::time::SystemTime::now())
    }
}

/// A fresh P-256 key (PKCS#8 PEM) and a CSR for it, naming `san` if given.
pub fn new_key_and_csr(san: Option<String>) -> Result<(Zeroizing<String>, String), AgentError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AgentError::Key(e.to_string()))?;
    let mut params = CertificateParams::default();
    if let Some(uri) = san {
        let uri =
            rcgen::string::Ia5String::try_from(uri).map_err(|e| AgentError::Key(e.to_string()))?;
        params.subject_alt_names.push(SanType::URI(uri));
    }
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| AgentError::Key(e.to_string()))?;
    Ok((Zeroizing::new(key.serialize_pem()), csr))
}
