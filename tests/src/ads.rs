//! An ADS client for tests, on tonic's generated stubs for Envoy's discovery service.

use std::time::Duration;

use anyhow::{Context, bail};
use mesh_api::envoy::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
};
use mesh_api::envoy::google::rpc::Status as RpcStatus;
use mesh_api::mcp::v1 as mcp;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// A state-of-the-world ADS stream.
pub struct SotwClient {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    node: Node,
}

/// A node with the given id.
pub fn node(id: &str) -> Node {
    Node {
        id: id.to_string(),
        cluster: "e2e".to_string(),
        ..Node::default()
    }
}

impl SotwClient {
    /// Opens a stream to `endpoint` (e.g. `http://127.0.0.1:9901`).
    pub async fn connect(endpoint: String, node_id: &str) -> anyhow::Result<Self> {
        Self::connect_node(endpoint, node(node_id)).await
    }

    /// Opens a stream presenting `node` in its requests.
    pub async fn connect_node(endpoint: String, node: Node) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(endpoint)?
            .connect()
            .await?;
        Self::connect_channel(channel, node).await
    }

    /// Opens a stream over `channel` (an mTLS channel, say), presenting `node`.
    pub async fn connect_channel(
        channel: tonic::transport::Channel,
        node: Node,
    ) -> anyhow::Result<Self> {
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(16);
        let resp = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await?;
        Ok(Self {
            tx,
            rx: resp.into_inner(),
            node,
        })
    }

    /// Sends a request.
    pub async fn send(&self, mut req: DiscoveryRequest) -> anyhow::Result<()> {
        if req.node.is_none() {
            req.node = Some(self.node.clone());
        }
        self.tx.send(req).await.context("stream closed")
    }

    /// Subscribes to `type_url` with `names` (empty: wildcard).
    pub async fn subscribe(&self, type_url: &str, names: &[&str]) -> anyhow::Result<()> {
        self.send(DiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            ..DiscoveryRequest::default()
        })
        .await
    }

    /// ACKs a response.
    pub async fn ack(&self, resp: &DiscoveryResponse, names: &[&str]) -> anyhow::Result<()> {
        self.send(DiscoveryRequest {
            type_url: resp.type_url.clone(),
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            ..DiscoveryRequest::default()
        })
        .await
    }

    /// NACKs a response, keeping `last_good` as the version held.
    pub async fn nack(
        &self,
        resp: &DiscoveryResponse,
        last_good: &str,
        error: &str,
    ) -> anyhow::Result<()> {
        self.send(DiscoveryRequest {
            type_url: resp.type_url.clone(),
            version_info: last_good.to_string(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: error.to_string(),
                details: vec![],
            }),
            ..DiscoveryRequest::default()
        })
        .await
    }

    /// The next response, or an error after `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> anyhow::Result<DiscoveryResponse> {
        match tokio::time::timeout(timeout, self.rx.message()).await {
            Err(_) => bail!("no response within {timeout:?}"),
            Ok(Err(status)) => Err(status.into()),
            Ok(Ok(None)) => bail!("stream ended"),
            Ok(Ok(Some(r))) => Ok(r),
        }
    }

    /// Asserts no response arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) -> anyhow::Result<()> {
        match tokio::time::timeout(wait, self.rx.message()).await {
            Err(_) => Ok(()),
            Ok(Ok(Some(r))) => bail!(
                "unexpected response: type {} version {}",
                r.type_url,
                r.version_info
            ),
            Ok(Ok(None)) => bail!("stream ended"),
            Ok(Err(status)) => Err(status.into()),
        }
    }

    /// The raw response stream (to observe its end status).
    pub fn responses(&mut self) -> &mut Streaming<DiscoveryResponse> {
        &mut self.rx
    }
}

/// A delta ADS stream.
pub struct DeltaClient {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl DeltaClient {
    /// Opens a delta stream to `endpoint`.
    pub async fn connect(endpoint: String) -> anyhow::Result<Self> {
        let mut client = AggregatedDiscoveryServiceClient::connect(endpoint).await?;
        let (tx, rx) = mpsc::channel(16);
        let resp = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await?;
        Ok(Self {
            tx,
            rx: resp.into_inner(),
        })
    }

    /// Sends a request.
    pub async fn send(&self, req: DeltaDiscoveryRequest) -> anyhow::Result<()> {
        self.tx.send(req).await.context("stream closed")
    }

    /// The next response, or an error after `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> anyhow::Result<DeltaDiscoveryResponse> {
        match tokio::time::timeout(timeout, self.rx.message()).await {
            Err(_) => bail!("no response within {timeout:?}"),
            Ok(Err(status)) => Err(status.into()),
            Ok(Ok(None)) => bail!("stream ended"),
            Ok(Ok(Some(r))) => Ok(r),
        }
    }
}

/// Decodes the MCP resources of a response.
pub fn mcp_resources(resp: &DiscoveryResponse) -> anyhow::Result<Vec<mcp::Resource>> {
    resp.resources
        .iter()
        .map(|any| {
            if any.type_url != mcp::RESOURCE_TYPE_URL {
                bail!("unexpected type {}", any.type_url);
            }
            Ok(mcp::Resource::decode(any.value.as_slice())?)
        })
        .collect()
}

/// The spec of an MCP resource as JSON.
pub fn spec(resource: &mcp::Resource) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_slice(&resource.spec_json)?)
}
