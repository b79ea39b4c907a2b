//! Who is asking: authenticators turn a caller's credentials into a SPIFFE
//! identity before anything is signed.
//!
//! Two are built in: [`MtlsAuthenticator`] (a client certificate citadel issued,
//! for renewal) and [`JwtAuthenticator`] (a signed token from a configured
//! issuer). Kubernetes TokenReview plugs in through the same [`Authenticator`]
//! trait. A caller that fails learns only that authentication failed; the reason
//! goes to the log.

pub mod jwt;
pub mod local;
pub mod mtls;

use std::{fmt, sync::Arc};

use futures::future::BoxFuture;
use mesh_tls::SpiffeId;

pub use jwt::{JwksSource, JwtAuthenticator, JwtConfig};
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
}

impl AuthError {
    /// What the caller is told: nothing about why.
    pub fn public_message(&self) -> &'static str {
        "authentication failed"
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

    /// The identity of the caller and the authenticator that vouched for it.
    pub async fn authenticate(
        &self,
        ctx: &CallerContext,
    ) -> Result<(SpiffeId, &'static str), AuthError> {
        let mut first_error = None;
        for a in &self.chain {
            match a.authenticate(ctx).await {
                Ok(Some(id)) => return Ok((id, a.name())),
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or(AuthError::Missing))
    }
}
