//! The certificate ledger: every certificate citadel issues, and its revocation.
//!
//! A [`Ledger`] keeps one row per issued certificate (serial, SPIFFE identity,
//! validity, fingerprints) in SQLite by default, or in PostgreSQL when given a
//! `postgres://` URL so that citadel replicas share it. [`Ledger::record`]
//! returns once the row is durably committed; concurrent records are group
//! committed by one writer task (see `writer.rs`), so the ledger keeps up with
//! thousands of certificates per second. Revocations feed the revocation-list
//! endpoint through [`Ledger::revocations`]; the CRL itself is built elsewhere.

mod backend;
mod error;
mod schema;
mod types;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::LedgerError;
pub use types::{
    IssuedCertificate, LedgerEntry, ParseRevocationReasonError, Revocation, RevocationReason,
};

use backend::{Pool, entry_from_row, revocation, revocation_from_row, with_pool};
use types::normalize_serial;
use writer::{Row, Writer};

/// How long `open` and each later connection attempt wait for the database.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on the certificate ledger; clones share one pool and one writer.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    writer: Writer,
    /// The URL opened, password redacted.
    url: String,
}

impl Ledger {
    /// Opens `sqlite://PATH`, `sqlite::memory:` or `postgres://...`, creating the schema if absent.
    ///
    /// A SQLite file is created if missing (its directory must exist) and runs
    /// in WAL mode with `synchronous=FULL`. Several replicas may open the same
    /// PostgreSQL database at once.
    pub async fn open(url: &str) -> Result<Ledger, LedgerError> {
        Ledger::open_with_timeout(url, CONNECT_TIMEOUT).await
    }

    async fn open_with_timeout(
        url: &str,
        connect_timeout: Duration,
    ) -> Result<Ledger, LedgerError> {
        let pool = backend::open(url, connect_timeout).await?;
        let writer = Writer::spawn(pool.clone());
        let url = error::redact_url(url);
        tracing::info!(%url, backend = pool.name(), "certificate ledger open");
        Ok(Ledger {
            inner: Arc::new(Inner { pool, writer, url }),
        })
    }

    /// Records an issued certificate; returns once it is durably committed.
    ///
    /// A serial already recorded is refused with [`LedgerError::DuplicateSerial`]
    /// and the recorded certificate is kept unchanged.
    pub async fn record(&self, certificate: IssuedCertificate) -> Result<(), LedgerError> {
        certificate.validate()?;
        let row = Row {
            certificate,
            issued_at: unix_now(),
        };
        self.inner.writer.submit(row).await
    }

    /// Revokes a certificate; revoking it again keeps and returns the first revocation.
    ///
    /// Serials may be given as recorded or as openssl prints them (`0A:1B:...`).
    pub async fn revoke(
        &self,
        serial: &str,
        reason: RevocationReason,
    ) -> Result<Revocation, LedgerError> {
        let serial = normalize_serial(serial);
        let now = unix_now();
        let stored: Option<(Option<i64>, Option<i64>)> = with_pool!(&self.inner.pool, |pool| {
            sqlx::query(schema::REVOKE)
                .bind(now)
                .bind(i64::from(reason.code()))
                .bind(serial.as_str())
                .execute(pool)
                .await?;
            sqlx::query_as(schema::SELECT_REVOCATION)
                .bind(serial.as_str())
                .fetch_optional(pool)
                .await?
        });
        let Some((revoked_at, code)) = stored else {
            return Err(LedgerError::UnknownSerial { serial });
        };
        revocation(&serial, revoked_at, code)?.ok_or_else(|| LedgerError::Corrupt {
            serial: serial.clone(),
            detail: "still unrevoked after revocation".to_owned(),
        })
    }

    /// The certificate with this serial and its revocation, if recorded.
    pub async fn get(&self, serial: &str) -> Result<Option<LedgerEntry>, LedgerError> {
        let serial = normalize_serial(serial);
        with_pool!(&self.inner.pool, |pool| {
            let row = sqlx::query(schema::SELECT_ENTRY)
                .bind(serial.as_str())
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(entry_from_row).transpose()
        })
    }

    /// Revoked certificates that have not expired yet, ordered by serial: a CRL's entries.
    pub async fn revocations(&self) -> Result<Vec<Revocation>, LedgerError> {
        let now = unix_now();
        with_pool!(&self.inner.pool, |pool| {
            let rows = sqlx::query(schema::LIST_REVOCATIONS)
                .bind(now)
                .fetch_all(pool)
                .await?;
            rows.iter().map(revocation_from_row).collect()
        })
    }

    /// Whether the certificate is revoked; false for serials never recorded (see [`Ledger::get`]).
    pub async fn is_revoked(&self, serial: &str) -> Result<bool, LedgerError> {
        let serial = normalize_serial(serial);
        let revoked_at: Option<Option<i64>> = with_pool!(&self.inner.pool, |pool| {
            sqlx::query_scalar(schema::SELECT_REVOKED_AT)
                .bind(serial.as_str())
                .fetch_optional(pool)
                .await?
        });
        Ok(revoked_at.flatten().is_some())
    }

    /// Up to `limit` entries, newest (most recently recorded) first, of one identity or all.
    pub async fn list(
        &self,
        identity: Option<&str>,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        let limit = i64::from(limit);
        with_pool!(&self.inner.pool, |pool| {
            let rows = match identity {
                Some(identity) => {
                    sqlx::query(schema::LIST_IDENTITY)
                        .bind(identity)
                        .bind(limit)
                        .fetch_all(pool)
                        .await?
                }
                None => {
                    sqlx::query(schema::LIST_ALL)
                        .bind(limit)
                        .fetch_all(pool)
                        .await?
                }
            };
            rows.iter().map(entry_from_row).collect()
        })
    }

    /// Deletes the entries whose `not_after` is before `before` (unix seconds); returns how many.
    pub async fn prune_expired(&self, before: i64) -> Result<u64, LedgerError> {
        with_pool!(&self.inner.pool, |pool| {
            let result = sqlx::query(schema::PRUNE)
                .bind(before)
                .execute(pool)
                .await?;
            Ok(result.rows_affected())
        })
    }

    /// The database in use: "sqlite" or "postgres".
    pub fn backend(&self) -> &'static str {
        self.inner.pool.name()
    }

    /// Group-commit transactions this handle's writer has committed so far.
    pub fn commits(&self) -> u64 {
        self.inner.writer.commits()
    }
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("backend", &self.backend())
            .field("url", &self.inner.url)
            .field("commits", &self.commits())
            .finish()
    }
}

/// Seconds since the unix epoch (0 if the clock is before it).
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
