//! The receiving end of MCP: typed resources kept from galley's updates.

use std::sync::Arc;

use imbl::OrdMap;
use mesh_model::{Kind, Resource, ResourceKey};
use mesh_xds::client::{DeltaHandler, DeltaUpdate};
use tokio::sync::watch;

use crate::decode;

/// One version of the configuration received: cheap to clone and to keep.
#[derive(Debug, Clone, Default)]
pub struct McpView {
    /// Every resource, by identity.
    pub resources: OrdMap<ResourceKey, Arc<Resource>>,
    /// Increases with every accepted update.
    pub generation: u64,
}

/// Keeps the resources galley sends; every accepted update publishes a new view.
#[derive(Debug, Clone)]
pub struct McpStore {
    view: McpView,
    tx: watch::Sender<Arc<McpView>>,
}

impl Default for McpStore {
    fn default() -> Self {
        Self::new()
    }
}

impl McpStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            view: McpView::default(),
            tx: watch::channel(Arc::new(McpView::default())).0,
        }
    }

    /// Follows every new view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<McpView>> {
        self.tx.subscribe()
    }

    /// The current view.
    pub fn view(&self) -> Arc<McpView> {
        self.tx.borrow().clone()
    }
}

impl DeltaHandler for McpStore {
    fn apply(&mut self, update: DeltaUpdate) -> Result<(), String> {
        let kind = Kind::from_collection(&update.type_url)
            .ok_or_else(|| format!("unknown collection {:?}", update.type_url))?;
        // Decode everything first: a bad resource refuses the whole update, and the
        // view stays as it was.
        let mut decoded = Vec::with_capacity(update.upserts.len());
        for (name, _version, body) in &update.upserts {
            let resource = decode(body).map_err(|e| format!("{name}: {e}"))?;
            if resource.kind() != kind {
                return Err(format!(
                    "{name}: a {} in the {} collection",
                    resource.kind(),
                    kind
                ));
            }
            decoded.push(resource);
        }
        let mut next = self.view.resources.clone();
        for resource in decoded {
            next.insert(resource.key(), Arc::new(resource));
        }
        for name in &update.removals {
            let (namespace, name) = name.split_once('/').unwrap_or(("", name.as_str()));
            next.remove(&ResourceKey {
                kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        }
        self.view = McpView {
            resources: next,
            generation: self.view.generation + 1,
        };
        self.tx.send_replace(Arc::new(self.view.clone()));
        Ok(())
    }
}
