//! galley's checks without a server: what `meshctl validate` and `meshctl analyze` run.

use std::path::{Path, PathBuf};

use mesh_model::{AnalysisMessage, ConfigError, parse::ParseOptions};

use crate::{
    source::collect_config_files,
    store::{ConfigStore, FileChange},
};

/// The outcome of checking a set of files.
#[derive(Debug, Default)]
pub struct Report {
    /// Files read.
    pub files: usize,
    /// Resources that validated.
    pub resources: usize,
    /// Documents passed over (other API groups).
    pub skipped: usize,
    /// Validation errors (and duplicates).
    pub errors: Vec<ConfigError>,
    /// Analysis messages (empty unless analysis was asked for).
    pub messages: Vec<AnalysisMessage>,
}

/// A path could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct ReadError {
    /// The path.
    pub path: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Validates (and, with `analyze`, analyses) every configuration file under `paths`.
pub fn check_paths(
    paths: &[PathBuf],
    opts: &ParseOptions,
    analyze: bool,
) -> Result<Report, ReadError> {
    let mut store = ConfigStore::new(opts.clone());
    let mut files = 0;
    for root in paths {
        let found = collect_config_files(root).map_err(|source| ReadError {
            path: root.display().to_string(),
            source,
        })?;
        for path in found {
            let bytes = std::fs::read(&path).map_err(|source| ReadError {
                path: path.display().to_string(),
                source,
            })?;
            files += 1;
            store.apply(FileChange {
                path: display(&path),
                content: Some(String::from_utf8_lossy(&bytes).into_owned()),
            });
        }
    }
    let view = store.view();
    let messages = if analyze {
        let resources: Vec<&mesh_model::Resource> =
            view.resources.values().map(|r| r.as_ref()).collect();
        crate::analysis::analyze(&resources)
    } else {
        Vec::new()
    };
    Ok(Report {
        files,
        resources: view.resources.len(),
        skipped: view.skipped,
        errors: view.errors,
        messages,
    })
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
