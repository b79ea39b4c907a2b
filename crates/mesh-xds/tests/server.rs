//! The ADS server over a real gRPC connection on loopback.

#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use mesh_api::envoy::envoy::service::discovery::v3::{
    DiscoveryRequest, aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use mesh_xds::{
    AdsServer, Any, ServerOptions, SingleGroup, Snapshot, SnapshotCache, SyncStatus,
    TypedResources, XdsMetrics, XdsResource,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;

const T: &str = "type.example/Thing";

fn mk_snap(body: &str) -> Snapshot {
    Snapshot::new().with(
        T,
        TypedResources::new([XdsResource::new(
            "a",
            Any {
                type_url: T.into(),
                value: body.as_bytes().to_vec(),
            },
        )]),
    )
}

async fn serve(
    ready: bool,
) -> (
    String,
    SnapshotCache,
    watch::Sender<bool>,
    Arc<SyncStatus>,
    CancellationToken,
) {
    let cache = SnapshotCache::new();
    let (ready_tx, ready_rx) = watch::channel(ready);
    let status = SyncStatus::new();
    let shutdown = CancellationToken::new();
    let server = AdsServer::new(
        cache.clone(),
        Arc::new(SingleGroup),
        ready_rx,
        status.clone(),
        XdsMetrics::unregistered(),
        ServerOptions::default(),
        shutdown.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sd = shutdown.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(server.into_service())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), sd.cancelled_owned())
            .await
    });
    (format!("http://{addr}"), cache, ready_tx, status, shutdown)
}

#[tokio::test]
async fn not_ready_refuses_streams_with_unavailable_then_serves() {
    let (endpoint, cache, ready, _status, _sd) = serve(false).await;
    let mut client = AggregatedDiscoveryServiceClient::connect(endpoint)
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        type_url: T.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);

    cache.set("", mk_snap("A"));
    ready.send(true).unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        type_url: T.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let resp = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(resp.resources.len(), 1);
    assert_eq!(resp.resources[0].value, b"A");
}

type Resp = mesh_api::envoy::envoy::service::discovery::v3::DiscoveryResponse;

async fn next(s: &mut tonic::Streaming<Resp>) -> Result<Option<Resp>, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .unwrap()
}

#[tokio::test]
async fn snapshot_changes_are_pushed_and_status_tracks_acks() {
    let (endpoint, cache, _ready, status, shutdown) = serve(true).await;
    cache.set("", mk_snap("A"));
    let mut client = AggregatedDiscoveryServiceClient::connect(endpoint)
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        type_url: T.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let r1 = next(&mut stream).await.unwrap().unwrap();
    tx.send(DiscoveryRequest {
        type_url: T.into(),
        version_info: r1.version_info.clone(),
        response_nonce: r1.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    // The ACK is recorded (polling: it is processed on the server's own task).
    let mut acked = false;
    for _ in 0..250 {
        let streams = status.streams();
        assert_eq!(streams.len(), 1);
        if streams[0].types[T].acked_version.as_deref() == Some(r1.version_info.as_str()) {
            acked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(acked, "status records the ACK");
    assert_eq!(status.streams()[0].types[T].state(), "SYNCED");
    cache.set("", mk_snap("B"));
    let r2 = next(&mut stream).await.unwrap().unwrap();
    assert_eq!(r2.resources[0].value, b"B");
    assert_ne!(r2.nonce, r1.nonce);

    // Shutdown ends the stream with Unavailable so clients reconnect elsewhere.
    shutdown.cancel();
    let end = next(&mut stream).await;
    assert_eq!(end.unwrap_err().code(), tonic::Code::Unavailable);
}
