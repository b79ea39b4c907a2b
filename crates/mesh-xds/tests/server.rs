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
    serve_on("127.0.0.1:0".parse().unwrap(), ready, SnapshotCache::new()).await
}

async fn serve_on(
    at: std::net::SocketAddr,
    ready: bool,
    cache: SnapshotCache,
) -> (
    String,
    SnapshotCache,
    watch::Sender<bool>,
    Arc<SyncStatus>,
    CancellationToken,
) {
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
    let listener = tokio::net::TcpListener::bind(at).await.unwrap();
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
    let (_tx, refused) = subscribe(endpoint.clone()).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unavailable);

    cache.set("", mk_snap("A"));
    ready.send(true).unwrap();
    let (_tx, _stream, resp) = open_stream(endpoint).await;
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
    let (tx, mut stream, r1) = open_stream(endpoint).await;
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

mod client {
    use super::*;
    use mesh_xds::client::{DeltaClient, DeltaClientConfig, DeltaHandler, DeltaUpdate};
    use std::collections::BTreeMap;

    /// What the handler holds (name -> body) and the names it was sent, in order.
    type Held = (BTreeMap<String, Vec<u8>>, Vec<String>);

    /// Holds what it was sent; refuses any resource named "bad".
    #[derive(Clone, Default)]
    struct Store(Arc<parking_lot::Mutex<Held>>);

    impl DeltaHandler for Store {
        fn apply(&mut self, update: DeltaUpdate) -> Result<(), String> {
            if update.upserts.iter().any(|(n, _, _)| n == "bad") {
                return Err("resource bad is not acceptable".into());
            }
            let mut s = self.0.lock();
            for (name, _, body) in update.upserts {
                s.1.push(name.clone());
                s.0.insert(name, body.value);
            }
            for name in update.removals {
                s.0.remove(&name);
            }
            Ok(())
        }
    }

    impl Store {
        fn held(&self) -> Vec<(String, String)> {
            self.0
                .lock()
                .0
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect()
        }
        fn take_received(&self) -> Vec<String> {
            std::mem::take(&mut self.0.lock().1)
        }
    }

    fn snap(items: &[(&str, &str)]) -> Snapshot {
        Snapshot::new().with(
            T,
            TypedResources::new(items.iter().map(|(n, b)| {
                XdsResource::new(
                    *n,
                    Any {
                        type_url: T.into(),
                        value: b.as_bytes().to_vec(),
                    },
                )
            })),
        )
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..250 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn follows_changes_nacks_and_resumes_after_a_server_restart() {
        let (endpoint, cache, _ready, status, server_stop) = serve(true).await;
        let addr: std::net::SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
        cache.set("", snap(&[("a", "A"), ("b", "B")]));
        let store = Store::default();
        let client = DeltaClient::new(
            DeltaClientConfig {
                endpoint,
                node_id: "follower".into(),
                type_urls: vec![T.into()],
                backoff_min: Duration::from_millis(20),
                backoff_max: Duration::from_millis(200),
            },
            store.clone(),
        );
        let mut synced = client.synced();
        let stop = CancellationToken::new();
        let task = tokio::spawn(client.run(stop.clone()));
        tokio::time::timeout(Duration::from_secs(5), synced.wait_for(|s| *s))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.held(), pairs(&[("a", "A"), ("b", "B")]));
        store.take_received();

        cache.set("", snap(&[("a", "A"), ("b", "B2"), ("c", "C")]));
        until("the change", || {
            store.held() == pairs(&[("a", "A"), ("b", "B2"), ("c", "C")])
        })
        .await;
        assert_eq!(store.take_received(), ["b", "c"], "only what changed");

        // A refused update is NACKed; the last good state stays.
        cache.set(
            "",
            snap(&[("a", "A"), ("b", "B2"), ("c", "C"), ("bad", "X")]),
        );
        until("the NACK", || {
            status
                .streams()
                .first()
                .is_some_and(|s| s.types[T].nack.is_some())
        })
        .await;
        assert_eq!(store.held(), pairs(&[("a", "A"), ("b", "B2"), ("c", "C")]));

        // The server goes away and comes back on the same port with one more
        // resource: the client resumes and is sent only that one.
        server_stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let cache2 = SnapshotCache::new();
        cache2.set("", snap(&[("a", "A"), ("b", "B2"), ("c", "C"), ("d", "D")]));
        store.take_received();
        let (_endpoint, _cache, _ready2, _status2, stop2) = serve_on(addr, true, cache2).await;
        until("the resumed stream", || store.held().len() == 4).await;
        assert_eq!(
            store.take_received(),
            ["d"],
            "unchanged resources are not resent after a restart"
        );

        stop.cancel();
        stop2.cancel();
        task.await.unwrap();
    }
}

/// A stream's loop runs inside its response body: when the client ends its side,
/// resets the stream or goes away with the connection, the stream leaves the sync
/// status and the connected-streams gauge, and the other streams are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_going_away_leaves_status_and_gauge() {
    let status = SyncStatus::new();
    let metrics = XdsMetrics::unregistered();
    let cache = SnapshotCache::new();
    cache.set("", mk_snap("A"));
    let server = AdsServer::new(
        cache.clone(),
        Arc::new(SingleGroup),
        watch::channel(true).1,
        status.clone(),
        metrics.clone(),
        ServerOptions::default(),
        CancellationToken::new(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server.into_service())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let until = |want: usize| {
        let status = status.clone();
        let metrics = metrics.clone();
        async move {
            for _ in 0..250 {
                if status.len() == want && metrics.connected.get() == want as i64 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!(
                "{} streams in status, gauge {}; expected {want}",
                status.len(),
                metrics.connected.get()
            );
        }
    };

    // One stream on a connection that vanishes: its client runs on a runtime of
    // its own, dropped (tasks, connection and all) with the stream still open.
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
    let vanishing = std::thread::spawn({
        let endpoint = endpoint.clone();
        move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let opened = open_stream(endpoint).await;
                assert_eq!(opened.2.resources[0].value, b"A");
                tokio::spawn(async move {
                    let _held = opened;
                    std::future::pending::<()>().await
                });
                opened_tx.send(()).unwrap();
                let _ = close_rx.await;
            });
            drop(rt);
        }
    });
    opened_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (tx_a, stream_a, first) = open_stream(endpoint.clone()).await;
    assert_eq!(first.resources[0].value, b"A");
    let (tx_b, mut stream_b, _) = open_stream(endpoint.clone()).await;
    until(3).await;

    close_tx.send(()).unwrap();
    vanishing.join().unwrap();
    until(2).await;

    // The client ends its side: the stream ends.
    drop(tx_a);
    until(1).await;
    drop(stream_a);

    // The remaining stream is still served.
    cache.set("", mk_snap("B"));
    let pushed = next(&mut stream_b).await.unwrap().unwrap();
    assert_eq!(pushed.resources[0].value, b"B");
    drop((tx_b, stream_b));
    until(0).await;
}

/// Opens a SotW stream subscribed to `T` and reads its first response.
async fn open_stream(
    endpoint: String,
) -> (mpsc::Sender<DiscoveryRequest>, tonic::Streaming<Resp>, Resp) {
    let (tx, stream) = subscribe(endpoint).await;
    let mut stream = stream.unwrap();
    let first = next(&mut stream).await.unwrap().unwrap();
    (tx, stream, first)
}

/// Opens a SotW stream with a first request for `T`: the sender for the next
/// requests, and the server's answer to opening it.
async fn subscribe(
    endpoint: String,
) -> (
    mpsc::Sender<DiscoveryRequest>,
    Result<tonic::Streaming<Resp>, tonic::Status>,
) {
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
    let stream = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map(tonic::Response::into_inner);
    (tx, stream)
}
