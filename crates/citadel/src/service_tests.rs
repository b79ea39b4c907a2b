#![allow(clippy::unwrap_used)]

use std::time::Duration;

use parking_lot::Mutex;
use rcgen::{CertificateParams, DnType, KeyPair, SanType, string::Ia5String};
use tonic::Code;

use super::*;
use crate::{
    authn::local::{CA_AUDIENCE, LOCAL_ISSUER},
    authn::{
        JwksSource, JwtAuthenticator, JwtConfig, LocalIssuer, MtlsAuthenticator, RevokedSerials,
    },
    ca::{CaPolicy, CaSource, material::ROOT_VALIDITY},
};

#[derive(Default)]
struct Recorded(Mutex<Vec<String>>, Mutex<bool>);

impl Recorder for Recorded {
    fn record<'a>(&'a self, cert: &'a IssuedCert) -> BoxFuture<'a, Result<(), String>> {
        let fail = *self.1.lock();
        if !fail {
            self.0.lock().push(cert.serial.clone());
        }
        Box::pin(async move {
            if fail {
                Err("disk full".into())
            } else {
                Ok(())
            }
        })
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    authority: Arc<Authority>,
    issuer: LocalIssuer,
    service: CaService,
    recorded: Arc<Recorded>,
    metrics: Arc<CaMetrics>,
    revoked: RevokedSerials,
}

async fn fixture() -> Fixture {
    fixture_with(None).await
}

/// The fixture's chain (mTLS, the local issuer's JWTs), then `extra` if given.
async fn fixture_with(extra: Option<Arc<dyn crate::authn::Authenticator>>) -> Fixture {
    fixture_from(OffsetDateTime::now_utc(), extra).await
}

/// As [`fixture_with`], with a self-signed root generated at `ca_created`.
async fn fixture_from(
    ca_created: OffsetDateTime,
    extra: Option<Arc<dyn crate::authn::Authenticator>>,
) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let authority = Arc::new(
        Authority::open(
            CaSource::SelfSigned(tmp.path().join("ca")),
            CaPolicy::default(),
            ca_created,
        )
        .unwrap(),
    );
    let issuer = LocalIssuer::load_or_create(&tmp.path().join("tokens")).unwrap();
    let jwt = JwtAuthenticator::new(JwtConfig {
        issuer: LOCAL_ISSUER.into(),
        audiences: vec![CA_AUDIENCE.into()],
        jwks: JwksSource::File(issuer.jwks_path()),
        trust_domain: "cluster.local".into(),
    })
    .await
    .unwrap();
    let revoked = RevokedSerials::default();
    let authenticators = Authenticators::new()
        .with(Arc::new(MtlsAuthenticator::new(
            "cluster.local",
            revoked.clone(),
        )))
        .with(jwt);
    let authenticators = match extra {
        Some(a) => authenticators.with(a),
        None => authenticators,
    };
    let recorded = Arc::new(Recorded::default());
    let metrics = CaMetrics::register(&mut prometheus_client::registry::Registry::default());
    let service = CaService::new(
        authority.clone(),
        authenticators,
        recorded.clone(),
        metrics.clone(),
        Arc::new(|_, _| CallerContext::default()),
    );
    Fixture {
        _tmp: tmp,
        authority,
        issuer,
        service,
        recorded,
        metrics,
        revoked,
    }
}

fn csr(sans: Vec<SanType>) -> String {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans;
    p.serialize_request(&key).unwrap().pem().unwrap()
}

/// A CSR whose subject was altered after it was signed: well-formed, with a key
/// citadel accepts, and a signature that no longer verifies.
fn tampered_csr() -> String {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "productpage");
    let mut der = p.serialize_request(&key).unwrap().der().to_vec();
    let at = der
        .windows(b"productpage".len())
        .position(|w| w == b"productpage")
        .unwrap();
    der[at] = b'P';
    crate::ca::material::pem_encode("CERTIFICATE REQUEST", &der)
}

/// A token of `issuer` for `default/productpage`.
fn productpage_token(issuer: &LocalIssuer) -> String {
    issuer
        .mint("default", "productpage", Duration::from_secs(600))
        .unwrap()
}

/// `csr` sent with `token`: the refusal.
async fn refusal(f: &Fixture, token: &str, csr: String) -> tonic::Status {
    f.service
        .create(with_token(token), request(csr, 0))
        .await
        .unwrap_err()
}

/// `err` has `code` and a message containing `says`.
fn assert_status(err: &tonic::Status, code: Code, says: &str) {
    assert_eq!(err.code(), code, "{err:?}");
    assert!(err.message().contains(says), "{}", err.message());
}

fn uri(s: &str) -> SanType {
    SanType::URI(Ia5String::try_from(s).unwrap())
}

fn with_token(token: &str) -> CallerContext {
    CallerContext {
        bearer: Some(Secret::new(token)),
        ..CallerContext::default()
    }
}

fn request(csr: String, ttl: i64) -> IstioCertificateRequest {
    IstioCertificateRequest {
        csr,
        validity_duration: ttl,
        metadata: None,
    }
}

fn refused(f: &Fixture, reason: &str) -> u64 {
    f.metrics
        .refused
        .get_or_create(&crate::metrics::ReasonLabels {
            reason: reason.into(),
        })
        .get()
}

#[tokio::test]
async fn a_token_holder_gets_a_recorded_certificate_for_its_own_identity() {
    let f = fixture().await;
    let token = f
        .issuer
        .mint("default", "productpage", Duration::from_secs(600))
        .unwrap();
    let resp = f
        .service
        .create(with_token(&token), request(csr(vec![]), 3600))
        .await
        .unwrap();
    assert_eq!(resp.cert_chain.len(), 2);
    assert_eq!(resp.trusted_roots, vec![resp.cert_chain[1].clone()]);
    assert_eq!(f.recorded.0.lock().len(), 1);
}

#[tokio::test]
async fn impersonation_and_bad_requests_are_refused_with_their_codes() {
    let f = fixture().await;
    let token = f
        .issuer
        .mint("default", "productpage", Duration::from_secs(600))
        .unwrap();
    let cases = [
        // No credentials at all.
        (
            CallerContext::default(),
            request(csr(vec![]), 0),
            Code::Unauthenticated,
            "unauthenticated",
        ),
        // A forged token.
        (
            with_token("e30.e30.sig"),
            request(csr(vec![]), 0),
            Code::Unauthenticated,
            "unauthenticated",
        ),
        // Asking for someone else's identity.
        (
            with_token(&token),
            request(
                csr(vec![uri("spiffe://cluster.local/ns/default/sa/admin")]),
                0,
            ),
            Code::InvalidArgument,
            "forbidden_san",
        ),
        // Too long a lifetime.
        (
            with_token(&token),
            request(csr(vec![]), 365 * 24 * 3600),
            Code::InvalidArgument,
            "ttl_too_long",
        ),
        // Not a CSR.
        (
            with_token(&token),
            request("hello".into(), 0),
            Code::InvalidArgument,
            "malformed_csr",
        ),
        // Altered after signing: the caller does not prove it holds the key.
        (
            with_token(&token),
            request(tampered_csr(), 0),
            Code::InvalidArgument,
            "bad_signature",
        ),
    ];
    for (ctx, req, code, reason) in cases {
        let before = refused(&f, reason);
        let err = f.service.create(ctx, req).await.unwrap_err();
        assert_eq!(err.code(), code, "{reason}: {err:?}");
        assert_eq!(refused(&f, reason), before + 1, "{reason}");
    }
    let err = refusal(&f, &token, tampered_csr()).await;
    assert_eq!(err.message(), "the CSR's signature does not verify");
    // Unauthenticated callers learn nothing about why.
    let err = refusal(&f, "e30.e30.sig", csr(vec![])).await;
    assert_eq!(err.message(), "authentication failed");
    assert!(f.recorded.0.lock().is_empty());
}

#[tokio::test]
async fn an_identity_outside_the_trust_domain_is_permission_denied() {
    // A token issuer vouching for another trust domain's identities.
    let tmp = tempfile::tempdir().unwrap();
    let partner = LocalIssuer::load_or_create(&tmp.path().join("partner")).unwrap();
    let partner_jwt = JwtAuthenticator::new(JwtConfig {
        issuer: LOCAL_ISSUER.into(),
        audiences: vec![CA_AUDIENCE.into()],
        jwks: JwksSource::File(partner.jwks_path()),
        trust_domain: "partner.example".into(),
    })
    .await
    .unwrap();
    let f = fixture_with(Some(partner_jwt)).await;
    let err = refusal(&f, &productpage_token(&partner), csr(vec![])).await;
    assert_status(
        &err,
        Code::PermissionDenied,
        "spiffe://partner.example/ns/default/sa/productpage",
    );
    assert_eq!(refused(&f, "foreign_identity"), 1);
    assert!(f.recorded.0.lock().is_empty());
}

#[tokio::test]
async fn a_ca_that_cannot_issue_answers_unavailable() {
    // A root generated one day more than its lifetime ago has expired.
    let expired = fixture_from(
        OffsetDateTime::now_utc() - ROOT_VALIDITY - time::Duration::days(1),
        None,
    )
    .await;
    let err = refusal(&expired, &productpage_token(&expired.issuer), csr(vec![])).await;
    assert_status(&err, Code::Unavailable, "is not valid now");
    assert_eq!(refused(&expired, "issuer_unavailable"), 1);

    // Signing material replaced by an unreadable file: refused until it is fixed.
    let f = fixture().await;
    let token = productpage_token(&f.issuer);
    let cert = f.authority.source().dir().join("ca-cert.pem");
    let good = std::fs::read_to_string(&cert).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&cert, "garbage").unwrap();
    assert!(f.authority.refresh(OffsetDateTime::now_utc()));
    let err = refusal(&f, &token, csr(vec![])).await;
    assert_status(&err, Code::Unavailable, "the CA cannot issue");
    assert_eq!(refused(&f, "issuer_unavailable"), 1);
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&cert, good).unwrap();
    assert!(f.authority.refresh(OffsetDateTime::now_utc()));
    f.service
        .create(with_token(&token), request(csr(vec![]), 0))
        .await
        .unwrap();
    assert!(expired.recorded.0.lock().is_empty());
    assert_eq!(f.recorded.0.lock().len(), 1);
}

#[tokio::test]
async fn a_revoked_client_certificate_cannot_renew() {
    let f = fixture().await;
    let ctx = CallerContext {
        bearer: None,
        peer_identity: Some("spiffe://cluster.local/ns/default/sa/web".parse().unwrap()),
        peer_serial: Some("0abc".into()),
    };
    f.service
        .create(ctx.clone(), request(csr(vec![]), 0))
        .await
        .unwrap();
    f.revoked.insert("0abc".into());
    let err = f
        .service
        .create(ctx, request(csr(vec![]), 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn an_unrecorded_certificate_is_never_returned() {
    let f = fixture().await;
    *f.recorded.1.lock() = true;
    let token = f
        .issuer
        .mint("default", "productpage", Duration::from_secs(600))
        .unwrap();
    let err = f
        .service
        .create(with_token(&token), request(csr(vec![]), 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

#[test]
fn bearer_tokens_are_read_from_the_authorization_header() {
    let mut md = tonic::metadata::MetadataMap::new();
    assert!(bearer(&md).is_none());
    md.insert("authorization", "Bearer abc.def.ghi".parse().unwrap());
    assert_eq!(bearer(&md).unwrap().expose(), "abc.def.ghi");
    md.insert("authorization", "Basic xyz".parse().unwrap());
    assert!(bearer(&md).is_none());
}

/// The only SAN of a PEM leaf.
fn leaf_uri(pem: &str) -> String {
    use x509_parser::{extensions::GeneralName, prelude::FromDer};
    let der = crate::ca::material::parse_certs(pem, "leaf")
        .unwrap()
        .remove(0)
        .der;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    match san.value.general_names.as_slice() {
        [GeneralName::URI(u)] => u.to_string(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_kubernetes_service_account_token_gets_a_certificate_for_its_service_account() {
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};
    let server = kube_testserver::KubeTestServer::start().await.unwrap();
    server.set_token_reviewer(|spec| {
        let known = spec.token.as_deref() == Some("k8s-sa-token")
            && spec
                .audiences
                .as_ref()
                .is_some_and(|a| a.iter().any(|a| a == "istio-ca"));
        TokenReviewStatus {
            authenticated: Some(known),
            audiences: known.then(|| vec!["istio-ca".to_string()]),
            user: known.then(|| UserInfo {
                username: Some("system:serviceaccount:bookinfo:reviews".into()),
                ..UserInfo::default()
            }),
            error: (!known).then(|| "invalid bearer token".to_string()),
        }
    });
    let review = crate::authn::TokenReviewAuthenticator::new(
        server.client(),
        vec!["istio-ca".into()],
        "cluster.local",
    );
    let f = fixture_with(Some(Arc::new(review))).await;
    let resp = f
        .service
        .create(with_token("k8s-sa-token"), request(csr(vec![]), 3600))
        .await
        .unwrap();
    assert_eq!(
        leaf_uri(&resp.cert_chain[0]),
        "spiffe://cluster.local/ns/bookinfo/sa/reviews"
    );
    let issued = f
        .metrics
        .issued
        .get_or_create(&AuthenticatorLabels {
            authenticator: "kube-token-review".into(),
        })
        .get();
    assert_eq!(issued, 1);
    // The local issuer's tokens still work beside it.
    let token = f
        .issuer
        .mint("default", "productpage", Duration::from_secs(600))
        .unwrap();
    let resp = f
        .service
        .create(with_token(&token), request(csr(vec![]), 0))
        .await
        .unwrap();
    assert_eq!(
        leaf_uri(&resp.cert_chain[0]),
        "spiffe://cluster.local/ns/default/sa/productpage"
    );

    // A token the API server does not authenticate.
    let err = f
        .service
        .create(with_token("stolen"), request(csr(vec![]), 0))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unauthenticated, "authentication failed")
    );

    // citadel may not create TokenReviews: Internal, the caller told nothing more.
    server.inject_fault(kube_testserver::Fault::new("tokenreviews", 403).times(1));
    let err = f
        .service
        .create(with_token("k8s-sa-token"), request(csr(vec![]), 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(!err.message().contains("forbidden"), "{}", err.message());
    assert_eq!(refused(&f, "authenticator_error"), 1);

    // The API server is unreachable: Unavailable, so the caller retries.
    server.set_unreachable(true).await.unwrap();
    let err = f
        .service
        .create(with_token("k8s-sa-token"), request(csr(vec![]), 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(refused(&f, "authenticator_unavailable"), 1);
    assert_eq!(f.recorded.0.lock().len(), 2);
}
