//! Where galley's configuration comes from.
//!
//! A source sends [`SourceEvent`]s: batches of [`FileChange`]s and, once its initial
//! load is complete, one [`SourceEvent::Synced`]. Galley serves nothing before that.
//! Two sources: a watched directory ([`dir`]) and the Istio custom resources of a
//! Kubernetes API server ([`kube`]), which feeds each object as one JSON "file"
//! named after it.

pub mod dir;
pub mod kube;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::store::FileChange;
pub use dir::{DirectorySource, collect_config_files};
pub use kube::{KubeObjects, KubeSource, KubeStatus};

/// What a source reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// Files changed (added, modified or deleted).
    Changes(Vec<FileChange>),
    /// The Kubernetes generation (`metadata.generation`) of the objects behind the
    /// files of the next [`SourceEvent::Changes`], sent just before it; `None`
    /// forgets a file's. Only the Kubernetes source sends it.
    Generations(Vec<(String, Option<i64>)>),
    /// The initial load is complete.
    Synced,
}

/// A source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The configuration root cannot be read.
    #[error("cannot read configuration directory {path}: {source}")]
    Read {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file watcher could not be set up.
    #[error("cannot watch {path}: {message}")]
    Watch {
        /// The directory.
        path: String,
        /// Why.
        message: String,
    },
    /// The Kubernetes API server cannot be used (bad client configuration, or a
    /// request forbidden by RBAC).
    #[error(transparent)]
    Kube(Box<mesh_kube::KubeError>),
}

/// A configuration source.
pub trait ConfigSource: Send + 'static {
    /// A short description for logs, e.g. `directory /etc/mesh`.
    fn describe(&self) -> String;

    /// Runs until `shutdown`, sending events to `tx`.
    fn run(
        self: Box<Self>,
        tx: mpsc::Sender<SourceEvent>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), SourceError>>;
}
