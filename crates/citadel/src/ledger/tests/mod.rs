//! Ledger behaviour, each scenario run on SQLite (a temporary file) and on a
//! real PostgreSQL server from mesh-testkit.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::future::join_all;
use mesh_testkit::postgres::PostgresServer;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::*;

mod open;
mod scenarios;

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
macro_rules! on_each_backend {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let fixture = super::Fixture::sqlite();
                    super::scenarios::$scenario(&fixture).await;
                    assert_eq!(super::Ledger::open(&fixture.url).await.unwrap().backend(), "sqlite");
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let fixture = super::Fixture::postgres();
                    super::scenarios::$scenario(&fixture).await;
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
    a_failed_batch_fails_its_callers_and_the_writer_goes_on,
);

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
