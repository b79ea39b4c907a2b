//! `mesh-load injector`: AdmissionReview load against a real sidecar-injector
//! over HTTPS.
//!
//! Starts the injector binary with a self-signed certificate and its built-in
//! configuration, opens `--connections` TLS connections (HTTP/1.1 keep-alive, as
//! many webhook callers use, or HTTP/2 with `--http2`), and posts pod-creation
//! reviews: a closed loop for throughput, then a fixed rate for latency. Every
//! answer is checked to be an allowed review with a patch. Reviews are encoded
//! up front (1,000 of them, each its own uid), so the load's own CPU stays low.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::{Request, client::conn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::sync::Mutex;

use crate::drive::Unit;

/// Flags of `mesh-load injector`.
#[derive(Debug, Clone, Args)]
pub struct InjectorArgs {
    /// Size of each pod's JSON in bytes (0: a small pod of one container).
    #[arg(long, default_value_t = 0)]
    pub pod_bytes: usize,
    /// TLS connections to the webhook.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// HTTP/2 (multiplexed) instead of HTTP/1.1 keep-alive connections.
    #[arg(long)]
    pub http2: bool,
    /// Reviews in flight in the throughput phase.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Length of the throughput phase.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Reviews per second in the latency phase (0 skips it).
    #[arg(long, default_value_t = 2_500)]
    pub rate: u64,
    /// Length of the latency phase.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub rate_duration: Duration,
}

enum Sender {
    Http1(Mutex<conn::http1::SendRequest<Full<Bytes>>>),
    Http2(conn::http2::SendRequest<Full<Bytes>>),
}

struct Reviews {
    senders: Vec<Sender>,
    bodies: Vec<Bytes>,
    authority: String,
}

impl Reviews {
    /// Posts review `i`; the answer's body.
    async fn post(&self, i: usize) -> anyhow::Result<Bytes> {
        let body = self.bodies[i % self.bodies.len()].clone();
        let request = Request::post("/inject")
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let response = match &self.senders[i % self.senders.len()] {
            Sender::Http1(sender) => {
                let mut sender = sender.lock().await;
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Sender::Http2(sender) => {
                let mut sender = sender.clone();
                sender.ready().await?;
                sender.send_request(request).await?
            }
        };
        anyhow::ensure!(response.status().is_success(), "HTTP {}", response.status());
        Ok(response.into_body().collect().await?.to_bytes())
    }
}

impl Unit for Reviews {
    async fn one(&self, i: usize) -> bool {
        // An injected pod's answer carries a patch; anything else is an error.
        match self.post(i).await {
            Ok(body) => body.windows(9).any(|w| w == b"\"patch\":\""),
            Err(_) => false,
        }
    }
}

async fn connect(
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    http2: bool,
) -> anyhow::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = tls
        .connect(ServerName::try_from("localhost")?.to_owned(), tcp)
        .await?;
    let io = TokioIo::new(stream);
    if http2 {
        let (sender, connection) = conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(connection);
        Ok(Sender::Http2(sender))
    } else {
        let (sender, connection) = conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        Ok(Sender::Http1(Mutex::new(sender)))
    }
}

/// Runs the scenario and prints the figures.
pub async fn run(args: InjectorArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])?.self_signed(&key)?;
    std::fs::write(tmp.path().join("tls.crt"), cert.pem())?;
    std::fs::write(tmp.path().join("tls.key"), key.serialize_pem())?;
    let addr = || -> anyhow::Result<SocketAddr> {
        Ok(format!("127.0.0.1:{}", dromon_e2e::free_port()).parse()?)
    };
    let (webhook, monitoring) = (addr()?, addr()?);
    let injector = dromon_e2e::ChildGuard::spawn(
        "sidecar-injector",
        &[
            "--webhook-addr",
            &webhook.to_string(),
            "--monitoring-addr",
            &monitoring.to_string(),
            "--tls-dir",
            &tmp.path().display().to_string(),
            "--log-level",
            "warn",
        ],
    )?;
    dromon_e2e::wait_http_ok(monitoring, "/ready", Duration::from_secs(30)).await?;
    let pid = injector.id();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(cert.der().to_vec()))?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![if args.http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut senders = Vec::new();
    for _ in 0..args.connections.max(1) {
        senders.push(connect(webhook, &tls, args.http2).await?);
    }
    let pod = sidecar_injector::samples::pod_of_size(args.pod_bytes);
    let bodies: Vec<Bytes> = (0..1000)
        .map(|i| {
            let uid = format!("00000000-0000-4000-8000-{i:012}");
            Bytes::from(
                serde_json::to_vec(&sidecar_injector::samples::review(&pod, &uid))
                    .unwrap_or_default(),
            )
        })
        .collect();
    let work = Arc::new(Reviews {
        senders,
        bodies,
        authority: format!("localhost:{}", webhook.port()),
    });
    let first = work.post(0).await.context("first review")?;
    let answer: serde_json::Value = serde_json::from_slice(&first)?;
    anyhow::ensure!(
        answer["response"]["allowed"] == true && answer["response"]["patch"].is_string(),
        "the first review was not injected: {answer}"
    );
    println!(
        "pod: {} bytes of JSON ({} containers), review {} bytes, answer {} bytes; {} {} connections",
        pod.to_string().len(),
        pod["spec"]["containers"].as_array().map_or(0, Vec::len),
        work.bodies[0].len(),
        first.len(),
        args.connections.max(1),
        if args.http2 { "HTTP/2" } else { "HTTP/1.1" },
    );

    crate::drive::run_phases(
        &work,
        &crate::drive::Phases {
            server: "sidecar-injector",
            pid,
            unit: "review",
            concurrency: args.concurrency,
            duration: args.duration,
            rate: args.rate,
            rate_duration: args.rate_duration,
        },
    )
    .await;
    drop(injector);
    Ok(())
}
