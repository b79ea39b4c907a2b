#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;
use crate::authn::local::{CA_AUDIENCE, LOCAL_ISSUER, LocalIssuer};

async fn setup() -> (tempfile::TempDir, LocalIssuer, Arc<JwtAuthenticator>) {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = LocalIssuer::load_or_create(&tmp.path().join("tokens")).unwrap();
    let auth = JwtAuthenticator::new(JwtConfig {
        issuer: LOCAL_ISSUER.into(),
        audiences: vec![CA_AUDIENCE.into()],
        jwks: JwksSource::File(issuer.jwks_path()),
        trust_domain: "cluster.local".into(),
    })
    .await
    .unwrap();
    (tmp, issuer, auth)
}

fn ctx(token: &str) -> CallerContext {
    CallerContext {
        bearer: Some(crate::authn::Secret::new(token)),
        ..CallerContext::default()
    }
}

#[tokio::test]
async fn a_minted_token_names_its_service_account() {
    let (_tmp, issuer, auth) = setup().await;
    let token = issuer
        .mint("default", "productpage", Duration::from_secs(600))
        .unwrap();
    let id = auth.authenticate(&ctx(&token)).await.unwrap().unwrap();
    assert_eq!(
        id.to_string(),
        "spiffe://cluster.local/ns/default/sa/productpage"
    );
    // Cached: the same answer again.
    let again = auth.authenticate(&ctx(&token)).await.unwrap().unwrap();
    assert_eq!(again, id);
    assert!(
        auth.authenticate(&CallerContext::default())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn tampered_expired_and_foreign_tokens_are_refused() {
    let (_tmp, issuer, auth) = setup().await;
    let token = issuer
        .mint("default", "productpage", Duration::from_secs(600))
        .unwrap();
    // Swap the payload for another service account's, keeping the signature.
    let other = issuer
        .mint("default", "admin", Duration::from_secs(600))
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let other_parts: Vec<&str> = other.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
    assert!(auth.authenticate(&ctx(&forged)).await.is_err());

    // A key nobody trusts.
    let tmp2 = tempfile::tempdir().unwrap();
    let stranger = LocalIssuer::load_or_create(tmp2.path()).unwrap();
    let foreign = stranger
        .mint("default", "productpage", Duration::from_secs(600))
        .unwrap();
    assert!(auth.authenticate(&ctx(&foreign)).await.is_err());

    // Expired (beyond the leeway).
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let expired = issuer
        .mint_at(
            "default",
            "productpage",
            an_hour_ago,
            Duration::from_secs(600),
        )
        .unwrap();
    assert!(auth.authenticate(&ctx(&expired)).await.is_err());
    assert!(auth.authenticate(&ctx("not.a.token")).await.is_err());
    assert!(
        auth.authenticate(&ctx(&"x".repeat(MAX_TOKEN_BYTES + 1)))
            .await
            .is_err()
    );
    let err = auth.authenticate(&ctx(&forged)).await.unwrap_err();
    assert_eq!(err.public_message(), "authentication failed");
}

#[tokio::test]
async fn the_subject_must_be_a_service_account() {
    let (_tmp, _issuer, auth) = setup().await;
    assert!(auth.identity("system:serviceaccount:default:web").is_ok());
    assert!(auth.identity("alice").is_err());
    assert!(auth.identity("system:serviceaccount:default").is_err());
    assert!(auth.identity("system:serviceaccount:de fault:web").is_err());
}
