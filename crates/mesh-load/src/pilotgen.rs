//! Generated mesh configuration for pilot: N services of E endpoints each.
//!
//! - Every service is a ServiceEntry (`svc<i>.ns<i mod namespaces>.svc.cluster.local`,
//!   STATIC resolution, one HTTP port 8080) whose endpoints alternate `version: v1`
//!   and `version: v2`;
//! - every `routed_every`-th service also has a DestinationRule with subsets v1 and
//!   v2 and a VirtualService splitting traffic between them (so its clusters are the
//!   default one plus one per subset);
//! - service 0 lives alone in `changing.yaml`, which the endpoint-change scenario
//!   rewrites with new endpoint addresses ([`write_endpoint_change`]);
//! - `extra.yaml` holds one more service, replaced round after round by the
//!   full-change scenario ([`write_full_change`]): a new host on the shared port
//!   changes every proxy's clusters, listeners and the shared route configuration.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

/// The port every generated service listens on.
pub const PORT: u16 = 8080;

/// The size and shape of a generated mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshShape {
    /// Services.
    pub services: usize,
    /// Endpoints per service.
    pub endpoints: usize,
    /// Namespaces the services spread over.
    pub namespaces: usize,
    /// Every n-th service has a DestinationRule and a VirtualService (0: none).
    pub routed_every: usize,
}

/// The generated files.
#[derive(Debug, Clone)]
pub struct MeshFiles {
    /// Service 0, rewritten by the endpoint change.
    pub changing: PathBuf,
    /// The extra service, replaced by the full change.
    pub extra: PathBuf,
    /// Every file written.
    pub all: Vec<PathBuf>,
}

/// Namespace of service `i`.
pub fn namespace(i: usize, shape: &MeshShape) -> String {
    format!("ns{}", i % shape.namespaces.max(1))
}

/// Host of service `i`.
pub fn host(i: usize, shape: &MeshShape) -> String {
    format!("svc{i}.{}.svc.cluster.local", namespace(i, shape))
}

/// Hosts of every service, in index order.
pub fn hosts(shape: &MeshShape) -> Vec<String> {
    (0..shape.services).map(|i| host(i, shape)).collect()
}

/// Address of endpoint `j` of service `i` at endpoint revision `rev` (0 at start).
pub fn endpoint_address(i: usize, j: usize, rev: usize) -> String {
    if rev == 0 {
        format!("10.{}.{}.{}", (i >> 8) & 0xff, i & 0xff, j % 250 + 1)
    } else {
        format!(
            "172.{}.{}.{}",
            16 + (rev >> 8) % 16,
            rev & 0xff,
            j % 250 + 1
        )
    }
}

/// The ServiceEntry of service `i` (named `name`), endpoints at revision `rev`.
pub fn service_entry(name: &str, i: usize, shape: &MeshShape, rev: usize) -> String {
    let ns = namespace(i, shape);
    let mut s = format!(
        "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: {name}
  namespace: {ns}
spec:
  hosts: [{name}.{ns}.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: {PORT}
    name: http
    protocol: HTTP
  endpoints:
"
    );
    for j in 0..shape.endpoints {
        let _ = write!(
            s,
            "  - address: {}\n    labels: {{app: {name}, version: v{}}}\n",
            endpoint_address(i, j, rev),
            j % 2 + 1
        );
    }
    s.push_str("---\n");
    s
}

/// The DestinationRule and VirtualService of service `i`.
pub fn routing(i: usize, shape: &MeshShape) -> String {
    let ns = namespace(i, shape);
    let host = host(i, shape);
    format!(
        "apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: svc{i}
  namespace: {ns}
spec:
  host: {host}
  trafficPolicy:
    connectionPool:
      tcp: {{maxConnections: 100}}
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
    - uri: {{prefix: /canary}}
    route:
    - destination: {{host: {host}, subset: v2}}
  - route:
    - destination: {{host: {host}, subset: v1}}
      weight: 90
    - destination: {{host: {host}, subset: v2}}
      weight: 10
    timeout: 3s
    retries: {{attempts: 2, perTryTimeout: 1s}}
---
"
    )
}

fn is_routed(i: usize, shape: &MeshShape) -> bool {
    shape.routed_every > 0 && i.is_multiple_of(shape.routed_every)
}

/// Service `i`'s YAML (its ServiceEntry and, when routed, its rules).
pub fn service(i: usize, shape: &MeshShape, rev: usize) -> String {
    let mut s = service_entry(&format!("svc{i}"), i, shape, rev);
    if is_routed(i, shape) {
        s.push_str(&routing(i, shape));
    }
    s
}

/// Writes the mesh into `dir`, 100 services a file.
pub fn write(dir: &Path, shape: &MeshShape) -> std::io::Result<MeshFiles> {
    std::fs::create_dir_all(dir)?;
    let mut all = Vec::new();
    let changing = dir.join("changing.yaml");
    std::fs::write(&changing, service(0, shape, 0))?;
    all.push(changing.clone());
    for (f, start) in (1..shape.services.max(1)).step_by(100).enumerate() {
        let mut text = String::new();
        for i in start..(start + 100).min(shape.services) {
            text.push_str(&service(i, shape, 0));
        }
        let path = dir.join(format!("services-{f:04}.yaml"));
        std::fs::write(&path, text)?;
        all.push(path);
    }
    let extra = dir.join("extra.yaml");
    write_full_change(&extra, shape, 0)?;
    all.push(extra.clone());
    Ok(MeshFiles {
        changing,
        extra,
        all,
    })
}

/// Rewrites service 0 with endpoints at revision `rev`.
pub fn write_endpoint_change(
    files: &MeshFiles,
    shape: &MeshShape,
    rev: usize,
) -> std::io::Result<()> {
    std::fs::write(&files.changing, service(0, shape, rev))
}

/// Replaces the extra service with `extra<round>`.
pub fn write_full_change(path: &Path, shape: &MeshShape, round: usize) -> std::io::Result<()> {
    std::fs::write(path, service_entry(&format!("extra{round}"), 0, shape, 0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SHAPE: MeshShape = MeshShape {
        services: 250,
        endpoints: 3,
        namespaces: 4,
        routed_every: 5,
    };

    #[test]
    fn services_have_their_endpoints_and_some_have_routing() {
        let s = service(5, &SHAPE, 0);
        assert!(s.contains("host: svc5.ns1.svc.cluster.local"));
        assert_eq!(s.matches("  - address: ").count(), 3);
        assert!(s.contains("kind: VirtualService") && s.contains("kind: DestinationRule"));
        assert!(!service(6, &SHAPE, 0).contains("VirtualService"));
        assert!(s.contains("address: 10.0.5.1"));
        // New revisions move every address.
        let moved = service(5, &SHAPE, 7);
        assert!(!moved.contains("10.0.5."));
        assert!(moved.contains("address: 172.16.7.3"));
    }

    #[test]
    fn tree_holds_every_service_once() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path(), &SHAPE).unwrap();
        let text: String = files
            .all
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        assert_eq!(
            text.matches("kind: ServiceEntry").count(),
            251,
            "250 + extra"
        );
        assert_eq!(text.matches("kind: VirtualService").count(), 50);
        assert_eq!(hosts(&SHAPE).len(), 250);
        for i in [0, 1, 99, 100, 101, 249] {
            assert!(
                text.contains(&format!("hosts: [{}]", host(i, &SHAPE))),
                "{i}"
            );
        }
        write_full_change(&files.extra, &SHAPE, 3).unwrap();
        let extra = std::fs::read_to_string(&files.extra).unwrap();
        assert!(extra.contains("name: extra3"));
        write_endpoint_change(&files, &SHAPE, 2).unwrap();
        let changing = std::fs::read_to_string(&files.changing).unwrap();
        assert!(changing.contains("172.16.2.1"));
    }

    #[test]
    fn generated_yaml_parses_and_validates() {
        // The same reader galley uses.
        let text = format!("{}{}", service(0, &SHAPE, 0), service(1, &SHAPE, 3));
        let set = mesh_model::parse_document_set("x.yaml", &text, &Default::default());
        assert!(set.rejected.is_empty(), "{:?}", set.rejected);
        assert_eq!(
            set.accepted.len(),
            4,
            "svc0: entry, rule, routes; svc1: entry"
        );
    }
}
