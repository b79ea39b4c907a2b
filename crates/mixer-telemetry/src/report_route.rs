//! Mixer's Report method served from the request's bytes: the gRPC message is
//! handed over as it arrived (no copy of it, no decoded `ReportRequest`) and read
//! in place by [`mixer_core::wire::raw`]. Every other method of the Mixer service
//! goes to the generated server.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use mesh_api::mixer::v1::ReportResponse;
use tonic::{
    Request, Response, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::{BoxFuture, http},
    server::{Grpc, NamedService, UnaryService},
};

/// The Report method's path.
pub const REPORT_PATH: &str = "/istio.mixer.v1.Mixer/Report";

/// What answers a Report from its bytes.
pub trait ReportBytes: Send + Sync + 'static {
    /// Takes the encoded `ReportRequest`.
    fn report_bytes(
        &self,
        bytes: Bytes,
    ) -> impl Future<Output = Result<ReportResponse, Status>> + Send;
}

/// The Mixer service with Report answered by `R` from the request's bytes and
/// every other method by `inner`.
pub struct ReportRoute<S, R> {
    inner: S,
    reports: Arc<R>,
}

impl<S: Clone, R> Clone for ReportRoute<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            reports: self.reports.clone(),
        }
    }
}

impl<S, R> ReportRoute<S, R> {
    /// Routes Report to `reports`, the rest to `inner`.
    pub fn new(inner: S, reports: Arc<R>) -> Self {
        Self { inner, reports }
    }
}

impl<S: NamedService, R> NamedService for ReportRoute<S, R> {
    const NAME: &'static str = S::NAME;
}

impl<S, R> tonic::codegen::Service<http::Request<tonic::body::Body>> for ReportRoute<S, R>
where
    S: tonic::codegen::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
    R: ReportBytes,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != REPORT_PATH {
            return Box::pin(self.inner.call(req));
        }
        let method = Method(self.reports.clone());
        Box::pin(async move {
            // The generated server's defaults: 4 MB at most per message.
            let mut grpc = Grpc::new(RawCodec);
            Ok(grpc.unary(method, req).await)
        })
    }
}

struct Method<R>(Arc<R>);

impl<R: ReportBytes> UnaryService<Bytes> for Method<R> {
    type Response = ReportResponse;
    type Future = BoxFuture<Response<ReportResponse>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let reports = self.0.clone();
        Box::pin(async move {
            reports
                .report_bytes(request.into_inner())
                .await
                .map(Response::new)
        })
    }
}

/// Takes a request's message as bytes; writes the (empty) answer.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = ReportResponse;
    type Decode = Bytes;
    type Encoder = AnswerEncoder;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> AnswerEncoder {
        AnswerEncoder
    }

    fn decoder(&mut self) -> BytesDecoder {
        BytesDecoder
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct AnswerEncoder;

impl Encoder for AnswerEncoder {
    type Item = ReportResponse;
    type Error = Status;

    fn encode(&mut self, item: ReportResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        prost::Message::encode(&item, dst).map_err(|e| Status::internal(e.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // The decode buffer's own memory, split off: no copy.
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
