//! Unary gRPC calls whose requests were encoded (and framed) up front, sent over
//! HTTP/2 connections of hyper's client directly: no channel task between the
//! caller and the connection, and each request's headers and message leave
//! together. Only what the load reads of each answer is decoded (a message type
//! of its own naming just those fields), so that the server, not the load, is
//! what costs CPU.

use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, Uri,
    client::conn::http2::{self, SendRequest},
    header::{CONTENT_TYPE, HeaderValue, TE},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::{Code, Status};

/// One HTTP/2 connection to a gRPC server.
#[derive(Clone)]
pub struct GrpcConnection {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

impl GrpcConnection {
    /// Connects to `addr` over plaintext HTTP/2 (TCP_NODELAY set); the
    /// connection runs as a task of the current runtime.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tcp))
            .await?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            authority: addr.to_string(),
        })
    }

    /// The URI of `path` (`/package.Service/Method`) on this connection's server.
    pub fn uri(&self, path: &str) -> anyhow::Result<Uri> {
        Ok(Uri::builder()
            .scheme("http")
            .authority(self.authority.as_str())
            .path_and_query(path)
            .build()?)
    }

    /// Calls `uri` with a request framed by [`frame`]; the answer decoded as `A`,
    /// or the call's status when it is not OK.
    pub async fn call<A: prost::Message + Default>(
        &self,
        uri: Uri,
        framed: Bytes,
    ) -> Result<A, Status> {
        let mut request = Request::new(Full::new(framed));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        let mut sender = self.sender.clone();
        sender
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (parts, body) = response.into_parts();
        if !parts.status.is_success() {
            return Err(Status::unknown(format!("HTTP status {}", parts.status)));
        }
        // A trailers-only answer carries its status in the headers.
        if let Some(status) = Status::from_header_map(&parts.headers) {
            return Err(if status.code() == Code::Ok {
                Status::internal("an OK answer without a message")
            } else {
                status
            });
        }
        let collected = body
            .collect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        match collected.trailers().and_then(Status::from_header_map) {
            Some(status) if status.code() == Code::Ok => {}
            Some(status) => return Err(status),
            None => return Err(Status::internal("an answer without grpc-status")),
        }
        unframe(collected.to_bytes())
    }
}

/// `message` as gRPC frames it: uncompressed, its length, its bytes.
pub fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    framed.freeze()
}

/// The one message of a unary answer, decoded as `A`.
fn unframe<A: prost::Message + Default>(mut data: Bytes) -> Result<A, Status> {
    if data.len() < 5 {
        return Err(Status::internal("an answer shorter than its frame header"));
    }
    if data.get_u8() != 0 {
        return Err(Status::internal("a compressed answer"));
    }
    let len = data.get_u32() as usize;
    if data.len() != len {
        return Err(Status::internal(format!(
            "an answer frame of {len} bytes carrying {}",
            data.len()
        )));
    }
    A::decode(data).map_err(|e| Status::internal(format!("undecodable answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Answer {
        #[prost(int32, tag = "1")]
        code: i32,
    }

    #[test]
    fn a_framed_message_unframes_to_itself() {
        let message = prost::Message::encode_to_vec(&Answer { code: 7 });
        let framed = frame(&message);
        assert_eq!(framed.len(), message.len() + 5);
        assert_eq!(
            unframe::<Answer>(framed).expect("a well-framed answer"),
            Answer { code: 7 }
        );
    }

    #[test]
    fn short_compressed_or_mislengthed_answers_are_errors() {
        assert!(unframe::<Answer>(Bytes::from_static(&[0, 0])).is_err());
        assert!(unframe::<Answer>(Bytes::from_static(&[1, 0, 0, 0, 0])).is_err());
        assert!(unframe::<Answer>(Bytes::from_static(&[0, 0, 0, 0, 5, 8])).is_err());
    }
}
