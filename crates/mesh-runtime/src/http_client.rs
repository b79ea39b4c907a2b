//! A minimal HTTP/1.1 GET for the few places a component or `meshctl` reads a
//! document over plain HTTP (debug endpoints, a JWKS URL).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};

/// Largest body read.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// GETs `http://<authority><path>` within `timeout`, returning the status code and
/// body. Errors are text naming what failed.
pub async fn get(authority: &str, path: &str, timeout: Duration) -> Result<(u16, Bytes), String> {
    let fetch = async {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connect {authority}: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, authority)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// GETs an `http://host:port/path` URL; see [`get`].
pub async fn get_url(url: &str, timeout: Duration) -> Result<(u16, Bytes), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    get(authority, path, timeout).await
}
