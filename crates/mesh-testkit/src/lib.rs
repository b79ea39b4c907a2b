//! mesh-testkit: shared fixtures for Dromon's tests, never linked into a mesh binary.
//!
//! Its [`postgres::PostgresServer`] runs a real PostgreSQL server from the
//! machine's PostgreSQL binaries on a temporary directory, listening on
//! 127.0.0.1 and a free TCP port, for tests of the components that keep state
//! in PostgreSQL (citadel's certificate ledger). Missing binaries are an error
//! that names `scripts/install-test-deps.sh`: tests fail, they never skip.

pub mod postgres;

/// Why a test fixture could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// The PostgreSQL server binaries are not installed.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in PATH nor in \
         /usr/lib/postgresql/*/bin; run scripts/install-test-deps.sh to install them"
    )]
    PostgresNotInstalled,
    /// Running as root, but there is no `postgres` system user to run the server as.
    #[error(
        "running as root and PostgreSQL refuses to run as root, but there is no `postgres` \
         system user to run it as; install Debian's postgresql package \
         (scripts/install-test-deps.sh) or run the tests as a non-root user"
    )]
    NoPostgresUser,
    /// A file-system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A helper command exited unsuccessfully.
    #[error("`{command}` failed ({status}): {output}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard output and error.
        output: String,
    },
    /// The server did not start, or did not accept connections in time.
    #[error("PostgreSQL server did not start: {reason}\n--- server log ---\n{log}")]
    ServerNotStarted {
        /// What went wrong.
        reason: String,
        /// The server's log.
        log: String,
    },
    /// A database name that is not a plain lowercase identifier.
    #[error(
        "invalid database name {0:?}: use 1 to 63 characters of [a-z0-9_], not starting with a digit"
    )]
    InvalidDatabaseName(String),
}
