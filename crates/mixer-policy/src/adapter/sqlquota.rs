//! The SQL quota: memquota's quotas kept in a database, so every mixer-policy
//! replica on the same PostgreSQL database draws from one count (SQLite, one
//! file, for a single replica).
//!
//! Params are memquota's, plus `database`: the URL of the database to count in
//! (default: mixer-policy's `--quota-database`, itself by default a SQLite file
//! under its data directory). Handlers naming the same URL share one pool. Each allocation is one transaction that first locks
//! the row of its quota and dimension combination (`SELECT ... FOR UPDATE` on
//! PostgreSQL; SQLite has one writer), drops allocations older than the window,
//! sums the rest, and records what it grants, so replicas never grant more than
//! the limit between them. A deduplication id is recorded in the same
//! transaction.

use std::{collections::BTreeMap, str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    PgPool, Row, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{
    ParamsError, QuotaResult,
    memquota::{QuotaError, QuotaSet, dimension_key, grant},
};

const NAME: &str = "sqlquota";

/// Why the SQL quota failed.
#[derive(Debug, thiserror::Error)]
pub enum SqlQuotaError {
    /// The handler's params are unusable.
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// The allocation itself is wrong.
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// The URL is neither `sqlite://` nor `postgres://`.
    #[error("quota database URL must start with sqlite:// or postgres://")]
    Url,
    /// The database failed.
    #[error("quota database: {0}")]
    Database(#[from] sqlx::Error),
}

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// One quota database, shared by every sqlquota handler naming it and across
/// configuration versions. The pool connects on first use and the tables are
/// created then, so configuring a handler never blocks and an unreachable
/// database shows as failed allocations, not as a configuration that fails to
/// load.
#[derive(Debug)]
pub struct QuotaDatabase {
    url: String,
    pool: Pool,
    schema: tokio::sync::OnceCell<()>,
}

impl QuotaDatabase {
    /// A database for `url` (`sqlite://FILE` or `postgres://...`), not yet
    /// connected.
    pub fn lazy(url: &str) -> Result<Self, SqlQuotaError> {
        let pool = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?;
            // The file's directory is made here; the file on first use.
            if let Some(dir) = options.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                let _ = std::fs::create_dir_all(dir);
            }
            let options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10));
            // One writer: transactions are serialized in this process.
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_lazy_with(options),
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?.application_name("mixer-policy");
            Pool::Postgres(
                // A Check waits at most this long for a connection: past it
                // the caller has given up, so the quota is reported unavailable.
                PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(2))
                    .connect_lazy_with(options),
            )
        } else {
            return Err(SqlQuotaError::Url);
        };
        Ok(Self {
            url: url.to_string(),
            pool,
            schema: tokio::sync::OnceCell::new(),
        })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Creates the tables, once per process (again after a failure).
    async fn ready(&self) -> Result<&Pool, SqlQuotaError> {
        self.schema
            .get_or_try_init(|| async {
                match &self.pool {
                    Pool::Sqlite(pool) => {
                        for statement in SCHEMA {
                            sqlx::query(statement).execute(pool).await?;
                        }
                    }
                    Pool::Postgres(pool) => {
                        // Replicas may create the tables at once: one at a time.
                        let mut tx = pool.begin().await?;
                        sqlx::query("SELECT pg_advisory_xact_lock(7346105)")
                            .execute(&mut *tx)
                            .await?;
                        for statement in SCHEMA {
                            sqlx::query(statement).execute(&mut *tx).await?;
                        }
                        tx.commit().await?;
                    }
                }
                Ok::<(), SqlQuotaError>(())
            })
            .await?;
        Ok(&self.pool)
    }
}

/// A SQL quota handler: its quotas, counted in a shared [`QuotaDatabase`].
#[derive(Debug, Clone)]
pub struct SqlQuota {
    set: QuotaSet,
    db: Arc<QuotaDatabase>,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS mixer_quota_keys (quota TEXT NOT NULL, dims TEXT NOT NULL, PRIMARY KEY (quota, dims))",
    "CREATE TABLE IF NOT EXISTS mixer_quota_allocations (quota TEXT NOT NULL, dims TEXT NOT NULL, at_ms BIGINT NOT NULL, amount BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS mixer_quota_allocations_key ON mixer_quota_allocations (quota, dims, at_ms)",
    "CREATE TABLE IF NOT EXISTS mixer_quota_dedup (id TEXT PRIMARY KEY, granted BIGINT NOT NULL, window_ms BIGINT NOT NULL, at_ms BIGINT NOT NULL)",
];

/// Runs `$body` with `$c` bound to an open transaction of whichever database.
macro_rules! in_transaction {
    ($pool:expr, |$c:ident| $body:expr) => {
        match $pool {
            Pool::Sqlite(p) => {
                let mut tx = p.begin().await?;
                let $c = &mut *tx;
                let out = $body;
                tx.commit().await?;
                out
            }
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                let $c = &mut *tx;
                let out = $body;
                tx.commit().await?;
                out
            }
        }
    };
}

/// The params field naming the database, beside memquota's.
pub const DATABASE_PARAM: &str = "database";

impl SqlQuota {
    /// A handler for `params` (memquota's, plus an optional `database` URL, read
    /// by the caller to pick `db`).
    pub fn new(params: &serde_json::Value, db: Arc<QuotaDatabase>) -> Result<Self, ParamsError> {
        let mut quotas = params.clone();
        if let Some(map) = quotas.as_object_mut() {
            map.remove(DATABASE_PARAM);
        }
        Ok(Self {
            set: QuotaSet::parse(NAME, &quotas)?,
            db,
        })
    }

    /// Connects to the database at `url` (creating the tables) for handler
    /// `params`.
    pub async fn open(url: &str, params: &serde_json::Value) -> Result<Self, SqlQuotaError> {
        let q = Self::new(params, Arc::new(QuotaDatabase::lazy(url)?))?;
        q.db.ready().await?;
        Ok(q)
    }

    /// The database the handler counts in.
    pub fn database(&self) -> &Arc<QuotaDatabase> {
        &self.db
    }

    /// Allocates `amount` of quota `name` for `dimensions` at `now_ms` (Unix
    /// milliseconds), as [`super::memquota::MemQuota::alloc`] does.
    pub async fn alloc(
        &self,
        name: &str,
        dimensions: &BTreeMap<String, String>,
        amount: i64,
        best_effort: bool,
        dedup_id: &str,
        now_ms: i64,
    ) -> Result<QuotaResult, SqlQuotaError> {
        let limit = self.set.get(name, amount)?.limit_for(dimensions).clone();
        let dims = dimension_key(dimensions);
        let window_ms = i64::try_from(limit.window.as_millis()).unwrap_or(i64::MAX);
        let dedup_ms = i64::try_from(self.set.dedup_for.as_millis()).unwrap_or(i64::MAX);
        // PostgreSQL: the key's row lock serializes replicas; SQLite has one writer.
        let pool = self.db.ready().await?;
        let lock = match pool {
            Pool::Postgres(_) => {
                "SELECT quota FROM mixer_quota_keys WHERE quota = $1 AND dims = $2 FOR UPDATE"
            }
            Pool::Sqlite(_) => "SELECT quota FROM mixer_quota_keys WHERE quota = $1 AND dims = $2",
        };
        let granted: i64 = in_transaction!(pool, |c| {
            sqlx::query(
                "INSERT INTO mixer_quota_keys (quota, dims) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(name)
            .bind(&dims)
            .execute(&mut *c)
            .await?;
            sqlx::query(lock)
                .bind(name)
                .bind(&dims)
                .fetch_optional(&mut *c)
                .await?;
            let seen = if dedup_id.is_empty() {
                None
            } else {
                sqlx::query("SELECT granted FROM mixer_quota_dedup WHERE id = $1 AND at_ms > $2")
                    .bind(dedup_id)
                    .bind(now_ms.saturating_sub(dedup_ms))
                    .fetch_optional(&mut *c)
                    .await?
                    .map(|row| row.try_get::<i64, _>(0))
                    .transpose()?
            };
            match seen {
                Some(granted) => granted,
                None => {
                    if window_ms > 0 {
                        sqlx::query(
                            "DELETE FROM mixer_quota_allocations WHERE quota = $1 AND dims = $2 AND at_ms <= $3",
                        )
                        .bind(name)
                        .bind(&dims)
                        .bind(now_ms.saturating_sub(window_ms))
                        .execute(&mut *c)
                        .await?;
                    }
                    let used: i64 = sqlx::query(
                        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM mixer_quota_allocations WHERE quota = $1 AND dims = $2",
                    )
                    .bind(name)
                    .bind(&dims)
                    .fetch_one(&mut *c)
                    .await?
                    .try_get(0)?;
                    let granted = grant(amount, limit.max_amount - used, best_effort);
                    if granted > 0 {
                        sqlx::query(
                            "INSERT INTO mixer_quota_allocations (quota, dims, at_ms, amount) VALUES ($1, $2, $3, $4)",
                        )
                        .bind(name)
                        .bind(&dims)
                        .bind(now_ms)
                        .bind(granted)
                        .execute(&mut *c)
                        .await?;
                    }
                    if !dedup_id.is_empty() {
                        sqlx::query(
                            "INSERT INTO mixer_quota_dedup (id, granted, window_ms, at_ms) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (id) DO UPDATE SET granted = excluded.granted, window_ms = excluded.window_ms, at_ms = excluded.at_ms",
                        )
                        .bind(dedup_id)
                        .bind(granted)
                        .bind(window_ms)
                        .bind(now_ms)
                        .execute(&mut *c)
                        .await?;
                    }
                    granted
                }
            }
        });
        Ok(QuotaResult {
            granted,
            valid_duration: limit.window,
        })
    }

    /// Deletes deduplication records older than the deduplication duration;
    /// returns how many.
    pub async fn prune(&self, now_ms: i64) -> Result<u64, SqlQuotaError> {
        let dedup_ms = i64::try_from(self.set.dedup_for.as_millis()).unwrap_or(i64::MAX);
        let q = "DELETE FROM mixer_quota_dedup WHERE at_ms <= $1";
        let cutoff = now_ms.saturating_sub(dedup_ms);
        Ok(match self.db.ready().await? {
            Pool::Sqlite(p) => sqlx::query(q)
                .bind(cutoff)
                .execute(p)
                .await?
                .rows_affected(),
            Pool::Postgres(p) => sqlx::query(q)
                .bind(cutoff)
                .execute(p)
                .await?
                .rows_affected(),
        })
    }
}

#[cfg(test)]
#[path = "sqlquota_tests.rs"]
mod tests;
