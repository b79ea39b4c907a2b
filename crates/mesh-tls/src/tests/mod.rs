//! Tests of the crate over real loopback connections: a tonic health service
//! behind [`incoming`] that records the [`PeerInfo`] of every request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod handshake;
mod material;
mod rotation;

use std::{sync::Arc, time::Duration};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse,
    health_check_response::ServingStatus,
    health_client::HealthClient,
    health_server::{Health, HealthServer},
};

use crate::{
    ClientCredentials, IdentitySource, MtlsAcceptor, PeerInfo, ServerIdentity, SharedIdentity,
    TlsIdentity, channel_with, incoming,
    test_util::{TestCa, TestLeaf, spiffe},
};

/// Peers seen by the test server, one per request.
type Seen = Arc<Mutex<Vec<Option<PeerInfo>>>>;

struct Recorder {
    seen: Seen,
}

#[tonic::async_trait]
impl Health for Recorder {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.seen.lock().push(crate::peer_info(&request).cloned());
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream = futures::stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }
}

/// A running test server.
struct TestServer {
    endpoint: String,
    addr: std::net::SocketAddr,
    seen: Seen,
    acceptor: MtlsAcceptor,
    shutdown: CancellationToken,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestServer {
    fn last_peer(&self) -> Option<PeerInfo> {
        self.seen.lock().last().cloned().flatten()
    }
}

async fn serve(acceptor: MtlsAcceptor) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let shutdown = CancellationToken::new();
    let svc = HealthServer::new(Recorder { seen: seen.clone() });
    let conns = incoming(listener, acceptor.clone(), shutdown.clone());
    let sd = shutdown.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(conns, sd.cancelled_owned())
            .await
    });
    TestServer {
        endpoint: format!("https://127.0.0.1:{}", addr.port()),
        addr,
        seen,
        acceptor,
        shutdown,
    }
}

/// One health check over `channel`, with a deadline.
async fn check(channel: Channel) -> Result<(), Status> {
    let mut health = HealthClient::new(channel);
    let call = health.check(HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(Status::deadline_exceeded("no answer within 10s")),
    }
}

/// A channel presenting `identity` and expecting `expect`.
fn client(endpoint: &str, identity: TlsIdentity, expect: ServerIdentity) -> Channel {
    let source: Arc<dyn IdentitySource> = Arc::new(SharedIdentity::new(Some(identity)));
    channel_with(endpoint, ClientCredentials::Identity(source), expect).unwrap()
}

/// A source holding `leaf` trusting `roots`.
fn source(leaf: &TestLeaf, roots: &[&TestCa]) -> Arc<dyn IdentitySource> {
    Arc::new(SharedIdentity::new(Some(leaf.identity(roots))))
}

/// The identity of the servers in these tests.
fn server_id() -> crate::SpiffeId {
    spiffe("istio-system", "pilot")
}
