//! Parsing + validation throughput over a realistic mix of 10,000 resources of every
//! kind, and analysis of the result.
//!
//! Run with `cargo bench -p mesh-model -- --warm-up-time 1 --measurement-time 5`.

use std::{fmt::Write, hint::black_box};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_model::{ParseOptions, Resource, analyze, parse_document_set};

const RESOURCES: usize = 10_000;

/// One document of the mix, chosen by `i`; `ns` and `svc` name the namespace and the
/// service it is about. Every document is valid.
fn document(out: &mut String, i: usize) {
    let ns = format!("team-{}", i % 40);
    let svc = format!("svc-{}", i / 20);
    let host = format!("{svc}.{ns}.svc.cluster.local");
    let name = format!("r-{i}");
    let port = 8000 + (i % 1000);
    let _ = match i % 20 {
        // 5 in 20: VirtualServices with matches, weights, retries and faults.
        0..=4 => write!(
            out,
            r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: {name}
  namespace: {ns}
  labels:
    app: {svc}
spec:
  hosts:
  - {svc}-{i}
  http:
  - name: canary
    match:
    - headers:
        end-user:
          exact: tester-{i}
      uri:
        prefix: /api/v2
    - uri:
        regex: "^/items/[0-9]+$"
    route:
    - destination:
        host: {svc}
        subset: v2
  - name: default
    route:
    - destination:
        host: {svc}
        subset: v1
        port:
          number: {port}
      weight: 90
    - destination:
        host: {svc}
        subset: v2
      weight: 10
    timeout: 5s
    retries:
      attempts: 3
      perTryTimeout: 1s
      retryOn: 5xx,connect-failure
    fault:
      delay:
        percentage:
          value: 0.5
        fixedDelay: 100ms
    headers:
      request:
        set:
          x-team: {ns}
"#
        ),
        // 4 in 20: DestinationRules with subsets and policies.
        5..=8 => write!(
            out,
            r#"apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: {name}
  namespace: {ns}
spec:
  host: {svc}-{i}
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
      http:
        http1MaxPendingRequests: 64
        maxRequestsPerConnection: 10
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
    tls:
      mode: ISTIO_MUTUAL
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
    trafficPolicy:
      loadBalancer:
        consistentHash:
          httpHeaderName: x-user
"#
        ),
        // 3 in 20: ServiceEntries with static endpoints.
        9..=11 => write!(
            out,
            r#"apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: {name}
  namespace: {ns}
spec:
  hosts:
  - {host}
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: {port}
    name: http
    protocol: HTTP
  - number: {}
    name: grpc
    protocol: GRPC
  endpoints:
  - address: 10.{}.{}.1
    labels:
      version: v1
  - address: 10.{}.{}.2
    ports:
      http: 9090
    labels:
      version: v2
"#,
            port + 1000,
            i % 250,
            (i / 250) % 250,
            i % 250,
            (i / 250) % 250
        ),
        12 => write!(
            out,
            r#"apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: gw-{i}
  namespace: {ns}
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - "{ns}/www-{i}.example.com"
    tls:
      httpsRedirect: true
  - port:
      number: 443
      name: https
      protocol: HTTPS
    hosts:
    - "{ns}/www-{i}.example.com"
    tls:
      mode: SIMPLE
      credentialName: cert-{i}
"#
        ),
        13 => write!(
            out,
            r#"apiVersion: networking.istio.io/v1alpha3
kind: Sidecar
metadata:
  name: {name}
  namespace: {ns}
spec:
  workloadSelector:
    labels:
      app: {svc}
  ingress:
  - port:
      number: 9080
      protocol: HTTP
      name: http
    defaultEndpoint: 127.0.0.1:8080
  egress:
  - hosts:
    - "./*"
    - "istio-system/*"
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
"#
        ),
        14 => write!(
            out,
            r#"apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: {name}
  namespace: {ns}
spec:
  selector:
    matchLabels:
      app: {svc}
  mtls:
    mode: STRICT
  portLevelMtls:
    {port}:
      mode: PERMISSIVE
"#
        ),
        15 | 16 => write!(
            out,
            r#"apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: {name}
  namespace: {ns}
spec:
  selector:
    matchLabels:
      app: {svc}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/{ns}/sa/frontend"]
    - source:
        ipBlocks: ["10.{}.0.0/16"]
    to:
    - operation:
        methods: ["GET", "POST"]
        paths: ["/api/*"]
        ports: ["{port}"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.example.com"]
"#,
            i % 250
        ),
        17 => write!(
            out,
            r#"apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata:
  name: {name}
  namespace: {ns}
spec:
  selector:
    matchLabels:
      app: {svc}
  jwtRules:
  - issuer: https://auth-{i}.example.com
    jwksUri: https://auth-{i}.example.com/.well-known/jwks.json
    audiences: [{svc}]
    forwardOriginalToken: true
"#
        ),
        // The mixers: handler, instance, rule, attribute manifest in turn.
        _ => match (i / 20) % 4 {
            0 => write!(
                out,
                r#"apiVersion: config.istio.io/v1alpha2
kind: handler
metadata:
  name: {name}
  namespace: {ns}
spec:
  compiledAdapter: prometheus
  params:
    metrics:
    - name: requests_{i}
      instance_name: requestcount.instance.{ns}
      kind: COUNTER
      label_names: [reporter, source, destination]
"#
            ),
            1 => write!(
                out,
                r#"apiVersion: config.istio.io/v1alpha2
kind: instance
metadata:
  name: {name}
  namespace: {ns}
spec:
  compiledTemplate: metric
  params:
    value: "1"
    dimensions:
      source: source.workload.name | "unknown"
      destination: destination.service.host | "unknown"
"#
            ),
            2 => write!(
                out,
                r#"apiVersion: config.istio.io/v1alpha2
kind: rule
metadata:
  name: {name}
  namespace: {ns}
spec:
  match: context.protocol == "http" && destination.service.host == "{host}"
  actions:
  - handler: r-{}
    instances: [r-{}]
"#,
                i.saturating_sub(40),
                i.saturating_sub(20)
            ),
            _ => write!(
                out,
                r#"apiVersion: config.istio.io/v1alpha2
kind: attributemanifest
metadata:
  name: {name}
  namespace: {ns}
spec:
  name: proxy-{i}
  attributes:
    source.ip:
      valueType: IP_ADDRESS
    request.headers:
      valueType: STRING_MAP
    request.size:
      valueType: INT64
    response.duration:
      valueType: DURATION
"#
            ),
        },
    };
    out.push_str("---\n");
}

/// 10,000 documents of every kind as one multi-document YAML stream.
fn corpus() -> String {
    let mut out = String::with_capacity(RESOURCES * 900);
    for i in 0..RESOURCES {
        document(&mut out, i);
    }
    out
}

fn bench(c: &mut Criterion) {
    let text = corpus();
    let opts = ParseOptions::default();
    let set = parse_document_set("bench.yaml", &text, &opts);
    let errors: Vec<String> = set.errors().take(5).map(ToString::to_string).collect();
    assert!(
        errors.is_empty(),
        "the bench corpus must be valid: {errors:#?}"
    );
    assert_eq!(set.accepted.len(), RESOURCES);

    let mut group = c.benchmark_group("mesh-model");
    group.throughput(Throughput::Elements(RESOURCES as u64));
    group.bench_function("parse_document_set/10k", |b| {
        b.iter(|| parse_document_set("bench.yaml", black_box(&text), &opts))
    });
    // Baseline in the same run: a generic YAML parser reading the same documents
    // into an untyped tree, with no typing and no validation.
    group.bench_function("baseline_yaml_to_value/10k", |b| {
        b.iter(|| {
            for (_, doc) in mesh_model::parse::split_documents(black_box(&text)) {
                let value: serde_norway::Value =
                    serde_norway::from_str(doc).unwrap_or(serde_norway::Value::Null);
                black_box(value);
            }
        })
    });
    let refs: Vec<&Resource> = set.accepted.iter().collect();
    group.bench_function("analyze/10k", |b| b.iter(|| analyze(black_box(&refs))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
