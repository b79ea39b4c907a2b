//! What every connected client was sent, ACKed and NACKed: the data behind
//! `/debug/syncz` and `meshctl proxy-status`.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;
use serde::Serialize;

use crate::TypeMap;

/// A rejected version and the client's reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nack {
    /// The version the client rejected.
    pub version: String,
    /// The client's error message.
    pub error: String,
}

/// Per type URL: what the client asked for, was sent and confirmed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TypeStatus {
    /// Subscribed to every resource of the type.
    pub wildcard: bool,
    /// How many names the client subscribed to explicitly (the names themselves
    /// are not copied: status is refreshed on every message).
    pub names: usize,
    /// Version of the last response sent.
    pub sent_version: Option<String>,
    /// Nonce of the last response sent.
    pub sent_nonce: Option<String>,
    /// Last version the client ACKed.
    pub acked_version: Option<String>,
    /// The last NACK, until the next ACK.
    pub nack: Option<Nack>,
}

/// A protocol state machine's per-type state, as reported.
pub(crate) trait ReportsStatus {
    /// Writes this type's status into `out`, reusing its strings.
    fn report(&self, out: &mut TypeStatus);
}

/// Implements [`ReportsStatus`] for a per-type state with the usual field names
/// (`wildcard`, `names`, `sent_version`, `nonce`, `acked_version`, `nack`).
macro_rules! reports_status {
    ($state:ty) => {
        impl $crate::status::ReportsStatus for $state {
            fn report(&self, out: &mut $crate::status::TypeStatus) {
                out.wildcard = self.wildcard;
                out.names = self.names.len();
                out.sent_version.clone_from(&self.sent_version);
                out.sent_nonce.clone_from(&self.nonce);
                out.acked_version.clone_from(&self.acked_version);
                out.nack.clone_from(&self.nack);
            }
        }
    };
}
pub(crate) use reports_status;

/// The status of every type of a state machine.
pub(crate) fn status_of<T: ReportsStatus>(types: &TypeMap<T>) -> TypeMap<TypeStatus> {
    let mut out = TypeMap::new();
    write_status(types, &mut out);
    out
}

/// Brings `out` in line with a state machine's types, reusing its entries and
/// strings: refreshed on every message, it allocates only when something grew.
pub(crate) fn write_status<T: ReportsStatus>(types: &TypeMap<T>, out: &mut TypeMap<TypeStatus>) {
    out.retain(|t| types.get(t).is_some());
    for (t, state) in types.iter() {
        state.report(out.get_or_insert_with(t, TypeStatus::default));
    }
}

impl TypeStatus {
    /// SYNCED, STALE (sent but not yet ACKed), NACKED or NOT SENT.
    pub fn state(&self) -> &'static str {
        if self.nack.is_some() {
            "NACKED"
        } else if self.sent_version.is_none() {
            "NOT SENT"
        } else if self.sent_version == self.acked_version {
            "SYNCED"
        } else {
            "STALE"
        }
    }
}

/// One connected stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    /// Server-local stream id.
    pub id: u64,
    /// The client's node id.
    pub node_id: String,
    /// The client's node cluster.
    pub node_cluster: String,
    /// The snapshot group it is served from.
    pub group: String,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    /// The peer address, when known.
    pub peer: Option<String>,
    /// Seconds since the epoch when the stream opened.
    pub connected_at: u64,
    /// Status by type URL.
    pub types: TypeMap<TypeStatus>,
}

/// Registry of connected streams.
#[derive(Debug, Default)]
pub struct SyncStatus {
    next_id: AtomicU64,
    streams: Mutex<BTreeMap<u64, StreamStatus>>,
}

impl SyncStatus {
    /// A new, empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a stream; the returned guard removes it when dropped.
    pub fn register(self: &Arc<Self>, protocol: &'static str, peer: Option<String>) -> StreamGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let connected_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.streams.lock().insert(
            id,
            StreamStatus {
                id,
                node_id: String::new(),
                node_cluster: String::new(),
                group: String::new(),
                protocol,
                peer,
                connected_at,
                types: TypeMap::new(),
            },
        );
        StreamGuard {
            id,
            registry: self.clone(),
        }
    }

    /// Every connected stream, by id.
    pub fn streams(&self) -> Vec<StreamStatus> {
        self.streams.lock().values().cloned().collect()
    }

    /// Number of connected streams.
    pub fn len(&self) -> usize {
        self.streams.lock().len()
    }

    /// True when no stream is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps a stream's entry in the registry while it lives.
#[derive(Debug)]
pub struct StreamGuard {
    id: u64,
    registry: Arc<SyncStatus>,
}

impl StreamGuard {
    /// The stream's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Updates the stream's entry.
    pub fn update(&self, f: impl FnOnce(&mut StreamStatus)) {
        if let Some(s) = self.registry.streams.lock().get_mut(&self.id) {
            f(s);
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.registry.streams.lock().remove(&self.id);
    }
}
