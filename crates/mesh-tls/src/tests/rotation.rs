//! Certificate directories renewed in place, as citadel's agent renews them.

use std::{sync::Arc, time::Duration};

use rustls_pki_types::{CertificateDer, pem::PemObject};

use super::{check, client, serve, server_id};
use crate::{
    CERT_CHAIN_FILE, ClientAuth, FileIdentity, IdentitySource, KEY_FILE, MtlsAcceptor,
    ServerIdentity, TlsError, channel,
    test_util::{TestCa, TestLeaf, spiffe, write_atomic},
};

const POLL: Duration = Duration::from_millis(50);

fn leaf_der(leaf: &TestLeaf) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(leaf.chain_pem.as_bytes()).unwrap()
}

/// Waits until `source` holds `leaf`.
async fn wait_for_leaf(source: &dyn IdentitySource, leaf: &TestLeaf) {
    let want = leaf_der(leaf);
    let mut rx = source.subscribe();
    let wait = async {
        loop {
            if rx
                .borrow_and_update()
                .as_ref()
                .is_some_and(|id| *id.leaf() == want)
            {
                return;
            }
            rx.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("the renewed files were not picked up within 5s");
}

#[tokio::test]
async fn a_server_presents_renewed_files_from_a_new_root_without_restart() {
    let old = TestCa::new("old root");
    let new = TestCa::new("new root");
    let dir = tempfile::tempdir().unwrap();
    old.issue(&server_id()).write_dir(dir.path(), &[&old]);
    let files: Arc<dyn IdentitySource> =
        Arc::new(FileIdentity::open_with_interval(dir.path(), POLL).unwrap());
    let server = serve(MtlsAcceptor::new(files.clone(), ClientAuth::Required)).await;
    let expect = ServerIdentity::Exact(server_id());

    let before = client(
        &server.endpoint,
        old.issue(&spiffe("default", "productpage"))
            .identity(&[&old]),
        expect.clone(),
    );
    check(before.clone()).await.unwrap();

    // Rotation: the new root joins the old one, then a leaf from the new root.
    let renewed = new.issue(&server_id());
    renewed.write_dir(dir.path(), &[&old, &new]);
    wait_for_leaf(files.as_ref(), &renewed).await;

    // A client trusting only the new root: proves the server presents the new leaf.
    let new_client = client(
        &server.endpoint,
        new.issue(&spiffe("default", "productpage"))
            .identity(&[&new]),
        expect.clone(),
    );
    check(new_client).await.unwrap();
    // A client still on the old root (that trusts both) is accepted too.
    let old_client = client(
        &server.endpoint,
        old.issue(&spiffe("default", "reviews"))
            .identity(&[&old, &new]),
        expect,
    );
    check(old_client).await.unwrap();
    // A connection made before the rotation keeps working.
    check(before).await.unwrap();
}

#[tokio::test]
async fn a_client_uses_its_renewed_certificate_on_the_next_connection() {
    let ca = TestCa::new("root");
    let server = serve(MtlsAcceptor::new(
        super::source(&ca.issue(&server_id()), &[&ca]),
        ClientAuth::Required,
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    ca.issue(&spiffe("default", "productpage"))
        .write_dir(dir.path(), &[&ca]);
    let files: Arc<dyn IdentitySource> =
        Arc::new(FileIdentity::open_with_interval(dir.path(), POLL).unwrap());
    let expect = ServerIdentity::Exact(server_id());
    check(channel(&server.endpoint, files.clone(), expect.clone()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        server.last_peer().unwrap().identity,
        Some(spiffe("default", "productpage"))
    );

    let renewed = ca.issue(&spiffe("default", "productpage-v2"));
    renewed.write_dir(dir.path(), &[&ca]);
    wait_for_leaf(files.as_ref(), &renewed).await;
    check(channel(&server.endpoint, files, expect).unwrap())
        .await
        .unwrap();
    let peer = server.last_peer().unwrap();
    assert_eq!(peer.identity, Some(spiffe("default", "productpage-v2")));
    assert_eq!(peer.certificates.unwrap()[0], leaf_der(&renewed));
}

#[tokio::test]
async fn bad_or_half_renewed_files_keep_the_last_good_identity() {
    let ca = TestCa::new("root");
    let dir = tempfile::tempdir().unwrap();
    let first = ca.issue(&spiffe("default", "a"));
    first.write_dir(dir.path(), &[&ca]);
    let files = FileIdentity::open_with_interval(dir.path(), POLL).unwrap();
    let good = files.current().unwrap();
    let settle = || tokio::time::sleep(POLL * 4);
    let still_good = |files: &FileIdentity| Arc::ptr_eq(&files.current().unwrap(), &good);

    write_atomic(
        dir.path(),
        CERT_CHAIN_FILE,
        b"-----BEGIN CERTIFICATE-----\nAAAA",
    );
    settle().await;
    assert!(
        still_good(&files),
        "a truncated chain replaced the identity"
    );

    // Half renewed: the new chain is in place, the key is still the old one.
    let second = ca.issue(&spiffe("default", "b"));
    write_atomic(dir.path(), CERT_CHAIN_FILE, second.chain_pem.as_bytes());
    settle().await;
    assert!(
        still_good(&files),
        "a chain with the wrong key replaced the identity"
    );

    std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
    settle().await;
    assert!(still_good(&files), "a missing key replaced the identity");

    write_atomic(dir.path(), KEY_FILE, second.key_pem.as_bytes());
    wait_for_leaf(&files, &second).await;
    assert_eq!(
        files.current().unwrap().spiffe_id(),
        Some(&spiffe("default", "b"))
    );
}

#[tokio::test]
async fn opening_a_directory_without_valid_files_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let e = FileIdentity::open(dir.path()).unwrap_err();
    assert!(matches!(e, TlsError::Read { .. }), "{e}");
    assert!(e.to_string().contains(CERT_CHAIN_FILE), "{e}");
}

#[test]
fn watching_needs_a_runtime() {
    let ca = TestCa::new("root");
    let dir = tempfile::tempdir().unwrap();
    ca.issue(&spiffe("default", "a"))
        .write_dir(dir.path(), &[&ca]);
    assert!(matches!(
        FileIdentity::open(dir.path()),
        Err(TlsError::NoRuntime)
    ));
}

/// Captured log output.
#[derive(Clone, Default)]
struct Captured(Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn logs_of_loads_and_refused_renewals_hold_no_key_material() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let ca = TestCa::new("root");
    let dir = tempfile::tempdir().unwrap();
    let first = ca.issue(&spiffe("default", "a"));
    first.write_dir(dir.path(), &[&ca]);
    let files = FileIdentity::open_with_interval(dir.path(), POLL).unwrap();
    // A renewal whose key is cut short, then one whose key is another's.
    let second = ca.issue(&spiffe("default", "b"));
    let half = &second.key_pem[..second.key_pem.len() / 2];
    write_atomic(dir.path(), KEY_FILE, half.as_bytes());
    tokio::time::sleep(POLL * 4).await;
    write_atomic(dir.path(), CERT_CHAIN_FILE, second.chain_pem.as_bytes());
    write_atomic(dir.path(), KEY_FILE, first.key_pem.as_bytes());
    tokio::time::sleep(POLL * 4).await;
    second.write_dir(dir.path(), &[&ca]);
    wait_for_leaf(&files, &second).await;

    let logs = String::from_utf8(captured.0.lock().clone()).unwrap();
    assert!(logs.contains("TLS identity loaded"), "{logs}");
    assert!(logs.contains("keeping the last good identity"), "{logs}");
    assert!(logs.contains("TLS identity reloaded"), "{logs}");
    for key in [&first.key_pem, &second.key_pem] {
        for line in key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!logs.contains(line), "key material logged: {logs}");
        }
    }
    assert!(!logs.contains("PRIVATE KEY"), "{logs}");
}
