//! Keys and tokens never reach citadel's log, even at TRACE level. Its own test
//! binary, so the captured subscriber is the process's global one.

#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use citadel::{
    authn::{
        Authenticators, CallerContext, JwksSource, JwtAuthenticator, JwtConfig, LocalIssuer,
        Secret, TokenReviewAuthenticator,
        local::{CA_AUDIENCE, LOCAL_ISSUER},
    },
    ca::{Authority, CaPolicy, CaSource, IssuedCert},
    controllers::{
        ControllerContext, ControllerMetrics, Controllers, ControllersConfig, SecretsConfig,
    },
    metrics::CaMetrics,
    service::{CaService, Recorder},
};
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};
use mesh_api::ca::v1::IstioCertificateRequest;
use parking_lot::Mutex;
use rcgen::{CertificateParams, KeyPair, SanType, string::Ia5String};

/// A writer collecting everything logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Accept;

impl Recorder for Accept {
    fn record<'a>(&'a self, _: &'a IssuedCert) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

fn request(sans: Vec<SanType>) -> IstioCertificateRequest {
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans;
    IstioCertificateRequest {
        csr: p
            .serialize_request(&KeyPair::generate().unwrap())
            .unwrap()
            .pem()
            .unwrap(),
        validity_duration: 0,
        metadata: None,
    }
}

/// A service-account token the test API server authenticates, and one it does not.
const KUBE_TOKEN: &str = "k8s-sa-token-3f9c1d7e5b2a4c6e8d0f";
const KUBE_FORGED: &str = "k8s-sa-token-forged-77aa55cc33ee11";

fn with_token(token: &str) -> CallerContext {
    CallerContext {
        bearer: Some(Secret::new(token)),
        ..CallerContext::default()
    }
}

#[tokio::test]
async fn keys_and_tokens_never_reach_the_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();

    let tmp = tempfile::tempdir().unwrap();
    let authority = Arc::new(
        Authority::open(
            CaSource::SelfSigned(tmp.path().join("ca")),
            CaPolicy::default(),
            time::OffsetDateTime::now_utc(),
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
    let kube = kube_testserver::KubeTestServer::start().await.unwrap();
    kube.set_token_reviewer(|spec| {
        let known = spec.token.as_deref() == Some(KUBE_TOKEN);
        TokenReviewStatus {
            authenticated: Some(known),
            audiences: known.then(|| vec!["istio-ca".to_string()]),
            user: known.then(|| UserInfo {
                username: Some("system:serviceaccount:shop:cart".into()),
                ..UserInfo::default()
            }),
            error: (!known).then(|| "invalid bearer token".to_string()),
        }
    });
    let review =
        TokenReviewAuthenticator::new(kube.client(), vec!["istio-ca".into()], "cluster.local");
    let metrics = CaMetrics::register(&mut prometheus_client::registry::Registry::default());
    let service = CaService::new(
        authority.clone(),
        Authenticators::new().with(jwt).with(Arc::new(review)),
        Arc::new(Accept),
        metrics,
        Arc::new(|_, _| CallerContext::default()),
    );

    let token = issuer
        .mint("default", "productpage", Duration::from_secs(600))
        .unwrap();
    let forged = format!("{}x", &token[..token.len() - 1]);
    service
        .create(with_token(&token), request(vec![]))
        .await
        .unwrap();
    service
        .create(with_token(KUBE_TOKEN), request(vec![]))
        .await
        .unwrap();
    for ctx in [
        with_token(&forged),
        CallerContext::default(),
        with_token(KUBE_FORGED),
    ] {
        assert!(service.create(ctx, request(vec![])).await.is_err());
    }
    // citadel may not review tokens: the reason is logged, the token is not.
    kube.inject_fault(kube_testserver::Fault::new("tokenreviews", 403));
    assert!(
        service
            .create(with_token(KUBE_TOKEN), request(vec![]))
            .await
            .is_err()
    );
    let other = SanType::URI(Ia5String::try_from("spiffe://cluster.local/ns/x/sa/y").unwrap());
    assert!(
        service
            .create(with_token(&token), request(vec![other]))
            .await
            .is_err()
    );
    tracing::debug!(issuer = ?issuer, authority = ?authority, material = ?authority.material(), "state");

    // The Secret controller writes a key into a Secret, and renews it: neither the
    // key nor the Secret's data is logged.
    kube.apply_object(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": {"name": "istio-system"}}))
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let controllers = Controllers::spawn(
        kube.client(),
        ControllerContext {
            authority: authority.clone(),
            recorder: Arc::new(Accept),
            metrics: ControllerMetrics::register(
                &mut prometheus_client::registry::Registry::default(),
            ),
        },
        ControllersConfig {
            kube: mesh_kube::KubeArgs::default(),
            secrets: Some(SecretsConfig::default()),
            webhooks: Vec::new(),
            lease: mesh_kube::leader::LeaseConfig::new(
                "istio-system",
                "citadel-controllers",
                "test",
            ),
        },
        None,
        stop.clone(),
    )
    .unwrap();
    kube.apply_object(
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
                                         "metadata": {"name": "cart", "namespace": "shop"}}),
    )
    .unwrap();
    let mut key_data = Vec::new();
    for round in 0..2 {
        let mut polls = 0;
        let secret = loop {
            polls += 1;
            assert!(polls < 400, "no Secret written (round {round})");
            if let Some(s) = kube.get_object("v1", "Secret", "shop", "istio.cart")
                && !key_data.contains(&s["data"]["key.pem"])
            {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        key_data.push(secret["data"]["key.pem"].clone());
        if round == 0 {
            // Broken data makes the controller write a new key.
            let mut broken = secret.clone();
            broken["data"]["cert-chain.pem"] = serde_json::json!("");
            kube.apply_object(broken).unwrap();
        }
    }
    stop.cancel();
    controllers.stopped().await;

    let log = String::from_utf8(captured.0.lock().clone()).unwrap();
    assert!(
        log.contains("wrote the service account's certificate Secret"),
        "Secret writes are logged: {log}"
    );
    for data in &key_data {
        let b64 = data.as_str().unwrap();
        assert!(!log.contains(&b64[40..80]), "a Secret's key in the log");
        let pem = String::from_utf8(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap(),
        )
        .unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!log.contains(&body[..32]), "a Secret's key in the log");
    }
    assert!(
        log.contains("CreateCertificate refused"),
        "refusals are logged: {log}"
    );
    for file in ["ca/ca-key.pem", "tokens/token-signing-key.pem"] {
        let pem = std::fs::read_to_string(tmp.path().join(file)).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!log.contains(&body[..32]), "{file} in the log");
    }
    let signature = token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "a token in the log");
    assert!(
        !log.contains(&forged[forged.len() - 20..]),
        "a forged token in the log"
    );
    assert!(!log.contains("PRIVATE KEY"));
    for secret in [KUBE_TOKEN, KUBE_FORGED] {
        assert!(!log.contains(secret), "a Kubernetes token in the log");
    }
    assert!(
        log.contains("forbidden: cannot create tokenreviews"),
        "the missing permission is logged: {log}"
    );
}
