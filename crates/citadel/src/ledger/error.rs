//! The ledger's errors, and the redaction of database URLs that go into them.

use std::path::PathBuf;
use std::sync::Arc;

/// Why a ledger operation failed. Database URLs in it never carry a password.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The URL names no supported database.
    #[error(
        "unsupported ledger URL {url:?}: expected sqlite://PATH, sqlite::memory:, \
         postgres://... or postgresql://..."
    )]
    UnsupportedUrl {
        /// The URL, password redacted.
        url: String,
    },
    /// The URL names a supported database but cannot be parsed.
    #[error("invalid ledger URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The directory that should hold the SQLite file does not exist.
    #[error(
        "cannot create the SQLite ledger {}: directory {} does not exist",
        path.display(),
        directory.display()
    )]
    MissingDirectory {
        /// The database file.
        path: PathBuf,
        /// Its missing parent directory.
        directory: PathBuf,
    },
    /// The database could not be reached or opened.
    #[error("cannot connect to the ledger database {url:?}: {reason}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver's message, password redacted.
        reason: String,
    },
    /// The ledger's tables could not be created.
    #[error("cannot create the ledger schema in {url:?}: {source}")]
    Schema {
        /// The URL, password redacted.
        url: String,
        /// The database error.
        source: sqlx::Error,
    },
    /// The certificate's fields are malformed; nothing was written.
    #[error("refusing to record certificate {serial:?}: {reason}")]
    InvalidCertificate {
        /// The serial as given.
        serial: String,
        /// What is wrong.
        reason: String,
    },
    /// A certificate with this serial is already recorded; it was kept unchanged.
    #[error("a certificate with serial {serial} is already recorded")]
    DuplicateSerial {
        /// The serial.
        serial: String,
    },
    /// No certificate with this serial is recorded.
    #[error("no certificate with serial {serial} is recorded")]
    UnknownSerial {
        /// The serial.
        serial: String,
    },
    /// The group commit holding this certificate failed; nothing of it was written.
    #[error("recording certificates failed: {0}")]
    Write(Arc<sqlx::Error>),
    /// A read, revocation or prune failed.
    #[error("ledger query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A stored row holds a value this version does not understand.
    #[error("ledger row for serial {serial} is corrupt: {detail}")]
    Corrupt {
        /// The row's serial.
        serial: String,
        /// What is wrong.
        detail: String,
    },
    /// The writer task has stopped, so nothing more can be recorded.
    #[error("the ledger's writer task has stopped; certificates cannot be recorded")]
    WriterGone,
}

/// The URL with any password (in the user info or a `password=` parameter) replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return redact_params(url);
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let Some(at) = rest.rfind('@') else {
        return format!("{scheme}{}", redact_params(rest));
    };
    let (userinfo, host) = rest.split_at(at);
    let user = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => userinfo.to_owned(),
    };
    format!("{scheme}{user}{}", redact_params(host))
}

/// Removes every password the URL carries from `text`, as written and percent-decoded.
pub(crate) fn scrub(text: &str, url: &str) -> String {
    let mut text = text.to_owned();
    let mut secrets = passwords(url);
    // Longest first, so a secret containing another is removed whole.
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    for secret in secrets {
        if !secret.is_empty() {
            text = text.replace(&secret, "***");
        }
    }
    text
}

/// The passwords in a URL, as written and percent-decoded.
fn passwords(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some((_, rest)) = url.split_once("://")
        && let Some((userinfo, _)) = rest.rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
    {
        found.push(password.to_owned());
    }
    if let Some((_, query)) = url.split_once('?') {
        for param in query.split('&') {
            if let Some((key, value)) = param.split_once('=')
                && is_password_key(key)
            {
                found.push(value.to_owned());
            }
        }
    }
    let decoded: Vec<String> = found.iter().map(|secret| percent_decode(secret)).collect();
    found.extend(decoded);
    found
}

fn redact_params(text: &str) -> String {
    let Some((head, query)) = text.split_once('?') else {
        return text.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, _)) if is_password_key(key) => format!("{key}=***"),
            _ => param.to_owned(),
        })
        .collect();
    format!("{head}?{}", params.join("&"))
}

fn is_password_key(key: &str) -> bool {
    key.to_ascii_lowercase().ends_with("password")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        let cases = [
            (
                "postgres://citadel:s3cret@db:5432/ledger",
                "postgres://citadel:***@db:5432/ledger",
            ),
            (
                "postgresql://citadel:p%40ss@db/ledger?sslmode=require",
                "postgresql://citadel:***@db/ledger?sslmode=require",
            ),
            (
                "postgres://db/ledger?user=citadel&password=s3cret",
                "postgres://db/ledger?user=citadel&password=***",
            ),
            (
                "postgres://citadel:p@ss@db/ledger",
                "postgres://citadel:***@db/ledger",
            ),
            (
                "postgres://citadel@db/ledger",
                "postgres://citadel@db/ledger",
            ),
            (
                "sqlite:///var/lib/citadel/ledger.db",
                "sqlite:///var/lib/citadel/ledger.db",
            ),
            ("sqlite::memory:", "sqlite::memory:"),
        ];
        for (url, redacted) in cases {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    #[test]
    fn scrub_removes_written_and_decoded_passwords() {
        let url = "postgres://citadel:p%40ss@db/ledger?password=other%21";
        let text = "failed for p%40ss, p@ss, other%21 and other!";
        assert_eq!(
            scrub(text, url),
            "failed for ***, ***, *** and ***",
            "{}",
            scrub(text, url)
        );
    }
}
