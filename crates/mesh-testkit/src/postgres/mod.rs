//! A throwaway PostgreSQL server for tests.
//!
//! [`PostgresServer::start`] runs `initdb` on a temporary directory and starts
//! `postgres` on 127.0.0.1 and a free port, with its unix socket inside that
//! directory and trust authentication for the `postgres` user. Dropping the
//! value stops the server (`pg_ctl stop -m immediate`) and removes the
//! directory. PostgreSQL refuses to run as root, so when the tests run as root
//! the directory is handed to the `postgres` system user and the server runs
//! as that user through `runuser`.

mod system;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::TestkitError;
use system::{find_bin_dir, free_port, io, is_root, run, shell_quote, user_exists};

/// The database every server starts with.
pub const DEFAULT_DATABASE: &str = "test";
/// The superuser every server starts with (trust authentication, no password).
pub const SUPERUSER: &str = "postgres";
/// The system user the server runs as when the tests run as root.
const SYSTEM_USER: &str = "postgres";
/// How long to wait for the server to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many free ports to try when another process takes the one chosen.
const PORT_ATTEMPTS: usize = 5;

/// A running PostgreSQL server on a temporary directory, stopped on drop.
#[derive(Debug)]
pub struct PostgresServer {
    bin_dir: PathBuf,
    run_as: Option<&'static str>,
    dir: TempDir,
    port: u16,
    started: bool,
}

impl PostgresServer {
    /// Initialises a cluster, starts it and creates the database [`DEFAULT_DATABASE`].
    pub fn start() -> Result<PostgresServer, TestkitError> {
        let bin_dir = find_bin_dir()?;
        let run_as = if is_root()? {
            if !user_exists(SYSTEM_USER)? {
                return Err(TestkitError::NoPostgresUser);
            }
            Some(SYSTEM_USER)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("mesh-testkit-pg-")
            .tempdir()
            .map_err(|source| io("cannot create a temporary directory", source))?;
        let mut server = PostgresServer {
            bin_dir,
            run_as,
            dir,
            port: 0,
            started: false,
        };
        if let Some(user) = run_as {
            let mut chown = Command::new("chown");
            chown.arg("-R").arg(user).arg(server.dir.path());
            run(&mut chown)?;
        }
        server.init_cluster()?;
        server.start_on_free_port()?;
        server.wait_until_ready()?;
        server.create_database(DEFAULT_DATABASE)?;
        Ok(server)
    }

    /// The URL of the default database: `postgres://postgres@127.0.0.1:<port>/test`.
    pub fn url(&self) -> String {
        self.database_url(DEFAULT_DATABASE)
    }

    /// The URL of `database` on this server.
    pub fn database_url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding the data directory, log and socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, TestkitError> {
        validate_database_name(name)?;
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.database_url(name))
    }

    /// Runs SQL through `psql` on `database` and returns its unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, TestkitError> {
        let mut psql = Command::new(self.tool("psql"));
        psql.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .arg("-p")
        .arg(self.port.to_string())
        .args(["-U", SUPERUSER, "-d", database, "-c", sql])
        .current_dir(self.dir.path());
        let output = run(&mut psql)?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// A PostgreSQL program: from the server's bin directory when it is there, else from PATH.
    fn tool(&self, name: &str) -> PathBuf {
        let path = self.bin_dir.join(name);
        if path.is_file() {
            path
        } else {
            PathBuf::from(name)
        }
    }

    /// A command for a server program, run as the `postgres` user when we are root.
    fn server_command(&self, program: &str) -> Command {
        let program = self.tool(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut runuser = Command::new("runuser");
                runuser.args(["-u", user, "--"]).arg(program);
                runuser
            }
            None => Command::new(program),
        };
        command.current_dir(self.dir.path());
        command
    }

    fn init_cluster(&self) -> Result<(), TestkitError> {
        let mut initdb = self.server_command("initdb");
        initdb.arg("-D").arg(self.data_dir()).args([
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run(&mut initdb).map(drop)
    }

    fn start_on_free_port(&mut self) -> Result<(), TestkitError> {
        let mut last_reason = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {}",
                shell_quote(self.dir.path().as_os_str())
            );
            let mut pg_ctl = self.server_command("pg_ctl");
            pg_ctl
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_path())
                .args(["-w", "-t"])
                .arg(READY_TIMEOUT.as_secs().to_string())
                .args(["-s", "-o", &options, "start"]);
            self.port = port;
            self.started = true;
            match run(&mut pg_ctl) {
                Ok(_) => return Ok(()),
                Err(error) if self.log().contains("Address already in use") => {
                    last_reason = format!("port {port} taken: {error}");
                    self.stop();
                    let _ = std::fs::remove_file(self.log_path());
                }
                Err(error) => {
                    return Err(TestkitError::ServerNotStarted {
                        reason: error.to_string(),
                        log: self.log(),
                    });
                }
            }
        }
        Err(TestkitError::ServerNotStarted {
            reason: format!("no free port after {PORT_ATTEMPTS} attempts; last: {last_reason}"),
            log: self.log(),
        })
    }

    fn wait_until_ready(&self) -> Result<(), TestkitError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut pg_isready = Command::new(self.tool("pg_isready"));
            pg_isready
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-t",
                    "1",
                    "-U",
                    SUPERUSER,
                    "-d",
                    "postgres",
                ])
                .arg("-p")
                .arg(self.port.to_string());
            let ready = pg_isready
                .status()
                .map_err(|source| io("cannot run pg_isready", source))?
                .success();
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::ServerNotStarted {
                    reason: format!(
                        "not accepting connections on 127.0.0.1:{} after {}s",
                        self.port,
                        READY_TIMEOUT.as_secs()
                    ),
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server at once; errors are ignored (the directory goes anyway).
    fn stop(&mut self) {
        if !self.started {
            return;
        }
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl.arg("-D").arg(self.data_dir()).args([
            "-s",
            "-w",
            "-t",
            "10",
            "-m",
            "immediate",
            "stop",
        ]);
        let _ = pg_ctl.output();
        self.started = false;
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn validate_database_name(name: &str) -> Result<(), TestkitError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(TestkitError::InvalidDatabaseName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn starts_accepts_connections_and_stops() {
        let server = PostgresServer::start().unwrap();
        assert_eq!(server.psql(DEFAULT_DATABASE, "select 1").unwrap(), "1");
        let url = server.url();
        assert_eq!(
            url,
            format!("postgres://postgres@127.0.0.1:{}/test", server.port())
        );

        let other = server.create_database("other_db").unwrap();
        assert!(other.ends_with("/other_db"), "{other}");
        assert_eq!(
            server
                .psql("other_db", "select current_database()")
                .unwrap(),
            "other_db"
        );

        let dir = server.dir().to_path_buf();
        let port = server.port();
        drop(server);
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "server still listening on {port}"
        );
    }

    #[test]
    fn refuses_database_names_that_need_quoting() {
        for name in ["", "1db", "Upper", "semi;colon", "a b", &"x".repeat(64)] {
            assert!(
                matches!(
                    validate_database_name(name),
                    Err(TestkitError::InvalidDatabaseName(_))
                ),
                "{name:?} accepted"
            );
        }
        validate_database_name("ledger_2").unwrap();
    }

    #[test]
    fn not_installed_error_names_the_install_script() {
        let message = TestkitError::PostgresNotInstalled.to_string();
        assert!(
            message.contains("scripts/install-test-deps.sh"),
            "{message}"
        );
    }
}
