//! The accept loop: HTTP/1.1 connections served by the router, all of them cut
//! at once when the server stops or becomes unreachable.

use std::convert::Infallible;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tower::Service;

/// A running accept loop.
pub(crate) struct Listening {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Listening {
    /// Starts serving `listener`.
    pub(crate) fn spawn(listener: TcpListener, router: Router) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, router, stopped));
        Self { stop, task }
    }

    /// Stops accepting, closes the port and every open connection.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn accept_loop(listener: TcpListener, router: Router, mut stopped: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let router = router.clone();
                let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                    let mut router = router.clone();
                    async move { Ok::<_, Infallible>(router.call(request).await.unwrap_or_else(|never| match never {})) }
                });
                connections.spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

impl Listening {
    /// Stops at once, without waiting (for `Drop`).
    pub(crate) fn abort(self) {
        let _ = self.stop.send(());
    }
}
