//! Readiness: a component reports ready only once its sources are loaded.

use std::sync::Arc;

use tokio::sync::watch;

/// A shared ready flag. Starts not ready; set once sources have loaded.
#[derive(Debug, Clone)]
pub struct Readiness {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// A new flag, not ready.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// Marks the component ready (or not).
    pub fn set(&self, ready: bool) {
        self.tx.send_if_modified(|r| {
            let changed = *r != ready;
            *r = ready;
            changed
        });
    }

    /// Whether the component is ready now.
    pub fn is_ready(&self) -> bool {
        *self.tx.borrow()
    }

    /// A receiver following the flag.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Waits until ready.
    pub async fn wait(&self) {
        let mut rx = self.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }
}
