//! Generated configuration: realistic mixes of Istio resources at any scale.

use std::{fmt::Write as _, path::PathBuf};

use clap::Args;

/// `mesh-load gen` flags.
#[derive(Debug, Clone, Args)]
pub struct GenArgs {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of resources (about; rounded to whole services).
    #[arg(long, default_value_t = 10_000)]
    pub resources: usize,
    /// Services per file.
    #[arg(long, default_value_t = 50)]
    pub per_file: usize,
}

/// Resources generated per service.
pub const PER_SERVICE: usize = 5;

/// The YAML of one service: a ServiceEntry, a DestinationRule with subsets, a
/// VirtualService splitting between them, an AuthorizationPolicy and a
/// PeerAuthentication.
pub fn service_yaml(i: usize, revision: usize) -> String {
    let ns = format!("ns{}", i % 20);
    let host = format!("svc{i}.{ns}.svc.cluster.local");
    let mut s = String::with_capacity(2048);
    let _ = write!(
        s,
        "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: svc{i}
  namespace: {ns}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: 8080
    name: http
    protocol: HTTP
  endpoints:
  - address: 10.{a}.{b}.1
    labels: {{app: svc{i}, version: v1}}
  - address: 10.{a}.{b}.2
    labels: {{app: svc{i}, version: v2}}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: svc{i}
  namespace: {ns}
spec:
  host: {host}
  trafficPolicy:
    connectionPool:
      tcp: {{maxConnections: 100}}
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 30s
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: svc{i}
  namespace: {ns}
spec:
  hosts: [{host}]
  http:
  - match:
    - uri: {{prefix: /api}}
    route:
    - destination: {{host: {host}, subset: v1}}
      weight: {w1}
    - destination: {{host: {host}, subset: v2}}
      weight: {w2}
    timeout: 3s
    retries: {{attempts: 2, perTryTimeout: 1s}}
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: svc{i}
  namespace: {ns}
spec:
  selector:
    matchLabels: {{app: svc{i}}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/{ns}/sa/client{i}]
    to:
    - operation:
        methods: [GET, POST]
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: svc{i}
  namespace: {ns}
spec:
  selector:
    matchLabels: {{app: svc{i}}}
  mtls: {{mode: STRICT}}
---
",
        a = (i / 250) % 250,
        b = i % 250,
        w1 = 100 - (revision % 100),
        w2 = revision % 100,
    );
    s
}

/// Writes `resources` resources into `out`, `per_file` services a file; returns the
/// files written.
pub fn write_tree(
    out: &std::path::Path,
    resources: usize,
    per_file: usize,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let services = resources.div_ceil(PER_SERVICE);
    let per_file = per_file.max(1);
    let mut files = Vec::new();
    for (f, start) in (0..services).step_by(per_file).enumerate() {
        let mut text = String::new();
        for i in start..(start + per_file).min(services) {
            text.push_str(&service_yaml(i, 0));
        }
        let path = out.join(format!("services-{f:04}.yaml"));
        std::fs::write(&path, text)?;
        files.push(path);
    }
    Ok(files)
}

/// Runs `mesh-load gen`.
pub fn run(args: &GenArgs) -> anyhow::Result<()> {
    let files = write_tree(&args.out, args.resources, args.per_file)?;
    println!("wrote {} file(s) to {}", files.len(), args.out.display());
    Ok(())
}
