//! Opening ledgers: URLs, unreachable servers, redaction, SQLite settings.

use std::time::Duration;

use super::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commits_leave_checkpoints_to_the_background_task() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let ledger = Ledger::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let Pool::Sqlite(pool) = &ledger.inner.pool else {
        panic!("{ledger:?} is not SQLite");
    };
    let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(autocheckpoint, 0, "commits must not checkpoint");
    record_concurrently(&ledger, "c", 200).await;
    // Within a checkpoint interval or two, the rows are in the database file
    // itself: a copy of it without its write-ahead log holds them.
    let copy = dir.path().join("copy.db");
    let mut found = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::copy(&db, &copy).unwrap();
        // A copy taken mid-checkpoint may be torn: try again.
        let Ok(reader) = Ledger::open(&format!("sqlite://{}", copy.display())).await else {
            continue;
        };
        found = reader.list(None, 1000).await.map_or(0, |rows| rows.len());
        drop(reader);
        let _ = std::fs::remove_file(dir.path().join("copy.db-wal"));
        let _ = std::fs::remove_file(dir.path().join("copy.db-shm"));
        if found == 200 {
            break;
        }
    }
    assert_eq!(found, 200, "rows never reached the database file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commits_are_synchronous_whatever_the_database_default() {
    let server = PostgresServer::start().unwrap();
    server
        .psql(
            "postgres",
            "ALTER DATABASE test SET synchronous_commit = off",
        )
        .unwrap();
    let ledger = Ledger::open(&server.url()).await.unwrap();
    let Pool::Postgres(pool) = &ledger.inner.pool else {
        panic!("{ledger:?} is not PostgreSQL");
    };
    let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(setting, "on");
}
