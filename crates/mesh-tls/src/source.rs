//! Where a component's current TLS identity comes from, and how it learns of a new
//! one: a watched certificate directory ([`FileIdentity`]) or code
//! ([`SharedIdentity`], for citadel, which issues its own serving certificate).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::sync::watch;

use crate::{
    TlsError,
    material::{PemFiles, TlsIdentity, read_dir_files},
};

/// The current identity, shared; `None` until one is known.
pub type CurrentIdentity = Option<Arc<TlsIdentity>>;

/// Gives the current TLS identity and announces new ones.
///
/// Servers and clients read [`IdentitySource::current`] for every new connection,
/// so a renewed certificate is used without a restart.
pub trait IdentitySource: Send + Sync {
    /// The identity to use now.
    fn current(&self) -> CurrentIdentity;
    /// A receiver that sees every new identity.
    fn subscribe(&self) -> watch::Receiver<CurrentIdentity>;
}

/// An identity set from code, e.g. a certificate a CA issues itself and rotates.
#[derive(Debug)]
pub struct SharedIdentity {
    tx: watch::Sender<CurrentIdentity>,
}

impl SharedIdentity {
    /// A source holding `initial` (or nothing yet).
    pub fn new(initial: Option<TlsIdentity>) -> Self {
        Self {
            tx: watch::channel(initial.map(Arc::new)).0,
        }
    }

    /// Replaces the identity; new connections use it.
    pub fn set(&self, identity: TlsIdentity) {
        self.tx.send_replace(Some(Arc::new(identity)));
    }
}

impl IdentitySource for SharedIdentity {
    fn current(&self) -> CurrentIdentity {
        self.tx.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<CurrentIdentity> {
        self.tx.subscribe()
    }
}

/// How often [`FileIdentity`] reads its directory by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// An identity read from a directory holding `cert-chain.pem`, `key.pem` and
/// `root-cert.pem`, renewed in place by an agent (temp file, then rename).
///
/// The files are re-read every poll interval and compared with what was last
/// read; content (not modification times) decides, so a rename within the same
/// second and Kubernetes' symlink swaps of mounted secrets are both seen. A new
/// set replaces the identity only if it is whole and consistent (PEM parses, the
/// key matches the leaf, the chain verifies against the roots); otherwise the last
/// good identity stays and the error is logged once.
#[derive(Debug)]
pub struct FileIdentity {
    dir: PathBuf,
    tx: Arc<watch::Sender<CurrentIdentity>>,
}

impl FileIdentity {
    /// Loads the identity in `dir` (it must be valid now) and watches it, polling
    /// every second. Needs a Tokio runtime; the watch stops when this is dropped.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, TlsError> {
        Self::open_with_interval(dir, DEFAULT_POLL_INTERVAL)
    }

    /// As [`FileIdentity::open`], polling every `interval`.
    pub fn open_with_interval(dir: impl AsRef<Path>, interval: Duration) -> Result<Self, TlsError> {
        let dir = dir.as_ref().to_path_buf();
        let handle = tokio::runtime::Handle::try_current().map_err(|_| TlsError::NoRuntime)?;
        let files = read_dir_files(&dir)?;
        let identity = files.identity()?;
        tracing::info!(dir = %dir.display(), identity = ?identity, "TLS identity loaded");
        let tx = Arc::new(watch::channel(Some(Arc::new(identity))).0);
        let poller = Poller {
            dir: dir.clone(),
            tx: Arc::downgrade(&tx),
            last_read: Some(files),
        };
        handle.spawn(poller.run(interval));
        Ok(Self { dir, tx })
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl IdentitySource for FileIdentity {
    fn current(&self) -> CurrentIdentity {
        self.tx.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<CurrentIdentity> {
        self.tx.subscribe()
    }
}

struct Poller {
    dir: PathBuf,
    tx: Weak<watch::Sender<CurrentIdentity>>,
    /// The contents last read, valid or not: unchanged files are not parsed again
    /// and a bad set is reported once.
    last_read: Option<PemFiles>,
}

impl Poller {
    async fn run(mut self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let Some(tx) = self.tx.upgrade() else { return };
            self.poll(&tx).await;
        }
    }

    async fn poll(&mut self, tx: &watch::Sender<CurrentIdentity>) {
        let dir = self.dir.clone();
        let read = tokio::task::spawn_blocking(move || read_dir_files(&dir)).await;
        let files = match read {
            Ok(Ok(files)) => files,
            Ok(Err(e)) => {
                // A file briefly missing between an agent's unlink and rename is
                // normal; report it only if it persists into a changed state.
                tracing::debug!(dir = %self.dir.display(), error = %e, "cannot read TLS files; keeping the current identity");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS file read task failed");
                return;
            }
        };
        if self.last_read.as_ref() == Some(&files) {
            return;
        }
        match files.identity() {
            Ok(identity) => {
                tracing::info!(dir = %self.dir.display(), identity = ?identity, "TLS identity reloaded");
                tx.send_replace(Some(Arc::new(identity)));
            }
            Err(e) => {
                tracing::warn!(
                    dir = %self.dir.display(),
                    error = %e,
                    "new TLS files are not usable (yet); keeping the last good identity"
                );
            }
        }
        self.last_read = Some(files);
    }
}
