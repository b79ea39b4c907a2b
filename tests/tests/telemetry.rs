//! Observability end to end: galley's spans reach a real OTLP receiver, and its
//! gRPC port answers server reflection.

#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, time::Duration};

use dromon_e2e::{ChildGuard, free_port, wait_http_ok};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

struct Receiver(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

const SE: &str = "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
";

#[tokio::test]
async fn spans_are_exported_over_otlp_and_reflection_lists_services() {
    // A real OTLP/gRPC trace receiver.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), SE).unwrap();
    let mcp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let monitoring: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let endpoint = format!("http://{otlp}");
    let mut galley = ChildGuard::spawn_with_env(
        "galley",
        &[
            "--config-dir",
            dir.path().to_str().unwrap(),
            "--mcp-addr",
            &mcp.to_string(),
            "--monitoring-addr",
            &monitoring.to_string(),
            "--log-format",
            "json",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .unwrap();
    wait_http_ok(monitoring, "/ready", Duration::from_secs(20))
        .await
        .unwrap();

    // Server reflection on the gRPC port, with the real reflection client.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{mcp}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        services.contains(&"grpc.health.v1.Health".to_string()),
        "{services:?}"
    );
    assert!(
        services.contains(&"grpc.reflection.v1.ServerReflection".to_string()),
        "{services:?}"
    );

    // A change makes a publish span; shutdown flushes the exporter.
    std::fs::write(
        dir.path().join("a.yaml"),
        SE.replace("cart.shop", "basket.shop"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = galley.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success());

    let mut spans = Vec::new();
    let mut service = None;
    while let Ok(Some(req)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        for rs in req.resource_spans {
            if let Some(resource) = &rs.resource {
                for kv in &resource.attributes {
                    if kv.key == "service.name" {
                        service = kv.value.as_ref().and_then(|v| v.value.clone());
                    }
                }
            }
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| s.name));
            }
        }
        if spans.iter().filter(|s| *s == "galley.publish").count() >= 2 {
            break;
        }
    }
    assert!(
        spans.iter().filter(|s| *s == "galley.publish").count() >= 2,
        "spans received: {spans:?}"
    );
    assert_eq!(
        service,
        Some(
            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue("galley".into())
        )
    );
}
