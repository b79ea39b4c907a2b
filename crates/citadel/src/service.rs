//! The CA's gRPC service, `istio.v1.auth.IstioCertificateService`: authenticate
//! the caller, check the request, sign, record in the ledger, answer.
//!
//! Each refusal has its gRPC code: `Unauthenticated` (nothing more said),
//! `InvalidArgument` for a bad CSR or lifetime, `PermissionDenied` for an
//! identity outside the trust domain, `Unavailable` when the CA cannot issue or
//! record or a credential's verifier cannot answer, `Internal` when an
//! authenticator cannot work (e.g. lacks a permission). A certificate that could not be recorded is never returned.

use std::{sync::Arc, time::Instant};

use futures::future::BoxFuture;
use mesh_api::ca::v1::{
    IstioCertificateRequest, IstioCertificateResponse,
    istio_certificate_service_server::IstioCertificateService,
};
use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use crate::{
    authn::{AuthError, Authenticators, CallerContext, Secret},
    ca::{Authority, IssueError, IssuedCert},
    metrics::{AuthenticatorLabels, CaMetrics},
};

/// Where issued certificates are recorded before they are returned.
pub trait Recorder: Send + Sync {
    /// Records `cert` durably; an error means the certificate must not be returned.
    fn record<'a>(&'a self, cert: &'a IssuedCert) -> BoxFuture<'a, Result<(), String>>;
}

/// Reads the caller's credentials from a request (its bearer token, and its
/// verified client certificate when the transport is mTLS).
pub type ContextReader =
    Arc<dyn Fn(&tonic::metadata::MetadataMap, &tonic::Extensions) -> CallerContext + Send + Sync>;

/// The CreateCertificate handler.
#[derive(Clone)]
pub struct CaService {
    authority: Arc<Authority>,
    authenticators: Authenticators,
    recorder: Arc<dyn Recorder>,
    metrics: Arc<CaMetrics>,
    peer: ContextReader,
}

impl CaService {
    /// A service issuing from `authority`, recording into `recorder`. `peer`
    /// fills in the client-certificate part of a caller's context.
    pub fn new(
        authority: Arc<Authority>,
        authenticators: Authenticators,
        recorder: Arc<dyn Recorder>,
        metrics: Arc<CaMetrics>,
        peer: ContextReader,
    ) -> Self {
        Self {
            authority,
            authenticators,
            recorder,
            metrics,
            peer,
        }
    }

    /// The caller's credentials.
    fn context(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        ext: &tonic::Extensions,
    ) -> CallerContext {
        let mut ctx = (self.peer)(metadata, ext);
        ctx.bearer = bearer(metadata);
        ctx
    }

    /// Handles one request; public so load tools and tests can drive it in-process.
    pub async fn create(
        &self,
        ctx: CallerContext,
        req: IstioCertificateRequest,
    ) -> Result<IstioCertificateResponse, Status> {
        let started = Instant::now();
        let (identity, authenticator) = match self.authenticators.authenticate(&ctx).await {
            Ok(found) => found,
            Err(e) => {
                self.metrics.refuse(e.refusal_reason());
                return Err(match &e {
                    AuthError::Missing | AuthError::Invalid { .. } => {
                        tracing::info!(error = %e, "CreateCertificate refused: authentication failed");
                        Status::unauthenticated(e.public_message())
                    }
                    AuthError::Unavailable { .. } => {
                        tracing::warn!(error = %e, "CreateCertificate refused: an authenticator is unavailable");
                        Status::unavailable(e.public_message())
                    }
                    AuthError::Internal { .. } => {
                        tracing::error!(error = %e, "CreateCertificate refused: an authenticator cannot work");
                        Status::internal(e.public_message())
                    }
                });
            }
        };
        let issued = match self.authority.issue(
            &identity,
            &req.csr,
            req.validity_duration,
            OffsetDateTime::now_utc(),
        ) {
            Ok(issued) => issued,
            Err(e) => {
                self.metrics.refuse(e.reason());
                tracing::info!(%identity, reason = e.reason(), error = %e, "CreateCertificate refused");
                return Err(status_of(&e));
            }
        };
        if let Err(e) = self.recorder.record(&issued).await {
            self.metrics.refuse("ledger_unavailable");
            tracing::error!(%identity, error = %e, "cannot record an issued certificate; not returning it");
            return Err(Status::unavailable("the certificate ledger is unavailable"));
        }
        self.metrics
            .issued
            .get_or_create(&AuthenticatorLabels {
                authenticator: authenticator.to_string(),
            })
            .inc();
        self.metrics
            .issue_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(%identity, serial = %issued.serial, not_after = %issued.not_after, "issued");
        let trusted_roots = self
            .authority
            .material()
            .map(|m| m.roots.iter().map(|r| r.pem.clone()).collect())
            .unwrap_or_default();
        Ok(IstioCertificateResponse {
            cert_chain: issued.chain_pem,
            trusted_roots,
        })
    }
}

/// The gRPC code for an issuing failure.
pub fn status_of(e: &IssueError) -> Status {
    match e {
        IssueError::Csr(_) | IssueError::TtlTooLong { .. } => {
            Status::invalid_argument(e.to_string())
        }
        IssueError::ForeignIdentity(_) => Status::permission_denied(e.to_string()),
        IssueError::IssuerUnavailable(_) => Status::unavailable(e.to_string()),
        IssueError::Sign(_) => Status::internal("signing failed"),
    }
}

/// The bearer token of the `authorization` header, if any.
fn bearer(metadata: &tonic::metadata::MetadataMap) -> Option<Secret> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty()).then(|| Secret::new(token))
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let ctx = self.context(&metadata, &extensions);
        self.create(ctx, req).await.map(Response::new)
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
