//! Handshakes between the server and client sides over loopback.

use std::{sync::Arc, time::Duration};

use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use tokio::io::AsyncReadExt;

use super::{check, client, serve, server_id, source};
use crate::{
    ClientAuth, ClientCredentials, MtlsAcceptor, ServerIdentity, SpiffeServerVerifier,
    channel_with,
    metrics::HandshakeResult,
    test_util::{LeafOptions, TestCa, spiffe},
};

fn exact(id: crate::SpiffeId) -> ServerIdentity {
    ServerIdentity::Exact(id)
}

#[tokio::test]
async fn matching_identities_connect_and_the_server_sees_the_client() {
    let ca = TestCa::new("root");
    let server = serve(MtlsAcceptor::new(
        source(&ca.issue(&server_id()), &[&ca]),
        ClientAuth::Required,
    ))
    .await;
    let me = spiffe("default", "productpage");
    let leaf = ca.issue(&me);
    let ch = client(&server.endpoint, leaf.identity(&[&ca]), exact(server_id()));
    check(ch).await.unwrap();
    let peer = server.last_peer().expect("peer info recorded");
    assert_eq!(peer.identity, Some(me));
    assert_eq!(peer.remote_addr.map(|a| a.ip()), Some(server.addr.ip()));
    let certs = peer.certificates.expect("client chain");
    let presented = CertificateDer::from_pem_slice(leaf.chain_pem.as_bytes()).unwrap();
    assert_eq!(certs[0], presented);
    assert_eq!(server.acceptor.metrics().count(HandshakeResult::Ok), 1);
}

#[tokio::test]
async fn a_client_without_certificate_is_refused_when_required() {
    let ca = TestCa::new("root");
    let server = serve(MtlsAcceptor::new(
        source(&ca.issue(&server_id()), &[&ca]),
        ClientAuth::Required,
    ))
    .await;
    let ch = channel_with(
        &server.endpoint,
        ClientCredentials::RootsOnly(vec![ca.cert_der()]),
        exact(server_id()),
    )
    .unwrap();
    assert!(check(ch).await.is_err());
    assert!(server.seen.lock().is_empty());
    wait_for(|| server.acceptor.metrics().count(HandshakeResult::Failed) == 1).await;
}

#[tokio::test]
async fn an_anonymous_client_is_let_in_when_optional_but_a_bad_certificate_is_not() {
    let ca = TestCa::new("root");
    let other = TestCa::new("other");
    let server = serve(MtlsAcceptor::new(
        source(&ca.issue(&server_id()), &[&ca]),
        ClientAuth::Optional,
    ))
    .await;
    let anonymous = channel_with(
        &server.endpoint,
        ClientCredentials::RootsOnly(vec![ca.cert_der()]),
        exact(server_id()),
    )
    .unwrap();
    check(anonymous).await.unwrap();
    let seen = server.seen.lock().last().cloned().flatten().unwrap();
    assert_eq!(seen.identity, None);
    assert!(seen.certificates.is_none());

    // Optional still verifies a certificate that is presented.
    let foreign = other.issue(&spiffe("default", "intruder"));
    let ch = client(
        &server.endpoint,
        foreign.identity(&[&other, &ca]),
        exact(server_id()),
    );
    assert!(check(ch).await.is_err());
}

#[tokio::test]
async fn a_client_certificate_from_another_root_is_refused() {
    let ca = TestCa::new("root");
    let other = TestCa::new("other");
    let server = serve(MtlsAcceptor::new(
        source(&ca.issue(&server_id()), &[&ca]),
        ClientAuth::Required,
    ))
    .await;
    // The client trusts the server's root, but its own chain is from another.
    let leaf = other.issue(&spiffe("default", "productpage"));
    let ch = client(
        &server.endpoint,
        leaf.identity(&[&other, &ca]),
        exact(server_id()),
    );
    assert!(check(ch).await.is_err());
    assert!(server.seen.lock().is_empty());
}

#[tokio::test]
async fn a_server_of_another_root_or_identity_is_refused_by_the_client() {
    let ca = TestCa::new("root");
    let other = TestCa::new("other");
    let server = serve(MtlsAcceptor::new(
        source(&other.issue(&server_id()), &[&other, &ca]),
        ClientAuth::Required,
    ))
    .await;
    let me = ca.issue(&spiffe("default", "productpage"));
    let ch = client(&server.endpoint, me.identity(&[&ca]), exact(server_id()));
    assert!(
        check(ch).await.is_err(),
        "server chain from an untrusted root"
    );

    let server = serve(MtlsAcceptor::new(
        source(&ca.issue(&server_id()), &[&ca]),
        ClientAuth::Required,
    ))
    .await;
    let galley = exact(spiffe("istio-system", "galley"));
    let ch = client(&server.endpoint, me.identity(&[&ca]), galley);
    assert!(check(ch).await.is_err(), "wrong expected identity");
    let ch = client(
        &server.endpoint,
        me.identity(&[&ca]),
        ServerIdentity::TrustDomain("example.org".into()),
    );
    assert!(check(ch).await.is_err(), "wrong trust domain");
    let ch = client(
        &server.endpoint,
        me.identity(&[&ca]),
        ServerIdentity::TrustDomain("cluster.local".into()),
    );
    check(ch).await.unwrap();
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let ca = TestCa::new("root");
    let server = serve(MtlsAcceptor::new(
        source(&ca.issue(&server_id()), &[&ca]),
        ClientAuth::Required,
    ))
    .await;
    // TlsIdentity refuses expired chains, so present it with rustls directly.
    let now = time::OffsetDateTime::now_utc();
    let expired = ca.issue_with(
        &spiffe("default", "productpage"),
        LeafOptions {
            not_before: now - time::Duration::days(2),
            not_after: now - time::Duration::hours(1),
            dns_names: vec![],
        },
    );
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(expired.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(expired.key_pem.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    let verifier = SpiffeServerVerifier::new(Arc::new(roots), exact(server_id()));
    let config = rustls::ClientConfig::builder_with_provider(crate::cert::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let result = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    // TLS 1.3: the client finishes first; the server's refusal arrives as an
    // alert on the first read.
    if let Ok(mut stream) = result {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Err(_) | Ok(0)), "{read:?}");
    }
    wait_for(|| server.acceptor.metrics().count(HandshakeResult::Failed) == 1).await;
    assert!(server.seen.lock().is_empty());
}

#[test]
fn the_verifier_checks_chain_validity_and_identity() {
    let ca = TestCa::new("root");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    let roots = Arc::new(roots);
    let verify = |pem: &str, expect: ServerIdentity| {
        let leaf = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        SpiffeServerVerifier::new(roots.clone(), expect)
            .verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from("pilot").unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    };
    // DNS SANs beside the SPIFFE URI do not matter.
    let with_dns = ca.issue_with(
        &server_id(),
        LeafOptions {
            dns_names: vec!["localhost".into(), "pilot.istio-system.svc".into()],
            ..LeafOptions::default()
        },
    );
    verify(&with_dns.chain_pem, exact(server_id())).unwrap();
    let e = verify(&with_dns.chain_pem, exact(spiffe("default", "x"))).unwrap_err();
    assert!(e.to_string().contains("IdentityMismatch"), "{e}");

    let now = time::OffsetDateTime::now_utc();
    let expired = ca.issue_with(
        &server_id(),
        LeafOptions {
            not_before: now - time::Duration::days(2),
            not_after: now - time::Duration::hours(1),
            dns_names: vec![],
        },
    );
    let e = verify(&expired.chain_pem, exact(server_id())).unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
}

#[tokio::test]
async fn two_roots_are_trusted_at_once() {
    let old = TestCa::new("old root");
    let new = TestCa::new("new root");
    let server = serve(MtlsAcceptor::new(
        source(&old.issue(&server_id()), &[&old, &new]),
        ClientAuth::Required,
    ))
    .await;
    for ca in [&old, &new] {
        let leaf = ca.issue(&spiffe("default", "productpage"));
        let ch = client(
            &server.endpoint,
            leaf.identity(&[&old, &new]),
            exact(server_id()),
        );
        check(ch).await.unwrap();
    }
    assert_eq!(server.seen.lock().len(), 2);
}

#[tokio::test]
async fn a_chain_through_an_intermediate_is_accepted() {
    let root = TestCa::new("root");
    let issuing = root.intermediate("issuing");
    let server = serve(MtlsAcceptor::new(
        source(&issuing.issue(&server_id()), &[&root]),
        ClientAuth::Required,
    ))
    .await;
    let leaf = issuing.issue(&spiffe("default", "productpage"));
    let ch = client(
        &server.endpoint,
        leaf.identity(&[&root]),
        exact(server_id()),
    );
    check(ch).await.unwrap();
}

#[tokio::test]
async fn a_silent_client_does_not_hold_up_others_and_times_out() {
    let ca = TestCa::new("root");
    let acceptor = MtlsAcceptor::new(
        source(&ca.issue(&server_id()), &[&ca]),
        ClientAuth::Required,
    )
    .with_handshake_timeout(Duration::from_millis(300));
    let server = serve(acceptor).await;
    let _silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _garbage = {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        s
    };
    let leaf = ca.issue(&spiffe("default", "productpage"));
    let ch = client(&server.endpoint, leaf.identity(&[&ca]), exact(server_id()));
    check(ch).await.unwrap();
    wait_for(|| server.acceptor.metrics().count(HandshakeResult::Timeout) == 1).await;
    assert_eq!(server.acceptor.metrics().count(HandshakeResult::Failed), 1);
    // The stream of connections goes on after the failures.
    let ch = client(&server.endpoint, leaf.identity(&[&ca]), exact(server_id()));
    check(ch).await.unwrap();
}

/// Polls `cond` for up to 5 s.
async fn wait_for(cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5s");
}
