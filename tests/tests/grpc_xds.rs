//! A real xDS client nobody here wrote: Python `grpcio`'s built-in xDS resolver
//! dials `xds:///<host>:<port>` for a service defined only in YAML, through pilot,
//! and reaches its backend; changing the VirtualService moves the calls without
//! restarting the client.
//!
//! Needs the Python environment `scripts/install-test-deps.sh` creates (`.venv`
//! with grpcio), or `DROMON_PYTHON` naming a Python that has grpcio.

#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use dromon_e2e::{ChildGuard, free_port, python, repo, wait_http_ok};

const HOST: &str = "echo.test.svc.cluster.local";

/// A Python process killed when dropped, with its stdout lines on a channel.
struct Py {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Py {
    fn spawn(script: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(python())
            .arg(repo().join("tests/xds_client").join(script))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn next_line(&self, timeout: Duration) -> String {
        self.lines.recv_timeout(timeout).unwrap()
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(p1: u16, p2: u16, subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: echo, namespace: test}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7070, name: grpc, protocol: GRPC}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{grpc: {p1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{grpc: {p2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: echo, namespace: test}}
spec:
  host: {HOST}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: echo, namespace: test}}
spec:
  hosts: [{HOST}]
  http:
  - route:
    - destination: {{host: {HOST}, subset: {subset}}}
"
    )
}

/// Reads call results until `want` answers `n` calls in a row.
fn until_consistently(client: &Py, want: &str, n: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut streak = 0;
    while streak < n {
        assert!(
            Instant::now() < deadline,
            "no {n} calls in a row to {want}; saw {seen:?}"
        );
        let line = client.next_line(within);
        streak = if line == want { streak + 1 } else { 0 };
        seen.push(line);
    }
    seen
}

#[tokio::test]
async fn grpcio_xds_client_reaches_backends_and_follows_route_changes() {
    let (p1, p2) = (free_port(), free_port());
    let _v1 = Py::spawn("backend.py", &[&format!("127.0.0.1:{p1}"), "v1"], &[]);
    let _v2 = Py::spawn("backend.py", &[&format!("127.0.0.1:{p2}"), "v2"], &[]);
    assert_eq!(_v1.next_line(Duration::from_secs(20)), "serving");
    assert_eq!(_v2.next_line(Duration::from_secs(20)), "serving");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("echo.yaml");
    std::fs::write(&file, config(p1, p2, "v1")).unwrap();
    let xds: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let monitoring: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _pilot = ChildGuard::spawn(
        "pilot",
        &[
            "--config-dir",
            dir.path().to_str().unwrap(),
            "--xds-addr",
            &xds.to_string(),
            "--monitoring-addr",
            &monitoring.to_string(),
            "--debounce",
            "20ms",
        ],
    )
    .unwrap();
    wait_http_ok(monitoring, "/ready", Duration::from_secs(30))
        .await
        .unwrap();

    let bootstrap = dir.path().join("bootstrap.json");
    std::fs::write(
        &bootstrap,
        serde_json::json!({
            "xds_servers": [{
                "server_uri": xds.to_string(),
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"]
            }],
            "node": {"id": "grpc-e2e", "cluster": "e2e", "locality": {"zone": "a"}}
        })
        .to_string(),
    )
    .unwrap();
    let target = format!("{HOST}:7070");
    let client = Py::spawn(
        "client.py",
        &[&target],
        &[("GRPC_XDS_BOOTSTRAP", bootstrap.to_str().unwrap())],
    );

    let first = until_consistently(&client, "v1", 10, Duration::from_secs(30));
    assert!(
        !first.iter().any(|l| l == "v2"),
        "all calls go to v1 first: {first:?}"
    );

    // Route to v2 instead: the running client follows.
    std::fs::write(&file, config(p1, p2, "v2")).unwrap();
    until_consistently(&client, "v2", 10, Duration::from_secs(30));
}
