#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use k8s_openapi::api::authentication::v1::UserInfo;
use kube_testserver::{Fault, KubeTestServer};
use parking_lot::Mutex;

use super::*;
use crate::authn::{Authenticators, Secret};

/// A reviewer that knows a few tokens, binds them to audiences the way the API
/// server does (the answer lists the requested audiences the token is bound to),
/// and records the audiences it was asked for.
fn install_reviewer(server: &KubeTestServer) -> Arc<Mutex<Vec<Vec<String>>>> {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    server.set_token_reviewer(move |spec| {
        let requested = spec.audiences.clone().unwrap_or_default();
        seen.lock().push(requested.clone());
        let (user, bound): (&str, &[&str]) = match spec.token.as_deref().unwrap_or_default() {
            "sa-token" => ("system:serviceaccount:shop:cart", &["istio-ca", "api"]),
            "api-only-token" => ("system:serviceaccount:shop:cart", &["api"]),
            "human-token" => ("jane@example.com", &["istio-ca"]),
            "bad-sa-token" => ("system:serviceaccount:shop", &["istio-ca"]),
            _ => {
                return TokenReviewStatus {
                    authenticated: Some(false),
                    error: Some("invalid bearer token".into()),
                    ..TokenReviewStatus::default()
                };
            }
        };
        let audiences: Vec<String> = requested
            .iter()
            .filter(|a| bound.contains(&a.as_str()))
            .cloned()
            .collect();
        if audiences.is_empty() {
            return TokenReviewStatus {
                authenticated: Some(false),
                error: Some("token audiences are invalid".into()),
                ..TokenReviewStatus::default()
            };
        }
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences),
            user: Some(UserInfo {
                username: Some(user.into()),
                ..UserInfo::default()
            }),
            error: None,
        }
    });
    asked
}

fn authenticator(server: &KubeTestServer) -> TokenReviewAuthenticator {
    TokenReviewAuthenticator::new(
        server.client(),
        vec![DEFAULT_TOKEN_AUDIENCE.into()],
        "cluster.local",
    )
}

fn ctx(token: &str) -> CallerContext {
    CallerContext {
        bearer: Some(Secret::new(token)),
        ..CallerContext::default()
    }
}

#[tokio::test]
async fn a_service_account_token_yields_its_spiffe_identity() {
    let server = KubeTestServer::start().await.unwrap();
    let asked = install_reviewer(&server);
    let auth = authenticator(&server);
    let id = auth.authenticate(&ctx("sa-token")).await.unwrap().unwrap();
    assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/cart");
    assert_eq!(*asked.lock(), vec![vec!["istio-ca".to_string()]]);
    // No bearer token: not this authenticator's business, and no request is made.
    assert_eq!(auth.authenticate(&CallerContext::default()).await, Ok(None));
    assert_eq!(asked.lock().len(), 1);
}

#[tokio::test]
async fn wrong_audience_unauthenticated_and_non_service_account_tokens_are_refused() {
    let server = KubeTestServer::start().await.unwrap();
    install_reviewer(&server);
    let auth = authenticator(&server);
    for (token, why) in [
        (
            "api-only-token",
            "token not authenticated: token audiences are invalid",
        ),
        (
            "forged-token",
            "token not authenticated: invalid bearer token",
        ),
        (
            "human-token",
            "user \"jane@example.com\" is not a service account",
        ),
        ("bad-sa-token", "is not a service account"),
    ] {
        let err = auth.authenticate(&ctx(token)).await.unwrap_err();
        match &err {
            AuthError::Invalid {
                authenticator,
                reason,
            } => {
                assert_eq!(*authenticator, "kube-token-review");
                assert!(reason.contains(why), "{token}: {reason}");
            }
            other => panic!("{token}: {other:?}"),
        }
        assert_eq!(err.public_message(), "authentication failed");
        assert_eq!(err.refusal_reason(), "unauthenticated");
    }
}

#[tokio::test]
async fn an_answer_without_the_required_audience_is_refused_even_if_authenticated() {
    // A server that ignores the requested audiences answers with the token's own.
    let client =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
    let auth = TokenReviewAuthenticator::new(client, vec!["istio-ca".into()], "cluster.local");
    let status = |audiences: Option<Vec<String>>| TokenReviewStatus {
        authenticated: Some(true),
        audiences,
        user: Some(UserInfo {
            username: Some("system:serviceaccount:shop:cart".into()),
            ..UserInfo::default()
        }),
        error: None,
    };
    assert!(auth.identity(status(Some(vec!["api".into()]))).is_err());
    assert!(auth.identity(status(None)).is_err());
    assert_eq!(
        auth.identity(status(Some(vec!["istio-ca".into()])))
            .unwrap()
            .to_string(),
        "spiffe://cluster.local/ns/shop/sa/cart"
    );
}

#[tokio::test]
async fn a_forbidden_review_is_an_internal_error_naming_the_missing_permission() {
    let server = KubeTestServer::start().await.unwrap();
    install_reviewer(&server);
    server.inject_fault(Fault::new("tokenreviews", 403).verb("create"));
    let err = authenticator(&server)
        .authenticate(&ctx("sa-token"))
        .await
        .unwrap_err();
    let AuthError::Internal { reason, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        reason.starts_with(
            "forbidden: cannot create tokenreviews.authentication.k8s.io at the cluster scope:"
        ),
        "{reason}"
    );
    assert!(
        reason.contains("cannot create resource \"tokenreviews\""),
        "{reason}"
    );
    // The caller is told nothing of it.
    assert_eq!(
        err.public_message(),
        "authentication could not be performed"
    );
    assert!(!err.public_message().contains("forbidden"));
    assert_eq!(err.refusal_reason(), "authenticator_error");
}

#[tokio::test]
async fn an_unreachable_or_failing_api_server_makes_authentication_unavailable() {
    let server = KubeTestServer::start().await.unwrap();
    install_reviewer(&server);
    let auth = authenticator(&server);
    server.inject_fault(Fault::new("tokenreviews", 500).verb("create").times(1));
    let err = auth.authenticate(&ctx("sa-token")).await.unwrap_err();
    assert!(matches!(err, AuthError::Unavailable { .. }), "{err:?}");
    server.set_unreachable(true).await.unwrap();
    let err = auth.authenticate(&ctx("sa-token")).await.unwrap_err();
    let AuthError::Unavailable { reason, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(reason.contains("cannot create tokenreviews"), "{reason}");
    assert_eq!(err.refusal_reason(), "authenticator_unavailable");
    server.set_unreachable(false).await.unwrap();
    assert!(auth.authenticate(&ctx("sa-token")).await.unwrap().is_some());
}

#[tokio::test]
async fn in_a_chain_an_unavailable_verifier_outranks_another_authenticators_refusal() {
    struct Refuses;
    impl Authenticator for Refuses {
        fn name(&self) -> &'static str {
            "refuses"
        }
        fn authenticate<'a>(
            &'a self,
            _: &'a CallerContext,
        ) -> BoxFuture<'a, Result<Option<SpiffeId>, AuthError>> {
            Box::pin(async {
                Err(AuthError::Invalid {
                    authenticator: "refuses",
                    reason: "not mine".into(),
                })
            })
        }
    }
    let server = KubeTestServer::start().await.unwrap();
    install_reviewer(&server);
    let chain = Authenticators::new()
        .with(Arc::new(Refuses))
        .with(Arc::new(authenticator(&server)));
    let (id, by) = chain.authenticate(&ctx("sa-token")).await.unwrap();
    assert_eq!(
        (id.to_string().as_str(), by),
        (
            "spiffe://cluster.local/ns/shop/sa/cart",
            "kube-token-review"
        )
    );
    server.set_unreachable(true).await.unwrap();
    let err = chain.authenticate(&ctx("sa-token")).await.unwrap_err();
    assert!(matches!(err, AuthError::Unavailable { .. }), "{err:?}");
}
