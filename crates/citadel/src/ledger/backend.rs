//! The two databases behind the ledger: a SQLite file (or memory) and PostgreSQL.
//!
//! Queries are written once and run on either pool through [`with_pool!`],
//! which repeats its body for each variant so sqlx's types stay concrete.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ColumnIndex, Connection as _, Decode, PgConnection, PgPool, Row, SqlitePool, Type};

use super::error::{redact_url, scrub};
use super::types::{LedgerEntry, Revocation, RevocationReason};
use super::{IssuedCertificate, LedgerError, schema};

/// How long SQLite waits for another writer's lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts to open a SQLite file another process is switching to WAL.
const SQLITE_OPEN_RETRIES: u32 = 10;

/// Whether SQLite answered "database is locked" (SQLITE_BUSY, code 5).
fn is_busy(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("5"))
}

/// Connections per SQLite file: the writer plus readers.
const SQLITE_CONNECTIONS: u32 = 4;
/// Connections per PostgreSQL replica: the writer plus readers.
const POSTGRES_CONNECTIONS: u32 = 8;
/// Bind parameters one SQLite statement may carry.
const SQLITE_BIND_LIMIT: usize = 32_766;
/// Bind parameters one PostgreSQL statement may carry.
const POSTGRES_BIND_LIMIT: usize = 65_535;

/// A connection pool on one of the supported databases.
#[derive(Clone)]
pub(super) enum Pool {
    /// A SQLite file, or memory.
    Sqlite(SqlitePool),
    /// A PostgreSQL database, possibly shared by several citadel replicas.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete sqlx pool of `$target`.
macro_rules! with_pool {
    ($target:expr, |$pool:ident| $body:expr) => {
        match $target {
            $crate::ledger::backend::Pool::Sqlite($pool) => $body,
            $crate::ledger::backend::Pool::Postgres($pool) => $body,
        }
    };
}
pub(super) use with_pool;

impl Pool {
    /// "sqlite" or "postgres".
    pub(super) fn name(&self) -> &'static str {
        match self {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Bind parameters one statement may carry on this database.
    pub(super) fn bind_limit(&self) -> usize {
        match self {
            Pool::Sqlite(_) => SQLITE_BIND_LIMIT,
            Pool::Postgres(_) => POSTGRES_BIND_LIMIT,
        }
    }
}

/// Connects to the database `url` names and creates the schema if absent.
pub(super) async fn open(url: &str, connect_timeout: Duration) -> Result<Pool, LedgerError> {
    let scheme = url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("sqlite") if url.starts_with("sqlite://") || url == "sqlite::memory:" => {
            open_sqlite(url, connect_timeout).await
        }
        Some("postgres" | "postgresql") => open_postgres(url, connect_timeout).await,
        _ => Err(LedgerError::UnsupportedUrl {
            url: redact_url(url),
        }),
    }
}

async fn open_sqlite(url: &str, connect_timeout: Duration) -> Result<Pool, LedgerError> {
    let path = url
        .strip_prefix("sqlite://")
        .map(|rest| rest.split(['?', '#']).next().unwrap_or_default());
    let in_memory = path.is_none_or(|path| path == ":memory:") || url.contains("mode=memory");
    if path == Some("") {
        return Err(LedgerError::InvalidUrl {
            url: redact_url(url),
            reason: "no file path after sqlite://".to_owned(),
        });
    }
    let mut options = SqliteConnectOptions::from_str(url)
        .map_err(|error| LedgerError::InvalidUrl {
            url: redact_url(url),
            reason: scrub(&error.to_string(), url),
        })?
        .create_if_missing(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .synchronous(SqliteSynchronous::Full);
    let mut pool = SqlitePoolOptions::new().acquire_timeout(connect_timeout);
    if in_memory {
        // One connection, never closed: the database lives as long as it does.
        pool = pool
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    } else {
        check_parent_exists(options.get_filename())?;
        // Checkpoints run beside the writer (see `writer`), not inside commits.
        options = options
            .journal_mode(SqliteJournalMode::Wal)
            .pragma("wal_autocheckpoint", "0");
        pool = pool.max_connections(SQLITE_CONNECTIONS);
    }
    // Processes opening a fresh file together race to switch it to WAL; the loser
    // gets SQLITE_BUSY without waiting, so it tries again.
    let mut attempt = 0u32;
    let pool = loop {
        match pool.clone().connect_with(options.clone()).await {
            Ok(pool) => break pool,
            Err(error) if attempt < SQLITE_OPEN_RETRIES && is_busy(&error) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            Err(error) => return Err(connect_error(url, &error)),
        }
    };
    schema::create_sqlite(&pool)
        .await
        .map_err(|source| LedgerError::Schema {
            url: redact_url(url),
            source,
        })?;
    Ok(Pool::Sqlite(pool))
}

fn check_parent_exists(path: &Path) -> Result<(), LedgerError> {
    match path.parent() {
        Some(directory) if !directory.as_os_str().is_empty() && !directory.is_dir() => {
            Err(LedgerError::MissingDirectory {
                path: path.to_path_buf(),
                directory: directory.to_path_buf(),
            })
        }
        _ => Ok(()),
    }
}

async fn open_postgres(url: &str, connect_timeout: Duration) -> Result<Pool, LedgerError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|error| LedgerError::InvalidUrl {
            url: redact_url(url),
            reason: scrub(&error.to_string(), url),
        })?
        .application_name("citadel")
        // `record` promises durability, whatever the server's or database's default.
        .options([("synchronous_commit", "on")]);
    // One connection first, bounded in time: the pool would retry a refused
    // connection until its timeout and then report only "timed out".
    let mut conn = tokio::time::timeout(connect_timeout, PgConnection::connect_with(&options))
        .await
        .map_err(|_| LedgerError::Connect {
            url: redact_url(url),
            reason: format!(
                "no answer within {}",
                humantime::format_duration(connect_timeout)
            ),
        })?
        .map_err(|error| connect_error(url, &error))?;
    let created = schema::create_postgres(&mut conn).await;
    let _ = conn.close().await;
    created.map_err(|source| LedgerError::Schema {
        url: redact_url(url),
        source,
    })?;
    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_CONNECTIONS)
        .acquire_timeout(connect_timeout)
        .connect_with(options)
        .await
        .map_err(|error| connect_error(url, &error))?;
    Ok(Pool::Postgres(pool))
}

fn connect_error(url: &str, error: &sqlx::Error) -> LedgerError {
    LedgerError::Connect {
        url: redact_url(url),
        reason: scrub(&error.to_string(), url),
    }
}

/// Reads a row of `schema::entry_columns!()` into an entry.
pub(super) fn entry_from_row<R>(row: &R) -> Result<LedgerEntry, LedgerError>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    let serial: String = row.try_get(0)?;
    let revoked = revocation(&serial, row.try_get(7)?, row.try_get(8)?)?;
    Ok(LedgerEntry {
        certificate: IssuedCertificate {
            identity: row.try_get(1)?,
            not_before: row.try_get(2)?,
            not_after: row.try_get(3)?,
            fingerprint: row.try_get(4)?,
            issuer_fingerprint: row.try_get(5)?,
            serial,
        },
        issued_at: row.try_get(6)?,
        revoked,
    })
}

/// Reads a row of (serial, revoked_at, revocation_reason) of a revoked certificate.
pub(super) fn revocation_from_row<R>(row: &R) -> Result<Revocation, LedgerError>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    let serial: String = row.try_get(0)?;
    revocation(&serial, row.try_get(1)?, row.try_get(2)?)?.ok_or(LedgerError::Corrupt {
        serial,
        detail: "listed as revoked without a revocation time".to_owned(),
    })
}

/// The revocation stored in a row's `revoked_at` and `revocation_reason` columns.
pub(super) fn revocation(
    serial: &str,
    revoked_at: Option<i64>,
    reason: Option<i64>,
) -> Result<Option<Revocation>, LedgerError> {
    let corrupt = |detail: String| LedgerError::Corrupt {
        serial: serial.to_owned(),
        detail,
    };
    match (revoked_at, reason) {
        (None, None) => Ok(None),
        (Some(revoked_at), Some(code)) => {
            let reason = u8::try_from(code)
                .ok()
                .and_then(RevocationReason::from_code)
                .ok_or_else(|| corrupt(format!("unknown revocation reason code {code}")))?;
            Ok(Some(Revocation {
                serial: serial.to_owned(),
                revoked_at,
                reason,
            }))
        }
        (revoked_at, reason) => Err(corrupt(format!(
            "revoked_at {revoked_at:?} and revocation_reason {reason:?} must be set together"
        ))),
    }
}
