//! Unary gRPC calls whose requests were encoded up front: the load sends those
//! bytes as they are and decodes only what it reads of each answer (a message
//! type of its own naming just those fields), so that the server, not the load,
//! is what costs CPU.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use tonic::{
    Request, Status,
    client::Grpc,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};

/// tonic's default yield threshold (32 KiB), kept.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Sends prepared request bytes; decodes each answer as `A`. `buffer` sizes the
/// codec's buffers (tonic's default is 8 KiB per call; a larger message still
/// fits, the buffer grows).
#[derive(Debug)]
pub struct PreparedCodec<A> {
    buffer: usize,
    answer: PhantomData<fn() -> A>,
}

impl<A> PreparedCodec<A> {
    /// A codec with buffers of `buffer` bytes.
    pub fn new(buffer: usize) -> Self {
        Self {
            buffer,
            answer: PhantomData,
        }
    }
}

impl<A> Clone for PreparedCodec<A> {
    fn clone(&self) -> Self {
        Self::new(self.buffer)
    }
}

impl<A: prost::Message + Default + Send + 'static> Codec for PreparedCodec<A> {
    type Encode = Bytes;
    type Decode = A;
    type Encoder = PreparedEncoder;
    type Decoder = AnswerDecoder<A>;

    fn encoder(&mut self) -> PreparedEncoder {
        PreparedEncoder {
            buffer: self.buffer,
        }
    }

    fn decoder(&mut self) -> AnswerDecoder<A> {
        AnswerDecoder {
            buffer: self.buffer,
            answer: PhantomData,
        }
    }
}

/// Writes a request's prepared bytes.
#[derive(Debug, Clone, Copy)]
pub struct PreparedEncoder {
    buffer: usize,
}

impl Encoder for PreparedEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(self.buffer, YIELD_THRESHOLD)
    }
}

/// Decodes an answer as `A`.
#[derive(Debug)]
pub struct AnswerDecoder<A> {
    buffer: usize,
    answer: PhantomData<fn() -> A>,
}

impl<A: prost::Message + Default> Decoder for AnswerDecoder<A> {
    type Item = A;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<A>, Status> {
        A::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable answer: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(self.buffer, YIELD_THRESHOLD)
    }
}

/// Calls `path` on `client` with the prepared `request`; the answer as `A`.
pub async fn call<A: prost::Message + Default + Send + 'static>(
    client: &Grpc<Channel>,
    path: &'static str,
    request: Bytes,
    buffer: usize,
) -> Result<A, Status> {
    let mut client = client.clone();
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    client
        .unary(
            Request::new(request),
            PathAndQuery::from_static(path),
            PreparedCodec::<A>::new(buffer),
        )
        .await
        .map(tonic::Response::into_inner)
}
