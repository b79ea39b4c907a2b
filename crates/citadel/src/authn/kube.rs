//! Kubernetes service-account tokens, checked by the API server itself: the bearer
//! token is posted as an `authentication.k8s.io/v1` TokenReview with the audiences
//! citadel requires, and an authenticated `system:serviceaccount:<ns>:<sa>` becomes
//! `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
//!
//! A token the API server does not authenticate, one bound to none of the required
//! audiences, or a user that is not a service account is [`AuthError::Invalid`]
//! (the caller gets `Unauthenticated`). When the API server cannot answer the
//! credential is undecided: [`AuthError::Unavailable`] for a failure that may pass
//! (unreachable, timeout, server error), [`AuthError::Internal`] when citadel may not
//! create TokenReviews (403: a deployment problem, see the chart's RBAC).

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use mesh_kube::{KubeError, client::error_chain, request_error};
use mesh_tls::SpiffeId;

use super::{AuthError, Authenticator, CallerContext, jwt::MAX_TOKEN_BYTES};

/// The audience required by default, as Istio's CA requires.
pub const DEFAULT_TOKEN_AUDIENCE: &str = "istio-ca";
/// How long one TokenReview may take before the caller is told to retry.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
const NAME: &str = "kube-token-review";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Authenticates bearer tokens with the Kubernetes TokenReview API.
pub struct TokenReviewAuthenticator {
    api: Api<TokenReview>,
    audiences: Vec<String>,
    trust_domain: String,
    timeout: Duration,
}

impl std::fmt::Debug for TokenReviewAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewAuthenticator")
            .field("audiences", &self.audiences)
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl TokenReviewAuthenticator {
    /// Reviews tokens with `client`; a token must be bound to one of `audiences`.
    pub fn new(
        client: kube::Client,
        audiences: Vec<String>,
        trust_domain: impl Into<String>,
    ) -> Self {
        Self {
            api: Api::all(client),
            audiences,
            trust_domain: trust_domain.into(),
            timeout: REVIEW_TIMEOUT,
        }
    }

    /// Bounds each review by `timeout` instead of [`REVIEW_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn review(&self, token: &str) -> Result<SpiffeId, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("token too large".into()));
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let answer = match tokio::time::timeout(
            self.timeout,
            self.api.create(&PostParams::default(), &review),
        )
        .await
        {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                return Err(api_failure(request_error(
                    e,
                    "create",
                    "tokenreviews.authentication.k8s.io",
                    None,
                )));
            }
            Err(_) => {
                return Err(AuthError::Unavailable {
                    authenticator: NAME,
                    reason: format!("the TokenReview took longer than {:?}", self.timeout),
                });
            }
        };
        self.identity(answer.status.unwrap_or_default())
    }

    /// The identity a review's answer vouches for, if any.
    fn identity(&self, status: TokenReviewStatus) -> Result<SpiffeId, AuthError> {
        if status.authenticated != Some(true) {
            let why = status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "no reason given".into());
            return Err(invalid(format!("token not authenticated: {why}")));
        }
        let bound = status.audiences.unwrap_or_default();
        if !bound.iter().any(|a| self.audiences.contains(a)) {
            return Err(invalid(format!(
                "token bound to audiences {bound:?}, none of the required {:?}",
                self.audiences
            )));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        let (ns, sa) = username
            .strip_prefix(SERVICE_ACCOUNT_PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(|| invalid(format!("user {username:?} is not a service account")))?;
        SpiffeId::new(&self.trust_domain, ns, sa)
            .map_err(|e| invalid(format!("user {username:?}: {e}")))
    }
}

fn invalid(reason: String) -> AuthError {
    AuthError::Invalid {
        authenticator: NAME,
        reason,
    }
}

/// A failed TokenReview request: a refusal of citadel's own request (403 for a
/// missing permission, 401, other 4xx but 429) will not fix itself; anything else
/// (connection, timeout, throttling, server error) may.
fn api_failure(error: KubeError) -> AuthError {
    let permanent = match &error {
        KubeError::Forbidden { .. } => true,
        KubeError::Request { source, .. } => matches!(
            source.as_ref(),
            kube::Error::Api(status) if (400..500).contains(&status.code) && status.code != 429
        ),
        _ => false,
    };
    let reason = error_chain(&error);
    if permanent {
        AuthError::Internal {
            authenticator: NAME,
            reason,
        }
    } else {
        AuthError::Unavailable {
            authenticator: NAME,
            reason,
        }
    }
}

impl Authenticator for TokenReviewAuthenticator {
    fn name(&self) -> &'static str {
        NAME
    }

    fn authenticate<'a>(
        &'a self,
        ctx: &'a CallerContext,
    ) -> BoxFuture<'a, Result<Option<SpiffeId>, AuthError>> {
        Box::pin(async move {
            match &ctx.bearer {
                None => Ok(None),
                Some(token) => self.review(token.expose()).await.map(Some),
            }
        })
    }
}

#[cfg(test)]
#[path = "kube_tests.rs"]
mod tests;
