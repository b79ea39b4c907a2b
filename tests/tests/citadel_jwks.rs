//! citadel trusting another JWT issuer whose keys are served over HTTPS: a real
//! HTTPS server (Python's `http.server` with a certificate OpenSSL made), citadel
//! told of that server's root with `SSL_CERT_FILE`, and a workload certificate
//! fetched with a token of that issuer.

#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, path::Path, time::Duration};

use dromon_e2e::{
    ChildGuard,
    citadel::{agent_once, local_token, openssl, openssl_root},
    free_port, wait_http_ok,
};
use rustls_pki_types::{CertificateDer, pem::PemObject};

/// A root and a `localhost` server certificate it signs, made by OpenSSL.
fn https_certificates(dir: &Path) -> (String, String, String) {
    let p = |name: &str| dir.join(name).display().to_string();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let (root_key, root_pem) = (p("root.key"), p("root.pem"));
    openssl_root(
        &dir.join("root.key"),
        &dir.join("root.pem"),
        "/CN=jwks-test-root",
        1,
    )
    .unwrap();
    let (key, csr, cert, ext) = (p("server.key"), p("server.csr"), p("server.pem"), p("ext"));
    let mut req = vec!["req", "-new", "-nodes"];
    req.extend(ec);
    req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
    openssl(&req).unwrap();
    std::fs::write(&ext, "subjectAltName=DNS:localhost\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &root_pem,
        "-CAkey",
        &root_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ])
    .unwrap();
    (root_pem, cert, key)
}

const SERVE_HTTPS: &str = r#"
import http.server, ssl, sys, functools
port, directory, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
server = http.server.HTTPServer(("127.0.0.1", port), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

#[tokio::test]
async fn a_token_of_an_issuer_whose_jwks_is_served_over_https_gets_a_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    // The issuer: a key pair and its JWKS (citadel's local issuer format), and a
    // token it signed for shop/cart.
    let issuer = tmp.path().join("issuer");
    let token = local_token(&issuer, "shop", "cart").unwrap();

    // Its JWKS over HTTPS.
    let (root, cert, key) = https_certificates(tmp.path());
    let https_port = free_port();
    let _server = ChildGuard::spawn_path(
        Path::new("python3"),
        &[
            "-c",
            SERVE_HTTPS,
            &https_port.to_string(),
            &issuer.join("tokens").display().to_string(),
            &cert,
            &key,
        ],
    )
    .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", https_port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // citadel trusts only that issuer, its keys fetched over HTTPS.
    let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let monitoring: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let data = tmp.path().join("citadel");
    let _citadel = ChildGuard::spawn_with_env(
        "citadel",
        &[
            "--grpc-addr",
            &grpc.to_string(),
            "--monitoring-addr",
            &monitoring.to_string(),
            "--data-dir",
            &data.display().to_string(),
            "--local-issuer",
            "false",
            "--jwt-issuer",
            "dromon-local",
            "--jwks-url",
            &format!("https://localhost:{https_port}/jwks.json"),
        ],
        &[("SSL_CERT_FILE", root.as_str())],
    )
    .unwrap();
    wait_http_ok(monitoring, "/ready", Duration::from_secs(30))
        .await
        .unwrap();

    let dir = agent_once(
        &format!("https://{grpc}"),
        &data.join("ca/root-cert.pem"),
        token.trim(),
        &tmp.path().join("cart"),
    )
    .unwrap();
    let chain = std::fs::read(dir.join("cert-chain.pem")).unwrap();
    let leaf = CertificateDer::pem_slice_iter(&chain)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        mesh_tls::spiffe_id_of(&leaf).unwrap().to_string(),
        "spiffe://cluster.local/ns/shop/sa/cart"
    );
}
