//! A delta ADS client that keeps a local copy of a server's resources: how pilot and
//! the mixers follow galley.
//!
//! - Subscribes (wildcard) to the given type URLs and hands every response to a
//!   [`DeltaHandler`]; ACKs what the handler accepts and NACKs what it refuses
//!   (keeping the last good state).
//! - Reports synced once every type has been received whole and accepted (the
//!   server splits large updates; only the last part carries `system_version_info`).
//! - On any stream failure, reconnects with jittered exponential backoff and resumes
//!   with `initial_resource_versions`, so only what changed meanwhile is resent.

use std::{collections::HashMap, time::Duration};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::{
    Any,
    discovery::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
};
use mesh_api::envoy::{envoy::config::core::v3::Node, google::rpc::Status as RpcStatus};

/// One response's changes for one type.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaUpdate {
    /// The type URL.
    pub type_url: String,
    /// Added or changed resources: (name, version, body).
    pub upserts: Vec<(String, String, Any)>,
    /// Names removed.
    pub removals: Vec<String>,
}

/// Receives the updates of a [`DeltaClient`].
pub trait DeltaHandler: Send + 'static {
    /// Applies an update; an `Err` NACKs it with that message and must leave the
    /// handler's state as it was.
    fn apply(&mut self, update: DeltaUpdate) -> Result<(), String>;
}

/// Settings of a [`DeltaClient`].
#[derive(Debug, Clone)]
pub struct DeltaClientConfig {
    /// Server endpoint, e.g. `http://127.0.0.1:9901`.
    pub endpoint: String,
    /// Node id sent to the server.
    pub node_id: String,
    /// Type URLs to follow (wildcard subscriptions).
    pub type_urls: Vec<String>,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

/// A delta ADS client following a server.
pub struct DeltaClient<H> {
    config: DeltaClientConfig,
    /// A channel to use instead of dialing `config.endpoint` in plaintext (an mTLS
    /// channel, say).
    channel: Option<tonic::transport::Channel>,
    handler: H,
    /// What the handler holds: type -> name -> version.
    versions: HashMap<String, HashMap<String, String>>,
    synced: watch::Sender<bool>,
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream failed: {0}")]
    Status(#[from] tonic::Status),
    #[error("server closed the stream")]
    Closed,
}

impl<H: DeltaHandler> DeltaClient<H> {
    /// A client feeding `handler`.
    pub fn new(config: DeltaClientConfig, handler: H) -> Self {
        Self {
            config,
            channel: None,
            handler,
            versions: HashMap::new(),
            synced: watch::channel(false).0,
        }
    }

    /// Talks to the server over `channel` (for instance an mTLS channel) rather
    /// than a plaintext connection to the configured endpoint, which then only
    /// names the server in logs.
    pub fn with_channel(mut self, channel: tonic::transport::Channel) -> Self {
        self.channel = Some(channel);
        self
    }

    /// Becomes true once every type has had a first response (and stays true across
    /// reconnects: the handler keeps serving its last good state).
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// Runs until `shutdown`, reconnecting as needed; returns the handler.
    pub async fn run(mut self, shutdown: CancellationToken) -> H {
        let mut delay = self.config.backoff_min;
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => return self.handler,
                r = self.stream_once() => r,
            };
            let reason = match result {
                Ok(progressed) => {
                    if progressed {
                        delay = self.config.backoff_min;
                    }
                    StreamEnd::Closed.to_string()
                }
                Err((progressed, e)) => {
                    if progressed {
                        delay = self.config.backoff_min;
                    }
                    e.to_string()
                }
            };
            // Full jitter: anywhere in [delay/2, delay], so many clients restarting
            // together spread out.
            let wait = delay.mul_f64(0.5 + fastrand::f64() * 0.5);
            tracing::warn!(endpoint = %self.config.endpoint, error = %reason, retry_in = ?wait, "xDS stream to server lost");
            tokio::select! {
                _ = shutdown.cancelled() => return self.handler,
                _ = tokio::time::sleep(wait) => {}
            }
            delay = (delay * 2).min(self.config.backoff_max);
        }
    }

    /// One stream's life. Returns whether any response was received, with the reason
    /// it ended.
    async fn stream_once(&mut self) -> Result<bool, (bool, StreamEnd)> {
        let client = match &self.channel {
            Some(channel) => AggregatedDiscoveryServiceClient::new(channel.clone()),
            None => AggregatedDiscoveryServiceClient::connect(self.config.endpoint.clone())
                .await
                .map_err(|e| (false, e.into()))?,
        };
        let mut client = client.max_decoding_message_size(64 * 1024 * 1024);
        let (tx, rx) = mpsc::channel(16);
        let node = Node {
            id: self.config.node_id.clone(),
            ..Node::default()
        };
        for type_url in &self.config.type_urls {
            let initial = self.versions.get(type_url).cloned().unwrap_or_default();
            let req = DeltaDiscoveryRequest {
                node: Some(node.clone()),
                type_url: type_url.clone(),
                initial_resource_versions: initial,
                ..DeltaDiscoveryRequest::default()
            };
            if tx.send(req).await.is_err() {
                return Err((false, StreamEnd::Closed));
            }
        }
        let mut stream = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .map_err(|e| (false, e.into()))?
            .into_inner();
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut progressed = false;
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return Err((progressed, StreamEnd::Closed)),
                Err(status) => return Err((progressed, status.into())),
            };
            progressed = true;
            let ack = self.handle(resp, &mut seen);
            if tx.send(ack).await.is_err() {
                return Err((progressed, StreamEnd::Closed));
            }
        }
    }

    fn handle(
        &mut self,
        resp: DeltaDiscoveryResponse,
        seen: &mut std::collections::HashSet<String>,
    ) -> DeltaDiscoveryRequest {
        let update = DeltaUpdate {
            type_url: resp.type_url.clone(),
            upserts: resp
                .resources
                .iter()
                .filter_map(|r| {
                    r.resource
                        .clone()
                        .map(|body| (r.name.clone(), r.version.clone(), body))
                })
                .collect(),
            removals: resp.removed_resources.clone(),
        };
        let mut ack = DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..DeltaDiscoveryRequest::default()
        };
        let complete = !resp.system_version_info.is_empty();
        match self.handler.apply(update) {
            Ok(()) => {
                // A split update carries its version on its last part only.
                if complete {
                    seen.insert(resp.type_url.clone());
                }
                let held = self.versions.entry(resp.type_url.clone()).or_default();
                for r in &resp.resources {
                    held.insert(r.name.clone(), r.version.clone());
                }
                for name in &resp.removed_resources {
                    held.remove(name);
                }
            }
            Err(message) => {
                tracing::warn!(type_url = %resp.type_url, error = %message, "rejected an update; keeping the last good state");
                ack.error_detail = Some(RpcStatus {
                    code: tonic::Code::InvalidArgument as i32,
                    message,
                    details: vec![],
                });
            }
        }
        if !*self.synced.borrow() && self.config.type_urls.iter().all(|t| seen.contains(t)) {
            self.synced.send_replace(true);
        }
        ack
    }
}
