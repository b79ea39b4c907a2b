//! A directory of YAML/JSON files, watched recursively (writes, creations, renames
//! and deletions, of files and of whole subdirectories).
//!
//! Events are debounced: a batch is processed once no event arrived for the quiet
//! period, or once the maximum delay since the first event passed, whichever is
//! first. Each batch rescans the tree: files named by events are re-read, others
//! only when their size or modification time moved, and only files whose content
//! really changed are reported.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use futures::{FutureExt, future::BoxFuture};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ConfigSource, FileChange, SourceError, SourceEvent};

/// Debounce settings.
#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    /// Quiet period that ends a batch.
    pub quiet: Duration,
    /// Longest a batch may wait after its first event.
    pub max: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        Self {
            quiet: Duration::from_millis(20),
            max: Duration::from_millis(80),
        }
    }
}

/// A watched configuration directory.
#[derive(Debug, Clone)]
pub struct DirectorySource {
    root: PathBuf,
    debounce: Debounce,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    hash: String,
}

impl DirectorySource {
    /// A source for `root`.
    pub fn new(root: impl Into<PathBuf>, debounce: Debounce) -> Self {
        Self {
            root: root.into(),
            debounce,
        }
    }

    fn read_err(&self, source: std::io::Error) -> SourceError {
        SourceError::Read {
            path: self.root.display().to_string(),
            source,
        }
    }
}

/// Whether galley reads a file: `.yaml`, `.yml` or `.json`, not hidden.
pub fn is_config_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.') || n.ends_with('~'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && matches!(ext, "yaml" | "yml" | "json")
}

/// Every configuration file under `root` (or `root` itself when it is a file), sorted.
pub fn collect_config_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(root)?;
    if meta.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                // A file vanishing mid-walk is a normal race with the writer.
                if e.io_error()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
                {
                    continue;
                }
                return Err(e.into());
            }
        };
        let hidden_dir = entry.depth() > 0
            && entry.file_type().is_dir()
            && entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with('.'));
        if hidden_dir {
            continue;
        }
        if entry.file_type().is_file() && is_config_file(entry.path()) {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// The outcome of a scan: the new stamps, and the content of every file whose
/// content changed (or appeared).
struct Scan {
    stamps: BTreeMap<PathBuf, FileStamp>,
    changed: Vec<(PathBuf, String)>,
}

/// Scans the tree; re-reads files in `force` or whose size/mtime changed, and
/// reports those whose content hash moved.
fn scan(
    root: &Path,
    known: &BTreeMap<PathBuf, FileStamp>,
    force: &BTreeSet<PathBuf>,
) -> std::io::Result<Scan> {
    let mut stamps = BTreeMap::new();
    let mut changed = Vec::new();
    for path in collect_config_files(root)? {
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let (len, modified) = (meta.len(), meta.modified().ok());
        let old = known.get(&path);
        if let Some(old) = old
            && !force.contains(&path)
            && old.len == len
            && old.modified == modified
        {
            stamps.insert(path, old.clone());
            continue;
        }
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let hash = mesh_model::hash::content_hash([bytes.as_slice()]);
        if old.map(|o| &o.hash) != Some(&hash) {
            let content = match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            };
            changed.push((path.clone(), content));
        }
        stamps.insert(
            path,
            FileStamp {
                len: meta.len(),
                modified,
                hash,
            },
        );
    }
    Ok(Scan { stamps, changed })
}

/// The changes a scan found: changed contents, and files that disappeared.
fn changes(
    root: &Path,
    old: &BTreeMap<PathBuf, FileStamp>,
    scan: Scan,
) -> (BTreeMap<PathBuf, FileStamp>, Vec<FileChange>) {
    let mut out: Vec<FileChange> = scan
        .changed
        .into_iter()
        .map(|(path, content)| FileChange {
            path: relative(root, &path),
            content: Some(content),
        })
        .collect();
    for path in old.keys() {
        if !scan.stamps.contains_key(path) {
            out.push(FileChange {
                path: relative(root, path),
                content: None,
            });
        }
    }
    (scan.stamps, out)
}

/// Whether a watcher event can mean content changed (reads, including galley's own,
/// are not changes).
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::{
        EventKind,
        event::{AccessKind, AccessMode},
    };
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

impl ConfigSource for DirectorySource {
    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }

    fn run(
        self: Box<Self>,
        tx: mpsc::Sender<SourceEvent>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), SourceError>> {
        async move { self.watch(tx, shutdown).await }.boxed()
    }
}

impl DirectorySource {
    async fn watch(
        self,
        tx: mpsc::Sender<SourceEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        let root = std::fs::canonicalize(&self.root).map_err(|e| self.read_err(e))?;
        // Watch first, then scan, so nothing written in between is missed.
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(move |ev| {
            let _ = ev_tx.send(ev);
        })
        .map_err(|e| SourceError::Watch {
            path: root.display().to_string(),
            message: e.to_string(),
        })?;
        watcher
            .watch(&root, RecursiveMode::Recursive)
            .map_err(|e| SourceError::Watch {
                path: root.display().to_string(),
                message: e.to_string(),
            })?;

        let scan_root = root.clone();
        let first = tokio::task::spawn_blocking(move || {
            scan(&scan_root, &BTreeMap::new(), &BTreeSet::new())
        })
        .await
        .map_err(|e| self.read_err(std::io::Error::other(e)))?
        .map_err(|e| self.read_err(e))?;
        let (mut known, initial) = changes(&root, &BTreeMap::new(), first);
        tracing::info!(files = known.len(), root = %root.display(), "configuration directory loaded");
        if tx.send(SourceEvent::Changes(initial)).await.is_err()
            || tx.send(SourceEvent::Synced).await.is_err()
        {
            return Ok(());
        }

        loop {
            // Wait for the first change of a batch.
            let mut force = BTreeSet::new();
            loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    ev = ev_rx.recv() => match ev { Some(ev) => ev, None => return Ok(()) },
                };
                if note(&mut force, ev) {
                    break;
                }
            }
            let deadline = tokio::time::Instant::now() + self.debounce.max;
            loop {
                let quiet = tokio::time::sleep(self.debounce.quiet);
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = quiet => break,
                    ev = ev_rx.recv() => match ev {
                        Some(ev) => { note(&mut force, ev); }
                        None => return Ok(()),
                    },
                }
            }
            let (scan_root, old) = (root.clone(), known.clone());
            let result = tokio::task::spawn_blocking(move || scan(&scan_root, &old, &force)).await;
            let found = match result {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, root = %root.display(), "rescan failed; keeping the last good configuration");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rescan task failed");
                    continue;
                }
            };
            let (next, batch) = changes(&root, &known, found);
            known = next;
            if batch.is_empty() {
                continue;
            }
            tracing::debug!(changed = batch.len(), "configuration files changed");
            if tx.send(SourceEvent::Changes(batch)).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Records the paths of a change event; returns whether the event was a change.
fn note(force: &mut BTreeSet<PathBuf>, ev: notify::Result<notify::Event>) -> bool {
    match ev {
        Ok(ev) if is_change(&ev.kind) => {
            force.extend(ev.paths);
            true
        }
        Ok(_) => false,
        Err(e) => {
            tracing::warn!(error = %e, "file watcher error; rescanning");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn picks_config_files_only() {
        assert!(is_config_file(Path::new("a/b.yaml")));
        assert!(is_config_file(Path::new("b.yml")));
        assert!(is_config_file(Path::new("b.json")));
        assert!(!is_config_file(Path::new(".b.yaml")));
        assert!(!is_config_file(Path::new("b.yaml~")));
        assert!(!is_config_file(Path::new("b.txt")));
    }

    async fn next(rx: &mut mpsc::Receiver<SourceEvent>) -> SourceEvent {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn reports_writes_renames_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "a: 1\n").unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let src = Box::new(DirectorySource::new(dir.path(), Debounce::default()));
        let task = tokio::spawn(src.run(tx, stop.clone()));
        let first = rx.recv().await.unwrap();
        assert_eq!(
            first,
            SourceEvent::Changes(vec![FileChange {
                path: "a.yaml".into(),
                content: Some("a: 1\n".into())
            }])
        );
        assert_eq!(rx.recv().await.unwrap(), SourceEvent::Synced);

        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.yaml"), "b: 1\n").unwrap();
        assert_eq!(
            next(&mut rx).await,
            SourceEvent::Changes(vec![FileChange {
                path: "sub/b.yaml".into(),
                content: Some("b: 1\n".into())
            }])
        );

        std::fs::rename(dir.path().join("sub"), dir.path().join("moved")).unwrap();
        let SourceEvent::Changes(mut changes) = next(&mut rx).await else {
            panic!("expected changes")
        };
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(
            changes,
            vec![
                FileChange {
                    path: "moved/b.yaml".into(),
                    content: Some("b: 1\n".into())
                },
                FileChange {
                    path: "sub/b.yaml".into(),
                    content: None
                },
            ]
        );

        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        assert_eq!(
            next(&mut rx).await,
            SourceEvent::Changes(vec![FileChange {
                path: "a.yaml".into(),
                content: None
            }])
        );
        stop.cancel();
        task.await.unwrap().unwrap();
    }
}
