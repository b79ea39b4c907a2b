//! citadel end to end: the real binary, OpenSSL making keys and CSRs and checking
//! what comes back, a gRPC client over TLS, and a real PostgreSQL ledger.

#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use base64::Engine;
use dromon_e2e::{
    bin_path,
    citadel::{CitadelProcess, local_token, metric_value, openssl, openssl_root},
    free_port, http_get, until,
};
use mesh_api::ca::v1::{
    IstioCertificateRequest, IstioCertificateResponse,
    istio_certificate_service_client::IstioCertificateServiceClient,
};
use mesh_tls::{ClientCredentials, FileIdentity};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, pem::PemObject};
use tonic::{Code, transport::Channel};

/// A new key (OpenSSL's `-newkey` spec) and a CSR, optionally asking for a SAN.
fn key_and_csr(
    dir: &Path,
    name: &str,
    newkey: &str,
    san: Option<&str>,
) -> anyhow::Result<(PathBuf, String)> {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let mut args = vec!["req", "-new", "-newkey", newkey];
    if newkey == "ec" {
        args.extend(["-pkeyopt", "ec_paramgen_curve:prime256v1"]);
    }
    let key_s = key.display().to_string();
    let csr_s = csr.display().to_string();
    args.extend([
        "-nodes",
        "-keyout",
        &key_s,
        "-subj",
        "/O=dromon-e2e",
        "-out",
        &csr_s,
    ]);
    let ext;
    if let Some(san) = san {
        ext = format!("subjectAltName={san}");
        args.extend(["-addext", &ext]);
    }
    openssl(&args)?;
    Ok((key, std::fs::read_to_string(&csr)?))
}

/// `csr` with one letter of its subject changed after it was signed: still a
/// well-formed request for an accepted key, whose signature no longer verifies.
fn altered_after_signing(csr: &str) -> String {
    let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    let at = der
        .windows(b"dromon-e2e".len())
        .position(|w| w == b"dromon-e2e")
        .unwrap();
    der[at] = b'D';
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        lines.join("\n")
    )
}

async fn create(
    client: &mut IstioCertificateServiceClient<Channel>,
    token: Option<&str>,
    csr: &str,
    ttl: i64,
) -> Result<IstioCertificateResponse, tonic::Status> {
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr: csr.to_string(),
        validity_duration: ttl,
        metadata: None,
    });
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    client.create_certificate(req).await.map(|r| r.into_inner())
}

/// Writes Istio's three files for an issued certificate.
fn write_cert_dir(dir: &Path, key: &Path, resp: &IstioCertificateResponse) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let n = resp.cert_chain.len();
    std::fs::write(
        dir.join("cert-chain.pem"),
        resp.cert_chain[..n - 1].concat(),
    )
    .unwrap();
    std::fs::copy(key, dir.join("key.pem")).unwrap();
    std::fs::write(dir.join("root-cert.pem"), resp.trusted_roots.concat()).unwrap();
    dir.to_path_buf()
}

fn serial_of(pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    hex::encode(cert.raw_serial())
}

#[tokio::test]
async fn an_openssl_csr_becomes_a_chain_that_openssl_verifies_naming_only_the_caller() {
    let tmp = tempfile::tempdir().unwrap();
    let citadel = CitadelProcess::start(&tmp.path().join("citadel"), &[])
        .await
        .unwrap();
    let token = local_token(&citadel.data, "default", "productpage").unwrap();
    // The CSR asks for nothing: the identity comes from the token.
    let (_key, csr) = key_and_csr(tmp.path(), "pp", "ec", None).unwrap();
    let resp = create(&mut citadel.anonymous().unwrap(), Some(&token), &csr, 3600)
        .await
        .unwrap();
    assert_eq!(resp.cert_chain.len(), 2);
    let leaf = tmp.path().join("leaf.pem");
    std::fs::write(&leaf, &resp.cert_chain[0]).unwrap();
    let verified = openssl(&[
        "verify",
        "-CAfile",
        &citadel.root().display().to_string(),
        &leaf.display().to_string(),
    ])
    .unwrap();
    assert!(verified.contains(": OK"), "{verified}");
    let san = openssl(&[
        "x509",
        "-in",
        &leaf.display().to_string(),
        "-noout",
        "-ext",
        "subjectAltName",
    ])
    .unwrap();
    let names: Vec<&str> = san
        .lines()
        .skip(1)
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        names,
        vec!["URI:spiffe://cluster.local/ns/default/sa/productpage"],
        "{san}"
    );
    let dates = openssl(&[
        "x509",
        "-in",
        &leaf.display().to_string(),
        "-noout",
        "-checkend",
        "3500",
    ])
    .unwrap();
    assert!(dates.contains("will not expire"), "{dates}");
    assert!(
        openssl(&[
            "x509",
            "-in",
            &leaf.display().to_string(),
            "-noout",
            "-checkend",
            "3700"
        ])
        .is_err()
    );
}

#[tokio::test]
async fn two_processes_complete_an_mtls_handshake_with_issued_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let citadel = CitadelProcess::start(&tmp.path().join("citadel"), &[])
        .await
        .unwrap();
    let mut client = citadel.anonymous().unwrap();
    let mut files = Vec::new();
    for sa in ["productpage", "reviews"] {
        let t = local_token(&citadel.data, "default", sa).unwrap();
        let (key, csr) = key_and_csr(tmp.path(), sa, "ec", None).unwrap();
        let resp = create(&mut client, Some(&t), &csr, 0).await.unwrap();
        let cert = tmp.path().join(format!("{sa}.pem"));
        std::fs::write(&cert, &resp.cert_chain[0]).unwrap();
        files.push((cert, key));
    }
    let root = citadel.root();
    let (ok, log) = handshake(&root, &files[1], Some(&files[0])).await;
    assert!(ok, "{log}");
    assert!(log.contains("Verification: OK"), "{log}");
    // The server requires a client certificate: without one the handshake fails.
    let (ok, log) = handshake(&root, &files[1], None).await;
    assert!(!ok, "a client without a certificate got through: {log}");
    assert!(
        log.contains("certificate required") || log.contains("did not return a certificate"),
        "{log}"
    );
}

/// An `openssl s_server` requiring a client certificate signed by `root`, and an
/// `openssl s_client` connecting to it: whether both ends completed, and their logs.
async fn handshake(
    root: &Path,
    server: &(PathBuf, PathBuf),
    client: Option<&(PathBuf, PathBuf)>,
) -> (bool, String) {
    let port = free_port();
    let root = root.display().to_string();
    let server = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &port.to_string(),
            "-naccept",
            "1",
            "-Verify",
            "1",
            "-verify_return_error",
        ])
        .args([
            "-cert",
            &server.0.display().to_string(),
            "-key",
            &server.1.display().to_string(),
        ])
        .args(["-CAfile", &root, "-tls1_3", "-quiet"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut cmd = std::process::Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-verify_return_error",
        "-brief",
    ])
    .args(["-CAfile", &root, "-tls1_3"]);
    if let Some((cert, key)) = client {
        cmd.args([
            "-cert",
            &cert.display().to_string(),
            "-key",
            &key.display().to_string(),
        ]);
    }
    let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    let server_out = server.wait_with_output().unwrap();
    let server_log = format!(
        "{}{}",
        String::from_utf8_lossy(&server_out.stdout),
        String::from_utf8_lossy(&server_out.stderr)
    );
    let ok = out.status.success() && !server_log.to_lowercase().contains("error");
    (
        ok,
        format!(
            "client: {}\nserver: {server_log}",
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// What is sent, and the code and message part expected.
type Case<'a> = (&'a str, Option<&'a str>, String, i64, Code, &'a str);

fn status_code(r: Result<IstioCertificateResponse, tonic::Status>) -> (Code, String) {
    match r {
        Ok(_) => (Code::Ok, String::new()),
        Err(s) => (s.code(), s.message().to_string()),
    }
}

#[tokio::test]
async fn impersonation_and_bad_csrs_are_refused_each_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let citadel = CitadelProcess::start(&tmp.path().join("citadel"), &[])
        .await
        .unwrap();
    let mut client = citadel.anonymous().unwrap();
    let good = local_token(&citadel.data, "default", "productpage").unwrap();
    let stranger = local_token(&tmp.path().join("elsewhere"), "default", "productpage").unwrap();
    let (_k, plain_csr) = key_and_csr(tmp.path(), "plain", "ec", None).unwrap();
    let dir = tmp.path();
    let cases: Vec<Case<'_>> = vec![
        (
            "no credentials",
            None,
            plain_csr.clone(),
            0,
            Code::Unauthenticated,
            "authentication failed",
        ),
        (
            "token from an unknown issuer key",
            Some(&stranger),
            plain_csr.clone(),
            0,
            Code::Unauthenticated,
            "authentication failed",
        ),
        (
            "garbage token",
            Some("abc.def.ghi"),
            plain_csr.clone(),
            0,
            Code::Unauthenticated,
            "authentication failed",
        ),
        (
            "another service account's identity",
            Some(&good),
            key_and_csr(
                dir,
                "other",
                "ec",
                Some("URI:spiffe://cluster.local/ns/default/sa/admin"),
            )
            .unwrap()
            .1,
            0,
            Code::InvalidArgument,
            "spiffe://cluster.local/ns/default/sa/admin",
        ),
        (
            "an email SAN",
            Some(&good),
            key_and_csr(dir, "email", "ec", Some("email:root@example.com"))
                .unwrap()
                .1,
            0,
            Code::InvalidArgument,
            "email",
        ),
        (
            "an IP SAN",
            Some(&good),
            key_and_csr(dir, "ip", "ec", Some("IP:10.1.2.3")).unwrap().1,
            0,
            Code::InvalidArgument,
            "IP",
        ),
        (
            "a DNS SAN",
            Some(&good),
            key_and_csr(dir, "dns", "ec", Some("DNS:productpage.default.svc"))
                .unwrap()
                .1,
            0,
            Code::InvalidArgument,
            "DNS",
        ),
        (
            "an RSA-1024 key",
            Some(&good),
            key_and_csr(dir, "weak", "rsa:1024", None).unwrap().1,
            0,
            Code::InvalidArgument,
            "1024",
        ),
        (
            "a TTL above the maximum",
            Some(&good),
            plain_csr.clone(),
            200 * 24 * 3600,
            Code::InvalidArgument,
            "maximum",
        ),
        (
            "not a CSR",
            Some(&good),
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into(),
            0,
            Code::InvalidArgument,
            "cannot be parsed",
        ),
        (
            "a CSR whose subject was altered after signing",
            Some(&good),
            altered_after_signing(&plain_csr),
            0,
            Code::InvalidArgument,
            "the CSR's signature does not verify",
        ),
    ];
    for (what, token, csr, ttl, code, needle) in cases {
        let (got, message) = status_code(create(&mut client, token, &csr, ttl).await);
        assert_eq!(got, code, "{what}: {message}");
        assert!(
            message.contains(needle),
            "{what}: {message:?} lacks {needle:?}"
        );
        if code == Code::Unauthenticated {
            assert_eq!(
                message, "authentication failed",
                "{what}: unauthenticated callers learn nothing more"
            );
        }
    }
    let (_, metrics) = http_get(citadel.monitoring, "/metrics").await.unwrap();
    for (reason, n) in [
        ("unauthenticated", 3),
        ("forbidden_san", 4),
        ("weak_key", 1),
        ("ttl_too_long", 1),
        ("malformed_csr", 1),
        ("bad_signature", 1),
    ] {
        let line = format!("citadel_csr_refused_total{{reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&line), "missing {line}");
    }
    // Refusals were not issued: the RSA-2048 key of a well-formed request still is,
    // and so is the CSR before its subject was altered.
    let (_k, rsa) = key_and_csr(dir, "rsa2048", "rsa:2048", None).unwrap();
    create(&mut client, Some(&good), &rsa, 0).await.unwrap();
    create(&mut client, Some(&good), &plain_csr, 0)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_client_certificate_renews_until_it_is_revoked_and_then_shows_on_the_crl() {
    let tmp = tempfile::tempdir().unwrap();
    let citadel = CitadelProcess::start(&tmp.path().join("citadel"), &[])
        .await
        .unwrap();
    let t = local_token(&citadel.data, "default", "ratings").unwrap();
    let (key, csr) = key_and_csr(tmp.path(), "first", "ec", None).unwrap();
    let first = create(&mut citadel.anonymous().unwrap(), Some(&t), &csr, 0)
        .await
        .unwrap();
    let dir = write_cert_dir(&tmp.path().join("ratings"), &key, &first);

    // Renewal with the certificate alone, no token.
    let identity = Arc::new(FileIdentity::open(&dir).unwrap());
    let mut renewing = citadel
        .client(ClientCredentials::Identity(identity))
        .unwrap();
    let (_k2, csr2) = key_and_csr(tmp.path(), "second", "ec", None).unwrap();
    let second = create(&mut renewing, None, &csr2, 0).await.unwrap();
    let leaf = tmp.path().join("second.pem");
    std::fs::write(&leaf, &second.cert_chain[0]).unwrap();
    let san = openssl(&[
        "x509",
        "-in",
        &leaf.display().to_string(),
        "-noout",
        "-ext",
        "subjectAltName",
    ])
    .unwrap();
    assert!(
        san.contains("URI:spiffe://cluster.local/ns/default/sa/ratings"),
        "{san}"
    );

    // Revoke the first certificate: renewing with it is refused.
    let serial = serial_of(&first.cert_chain[0]);
    let out = Command::new(bin_path("citadel").unwrap())
        .args(["revoke", "--data-dir"])
        .arg(&citadel.data)
        .args(["--serial", &serial, "--reason", "key-compromise"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut refused = false;
    for _ in 0..50 {
        let (_k3, csr3) = key_and_csr(tmp.path(), "third", "ec", None).unwrap();
        if let Err(s) = create(&mut renewing, None, &csr3, 0).await {
            assert_eq!(s.code(), Code::Unauthenticated);
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "a revoked certificate kept renewing");

    // The CRL, signed by the CA, lists it.
    let crl = fetch_bytes(citadel.monitoring, "/crl.pem").await;
    let crl_file = tmp.path().join("crl.pem");
    std::fs::write(&crl_file, crl).unwrap();
    let text = openssl(&[
        "crl",
        "-in",
        &crl_file.display().to_string(),
        "-noout",
        "-text",
        "-CAfile",
        &citadel.root().display().to_string(),
    ])
    .unwrap();
    assert!(
        text.to_ascii_lowercase()
            .contains(&serial.trim_start_matches('0').to_ascii_lowercase()),
        "{text}"
    );
    assert!(text.contains("Key Compromise"), "{text}");
}

async fn fetch_bytes(addr: SocketAddr, path: &str) -> String {
    let (status, body) = http_get(addr, path).await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    body
}

#[tokio::test]
async fn two_replicas_share_a_postgres_ledger_and_a_plugged_ca() {
    let pg = mesh_testkit::postgres::PostgresServer::start().unwrap();
    let url = pg.url();
    let tmp = tempfile::tempdir().unwrap();
    let a = CitadelProcess::start(&tmp.path().join("a"), &["--ledger", &url])
        .await
        .unwrap();
    // Replica b signs with a's CA files (a plugged CA) and trusts the same tokens.
    let cacerts = a.data.join("ca").display().to_string();
    std::fs::create_dir_all(tmp.path().join("b")).unwrap();
    copy_dir(&a.data.join("tokens"), &tmp.path().join("b/tokens"));
    let b = CitadelProcess::start(
        &tmp.path().join("b"),
        &["--ledger", &url, "--cacerts", &cacerts],
    )
    .await
    .unwrap();
    let t = local_token(&a.data, "default", "details").unwrap();
    let (_k, csr) = key_and_csr(tmp.path(), "d1", "ec", None).unwrap();
    let from_a = create(&mut a.anonymous().unwrap(), Some(&t), &csr, 0)
        .await
        .unwrap();
    let from_b = create(
        &mut b
            .client(ClientCredentials::RootsOnly(a.roots().unwrap()))
            .unwrap(),
        Some(&t),
        &csr,
        0,
    )
    .await
    .unwrap();
    assert_eq!(from_a.trusted_roots, from_b.trusted_roots);
    // Revoking b's certificate in the shared ledger shows on a's CRL.
    let serial = serial_of(&from_b.cert_chain[0]);
    let out = Command::new(bin_path("citadel").unwrap())
        .args(["revoke", "--ledger", &url, "--serial", &serial])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crl = fetch_bytes(a.monitoring, "/crl.pem").await;
    let crl_file = tmp.path().join("crl.pem");
    std::fs::write(&crl_file, crl).unwrap();
    let text = openssl(&[
        "crl",
        "-in",
        &crl_file.display().to_string(),
        "-noout",
        "-text",
    ])
    .unwrap();
    assert!(
        text.to_ascii_lowercase()
            .contains(&serial.trim_start_matches('0').to_ascii_lowercase()),
        "{text}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// notAfter, in unix seconds, of each certificate of a PEM file.
fn not_after_of(pem_file: &Path) -> Vec<i64> {
    let pem = std::fs::read(pem_file).unwrap();
    CertificateDer::pem_slice_iter(&pem)
        .map(|der| {
            let der = der.unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
            cert.validity().not_after.timestamp()
        })
        .collect()
}

/// citadel's gauges: root expiry, issuer expiry, trusted roots, issuer usable.
async fn ca_gauges(citadel: &CitadelProcess) -> [Option<f64>; 4] {
    let (_, body) = http_get(citadel.monitoring, "/metrics").await.unwrap();
    [
        "citadel_root_cert_expiry_timestamp_seconds",
        "citadel_issuer_cert_expiry_timestamp_seconds",
        "citadel_trusted_roots",
        "citadel_issuer_usable",
    ]
    .map(|name| metric_value(&body, name))
}

/// An operator's `cacerts` directory made with OpenSSL: a P-256 root valid for
/// `root_days` and an intermediate it signs, valid for `issuer_days`, which signs.
fn openssl_cacerts(dir: &Path, root_days: u32, issuer_days: u32) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let at = |f: &str| dir.join(f).display().to_string();
    let root_key = dir.with_extension("root-key.pem").display().to_string();
    openssl_root(
        Path::new(&root_key),
        &dir.join("root-cert.pem"),
        "/O=dromon-e2e/CN=Plugged Root",
        root_days,
    )
    .unwrap();
    let csr = dir.with_extension("issuer.csr").display().to_string();
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &at("ca-key.pem"),
        "-out",
        &csr,
        "-subj",
        "/O=dromon-e2e/CN=Cluster Intermediate",
    ])
    .unwrap();
    let ext = dir.with_extension("issuer.ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &at("root-cert.pem"),
        "-CAkey",
        &root_key,
        "-set_serial",
        "0x2a",
        "-days",
        &issuer_days.to_string(),
        "-extfile",
        &ext.display().to_string(),
        "-out",
        &at("ca-cert.pem"),
    ])
    .unwrap();
    let chain = [
        std::fs::read_to_string(dir.join("ca-cert.pem")).unwrap(),
        std::fs::read_to_string(dir.join("root-cert.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join("cert-chain.pem"), chain).unwrap();
    dir.to_path_buf()
}

/// A CA client for a citadel signing with `cacerts`, trusting its roots.
fn plugged_client(
    citadel: &CitadelProcess,
    cacerts: &Path,
) -> IstioCertificateServiceClient<Channel> {
    let pem = std::fs::read(cacerts.join("root-cert.pem")).unwrap();
    let roots = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .unwrap();
    citadel.client(ClientCredentials::RootsOnly(roots)).unwrap()
}

#[tokio::test]
async fn expiry_metrics_are_the_not_after_of_the_ca_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("citadel");
    let citadel = CitadelProcess::start(&data, &[]).await.unwrap();
    // A self-signed root: it is both the one root and the issuer.
    let [root] = not_after_of(&data.join("ca/root-cert.pem"))[..] else {
        panic!("one root expected");
    };
    assert_eq!(not_after_of(&data.join("ca/ca-cert.pem")), vec![root]);
    let gauges = ca_gauges(&citadel).await;
    assert_eq!(
        gauges,
        [Some(root as f64), Some(root as f64), Some(1.0), Some(1.0)]
    );
    drop(citadel);

    // A plugged CA: a ten-year root and an intermediate of 30 days, which signs.
    let cacerts = openssl_cacerts(&tmp.path().join("cacerts"), 3650, 30);
    let cacerts_s = cacerts.display().to_string();
    let citadel = CitadelProcess::start(&tmp.path().join("plugged"), &["--cacerts", &cacerts_s])
        .await
        .unwrap();
    let [root] = not_after_of(&cacerts.join("root-cert.pem"))[..] else {
        panic!("one root expected");
    };
    let [issuer] = not_after_of(&cacerts.join("ca-cert.pem"))[..] else {
        panic!("one issuer expected");
    };
    assert!(issuer < root - 3000 * 86_400, "{issuer} {root}");
    assert_eq!(
        ca_gauges(&citadel).await,
        [Some(root as f64), Some(issuer as f64), Some(1.0), Some(1.0)]
    );

    // The first step of a root rotation: a new, later root appended to the bundle.
    // The root gauge follows the latest-expiring root; the issuer is unchanged.
    let next = openssl_cacerts(&tmp.path().join("next"), 7300, 30);
    let bundle = [
        std::fs::read_to_string(cacerts.join("root-cert.pem")).unwrap(),
        std::fs::read_to_string(next.join("root-cert.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(cacerts.join("root-cert.pem"), bundle).unwrap();
    let roots = not_after_of(&cacerts.join("root-cert.pem"));
    let latest = *roots.iter().max().unwrap();
    assert_eq!((roots.len(), latest > root), (2, true), "{roots:?}");
    let expected = [
        Some(latest as f64),
        Some(issuer as f64),
        Some(2.0),
        Some(1.0),
    ];
    until(
        "citadel reloads the bundle",
        Duration::from_secs(10),
        || async { ca_gauges(&citadel).await == expected },
    )
    .await;
    let token = citadel.token("default", "details").unwrap();
    let (_k, csr) = key_and_csr(tmp.path(), "details", "ec", None).unwrap();
    let resp = create(
        &mut plugged_client(&citadel, &cacerts),
        Some(&token),
        &csr,
        0,
    )
    .await
    .unwrap();
    assert_eq!(resp.trusted_roots.len(), 2);
}

#[tokio::test]
async fn unusable_ca_files_stop_issuing_with_unavailable_until_they_are_fixed() {
    let tmp = tempfile::tempdir().unwrap();
    let cacerts = openssl_cacerts(&tmp.path().join("cacerts"), 3650, 30);
    let cacerts_s = cacerts.display().to_string();
    let citadel = CitadelProcess::start(&tmp.path().join("citadel"), &["--cacerts", &cacerts_s])
        .await
        .unwrap();
    let mut client = plugged_client(&citadel, &cacerts);
    let token = citadel.token("default", "reviews").unwrap();
    let (_k, csr) = key_and_csr(tmp.path(), "reviews", "ec", None).unwrap();
    create(&mut client, Some(&token), &csr, 0).await.unwrap();
    let usable = || async { ca_gauges(&citadel).await[3] };
    assert_eq!(usable().await, Some(1.0));

    // A half-copied signing certificate.
    let good = std::fs::read_to_string(cacerts.join("ca-cert.pem")).unwrap();
    std::fs::write(cacerts.join("ca-cert.pem"), &good[..good.len() / 2]).unwrap();
    until(
        "issuer_usable drops to 0",
        Duration::from_secs(10),
        || async { usable().await == Some(0.0) },
    )
    .await;
    let err = create(&mut client, Some(&token), &csr, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().starts_with("the CA cannot issue"),
        "{}",
        err.message()
    );
    let (_, metrics) = http_get(citadel.monitoring, "/metrics").await.unwrap();
    assert_eq!(
        metric_value(
            &metrics,
            "citadel_csr_refused_total{reason=\"issuer_unavailable\"}"
        ),
        Some(1.0)
    );

    // Fixed: issuing resumes without a restart.
    std::fs::write(cacerts.join("ca-cert.pem"), &good).unwrap();
    until(
        "issuer_usable back to 1",
        Duration::from_secs(10),
        || async { usable().await == Some(1.0) },
    )
    .await;
    create(&mut client, Some(&token), &csr, 0).await.unwrap();
}

#[tokio::test]
async fn an_issuer_that_expires_while_serving_is_reported_unusable() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use std::time::SystemTime;
    // A plugged intermediate that lives seconds (OpenSSL 3.0 counts in days).
    let lifetime = Duration::from_secs(8);
    let ca = |name: &str| {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        p
    };
    let root_key = KeyPair::generate().unwrap();
    let root = ca("Plugged Root").self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(ca("Plugged Root"), root_key);
    let issuer_key = KeyPair::generate().unwrap();
    let mut params = ca("Short-lived Intermediate");
    params.not_before = (SystemTime::now() - Duration::from_secs(60)).into();
    params.not_after = (SystemTime::now() + lifetime).into();
    let issuer = params.signed_by(&issuer_key, &root_issuer).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cacerts = tmp.path().join("cacerts");
    std::fs::create_dir_all(&cacerts).unwrap();
    std::fs::write(cacerts.join("ca-cert.pem"), issuer.pem()).unwrap();
    std::fs::write(cacerts.join("ca-key.pem"), issuer_key.serialize_pem()).unwrap();
    std::fs::write(
        cacerts.join("cert-chain.pem"),
        [issuer.pem(), root.pem()].concat(),
    )
    .unwrap();
    std::fs::write(cacerts.join("root-cert.pem"), root.pem()).unwrap();
    let cacerts_s = cacerts.display().to_string();
    let citadel = CitadelProcess::start(&tmp.path().join("citadel"), &["--cacerts", &cacerts_s])
        .await
        .unwrap();
    let [not_after] = not_after_of(&cacerts.join("ca-cert.pem"))[..] else {
        panic!("one issuer expected");
    };
    let [_, issuer_expiry, _, usable] = ca_gauges(&citadel).await;
    assert_eq!(issuer_expiry, Some(not_after as f64));
    assert_eq!(usable, Some(1.0), "the issuer is valid for {lifetime:?}");
    until(
        "issuer_usable drops to 0 once the issuer has expired",
        lifetime + Duration::from_secs(10),
        || async { ca_gauges(&citadel).await[3] == Some(0.0) },
    )
    .await;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        now > not_after as f64,
        "reported unusable at {now}, before it expired at {not_after}"
    );
}
