//! The sample application `meshctl up` serves when given no `--config`.

use std::path::{Path, PathBuf};

/// The sample's files (relative path, content), embedded at build time.
pub const SAMPLE_FILES: &[(&str, &str)] = &[
    (
        "bookinfo/services.yaml",
        include_str!("../../../examples/bookinfo/services.yaml"),
    ),
    (
        "bookinfo/traffic.yaml",
        include_str!("../../../examples/bookinfo/traffic.yaml"),
    ),
    (
        "bookinfo/security.yaml",
        include_str!("../../../examples/bookinfo/security.yaml"),
    ),
    (
        "bookinfo/policy.yaml",
        include_str!("../../../examples/bookinfo/policy.yaml"),
    ),
];

/// Writes the sample into `<data>/config` unless that directory already exists (so
/// edits made there survive restarts), and returns the directory.
pub fn materialize(data: &Path) -> std::io::Result<PathBuf> {
    let dir = data.join("config");
    if dir.exists() {
        return Ok(dir);
    }
    let staging = data.join(".config.tmp");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    for (rel, content) in SAMPLE_FILES {
        let path = staging.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, content)?;
    }
    std::fs::rename(&staging, &dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn materializes_once_and_keeps_edits() {
        let data = tempfile::tempdir().unwrap();
        let dir = materialize(data.path()).unwrap();
        let file = dir.join("bookinfo/services.yaml");
        assert!(
            std::fs::read_to_string(&file)
                .unwrap()
                .contains("ServiceEntry")
        );
        std::fs::write(&file, "# edited\n").unwrap();
        materialize(data.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "# edited\n");
    }
}
