//! The ledger's tables and the SQL run against them.
//!
//! One table, `citadel_certificates`, one row per issued certificate; a
//! revocation fills `revoked_at` and `revocation_reason` (an RFC 5280 reason
//! code). Timestamps are unix seconds in BIGINT columns. `id` numbers rows in
//! the order they were recorded, for "newest first" listings. The statements
//! use `$N` placeholders, which both SQLite and PostgreSQL accept.

use sqlx::{PgConnection, SqlitePool};

/// Key of the PostgreSQL advisory lock that serialises schema creation between replicas.
const SCHEMA_LOCK_KEY: i64 = 0x6369_7461_6465_6c01;

const SQLITE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS citadel_certificates (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        serial TEXT NOT NULL UNIQUE,
        identity TEXT NOT NULL,
        not_before BIGINT NOT NULL,
        not_after BIGINT NOT NULL,
        fingerprint TEXT NOT NULL,
        issuer_fingerprint TEXT NOT NULL,
        issued_at BIGINT NOT NULL,
        revoked_at BIGINT,
        revocation_reason BIGINT,
        CHECK ((revoked_at IS NULL) = (revocation_reason IS NULL))
    )",
    "CREATE INDEX IF NOT EXISTS citadel_certificates_identity
        ON citadel_certificates (identity, id)",
    "CREATE INDEX IF NOT EXISTS citadel_certificates_revoked
        ON citadel_certificates (serial) WHERE revoked_at IS NOT NULL",
];

const POSTGRES_SCHEMA: &[&str] = &[
    // Serials sort bytewise ("C"), whatever the database's default collation.
    "CREATE TABLE IF NOT EXISTS citadel_certificates (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        serial TEXT COLLATE \"C\" NOT NULL UNIQUE,
        identity TEXT NOT NULL,
        not_before BIGINT NOT NULL,
        not_after BIGINT NOT NULL,
        fingerprint TEXT NOT NULL,
        issuer_fingerprint TEXT NOT NULL,
        issued_at BIGINT NOT NULL,
        revoked_at BIGINT,
        revocation_reason BIGINT,
        CHECK ((revoked_at IS NULL) = (revocation_reason IS NULL))
    )",
    "CREATE INDEX IF NOT EXISTS citadel_certificates_identity
        ON citadel_certificates (identity, id)",
    "CREATE INDEX IF NOT EXISTS citadel_certificates_revoked
        ON citadel_certificates (serial) WHERE revoked_at IS NOT NULL",
];

/// Columns read into a `LedgerEntry`, in the order `entry_from_row` expects.
macro_rules! entry_columns {
    () => {
        "serial, identity, not_before, not_after, fingerprint, issuer_fingerprint, \
         issued_at, revoked_at, revocation_reason"
    };
}

/// Start of the group-commit INSERT; the writer appends the VALUES.
pub(super) const INSERT_PREFIX: &str = "INSERT INTO citadel_certificates \
    (serial, identity, not_before, not_after, fingerprint, issuer_fingerprint, issued_at) ";
/// End of the group-commit INSERT: duplicates are skipped, inserted serials returned.
pub(super) const INSERT_SUFFIX: &str = " ON CONFLICT (serial) DO NOTHING RETURNING serial";
/// Values bound per row by the group-commit INSERT.
pub(super) const BINDS_PER_ROW: usize = 7;

/// One entry by serial.
pub(super) const SELECT_ENTRY: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM citadel_certificates WHERE serial = $1"
);
/// The newest entries.
pub(super) const LIST_ALL: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM citadel_certificates ORDER BY id DESC LIMIT $1"
);
/// The newest entries of one identity.
pub(super) const LIST_IDENTITY: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM citadel_certificates WHERE identity = $1 ORDER BY id DESC LIMIT $2"
);
/// Revokes a certificate unless it already is.
pub(super) const REVOKE: &str = "UPDATE citadel_certificates \
    SET revoked_at = $1, revocation_reason = $2 WHERE serial = $3 AND revoked_at IS NULL";
/// A certificate's revocation columns.
pub(super) const SELECT_REVOCATION: &str =
    "SELECT revoked_at, revocation_reason FROM citadel_certificates WHERE serial = $1";
/// A certificate's revocation time.
pub(super) const SELECT_REVOKED_AT: &str =
    "SELECT revoked_at FROM citadel_certificates WHERE serial = $1";
/// Revoked certificates still valid at $1, by serial.
pub(super) const LIST_REVOCATIONS: &str = "SELECT serial, revoked_at, revocation_reason \
    FROM citadel_certificates WHERE revoked_at IS NOT NULL AND not_after > $1 ORDER BY serial";
/// Deletes entries that expired before $1.
pub(super) const PRUNE: &str = "DELETE FROM citadel_certificates WHERE not_after < $1";

/// Creates the SQLite tables and indexes if absent.
pub(super) async fn create_sqlite(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    for statement in SQLITE_SCHEMA {
        sqlx::query(statement).execute(pool).await?;
    }
    Ok(())
}

/// Creates the PostgreSQL tables and indexes if absent, one replica at a time.
///
/// Concurrent `CREATE TABLE IF NOT EXISTS` can fail on PostgreSQL's catalog
/// constraints, so the statements run in one transaction holding an advisory lock.
pub(super) async fn create_postgres(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    use sqlx::Connection as _;
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SCHEMA_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    for statement in POSTGRES_SCHEMA {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    tx.commit().await
}
