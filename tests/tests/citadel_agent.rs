//! `citadel agent` end to end: the real citadel and agent binaries, OpenSSL
//! checking the files the agent writes, and an SDS client built on Envoy's own
//! protos (Python `xds-protos` with `grpcio`) following renewals on one stream.
//!
//! Needs the Python environment `scripts/install-test-deps.sh` creates (`.venv`
//! with grpcio and xds-protos), or `DROMON_PYTHON` naming a Python that has them.

#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use dromon_e2e::{
    ChildGuard, bin_path,
    citadel::{CitadelProcess, metric_value, openssl, openssl_root},
    free_port, http_get, python, repo, wait_http_ok,
};

/// The SDS client script (Envoy's protos for Python, gRPC's own client).
fn sds_client_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(python());
    command.arg(repo().join("tests/xds_client/sds_client.py"));
    command
}

/// Runs the SDS client with `args` to its end.
async fn sds_client(args: &[String]) -> Output {
    sds_client_command().args(args).output().await.unwrap()
}

/// The first response to an SDS client asking `addr` (TCP) for `ROOTCA` alone.
async fn roots_over_tcp(addr: std::net::SocketAddr) -> serde_json::Value {
    let out = sds_client(&[addr.to_string(), "1".into(), "20".into(), "ROOTCA".into()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    sds_responses(&out.stdout).remove(0)
}

fn agent(args: &[&str]) -> Output {
    Command::new(bin_path("citadel").unwrap())
        .arg("agent")
        .args(args)
        .env("DROMON_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The serial (lowercase hex) of the first certificate in `pem_file`.
fn serial(pem_file: &Path) -> String {
    openssl(&["x509", "-in", &s(pem_file), "-noout", "-serial"])
        .unwrap()
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

/// Checks a directory the agent wrote: the chain verifies against the roots,
/// names `spiffe_id`, the key is the leaf's and is readable by its owner only.
fn check_cert_dir(dir: &Path, spiffe_id: &str) {
    let chain = dir.join("cert-chain.pem");
    let key = dir.join("key.pem");
    let roots = dir.join("root-cert.pem");
    let verified = openssl(&[
        "verify",
        "-CAfile",
        &s(&roots),
        "-untrusted",
        &s(&chain),
        &s(&chain),
    ])
    .unwrap();
    assert!(verified.contains(": OK"), "{verified}");
    let san = openssl(&[
        "x509",
        "-in",
        &s(&chain),
        "-noout",
        "-ext",
        "subjectAltName",
    ])
    .unwrap();
    assert!(san.contains(&format!("URI:{spiffe_id}")), "{san}");
    let cert_pub = openssl(&["x509", "-in", &s(&chain), "-noout", "-pubkey"]).unwrap();
    let key_pub = openssl(&["pkey", "-in", &s(&key), "-pubout"]).unwrap();
    assert_eq!(cert_pub, key_pub, "key.pem is not the certificate's key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key.pem mode {mode:o}");
}

async fn metrics(addr: SocketAddr) -> String {
    http_get(addr, "/metrics").await.unwrap().1
}

#[tokio::test]
async fn once_writes_a_chain_openssl_verifies_then_renews_it_over_mtls() {
    let tmp = tempfile::tempdir().unwrap();
    let citadel = CitadelProcess::start(&tmp.path().join("citadel"), &[])
        .await
        .unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, citadel.token("default", "web").unwrap()).unwrap();
    let out_dir = tmp.path().join("certs");
    let ca_addr = citadel.ca_addr();
    let root = s(&citadel.root());
    let (tok, out) = (s(&token_file), s(&out_dir));
    let base = [
        "--ca-addr",
        ca_addr.as_str(),
        "--output-dir",
        out.as_str(),
        "--ttl",
        "1h",
        "--once",
    ];

    let first = agent(&[&base[..], &["--ca-root", &root, "--token-file", &tok]].concat());
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    check_cert_dir(&out_dir, "spiffe://cluster.local/ns/default/sa/web");
    // Neither the key nor the token reaches the log, even at debug level.
    let log = String::from_utf8_lossy(&first.stderr);
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(log.contains("certificate written"), "{log}");
    assert!(
        !log.contains("PRIVATE KEY") && !log.contains(token.trim()),
        "{log}"
    );
    let roots = std::fs::read_to_string(out_dir.join("root-cert.pem")).unwrap();
    assert_eq!(
        roots,
        std::fs::read_to_string(citadel.root()).unwrap(),
        "root-cert.pem holds citadel's root"
    );
    let chain = std::fs::read_to_string(out_dir.join("cert-chain.pem")).unwrap();
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        1,
        "the root is not repeated in the chain"
    );
    let lifetime = openssl(&[
        "x509",
        "-in",
        &s(&out_dir.join("cert-chain.pem")),
        "-noout",
        "-checkend",
        "3500",
    ]);
    assert!(lifetime.is_ok(), "asked for 1h: {lifetime:?}");
    let first_serial = serial(&out_dir.join("cert-chain.pem"));

    // Again with no token and no --ca-root: the certificate and root-cert.pem in
    // the directory are enough, and the renewal authenticates over mTLS.
    let second = agent(&base);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    check_cert_dir(&out_dir, "spiffe://cluster.local/ns/default/sa/web");
    assert_ne!(serial(&out_dir.join("cert-chain.pem")), first_serial);
    let m = metrics(citadel.monitoring).await;
    assert_eq!(
        metric_value(
            &m,
            r#"citadel_certificates_issued_total{authenticator="mtls"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            r#"citadel_certificates_issued_total{authenticator="jwt"}"#
        ),
        Some(1.0),
        "{m}"
    );

    // Revoked: citadel refuses the mTLS renewal; without a token that is the end,
    // with one the agent falls back to it.
    let revoked_serial = serial(&out_dir.join("cert-chain.pem"));
    let revoke = Command::new(bin_path("citadel").unwrap())
        .args([
            "revoke",
            "--data-dir",
            &s(&citadel.data),
            "--serial",
            &revoked_serial,
        ])
        .output()
        .unwrap();
    assert!(
        revoke.status.success(),
        "{}",
        String::from_utf8_lossy(&revoke.stderr)
    );
    // citadel re-reads revocations every second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = agent(&base);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("mtls") && err.contains("Unauthenticated"),
        "{err}"
    );
    let fallback = agent(&[&base[..], &["--token-file", &tok]].concat());
    assert!(
        fallback.status.success(),
        "{}",
        String::from_utf8_lossy(&fallback.stderr)
    );
    assert_ne!(serial(&out_dir.join("cert-chain.pem")), revoked_serial);
    check_cert_dir(&out_dir, "spiffe://cluster.local/ns/default/sa/web");

    // A token citadel refuses: a non-zero exit that says why, and the files stay.
    let bad_dir = tmp.path().join("bad");
    std::fs::write(tmp.path().join("bad-token"), "not-a-jwt").unwrap();
    let refused = agent(&[
        "--ca-addr",
        &ca_addr,
        "--ca-root",
        &root,
        "--token-file",
        &s(&tmp.path().join("bad-token")),
        "--output-dir",
        &s(&bad_dir),
        "--once",
    ]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("Unauthenticated"), "{err}");
    assert!(!bad_dir.join("key.pem").exists());
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["--sds-addr", "0.0.0.0:15099", "--ca-root", "/dev/null"],
            "not a loopback address",
        ),
        (
            &["--ca-root", "/dev/null", "--token-file", "/t"],
            "nowhere to deliver",
        ),
        (
            &["--sds-addr", "127.0.0.1:0", "--token-file", "/t"],
            "give --ca-root",
        ),
        (
            &["--once", "--sds-socket", "/tmp/x", "--ca-root", "/dev/null"],
            "--once needs --output-dir",
        ),
    ];
    for (args, needle) in cases {
        let out = agent(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// One JSON line per SDS response, as `sds_client.py` prints them.
fn sds_responses(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_running_agent_renews_files_in_place_over_mtls_and_pushes_each_renewal_over_sds() {
    let tmp = tempfile::tempdir().unwrap();
    let citadel = CitadelProcess::start(&tmp.path().join("citadel"), &[])
        .await
        .unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, citadel.token("shop", "cart").unwrap()).unwrap();
    let out_dir = tmp.path().join("certs");
    let socket = tmp.path().join("sds/socket");
    let sds_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let monitoring: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // A stale socket file from an earlier run is replaced.
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let args = [
        "agent".to_string(),
        "--ca-addr".into(),
        citadel.ca_addr(),
        "--ca-root".into(),
        s(&citadel.root()),
        "--token-file".into(),
        s(&token_file),
        "--ttl".into(),
        "6s".into(),
        "--output-dir".into(),
        s(&out_dir),
        "--sds-socket".into(),
        s(&socket),
        "--sds-addr".into(),
        sds_addr.to_string(),
        "--monitoring-addr".into(),
        monitoring.to_string(),
    ];
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent_proc = ChildGuard::spawn("citadel", &argv).unwrap();
    wait_http_ok(monitoring, "/ready", Duration::from_secs(30))
        .await
        .unwrap();
    let id = "spiffe://cluster.local/ns/shop/sa/cart";
    check_cert_dir(&out_dir, id);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");

    // SDS over the Unix socket: one stream sees three different certificates.
    let client = sds_client_command()
        .args([
            format!("unix:{}", socket.display()),
            "3".into(),
            "40".into(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // While it is connected the agent counts its stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = metrics(monitoring).await;
        if metric_value(&m, "citadel_agent_sds_streams") == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "no SDS stream counted: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Meanwhile the files are renewed in place.
    let first = serial(&out_dir.join("cert-chain.pem"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while serial(&out_dir.join("cert-chain.pem")) == first {
        assert!(Instant::now() < deadline, "cert-chain.pem not renewed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let a write in progress finish before checking the set.
    tokio::time::sleep(Duration::from_millis(300)).await;
    check_cert_dir(&out_dir, id);

    let out = client.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let responses = sds_responses(&out.stdout);
    let mut serials: Vec<&str> = Vec::new();
    let mut versions: Vec<&str> = Vec::new();
    for (i, r) in responses.iter().enumerate() {
        let default = &r["secrets"]["default"];
        assert_eq!(default["key_matches"], true, "{r}");
        assert_eq!(default["chain_certs"], 1, "{r}");
        // Secrets are not a state-of-the-world type: the first response carries
        // both, a renewal only what changed (the root did not).
        if i == 0 || r["secrets"].get("ROOTCA").is_some() {
            assert_eq!(r["secrets"]["ROOTCA"]["roots"], 1, "{r}");
        }
        let serial = default["serial"].as_str().unwrap();
        if !serials.contains(&serial) {
            serials.push(serial);
        }
        versions.push(r["version"].as_str().unwrap());
    }
    assert_eq!(serials.len(), 3, "{responses:?}");
    versions.dedup();
    assert_eq!(
        versions.len(),
        responses.len(),
        "each push has a new version: {responses:?}"
    );

    // Over loopback TCP, only the secret asked for is sent.
    let r = &roots_over_tcp(sds_addr).await;
    assert_eq!(r["secrets"]["ROOTCA"]["roots"], 1, "{r}");
    assert!(r["secrets"].get("default").is_none(), "{r}");

    // Renewals after the first went over mTLS, each counted by the agent too.
    let m = metrics(citadel.monitoring).await;
    let mtls = metric_value(
        &m,
        r#"citadel_certificates_issued_total{authenticator="mtls"}"#,
    );
    assert!(mtls.is_some_and(|n| n >= 2.0), "{m}");
    let am = metrics(monitoring).await;
    let ok = metric_value(&am, r#"citadel_agent_renewals_total{result="ok"}"#).unwrap();
    assert!(ok >= 3.0, "{am}");
    assert!(
        metric_value(&am, r#"citadel_agent_certificates_total{via="mtls"}"#)
            .is_some_and(|n| n >= 2.0),
        "{am}"
    );
    let expiry = metric_value(&am, "citadel_agent_cert_expiry_timestamp_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now && expiry < now + 10.0, "{expiry} vs {now}");
    assert_eq!(metric_value(&am, "citadel_agent_cert_expired"), Some(0.0));
    assert_eq!(metric_value(&am, "citadel_agent_sds_streams"), Some(0.0));

    // SIGTERM: a clean exit that removes the socket.
    let status = agent_proc.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists());
}

#[tokio::test]
async fn an_agent_started_while_citadel_is_down_is_not_ready_and_retries_until_it_is_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("citadel");
    let citadel = CitadelProcess::start(&data, &[]).await.unwrap();
    let (grpc, citadel_monitoring) = (citadel.grpc, citadel.monitoring);
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, citadel.token("shop", "late").unwrap()).unwrap();
    let ca_addr = citadel.ca_addr();
    drop(citadel);

    let socket = tmp.path().join("sds.sock");
    let monitoring: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let args = [
        "agent".to_string(),
        "--ca-addr".into(),
        ca_addr,
        "--ca-root".into(),
        s(&data.join("ca/root-cert.pem")),
        "--token-file".into(),
        s(&token_file),
        "--sds-socket".into(),
        s(&socket),
        "--monitoring-addr".into(),
        monitoring.to_string(),
    ];
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let _agent = ChildGuard::spawn("citadel", &argv).unwrap();
    // Up, failing, not ready, and refusing SDS streams rather than sending nothing.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((_, m)) = http_get(monitoring, "/metrics").await
            && metric_value(&m, r#"citadel_agent_renewals_total{result="error"}"#)
                .is_some_and(|n| n >= 1.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no failed attempt counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(http_get(monitoring, "/ready").await.unwrap().0, 200);
    let refused = sds_client(&[
        format!("unix:{}", socket.display()),
        "1".into(),
        "10".into(),
    ])
    .await;
    assert!(!refused.status.success());
    let line = String::from_utf8_lossy(&refused.stdout);
    assert!(line.contains("UNAVAILABLE"), "{line}");

    // citadel comes back on the same address: the next retry gets a certificate.
    let _citadel = CitadelProcess::start_at(&data, grpc, citadel_monitoring, &[])
        .await
        .unwrap();
    wait_http_ok(monitoring, "/ready", Duration::from_secs(90))
        .await
        .unwrap();
    let out = sds_client(&[
        format!("unix:{}", socket.display()),
        "1".into(),
        "20".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r = &sds_responses(&out.stdout)[0];
    assert_eq!(r["secrets"]["default"]["key_matches"], true, "{r}");
}

#[tokio::test]
async fn a_root_added_at_citadel_reaches_the_files_and_rootca_at_the_next_renewal() {
    let tmp = tempfile::tempdir().unwrap();
    let citadel = CitadelProcess::start(&tmp.path().join("citadel"), &[])
        .await
        .unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, citadel.token("shop", "pay").unwrap()).unwrap();
    let out_dir = tmp.path().join("certs");
    let sds_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let monitoring: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let args = [
        "agent".to_string(),
        "--ca-addr".into(),
        citadel.ca_addr(),
        "--ca-root".into(),
        s(&citadel.root()),
        "--token-file".into(),
        s(&token_file),
        "--ttl".into(),
        "4s".into(),
        "--output-dir".into(),
        s(&out_dir),
        "--sds-addr".into(),
        sds_addr.to_string(),
        "--monitoring-addr".into(),
        monitoring.to_string(),
    ];
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let _agent = ChildGuard::spawn("citadel", &argv).unwrap();
    wait_http_ok(monitoring, "/ready", Duration::from_secs(30))
        .await
        .unwrap();
    let roots_in = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .matches("BEGIN CERTIFICATE")
            .count()
    };
    assert_eq!(roots_in(&out_dir.join("root-cert.pem")), 1);

    // The first step of a root rotation: a second root appended to citadel's.
    let next_key = tmp.path().join("next-root.key");
    let next_root = tmp.path().join("next-root.pem");
    openssl_root(&next_key, &next_root, "/O=dromon-e2e/CN=next root", 30).unwrap();
    let mut bundle = std::fs::read_to_string(citadel.root()).unwrap();
    bundle.push_str(&std::fs::read_to_string(&next_root).unwrap());
    let staged = tmp.path().join("root-cert.pem.new");
    std::fs::write(&staged, bundle).unwrap();
    std::fs::rename(&staged, citadel.root()).unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while roots_in(&out_dir.join("root-cert.pem")) != 2 {
        assert!(
            Instant::now() < deadline,
            "root-cert.pem never got the new root"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    check_cert_dir(&out_dir, "spiffe://cluster.local/ns/shop/sa/pay");
    let r = &roots_over_tcp(sds_addr).await;
    assert_eq!(r["secrets"]["ROOTCA"]["roots"], 2, "{r}");
}
