//! Who is asking: authenticators turn a caller's credentials into a SPIFFE
//! identity before anything is signed.
//!
//! Three are built in: [`MtlsAuthenticator`] (a client certificate citadel issued,
//! for renewal), [`JwtAuthenticator`] (a signed token from a configured issuer) and
//! [`TokenReviewAuthenticator`] (a Kubernetes service-account token, checked by the
//! API server). A caller that fails learns only that authentication failed (or, when
//! a verifier cannot answer, that it should retry); the reason goes to the log.

pub mod jwt;
pub mod kube;
pub mod local;
pub mod mtls;

use std::{fmt, sync::Arc};

use futures::future::BoxFuture;
use mesh_tls::SpiffeId;

pub use jwt::{JwksSource, JwtAuthenticator, JwtConfig};
pub use kube::{DEFAULT_TOKEN_AUDIENCE, TokenReviewAuthenticator};
pub use local::LocalIssuer;
pub use mtls::{MtlsAuthenticator, RevokedSerials};

/// A token or other secret: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// The credentials a call arrived with.
#[derive(Debug, Clone, Default)]
pub struct CallerContext {
    /// A bearer token from the `authorization` header.
    pub bearer: Option<Secret>,
    /// The SPIFFE identity of a verified client certificate.
    pub peer_identity: Option<SpiffeId>,
    /// The serial number (lowercase hex) of that certificate.
    pub peer_serial: Option<String>,
}

/// Why authentication failed. Only [`AuthError::public_message`] reaches the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential any authenticator accepts.
    #[error("no credentials")]
    Missing,
    /// A credential was presented and is not valid.
    #[error("{authenticator}: {reason}")]
    Invalid {
        /// Which authenticator refused.
        authenticator: &'static str,
        /// Why, for the log.
        reason: String,
    },
    /// A credential could not be checked now: its verifier did not answer (the
    /// caller should retry).
    #[error("{authenticator} unavailable: {reason}")]
    Unavailable {
        /// Which authenticator could not decide.
        authenticator: &'static str,
        /// Why, for the log.
        reason: String,
    },
    /// A credential could not be checked because the authenticator is misconfigured
    /// or lacks a permission (retrying will not help).
    #[error("{authenticator} failed: {reason}")]
    Internal {
        /// Which authenticator could not decide.
        authenticator: &'static str,
        /// Why, for the log.
        reason: String,
    },
}

impl AuthError {
    /// What the caller is told: nothing about why.
    pub fn public_message(&self) -> &'static str {
        match self {
            Self::Missing | Self::Invalid { .. } => "authentication failed",
            Self::Unavailable { .. } => "authentication is unavailable; retry later",
            Self::Internal { .. } => "authentication could not be performed",
        }
    }

    /// The `reason` label of `citadel_csr_refused_total`.
    pub fn refusal_reason(&self) -> &'static str {
        match self {
            Self::Missing | Self::Invalid { .. } => "unauthenticated",
            Self::Unavailable { .. } => "authenticator_unavailable",
            Self::Internal { .. } => "authenticator_error",
        }
    }

    /// Which error the chain reports when no authenticator vouched for the caller:
    /// an undecided credential outranks a refused one (it may be valid), and a
    /// refusal outranks the absence of credentials.
    fn rank(&self) -> u8 {
        match self {
            Self::Missing => 0,
            Self::Invalid { .. } => 1,
            Self::Unavailable { .. } | Self::Internal { .. } => 2,
        }
    }
}

/// Turns credentials into an identity.
pub trait Authenticator: Send + Sync {
    /// A short name, for logs and metrics.
    fn name(&self) -> &'static str;

    /// `Ok(None)` when the context holds no credential of this kind; `Ok(Some)`
    /// with the authenticated identity; `Err` when a credential is invalid.
    fn authenticate<'a>(
        &'a self,
        ctx: &'a CallerContext,
    ) -> BoxFuture<'a, Result<Option<SpiffeId>, AuthError>>;
}

/// Authenticators tried in order: the first that recognises a credential decides.
#[derive(Clone, Default)]
pub struct Authenticators {
    chain: Vec<Arc<dyn Authenticator>>,
}

impl fmt::Debug for Authenticators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.chain.iter().map(|a| a.name()))
            .finish()
    }
}

impl Authenticators {
    /// An empty chain (authenticates nobody).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an authenticator at the end.
    pub fn with(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.chain.push(authenticator);
        self
    }

    /// The identity of the caller and the authenticator that vouched for it. When
    /// none does, the first error of the highest rank: a verifier that could not
    /// answer, else a refusal, else [`AuthError::Missing`].
    pub async fn authenticate(
        &self,
        ctx: &CallerContext,
    ) -> Result<(SpiffeId, &'static str), AuthError> {
        let mut worst = AuthError::Missing;
        for a in &self.chain {
            match a.authenticate(ctx).await {
                Ok(Some(id)) => return Ok((id, a.name())),
                Ok(None) => {}
                Err(e) => {
                    if e.rank() > worst.rank() {
                        worst = e;
                    }
                }
            }
        }
        Err(worst)
    }
}
