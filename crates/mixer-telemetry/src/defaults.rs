//! The standard mesh metrics, configured when nothing else is: request count,
//! duration and sizes for HTTP and gRPC, bytes sent and received for TCP, each
//! labelled with the reporter, source and destination workload, service,
//! protocol and response code. A configuration resource with the same kind,
//! namespace and name replaces one of these.

use mesh_model::{ParseOptions, Resource, parse_document_set};

/// The defaults as YAML (`config.istio.io/v1alpha2`, namespace `istio-system`),
/// with each instance's dimensions where `{http}` or `{tcp}` stands.
const TEMPLATE: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcount, namespace: istio-system}
spec:
  compiledTemplate: metric
  params:
    value: "1"
    dimensions:
{http}---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestduration, namespace: istio-system}
spec:
  compiledTemplate: metric
  params:
    value: response.duration | "0ms"
    dimensions:
{http}---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestsize, namespace: istio-system}
spec:
  compiledTemplate: metric
  params:
    value: request.size | 0
    dimensions:
{http}---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: responsesize, namespace: istio-system}
spec:
  compiledTemplate: metric
  params:
    value: response.size | 0
    dimensions:
{http}---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: tcpbytesent, namespace: istio-system}
spec:
  compiledTemplate: metric
  params:
    value: connection.sent.bytes | 0
    dimensions:
{tcp}---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: tcpbytereceived, namespace: istio-system}
spec:
  compiledTemplate: metric
  params:
    value: connection.received.bytes | 0
    dimensions:
{tcp}---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: prometheus, namespace: istio-system}
spec:
  compiledAdapter: prometheus
  params:
    metrics:
    - name: requests_total
      instanceName: requestcount.instance.istio-system
      kind: COUNTER
      description: Requests, by source, destination, protocol and response code
      labelNames: &httplabels [reporter, source_workload, source_workload_namespace, source_principal, source_app, destination_workload, destination_workload_namespace, destination_principal, destination_app, destination_service, destination_service_name, destination_service_namespace, request_protocol, response_code, connection_security_policy]
    - name: request_duration_seconds
      instanceName: requestduration.instance.istio-system
      kind: DISTRIBUTION
      description: Request duration in seconds
      labelNames: *httplabels
      buckets: {explicitBuckets: {bounds: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]}}
    - name: request_bytes
      instanceName: requestsize.instance.istio-system
      kind: DISTRIBUTION
      description: Request body size in bytes
      labelNames: *httplabels
      buckets: {exponentialBuckets: {numFiniteBuckets: 8, scale: 1, growthFactor: 10}}
    - name: response_bytes
      instanceName: responsesize.instance.istio-system
      kind: DISTRIBUTION
      description: Response body size in bytes
      labelNames: *httplabels
      buckets: {exponentialBuckets: {numFiniteBuckets: 8, scale: 1, growthFactor: 10}}
    - name: tcp_sent_bytes_total
      instanceName: tcpbytesent.instance.istio-system
      kind: COUNTER
      description: Bytes sent on TCP connections
      labelNames: &tcplabels [reporter, source_workload, source_workload_namespace, source_principal, destination_workload, destination_workload_namespace, destination_principal, destination_service, destination_service_name, destination_service_namespace, connection_security_policy]
    - name: tcp_received_bytes_total
      instanceName: tcpbytereceived.instance.istio-system
      kind: COUNTER
      description: Bytes received on TCP connections
      labelNames: *tcplabels
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: promhttp, namespace: istio-system}
spec:
  match: (context.protocol | "http") == "http" || context.protocol == "grpc"
  actions:
  - handler: prometheus
    instances: [requestcount, requestduration, requestsize, responsesize]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: promtcp, namespace: istio-system}
spec:
  match: context.protocol == "tcp"
  actions:
  - handler: prometheus
    instances: [tcpbytesent, tcpbytereceived]
"#;

/// The dimensions of the HTTP metrics.
const HTTP_DIMENSIONS: &str = r#"      reporter: conditional((context.reporter.kind | "inbound") == "outbound", "source", "destination")
      source_workload: source.workload.name | "unknown"
      source_workload_namespace: source.workload.namespace | "unknown"
      source_principal: source.principal | "unknown"
      source_app: source.labels["app"] | "unknown"
      destination_workload: destination.workload.name | "unknown"
      destination_workload_namespace: destination.workload.namespace | "unknown"
      destination_principal: destination.principal | "unknown"
      destination_app: destination.labels["app"] | "unknown"
      destination_service: destination.service.host | "unknown"
      destination_service_name: destination.service.name | "unknown"
      destination_service_namespace: destination.service.namespace | "unknown"
      request_protocol: api.protocol | context.protocol | "unknown"
      response_code: response.code | 200
      connection_security_policy: conditional((context.reporter.kind | "inbound") == "outbound", "unknown", conditional(connection.mtls | false, "mutual_tls", "none"))
"#;

/// The dimensions of the TCP metrics.
const TCP_DIMENSIONS: &str = r#"      reporter: conditional((context.reporter.kind | "inbound") == "outbound", "source", "destination")
      source_workload: source.workload.name | "unknown"
      source_workload_namespace: source.workload.namespace | "unknown"
      source_principal: source.principal | "unknown"
      destination_workload: destination.workload.name | "unknown"
      destination_workload_namespace: destination.workload.namespace | "unknown"
      destination_principal: destination.principal | "unknown"
      destination_service: destination.service.host | "unknown"
      destination_service_name: destination.service.name | "unknown"
      destination_service_namespace: destination.service.namespace | "unknown"
      connection_security_policy: conditional((context.reporter.kind | "inbound") == "outbound", "unknown", conditional(connection.mtls | false, "mutual_tls", "none"))
"#;

/// The defaults as YAML.
pub fn standard_metrics_yaml() -> String {
    TEMPLATE
        .replace("{http}", HTTP_DIMENSIONS)
        .replace("{tcp}", TCP_DIMENSIONS)
}

/// The standard metrics' resources.
pub fn standard_metrics() -> Vec<Resource> {
    let set = parse_document_set(
        "standard-metrics.yaml",
        &standard_metrics_yaml(),
        &ParseOptions::default(),
    );
    for r in &set.rejected {
        tracing::error!(problem = ?r, "a standard metric resource does not parse");
    }
    set.accepted
}
