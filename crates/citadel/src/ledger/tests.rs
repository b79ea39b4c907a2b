//! Ledger behaviour, each scenario run on SQLite (a temporary file) and on a
//! real PostgreSQL server from mesh-testkit.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::future::join_all;
use mesh_testkit::postgres::PostgresServer;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::*;

/// Bound on anything that must not hang.
const BOUND: Duration = Duration::from_secs(60);

/// A fresh, empty database for one test.
struct Fixture {
    url: String,
    _dir: Option<TempDir>,
    _postgres: Option<PostgresServer>,
}

impl Fixture {
    fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        Fixture {
            url: format!("sqlite://{}", dir.path().join("ledger.db").display()),
            _dir: Some(dir),
            _postgres: None,
        }
    }

    fn postgres() -> Fixture {
        let server = PostgresServer::start().unwrap();
        Fixture {
            url: server.url(),
            _dir: None,
            _postgres: Some(server),
        }
    }

    async fn open(&self) -> Ledger {
        tokio::time::timeout(BOUND, Ledger::open(&self.url))
            .await
            .unwrap()
            .unwrap()
    }
}

fn mk_cert_for(serial: &str, identity: &str) -> IssuedCertificate {
    let now = unix_now();
    IssuedCertificate {
        serial: serial.to_owned(),
        identity: identity.to_owned(),
        not_before: now - 60,
        not_after: now + 3600,
        fingerprint: hex::encode(Sha256::digest(serial.as_bytes())),
        issuer_fingerprint: hex::encode(Sha256::digest(b"issuer")),
    }
}

fn mk_cert(serial: &str) -> IssuedCertificate {
    mk_cert_for(serial, "spiffe://cluster.local/ns/default/sa/frontend")
}

fn mk_expired_cert(serial: &str) -> IssuedCertificate {
    let now = unix_now();
    IssuedCertificate {
        not_before: now - 7200,
        not_after: now - 3600,
        ..mk_cert(serial)
    }
}

/// Records `count` certificates concurrently, serials `{prefix}{i:06x}`.
async fn record_concurrently(ledger: &Ledger, prefix: &str, count: usize) {
    let records = (0..count).map(|i| ledger.record(mk_cert(&format!("{prefix}{i:06x}"))));
    let results = tokio::time::timeout(BOUND, join_all(records))
        .await
        .unwrap();
    for result in results {
        result.unwrap();
    }
}

async fn record_then_get(fixture: &Fixture) {
    let ledger = fixture.open().await;
    let cert = mk_cert("0a1b2c");
    let before = unix_now();
    ledger.record(cert.clone()).await.unwrap();
    let entry = ledger.get("0a1b2c").await.unwrap().unwrap();
    assert_eq!(entry.certificate, cert);
    assert!(entry.issued_at >= before && entry.issued_at <= unix_now() + 1);
    assert_eq!(entry.revoked, None);
    assert_eq!(
        ledger.get("0A:1B:2C").await.unwrap().unwrap().certificate,
        cert
    );
    assert_eq!(ledger.get("ffff").await.unwrap(), None);
    assert!(!ledger.is_revoked("0a1b2c").await.unwrap());
}

async fn durable_across_reopen(fixture: &Fixture) {
    let ledger = fixture.open().await;
    ledger.record(mk_cert("01")).await.unwrap();
    ledger
        .revoke("01", RevocationReason::Superseded)
        .await
        .unwrap();
    drop(ledger);
    let reopened = fixture.open().await;
    let entry = reopened.get("01").await.unwrap().unwrap();
    assert_eq!(entry.certificate, mk_cert("01"));
    assert_eq!(
        entry.revoked.map(|revocation| revocation.reason),
        Some(RevocationReason::Superseded)
    );
}

async fn concurrent_records_are_group_committed(fixture: &Fixture) {
    let ledger = fixture.open().await;
    record_concurrently(&ledger, "c0", 2000).await;
    let entries = ledger.list(None, 5000).await.unwrap();
    assert_eq!(entries.len(), 2000);
    for i in [0, 999, 1999] {
        assert!(ledger.get(&format!("c0{i:06x}")).await.unwrap().is_some());
    }
    let commits = ledger.commits();
    assert!(
        (1..2000).contains(&commits),
        "2000 records took {commits} transactions"
    );
}

async fn duplicate_serial_is_refused_and_original_kept(fixture: &Fixture) {
    let ledger = fixture.open().await;
    let original = mk_cert("d1");
    ledger.record(original.clone()).await.unwrap();
    let impostor = mk_cert_for("d1", "spiffe://cluster.local/ns/evil/sa/impostor");
    let error = ledger.record(impostor).await.unwrap_err();
    assert!(
        matches!(&error, LedgerError::DuplicateSerial { serial } if serial == "d1"),
        "{error:?}"
    );
    assert_eq!(
        ledger.get("d1").await.unwrap().unwrap().certificate,
        original
    );
}

async fn duplicates_within_one_batch_fail_only_their_callers(fixture: &Fixture) {
    let ledger = fixture.open().await;
    ledger.record(mk_cert("e0")).await.unwrap();
    let certs = vec![
        mk_cert("e1"),
        mk_cert_for("e0", "spiffe://cluster.local/ns/a/sa/old"),
        mk_cert_for("e2", "spiffe://cluster.local/ns/a/sa/first"),
        mk_cert_for("e2", "spiffe://cluster.local/ns/a/sa/second"),
        mk_cert("e3"),
    ];
    let results = join_all(certs.into_iter().map(|cert| ledger.record(cert))).await;
    let outcome: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(outcome, [true, false, true, false, true], "{results:?}");
    for result in &results {
        if let Err(error) = result {
            assert!(
                matches!(error, LedgerError::DuplicateSerial { .. }),
                "{error:?}"
            );
        }
    }
    let e2 = ledger.get("e2").await.unwrap().unwrap();
    assert_eq!(
        e2.certificate.identity,
        "spiffe://cluster.local/ns/a/sa/first"
    );
    assert_eq!(ledger.list(None, 10).await.unwrap().len(), 4);
}

async fn revoking_twice_keeps_the_first_revocation(fixture: &Fixture) {
    let ledger = fixture.open().await;
    ledger.record(mk_cert("0f")).await.unwrap();
    let first = ledger
        .revoke("0f", RevocationReason::KeyCompromise)
        .await
        .unwrap();
    assert_eq!(first.serial, "0f");
    assert_eq!(first.reason, RevocationReason::KeyCompromise);
    assert!(ledger.is_revoked("0f").await.unwrap());
    let second = ledger
        .revoke("0F", RevocationReason::Superseded)
        .await
        .unwrap();
    assert_eq!(second, first);
    let entry = ledger.get("0f").await.unwrap().unwrap();
    assert_eq!(entry.revoked, Some(first.clone()));
    assert_eq!(ledger.revocations().await.unwrap(), vec![first]);
}

async fn revoking_an_unknown_serial_fails(fixture: &Fixture) {
    let ledger = fixture.open().await;
    let error = ledger
        .revoke("abcdef", RevocationReason::Unspecified)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LedgerError::UnknownSerial { serial } if serial == "abcdef"),
        "{error:?}"
    );
    assert!(!ledger.is_revoked("abcdef").await.unwrap());
    assert!(ledger.revocations().await.unwrap().is_empty());
}

async fn revocations_skip_expired_and_sort_by_serial(fixture: &Fixture) {
    let ledger = fixture.open().await;
    for serial in ["30", "10", "20", "40"] {
        ledger.record(mk_cert(serial)).await.unwrap();
    }
    ledger.record(mk_expired_cert("05")).await.unwrap();
    for serial in ["30", "10", "05"] {
        ledger
            .revoke(serial, RevocationReason::CessationOfOperation)
            .await
            .unwrap();
    }
    let serials: Vec<String> = ledger
        .revocations()
        .await
        .unwrap()
        .into_iter()
        .map(|revocation| revocation.serial)
        .collect();
    assert_eq!(serials, ["10", "30"]);
    assert!(ledger.is_revoked("05").await.unwrap());
}

async fn list_is_newest_first_and_filters_by_identity(fixture: &Fixture) {
    let ledger = fixture.open().await;
    let frontend = "spiffe://cluster.local/ns/default/sa/frontend";
    let backend = "spiffe://cluster.local/ns/default/sa/backend";
    for (serial, identity) in [
        ("a1", frontend),
        ("a2", backend),
        ("a3", frontend),
        ("a4", frontend),
    ] {
        ledger.record(mk_cert_for(serial, identity)).await.unwrap();
    }
    let serials = |entries: Vec<LedgerEntry>| -> Vec<String> {
        entries
            .into_iter()
            .map(|entry| entry.certificate.serial)
            .collect()
    };
    assert_eq!(
        serials(ledger.list(None, 10).await.unwrap()),
        ["a4", "a3", "a2", "a1"]
    );
    assert_eq!(
        serials(ledger.list(Some(frontend), 2).await.unwrap()),
        ["a4", "a3"]
    );
    assert_eq!(
        serials(ledger.list(Some(backend), 10).await.unwrap()),
        ["a2"]
    );
    assert!(
        ledger
            .list(Some("spiffe://x/none"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(ledger.list(None, 0).await.unwrap().is_empty());
}

async fn prune_deletes_only_expired_entries(fixture: &Fixture) {
    let ledger = fixture.open().await;
    ledger.record(mk_expired_cert("b1")).await.unwrap();
    ledger.record(mk_expired_cert("b2")).await.unwrap();
    ledger.record(mk_cert("b3")).await.unwrap();
    assert_eq!(ledger.prune_expired(unix_now()).await.unwrap(), 2);
    assert_eq!(ledger.get("b1").await.unwrap(), None);
    assert!(ledger.get("b3").await.unwrap().is_some());
    assert_eq!(ledger.prune_expired(unix_now()).await.unwrap(), 0);
}

async fn malformed_certificates_are_refused(fixture: &Fixture) {
    let ledger = fixture.open().await;
    let bad = [
        IssuedCertificate {
            serial: "0A:1B".to_owned(),
            ..mk_cert("x")
        },
        IssuedCertificate {
            serial: String::new(),
            ..mk_cert("x")
        },
        IssuedCertificate {
            serial: "1".repeat(41),
            ..mk_cert("x")
        },
        IssuedCertificate {
            identity: "https://example.com".to_owned(),
            ..mk_cert("11")
        },
        IssuedCertificate {
            fingerprint: "AB".repeat(32),
            ..mk_cert("12")
        },
        IssuedCertificate {
            issuer_fingerprint: "ab".to_owned(),
            ..mk_cert("13")
        },
        IssuedCertificate {
            not_before: 10,
            not_after: 5,
            ..mk_cert("14")
        },
    ];
    for cert in bad {
        let error = ledger.record(cert.clone()).await.unwrap_err();
        assert!(
            matches!(error, LedgerError::InvalidCertificate { .. }),
            "{cert:?}: {error:?}"
        );
    }
    assert!(ledger.list(None, 10).await.unwrap().is_empty());
}

async fn a_second_replica_sees_revocations(fixture: &Fixture) {
    let first = fixture.open().await;
    let second = fixture.open().await;
    first.record(mk_cert("71")).await.unwrap();
    assert!(!second.is_revoked("71").await.unwrap());
    let revocation = first
        .revoke("71", RevocationReason::KeyCompromise)
        .await
        .unwrap();
    assert!(second.is_revoked("71").await.unwrap());
    assert_eq!(
        second.revocations().await.unwrap(),
        vec![revocation.clone()]
    );
    // The second replica's later revocation does not replace the first one's.
    assert_eq!(
        second
            .revoke("71", RevocationReason::Unspecified)
            .await
            .unwrap(),
        revocation
    );
}

async fn two_replicas_record_concurrently(fixture: &Fixture) {
    let first = fixture.open().await;
    let second = fixture.open().await;
    tokio::join!(
        record_concurrently(&first, "1a", 1000),
        record_concurrently(&second, "2b", 1000),
    );
    assert_eq!(first.list(None, 5000).await.unwrap().len(), 2000);
    assert_eq!(second.list(None, 5000).await.unwrap().len(), 2000);
}

async fn replicas_may_open_a_fresh_database_at_once(fixture: &Fixture) {
    let opens = join_all((0..4).map(|_| Ledger::open(&fixture.url)));
    let ledgers = tokio::time::timeout(BOUND, opens).await.unwrap();
    for ledger in ledgers {
        ledger
            .unwrap()
            .record(mk_cert(&format!("{:x}", fastrand::u64(..))))
            .await
            .unwrap();
    }
}

macro_rules! on_each_backend {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let fixture = super::Fixture::sqlite();
                    super::$scenario(&fixture).await;
                    assert_eq!(super::Ledger::open(&fixture.url).await.unwrap().backend(), "sqlite");
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let fixture = super::Fixture::postgres();
                    super::$scenario(&fixture).await;
                    assert_eq!(super::Ledger::open(&fixture.url).await.unwrap().backend(), "postgres");
                }
            )*
        }
    };
}

on_each_backend!(
    record_then_get,
    durable_across_reopen,
    concurrent_records_are_group_committed,
    duplicate_serial_is_refused_and_original_kept,
    duplicates_within_one_batch_fail_only_their_callers,
    revoking_twice_keeps_the_first_revocation,
    revoking_an_unknown_serial_fails,
    revocations_skip_expired_and_sort_by_serial,
    list_is_newest_first_and_filters_by_identity,
    prune_deletes_only_expired_entries,
    malformed_certificates_are_refused,
    a_second_replica_sees_revocations,
    two_replicas_record_concurrently,
    replicas_may_open_a_fresh_database_at_once,
);

#[tokio::test]
async fn sqlite_in_memory_works() {
    let ledger = Ledger::open("sqlite::memory:").await.unwrap();
    assert_eq!(ledger.backend(), "sqlite");
    record_concurrently(&ledger, "0", 100).await;
    assert_eq!(ledger.list(None, 1000).await.unwrap().len(), 100);
    assert!(ledger.get("0000063").await.unwrap().is_some());
}

#[tokio::test]
async fn sqlite_needs_an_existing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let url = format!("sqlite://{}/ledger.db", missing.display());
    let error = Ledger::open(&url).await.unwrap_err();
    assert!(
        matches!(error, LedgerError::MissingDirectory { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("no-such-dir") && message.contains("does not exist"),
        "{message}"
    );
    assert!(!missing.exists());
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    for url in [
        "mysql://root:topsecret@db/ledger",
        "http://db/ledger",
        "sqlite:relative.db",
        "ledger.db",
        "",
    ] {
        let error = Ledger::open(url).await.unwrap_err();
        assert!(
            matches!(error, LedgerError::UnsupportedUrl { .. }),
            "{url}: {error:?}"
        );
        assert!(
            !format!("{error} {error:?}").contains("topsecret"),
            "{error:?}"
        );
    }
    let error = Ledger::open("sqlite://").await.unwrap_err();
    assert!(matches!(error, LedgerError::InvalidUrl { .. }), "{error:?}");
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn unreachable_postgres_fails_fast_and_clearly() {
    let url = format!(
        "postgres://citadel:hunter2-secret@127.0.0.1:{}/ledger",
        closed_port()
    );
    let error = tokio::time::timeout(BOUND, Ledger::open(&url))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, LedgerError::Connect { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("127.0.0.1") && message.contains("refused"),
        "{message}"
    );
    assert!(
        !format!("{message} {error:?}").contains("hunter2"),
        "{message}"
    );
}

#[tokio::test]
async fn silent_postgres_times_out() {
    // Accepts TCP connections (the kernel's backlog) but never answers.
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("postgres://citadel:hunter2-secret@127.0.0.1:{port}/ledger");
    let open = Ledger::open_with_timeout(&url, Duration::from_secs(1));
    let error = tokio::time::timeout(BOUND, open)
        .await
        .unwrap()
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("no answer within 1s"), "{message}");
    assert!(
        !format!("{message} {error:?}").contains("hunter2"),
        "{message}"
    );
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_stay_out_of_errors_and_debug() {
    let server = PostgresServer::start().unwrap();
    // Trust authentication ignores the password, so this URL connects.
    let url = format!(
        "postgres://postgres:hunter2-secret@127.0.0.1:{}/test",
        server.port()
    );
    let ledger = Ledger::open(&url).await.unwrap();
    let debug = format!("{ledger:?}");
    assert!(
        debug.contains("postgres:***@127.0.0.1") && !debug.contains("hunter2"),
        "{debug}"
    );

    let missing = format!(
        "postgres://postgres:hunter2-secret@127.0.0.1:{}/no_such_db",
        server.port()
    );
    let error = Ledger::open(&missing).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("no_such_db"), "{message}");
    assert!(
        !format!("{message} {error:?}").contains("hunter2"),
        "{message}"
    );
}

#[tokio::test]
async fn sqlite_files_are_durable_wal_databases() {
    let fixture = Fixture::sqlite();
    let ledger = fixture.open().await;
    let Pool::Sqlite(pool) = &ledger.inner.pool else {
        panic!("{ledger:?} is not SQLite");
    };
    let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(journal_mode, "wal");
    assert_eq!(synchronous, 2, "synchronous is not FULL");
}

/// Measures `record` throughput with 64 concurrent callers on both backends:
/// `cargo test -p citadel --release ledger::tests::record_throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn record_throughput() {
    const CALLERS: usize = 64;
    const PER_CALLER: usize = 500;
    for fixture in [Fixture::sqlite(), Fixture::postgres()] {
        let ledger = fixture.open().await;
        let start = std::time::Instant::now();
        let mut callers = tokio::task::JoinSet::new();
        for caller in 0..CALLERS {
            let ledger = ledger.clone();
            callers.spawn(async move {
                for i in 0..PER_CALLER {
                    let serial = format!("{caller:04x}{i:08x}");
                    ledger.record(mk_cert(&serial)).await.unwrap();
                }
            });
        }
        callers.join_all().await;
        let elapsed = start.elapsed().as_secs_f64();
        let records = CALLERS * PER_CALLER;
        eprintln!(
            "{}: {records} records in {elapsed:.2}s = {:.0}/s in {} transactions",
            ledger.backend(),
            records as f64 / elapsed,
            ledger.commits()
        );
    }
}
