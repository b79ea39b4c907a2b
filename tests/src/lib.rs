//! Support for Dromon's end-to-end tests: locate and start the real binaries, wait
//! for their readiness, read their HTTP endpoints, and speak xDS to them.

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod ads;
pub mod citadel;
pub mod prometheus;

/// The repository's root.
pub fn repo() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python with the test clients (grpcio, xds-protos): `DROMON_PYTHON`, or the
/// repository's `.venv` that `scripts/install-test-deps.sh` makes.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("DROMON_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} missing: run scripts/install-test-deps.sh",
        venv.display()
    );
    venv
}

/// Path of a workspace binary built next to the running executable (a test in
/// `target/<profile>/deps/`, or a tool in `target/<profile>/`).
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("cannot locate the target directory")?;
    for candidate in [Some(dir), dir.parent()].into_iter().flatten() {
        let path = candidate.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!(
        "{name} not built next to {}; build the workspace binaries first",
        exe.display()
    )
}

/// A port free on loopback right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A child process killed when dropped.
pub struct ChildGuard {
    child: Option<Child>,
    /// What it is, for messages.
    pub name: String,
    /// The file its stderr (its log) goes to.
    pub log: std::path::PathBuf,
}

impl ChildGuard {
    /// Starts workspace binary `bin` with `args`; stderr goes to a file in the temp
    /// dir for debugging.
    pub fn spawn(bin: &str, args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn_path(&bin_path(bin)?, args)
    }

    /// Starts workspace binary `bin` with `args` and extra environment variables.
    pub fn spawn_with_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::spawn_inner(&bin_path(bin)?, args, env)
    }

    /// Starts the program at `path` with `args`.
    pub fn spawn_path(path: &std::path::Path, args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn_inner(path, args, &[])
    }

    fn spawn_inner(
        path: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let bin = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log = std::env::temp_dir().join(format!(
            "dromon-e2e-{bin}-{}-{}.log",
            std::process::id(),
            free_port()
        ));
        let stderr = std::fs::File::create(&log)?;
        let child = Command::new(path)
            .args(args)
            .env("DROMON_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        Ok(Self {
            child: Some(child),
            name: bin.to_string(),
            log,
        })
    }

    /// Waits until the process's log contains `text`; fails with the log after `timeout`.
    pub async fn await_log(&self, text: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(text) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{}'s log never said {text:?}:\n{log}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a process on ports chosen before it binds them, and waits until `ready`
/// holds. Another process may take such a port first; when the log says a port is
/// already in use, `spawn` is called again (with the attempt number, 0 to 2) to
/// choose others. Panics with the log if the process is not ready `within`, and
/// with each attempt's last log line if every attempt found a port taken.
pub async fn start_ready<T, Fut>(
    within: Duration,
    mut spawn: impl FnMut(u32) -> anyhow::Result<(ChildGuard, T)>,
    ready: impl Fn(T) -> Fut,
) -> (ChildGuard, T)
where
    T: Copy + std::fmt::Debug,
    Fut: std::future::Future<Output = bool>,
{
    let mut taken = Vec::new();
    for attempt in 0..3 {
        let (child, at) = spawn(attempt).expect("the process starts");
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if ready(at).await {
                return (child, at);
            }
            let log = std::fs::read_to_string(&child.log).unwrap_or_default();
            if log.contains("already in use") {
                taken.push(format!(
                    "{at:?}: {}",
                    log.lines().last().unwrap_or_default()
                ));
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} on {at:?} not ready within {within:?}:\n{log}",
                child.name
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    panic!("every attempt found a port taken: {taken:?}");
}

/// Polls `check` every 50 ms until it gives `Some`, and returns that; panics
/// naming `what` once `within` has passed (for tests waiting on a controller).
pub async fn eventually<T, Fut>(what: &str, within: Duration, mut check: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// As [`eventually`], for a condition that holds or not.
pub async fn until<Fut>(what: &str, within: Duration, mut check: impl FnMut() -> Fut)
where
    Fut: std::future::Future<Output = bool>,
{
    eventually(what, within, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// A plaintext gRPC channel to `addr`, connected.
pub async fn grpc_channel(addr: SocketAddr) -> anyhow::Result<tonic::transport::Channel> {
    tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))
}

/// A minimal HTTP/1.1 GET: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// GETs a JSON document.
pub async fn http_json(addr: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = http_get(addr, path).await?;
    if status != 200 {
        bail!("GET {path}: HTTP {status}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// Polls `GET path` until it answers 200, or fails after `timeout`.
pub async fn wait_http_ok(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((200, _)) = http_get(addr, path).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("http://{addr}{path} not OK within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A loopback address on a free port.
pub fn local_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A galley process serving a configuration directory.
pub struct GalleyProcess {
    /// The process.
    pub child: ChildGuard,
    /// Its MCP (plaintext) address.
    pub mcp: SocketAddr,
    /// Its monitoring address.
    pub monitoring: SocketAddr,
}

/// Starts galley on `config_dir` with free ports and waits until it is ready.
pub async fn start_galley(config_dir: &std::path::Path) -> anyhow::Result<GalleyProcess> {
    start_galley_at(&bin_path("galley")?, config_dir, Duration::from_secs(30)).await
}

/// As [`start_galley`], the galley binary at `bin`, ready within `timeout`.
pub async fn start_galley_at(
    bin: &std::path::Path,
    config_dir: &std::path::Path,
    timeout: Duration,
) -> anyhow::Result<GalleyProcess> {
    let (mcp, monitoring) = (local_addr(), local_addr());
    let dir = config_dir.display().to_string();
    let (mcp_s, monitoring_s) = (mcp.to_string(), monitoring.to_string());
    let child = ChildGuard::spawn_path(
        bin,
        &[
            "--config-dir",
            &dir,
            "--mcp-addr",
            &mcp_s,
            "--monitoring-addr",
            &monitoring_s,
        ],
    )?;
    wait_http_ok(monitoring, "/ready", timeout)
        .await
        .context("galley not ready")?;
    Ok(GalleyProcess {
        child,
        mcp,
        monitoring,
    })
}
