//! The request side of an ADS stream: gRPC messages read from the HTTP/2 body.
//!
//! Read here rather than with tonic's `Streaming`, whose buffer keeps the capacity
//! of the largest message a stream ever sent: an Envoy's EDS request names every
//! EDS cluster (tens of KiB), and thousands of streams each keeping that much for
//! their lifetime was a large share of pilot's memory. Here the buffer is released
//! as soon as the messages in it are decoded: a stream waiting for its next request
//! (most of them, most of the time) holds none.

use std::{marker::PhantomData, pin::Pin};

use bytes::{Buf, BytesMut};
use tonic::{
    Status,
    codegen::{Body, StdError},
};

/// gRPC's length-prefixed message header: a compression flag and a 4-byte length.
const HEADER_BYTES: usize = 5;
/// A partly read message keeps a buffer at most this large once the messages before
/// it are decoded; a larger one is copied down to size.
pub const KEEP_BYTES: usize = 16 * 1024;

/// Decodes the requests of one stream, one at a time.
pub struct RequestStream<B, M> {
    body: Pin<Box<B>>,
    buf: BytesMut,
    max_message_bytes: usize,
    done: bool,
    _message: PhantomData<fn() -> M>,
}

impl<B, M> RequestStream<B, M>
where
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<StdError>,
    M: prost::Message + Default,
{
    /// Reads from `body`, refusing messages larger than `max_message_bytes`.
    pub fn new(body: B, max_message_bytes: usize) -> Self {
        Self {
            body: Box::pin(body),
            buf: BytesMut::new(),
            max_message_bytes,
            done: false,
            _message: PhantomData,
        }
    }

    /// The next request; `None` when the client closed its side. Cancel-safe: what
    /// was read stays buffered for the next call. Boxed: a request message is large
    /// (hundreds of bytes with its node), and the task of every connected stream
    /// would otherwise have room for it while it waits.
    pub async fn message(&mut self) -> Result<Option<Box<M>>, Status> {
        loop {
            if let Some(msg) = self.decode_buffered()? {
                return Ok(Some(msg));
            }
            if self.done {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(Status::internal(
                        "the request stream ended inside a message",
                    ))
                };
            }
            let frame = std::future::poll_fn(|cx| self.body.as_mut().poll_frame(cx)).await;
            match frame {
                None => self.done = true,
                Some(Ok(frame)) => {
                    // Trailers carry nothing for us.
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    let e: StdError = e.into();
                    return Err(Status::from_error(e));
                }
            }
        }
    }

    /// Decodes a message if the buffer holds a whole one.
    fn decode_buffered(&mut self) -> Result<Option<Box<M>>, Status> {
        let Some(header) = self.buf.get(..HEADER_BYTES) else {
            return Ok(None);
        };
        if header[0] != 0 {
            return Err(Status::unimplemented(
                "compressed requests are not supported",
            ));
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > self.max_message_bytes {
            return Err(Status::resource_exhausted(format!(
                "request of {len} bytes is larger than the limit of {}",
                self.max_message_bytes
            )));
        }
        let Some(body) = self.buf.get(HEADER_BYTES..HEADER_BYTES + len) else {
            self.buf.reserve(HEADER_BYTES + len - self.buf.len());
            return Ok(None);
        };
        let mut msg = Box::<M>::default();
        msg.merge(body)
            .map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")))?;
        self.buf.advance(HEADER_BYTES + len);
        if self.buf.is_empty() {
            // Nothing more to read for now: the next request gets a new buffer.
            self.buf = BytesMut::new();
        } else if self.buf.capacity() > KEEP_BYTES && self.buf.len() <= KEEP_BYTES {
            // What follows the message (usually nothing) moves to a small buffer.
            self.buf = BytesMut::from(&self.buf[..]);
        }
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::discovery::DiscoveryRequest;
    use bytes::Bytes;
    use http_body::Frame;
    use prost::Message;
    use std::{
        collections::VecDeque,
        convert::Infallible,
        task::{Context, Poll},
    };

    /// A body yielding the given chunks.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
        }
    }

    fn framed(msg: &DiscoveryRequest) -> Vec<u8> {
        let body = msg.encode_to_vec();
        let mut out = vec![0u8];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[tokio::test]
    async fn messages_split_across_frames_are_decoded_and_large_buffers_released() {
        let big = DiscoveryRequest {
            type_url: "t".into(),
            resource_names: (0..2000).map(|i| format!("name-{i}")).collect(),
            ..Default::default()
        };
        let small = DiscoveryRequest {
            type_url: "u".into(),
            ..Default::default()
        };
        let mut wire = framed(&big);
        wire.extend(framed(&small));
        let chunks = wire.chunks(1000).map(Bytes::copy_from_slice).collect();
        let mut s: RequestStream<_, DiscoveryRequest> = RequestStream::new(Chunks(chunks), 1 << 20);
        assert_eq!(*s.message().await.unwrap().unwrap(), big);
        assert!(s.buf.capacity() <= KEEP_BYTES, "{}", s.buf.capacity());
        assert_eq!(*s.message().await.unwrap().unwrap(), small);
        assert_eq!(s.buf.capacity(), 0, "an idle stream holds no buffer");
        assert!(s.message().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_compressed_and_truncated_requests_are_refused() {
        let wire = framed(&DiscoveryRequest {
            type_url: "t".repeat(100),
            ..Default::default()
        });
        let one = |w: Vec<u8>| Chunks(VecDeque::from([Bytes::from(w)]));
        let mut s: RequestStream<_, DiscoveryRequest> = RequestStream::new(one(wire.clone()), 10);
        assert_eq!(
            s.message().await.unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        let mut compressed = wire.clone();
        compressed[0] = 1;
        let mut s: RequestStream<_, DiscoveryRequest> = RequestStream::new(one(compressed), 1000);
        assert_eq!(
            s.message().await.unwrap_err().code(),
            tonic::Code::Unimplemented
        );
        let mut s: RequestStream<_, DiscoveryRequest> =
            RequestStream::new(one(wire[..20].to_vec()), 1000);
        assert_eq!(s.message().await.unwrap_err().code(), tonic::Code::Internal);
    }
}
