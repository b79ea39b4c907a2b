//! The sqlstore handler: log entries written in batches into SQLite or
//! PostgreSQL, kept for a retention period.
//!
//! Each database and table has one writer task fed through a bounded channel.
//! The writer takes what has arrived (up to a batch) and inserts it in one
//! transaction; when the database fails it keeps the batch and retries with
//! backoff, never dropping it. While it cannot write, the channel fills, the
//! workers feeding it wait, the report queue fills, and reporters are told to
//! retry (`ResourceExhausted`): backpressure instead of loss. Rows older than
//! the retention are deleted right after the writer's first write, then after
//! a write once a minute.

use std::{
    collections::HashMap,
    str::FromStr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus_client::metrics::counter::Counter;
use sqlx::{
    PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::sync::mpsc;

/// One log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// When it happened, Unix milliseconds.
    pub at_ms: i64,
    /// The logentry instance that made it (`name.namespace`).
    pub name: Arc<str>,
    /// Its severity (`INFO` unless the instance says otherwise).
    pub severity: String,
    /// Its variables, as a JSON object.
    pub variables: String,
}

/// Where a sqlstore handler writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// `sqlite://FILE` or `postgres://...`.
    pub url: String,
    /// The table.
    pub table: String,
}

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Records waiting for one writer, at most.
const CHANNEL: usize = 10_000;
/// Rows per insert statement (4 parameters each).
const ROWS_PER_STATEMENT: usize = 500;

/// A table log entries are written to.
#[derive(Debug)]
pub struct LogStore {
    target: Target,
    tx: mpsc::Sender<LogRecord>,
}

impl LogStore {
    /// Its database and table.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Hands `record` to the writer, waiting while it is behind.
    pub async fn send(&self, record: LogRecord) -> Result<(), LogRecord> {
        self.tx.send(record).await.map_err(|e| e.0)
    }
}

/// What the writers count.
#[derive(Debug, Clone, Default)]
pub struct StoreCounters {
    /// Rows written.
    pub written: Counter,
    /// Failed write attempts (retried).
    pub errors: Counter,
}

/// The log stores of every configuration version, by target: a store outlives
/// versions while a handler writes to it.
#[derive(Debug)]
pub struct LogStores {
    default_database: Option<String>,
    stores: HashMap<Target, Arc<LogStore>>,
    counters: StoreCounters,
    writers: Writers,
}

/// The writer tasks, to wait for at shutdown: each ends once every sender of
/// its store is gone and it has written what it held.
#[derive(Debug, Clone, Default)]
pub struct Writers(Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>);

impl Writers {
    /// Waits for every writer to finish, at most `timeout`; whether they did.
    pub async fn finish(&self, timeout: Duration) -> bool {
        let handles = std::mem::take(&mut *self.0.lock());
        tokio::time::timeout(timeout, futures_join(handles))
            .await
            .is_ok()
    }
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

/// A table name the handler may use.
pub fn table_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

impl LogStores {
    /// Stores writing to `default_database` unless a handler names another.
    pub fn new(default_database: Option<String>, counters: StoreCounters) -> Self {
        Self {
            default_database,
            stores: HashMap::new(),
            counters,
            writers: Writers::default(),
        }
    }

    /// The writer tasks started so far (and later).
    pub fn writers(&self) -> Writers {
        self.writers.clone()
    }

    /// The default database.
    pub fn default_database(&self) -> Option<&str> {
        self.default_database.as_deref()
    }

    /// The store for `target`, starting its writer (on the current Tokio
    /// runtime) if it is new.
    pub fn get(&mut self, target: Target, retention: Duration) -> Result<Arc<LogStore>, String> {
        if let Some(s) = self.stores.get(&target) {
            return Ok(s.clone());
        }
        if !table_name_ok(&target.table) {
            return Err(format!(
                "table {:?}: use lowercase letters, digits and _",
                target.table
            ));
        }
        let pool = lazy_pool(&target.url)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "sqlstore needs a Tokio runtime".to_string())?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        let handle = runtime.spawn(write(
            pool,
            target.table.clone(),
            retention,
            rx,
            self.counters.clone(),
        ));
        let mut writers = self.writers.0.lock();
        writers.retain(|h| !h.is_finished());
        writers.push(handle);
        let store = Arc::new(LogStore {
            target: target.clone(),
            tx,
        });
        self.stores.insert(target, store.clone());
        Ok(store)
    }

    /// Forgets the stores no handler uses any more (their writers finish what
    /// they hold, then stop).
    pub fn keep(&mut self, used: &[Arc<LogStore>]) {
        self.stores
            .retain(|_, s| used.iter().any(|u| Arc::ptr_eq(u, s)));
    }
}

fn lazy_pool(url: &str) -> Result<Pool, String> {
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url).map_err(|e| e.to_string())?;
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            let _ = std::fs::create_dir_all(dir);
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        Ok(Pool::Sqlite(
            SqlitePoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(options),
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| e.to_string())?
            .application_name("mixer-telemetry");
        Ok(Pool::Postgres(
            PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy_with(options),
        ))
    } else {
        Err("log database URL must start with sqlite:// or postgres://".into())
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn create(pool: &Pool, table: &str) -> Result<(), sqlx::Error> {
    let (id, json) = match pool {
        Pool::Sqlite(_) => ("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT"),
        Pool::Postgres(_) => ("BIGSERIAL PRIMARY KEY", "TEXT"),
    };
    let statements = [
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (id {id}, at_ms BIGINT NOT NULL, name TEXT NOT NULL, severity TEXT NOT NULL, variables {json} NOT NULL)"
        ),
        format!("CREATE INDEX IF NOT EXISTS {table}_at ON {table} (at_ms)"),
    ];
    match pool {
        Pool::Sqlite(p) => {
            for s in &statements {
                sqlx::query(s).execute(p).await?;
            }
        }
        Pool::Postgres(p) => {
            // Replicas may create the table at once: one at a time.
            let mut tx = p.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(7346106)")
                .execute(&mut *tx)
                .await?;
            for s in &statements {
                sqlx::query(s).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

fn insert_sql(table: &str, rows: usize) -> String {
    let mut sql = format!("INSERT INTO {table} (at_ms, name, severity, variables) VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        let b = r * 4;
        sql.push_str(&format!("(${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4));
    }
    sql
}

macro_rules! insert_all {
    ($pool:expr, $table:expr, $batch:expr) => {{
        let mut tx = $pool.begin().await?;
        for chunk in $batch.chunks(ROWS_PER_STATEMENT) {
            let sql = insert_sql($table, chunk.len());
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.at_ms)
                    .bind(&*r.name)
                    .bind(&r.severity)
                    .bind(&r.variables);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }};
}

async fn insert(pool: &Pool, table: &str, batch: &[LogRecord]) -> Result<(), sqlx::Error> {
    match pool {
        Pool::Sqlite(p) => insert_all!(p, table, batch),
        Pool::Postgres(p) => insert_all!(p, table, batch),
    }
    Ok(())
}

async fn expire(pool: &Pool, table: &str, retention: Duration) -> Result<u64, sqlx::Error> {
    let cutoff = now_ms().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    let sql = format!("DELETE FROM {table} WHERE at_ms < $1");
    Ok(match pool {
        Pool::Sqlite(p) => sqlx::query(&sql)
            .bind(cutoff)
            .execute(p)
            .await?
            .rows_affected(),
        Pool::Postgres(p) => sqlx::query(&sql)
            .bind(cutoff)
            .execute(p)
            .await?
            .rows_affected(),
    })
}

/// How often old rows are deleted (first right after a writer's first write).
const EXPIRY_EVERY: Duration = Duration::from_secs(60);

async fn write(
    pool: Pool,
    table: String,
    retention: Duration,
    mut rx: mpsc::Receiver<LogRecord>,
    counters: StoreCounters,
) {
    let mut created = false;
    let mut batch: Vec<LogRecord> = Vec::new();
    let mut backoff = Duration::from_millis(50);
    // None until the first write: a writer expires right after it, then every
    // minute, so a process restarted more often than that still expires.
    let mut last_expiry: Option<tokio::time::Instant> = None;
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(r) => batch.push(r),
                None => return,
            }
        }
        while batch.len() < ROWS_PER_STATEMENT * 4 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let result = async {
            if !created {
                create(&pool, &table).await?;
                created = true;
            }
            insert(&pool, &table, &batch).await
        }
        .await;
        match result {
            Ok(()) => {
                counters.written.inc_by(batch.len() as u64);
                batch.clear();
                backoff = Duration::from_millis(50);
            }
            Err(e) => {
                counters.errors.inc();
                tracing::warn!(table = %table, error = %e, rows = batch.len(), retry_in = ?backoff, "log entries not written yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        }
        if last_expiry.is_none_or(|t| t.elapsed() >= EXPIRY_EVERY) {
            last_expiry = Some(tokio::time::Instant::now());
            match expire(&pool, &table, retention).await {
                Ok(n) if n > 0 => tracing::debug!(table = %table, rows = n, "expired log entries"),
                Ok(_) => {}
                Err(e) => tracing::warn!(table = %table, error = %e, "expiring log entries"),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    fn mk_record(at_ms: i64, i: usize) -> LogRecord {
        LogRecord {
            at_ms,
            name: Arc::from("accesslog.istio-system"),
            severity: "INFO".into(),
            variables: format!("{{\"i\":{i}}}"),
        }
    }

    /// Waits until `counters` counted `n` rows written.
    async fn written(counters: &StoreCounters, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while counters.written.get() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} written",
                counters.written.get()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(counters.written.get(), n);
    }

    /// Rows of `table` whose `at_ms` is below `before_ms`.
    async fn rows(pool: &Pool, table: &str, before_ms: i64) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE at_ms < $1");
        match pool {
            Pool::Sqlite(p) => sqlx::query_scalar(&sql).bind(before_ms).fetch_one(p).await,
            Pool::Postgres(p) => sqlx::query_scalar(&sql).bind(before_ms).fetch_one(p).await,
        }
        .unwrap()
    }

    /// Batched writes, then retention with a 1 h limit on the database at
    /// `url`: what is older is deleted by `expire`, and by a writer's first
    /// write; what is newer stays.
    async fn written_in_batches_and_expired(url: &str) {
        let table = "entries";
        let target = Target {
            url: url.to_string(),
            table: table.into(),
        };
        let counters = StoreCounters::default();
        let mut stores = LogStores::new(None, counters.clone());
        let store = stores
            .get(target.clone(), Duration::from_secs(3600))
            .unwrap();
        let pool = lazy_pool(url).unwrap();
        // Recent entries, more than one insert statement holds; the writer's
        // first write expires none of them.
        for i in 0..1_234 {
            store.send(mk_record(now_ms(), i)).await.unwrap();
        }
        written(&counters, 1_234).await;
        assert_eq!(rows(&pool, table, i64::MAX).await, 1_234);
        // Two hours old and 59 minutes old: both kept until the next expiry
        // (a minute after the last).
        store
            .send(mk_record(now_ms() - 2 * HOUR_MS, 2_000))
            .await
            .unwrap();
        store
            .send(mk_record(now_ms() - HOUR_MS + 60_000, 2_001))
            .await
            .unwrap();
        written(&counters, 1_236).await;
        assert_eq!(rows(&pool, table, i64::MAX).await, 1_236);
        // One past the retention: deleted; the other stays.
        assert_eq!(
            expire(&pool, table, Duration::from_secs(3600))
                .await
                .unwrap(),
            1
        );
        assert_eq!(rows(&pool, table, i64::MAX).await, 1_235);
        assert_eq!(rows(&pool, table, now_ms() - HOUR_MS).await, 0);
        assert_eq!(rows(&pool, table, now_ms() - HOUR_MS + 120_000).await, 1);

        // Another old row, left by this writer; a new writer (a restarted
        // process) deletes it right after its first write.
        store
            .send(mk_record(now_ms() - 3 * HOUR_MS, 2_002))
            .await
            .unwrap();
        written(&counters, 1_237).await;
        assert_eq!(rows(&pool, table, now_ms() - HOUR_MS).await, 1);
        let restarted = StoreCounters::default();
        let mut again = LogStores::new(None, restarted.clone());
        let next = again
            .get(target.clone(), Duration::from_secs(3600))
            .unwrap();
        next.send(mk_record(now_ms(), 2_003)).await.unwrap();
        written(&restarted, 1).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rows(&pool, table, now_ms() - HOUR_MS).await > 0 {
            assert!(std::time::Instant::now() < deadline, "old row not expired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(rows(&pool, table, i64::MAX).await, 1_236);

        // The same target is one store.
        let same = stores.get(target, Duration::from_secs(3600)).unwrap();
        assert!(Arc::ptr_eq(&store, &same));
    }

    #[tokio::test]
    async fn sqlite_entries_are_written_in_batches_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("logs/l.db").display());
        written_in_batches_and_expired(&url).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_entries_are_written_in_batches_and_expire() {
        let server = mesh_testkit::postgres::PostgresServer::start().unwrap();
        written_in_batches_and_expired(&server.url()).await;
    }

    #[test]
    fn table_names_are_checked() {
        let mut stores = LogStores::new(None, StoreCounters::default());
        let target = |table: &str| Target {
            url: "sqlite://unused.db".into(),
            table: table.into(),
        };
        for bad in ["Bad-Name", "1st", "", "drop table x"] {
            assert!(stores.get(target(bad), Duration::ZERO).is_err(), "{bad}");
        }
        assert!(table_name_ok("mixer_log_entries"));
    }
}
