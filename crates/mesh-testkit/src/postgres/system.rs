//! What the server needs from the machine: PostgreSQL's programs, the user to
//! run them as, a free port, and commands run to completion.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::TestkitError;

/// Finds the directory holding `initdb`, `pg_ctl` and `postgres`: PATH first,
/// then the newest `/usr/lib/postgresql/<version>/bin`.
pub(super) fn find_bin_dir() -> Result<PathBuf, TestkitError> {
    let from_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|dir| std::fs::canonicalize(dir.join("initdb")).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
        .find(|dir| is_server_bin_dir(dir));
    if let Some(dir) = from_path {
        return Ok(dir);
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    let version = parse_version(&entry.file_name().to_string_lossy())?;
                    Some((version, entry.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|(_, dir)| dir)
        .find(|dir| is_server_bin_dir(dir))
        .ok_or(TestkitError::PostgresNotInstalled)
}

fn is_server_bin_dir(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|program| dir.join(program).is_file())
}

/// "15" -> [15], "9.6" -> [9, 6]; anything else is not a version directory.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

pub(super) fn is_root() -> Result<bool, TestkitError> {
    let output = run(Command::new("id").arg("-u"))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim() == "0")
}

pub(super) fn user_exists(user: &str) -> Result<bool, TestkitError> {
    let status = Command::new("id")
        .args(["-u", user])
        .output()
        .map_err(|source| io("cannot run id", source))?
        .status;
    Ok(status.success())
}

pub(super) fn free_port() -> Result<u16, TestkitError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .map_err(|source| io("cannot bind 127.0.0.1:0 to find a free port", source))?;
    let addr = listener
        .local_addr()
        .map_err(|source| io("cannot read the bound address", source))?;
    Ok(addr.port())
}

/// Quotes a path for the shell that `pg_ctl` hands the server options to.
pub(super) fn shell_quote(value: &OsStr) -> String {
    format!("'{}'", value.to_string_lossy().replace('\'', r"'\''"))
}

/// Runs a command to completion; a non-zero exit is an error carrying its output.
pub(super) fn run(command: &mut Command) -> Result<Output, TestkitError> {
    let line = command_line(command);
    let output = command
        .output()
        .map_err(|source| io(&format!("cannot run `{line}`"), source))?;
    if output.status.success() {
        return Ok(output);
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(TestkitError::CommandFailed {
        command: line,
        status: output.status.to_string(),
        output: text.trim().to_owned(),
    })
}

fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn io(what: &str, source: std::io::Error) -> TestkitError {
    TestkitError::Io {
        what: what.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        assert_eq!(parse_version("9.6"), Some(vec![9, 6]));
        assert_eq!(parse_version("16"), Some(vec![16]));
        assert_eq!(parse_version("common"), None);
        assert!(parse_version("16") > parse_version("9.6"));
    }
}
