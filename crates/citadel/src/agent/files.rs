//! File delivery: Istio's three PEM files in one directory, renewed in place.
//!
//! Each file is written whole to a temporary file in the same directory, synced,
//! then renamed over the old one, so a reader never sees a half-written file.
//! Order: `root-cert.pem`, then `key.pem`, then `cert-chain.pem`; a file whose
//! content did not change is not rewritten (the roots usually stay as they are).
//! The roots come first because during a root rotation the new bundle trusts both
//! the old and the new root, so the chain in place keeps verifying. Between the key
//! and the chain renames a reader may briefly find the new key beside the old
//! chain: [`mesh_tls::FileIdentity`] refuses such a pair, keeps the identity it
//! has, and picks up the whole new set at its next read.

use std::{
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use mesh_tls::{CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE};

use super::{AgentError, CertBundle};

/// Mode of `key.pem`.
pub const KEY_MODE: u32 = 0o600;
/// Mode of `cert-chain.pem` and `root-cert.pem`.
pub const CERT_MODE: u32 = 0o644;

/// A directory the agent keeps Istio's certificate files in.
#[derive(Debug, Clone)]
pub struct CertDir {
    dir: PathBuf,
}

impl CertDir {
    /// The directory `dir` (created on first write, mode 0755).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `bundle`'s three files (see the module docs for the order).
    pub fn write(&self, bundle: &CertBundle) -> Result<(), AgentError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| AgentError::Io {
            path: self.dir.clone(),
            source,
        })?;
        write_atomic(&self.dir, ROOT_CERT_FILE, &bundle.roots_pem, CERT_MODE)?;
        write_atomic(&self.dir, KEY_FILE, bundle.key_pem(), KEY_MODE)?;
        write_atomic(&self.dir, CERT_CHAIN_FILE, &bundle.chain_pem, CERT_MODE)?;
        Ok(())
    }
}

/// Replaces `dir/name` with `contents` (mode `mode`) through a temporary file in
/// the same directory and a rename; does nothing when the file already holds
/// exactly `contents` with that mode.
pub fn write_atomic(dir: &Path, name: &str, contents: &str, mode: u32) -> Result<(), AgentError> {
    let path = dir.join(name);
    if let Ok(meta) = std::fs::metadata(&path)
        && meta.permissions().mode() & 0o777 == mode
        && std::fs::read(&path).is_ok_and(|current| current == contents.as_bytes())
    {
        return Ok(());
    }
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let io = |source| AgentError::Io {
        path: path.clone(),
        source,
    };
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode given at creation.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        // Make the rename itself durable.
        std::fs::File::open(dir).and_then(|d| d.sync_all())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_replace_files_whole_with_their_mode_and_leave_no_temporaries() {
        let tmp = tempfile::tempdir().unwrap();
        write_atomic(tmp.path(), "key.pem", "one", KEY_MODE).unwrap();
        let path = tmp.path().join("key.pem");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
        assert_eq!(mode_of(&path), 0o600);
        // Replaced in place: a reader holding the old file keeps the old content.
        let mut old = std::fs::File::open(&path).unwrap();
        write_atomic(tmp.path(), "key.pem", "two", KEY_MODE).unwrap();
        let mut held = String::new();
        std::io::Read::read_to_string(&mut old, &mut held).unwrap();
        assert_eq!(held, "one");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(mode_of(&path), 0o600);
        // A file left with a wider mode is narrowed even when its content is equal.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(tmp.path(), "key.pem", "two", KEY_MODE).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        write_atomic(tmp.path(), "root-cert.pem", "r", CERT_MODE).unwrap();
        assert_eq!(mode_of(&tmp.path().join("root-cert.pem")), 0o644);
        let names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn an_unchanged_file_is_not_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        write_atomic(tmp.path(), "root-cert.pem", "same", CERT_MODE).unwrap();
        let path = tmp.path().join("root-cert.pem");
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
        write_atomic(tmp.path(), "root-cert.pem", "same", CERT_MODE).unwrap();
        let again = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
        assert_eq!(inode, again);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let err = write_atomic(&tmp.path().join("nope"), "key.pem", "x", KEY_MODE).unwrap_err();
        assert!(err.to_string().contains("key.pem"), "{err}");
    }
}
