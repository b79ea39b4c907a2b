//! `mesh-load citadel`: CreateCertificate load against a real citadel process.
//!
//! Starts citadel on a temporary data directory (self-signed root, SQLite ledger
//! unless `--ledger` names another), mints tokens for a set of service accounts,
//! prepares a pool of ECDSA P-256 CSRs, then measures two phases over gRPC + TLS:
//!
//! - throughput: `--concurrency` requests always in flight for `--duration`;
//! - latency at a fixed rate: requests sent on a schedule (`--rate` per second),
//!   each timed from its scheduled start, so a stall shows as latency.
//!
//! Beside them, in the same run and process, the ceiling: raw ECDSA P-256
//! signatures per second on one core with ring, and `Authority::issue` per second
//! in-process (parse, verify, sign, encode, no network, no ledger).

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use mesh_api::ca::v1::{
    IstioCertificateRequest, istio_certificate_service_client::IstioCertificateServiceClient,
};
use mesh_tls::{ClientCredentials, ServerIdentity};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use tonic::transport::Channel;

use crate::stats::summarize;

/// Flags of `mesh-load citadel`.
#[derive(Debug, Clone, Args)]
pub struct CitadelArgs {
    /// The citadel binary (default: next to mesh-load).
    #[arg(long)]
    pub citadel: Option<PathBuf>,
    /// Ledger URL for citadel (default: SQLite in its data directory).
    #[arg(long)]
    pub ledger: Option<String>,
    /// Distinct CSRs prepared (each request picks one; every request gets a new certificate).
    #[arg(long, default_value_t = 2000)]
    pub csrs: usize,
    /// Service accounts (one token each).
    #[arg(long, default_value_t = 100)]
    pub identities: usize,
    /// HTTP/2 connections to citadel.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests in flight in the throughput phase.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Length of the throughput phase.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Requests per second in the latency phase (0 skips it).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Length of the latency phase.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub rate_duration: Duration,
}

struct Workload {
    clients: Vec<IstioCertificateServiceClient<Channel>>,
    csrs: Vec<String>,
    tokens: Vec<String>,
}

impl crate::drive::Unit for Workload {
    async fn one(&self, i: usize) -> bool {
        self.create(i).await.is_ok()
    }
}

impl Workload {
    async fn create(&self, i: usize) -> Result<(), tonic::Status> {
        let mut client = self.clients[i % self.clients.len()].clone();
        let mut req = tonic::Request::new(IstioCertificateRequest {
            csr: self.csrs[i % self.csrs.len()].clone(),
            validity_duration: 0,
            metadata: None,
        });
        let token = &self.tokens[i % self.tokens.len()];
        if let Ok(v) = format!("Bearer {token}").parse() {
            req.metadata_mut().insert("authorization", v);
        }
        let resp = client.create_certificate(req).await?;
        if resp.get_ref().cert_chain.is_empty() {
            return Err(tonic::Status::internal("empty chain"));
        }
        Ok(())
    }
}

/// Runs the scenario and prints the figures.
pub async fn run(args: CitadelArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("citadel");
    let bin = match &args.citadel {
        Some(b) => b.clone(),
        None => dromon_e2e::bin_path("citadel")?,
    };
    let grpc = format!("127.0.0.1:{}", dromon_e2e::free_port());
    let monitoring: std::net::SocketAddr =
        format!("127.0.0.1:{}", dromon_e2e::free_port()).parse()?;
    let mut cmd_args = vec![
        "--grpc-addr".to_string(),
        grpc.clone(),
        "--monitoring-addr".into(),
        monitoring.to_string(),
        "--data-dir".into(),
        data.display().to_string(),
        "--log-level".into(),
        "warn".into(),
    ];
    if let Some(l) = &args.ledger {
        cmd_args.extend(["--ledger".to_string(), l.clone()]);
    }
    let argv: Vec<&str> = cmd_args.iter().map(String::as_str).collect();
    let child = dromon_e2e::ChildGuard::spawn_path(&bin, &argv)?;
    dromon_e2e::wait_http_ok(monitoring, "/ready", Duration::from_secs(30)).await?;
    let pid = child.id();

    let ceiling = tokio::task::spawn_blocking(raw_sign_rate).await??;
    let in_process = tokio::task::spawn_blocking({
        let dir = tmp.path().join("inproc");
        move || issue_rate(&dir)
    })
    .await??;

    let started = Instant::now();
    let csrs = tokio::task::spawn_blocking({
        let n = args.csrs;
        move || make_csrs(n)
    })
    .await??;
    println!(
        "prepared {} P-256 CSRs in {:.2}s",
        csrs.len(),
        started.elapsed().as_secs_f64()
    );
    let mut tokens = Vec::new();
    for i in 0..args.identities.max(1) {
        tokens.push(
            citadel::args::mint_token(&data, "load", &format!("sa-{i}"), Duration::from_secs(3600))
                .map_err(anyhow::Error::msg)?,
        );
    }
    let roots: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(data.join("ca/root-cert.pem"))?.collect::<Result<_, _>>()?;
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        let channel = mesh_tls::channel_with(
            &format!("https://{grpc}"),
            ClientCredentials::RootsOnly(roots.clone()),
            ServerIdentity::TrustDomain("cluster.local".into()),
        )?;
        clients.push(IstioCertificateServiceClient::new(channel));
    }
    let work = Arc::new(Workload {
        clients,
        csrs,
        tokens,
    });
    // Warm up: connections, token cache.
    for i in 0..work.tokens.len().max(work.clients.len()) {
        work.create(i).await.context("warm-up request")?;
    }

    println!(
        "ceiling: raw ECDSA P-256 sign {:.0}/s on one core (ring); Authority::issue in-process {:.0}/s on one core",
        ceiling, in_process
    );

    // Throughput phase.
    let cpu0 = crate::proc::cpu_seconds(pid).unwrap_or_default();
    let crate::drive::Outcome {
        ok,
        errors,
        samples,
        elapsed,
    } = crate::drive::closed_loop(&work, args.concurrency, args.duration).await;
    let cpu = crate::proc::cpu_seconds(pid).unwrap_or_default() - cpu0;
    let rate = ok as f64 / elapsed.as_secs_f64();
    println!(
        "throughput: {ok} certificates in {:.2}s = {rate:.0}/s, {errors} errors, concurrency {}; latency {}",
        elapsed.as_secs_f64(),
        args.concurrency,
        crate::drive::latency(&samples)
    );
    println!(
        "citadel CPU: {cpu:.2}s user+sys = {:.0} µs per certificate",
        cpu / ok.max(1) as f64 * 1e6
    );

    if args.rate > 0 {
        let crate::drive::Outcome {
            ok,
            errors,
            samples,
            ..
        } = crate::drive::open_loop(&work, args.rate, args.rate_duration).await;
        let s = summarize(&samples);
        println!(
            "fixed rate {}/s for {:?}: {ok} ok, {errors} errors; latency {}",
            args.rate,
            args.rate_duration,
            s.map(|s| s.to_string()).unwrap_or_default()
        );
    }
    if let Some((rss, hwm)) = crate::proc::memory_kib(pid) {
        println!(
            "citadel memory: RSS {} MiB, peak {} MiB",
            rss / 1024,
            hwm / 1024
        );
    }
    drop(child);
    Ok(())
}

fn make_csrs(n: usize) -> anyhow::Result<Vec<String>> {
    (0..n.max(1))
        .map(|_| {
            let key = rcgen::KeyPair::generate()?;
            Ok(rcgen::CertificateParams::default()
                .serialize_request(&key)?
                .pem()?)
        })
        .collect()
}

/// ECDSA P-256 signatures per second, one thread, for one second.
fn raw_sign_rate() -> anyhow::Result<f64> {
    use ring::{
        rand::SystemRandom,
        signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair},
    };
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("keygen"))?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| anyhow::anyhow!("key"))?;
    let msg = [0x5a_u8; 400];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        key.sign(&rng, &msg).map_err(|_| anyhow::anyhow!("sign"))?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// `Authority::issue` per second in-process, one thread, for one second.
fn issue_rate(dir: &std::path::Path) -> anyhow::Result<f64> {
    use citadel::ca::{Authority, CaPolicy, CaSource};
    let authority = Authority::open(
        CaSource::SelfSigned(dir.to_path_buf()),
        CaPolicy::default(),
        time::OffsetDateTime::now_utc(),
    )?;
    let caller = "spiffe://cluster.local/ns/load/sa/x".parse()?;
    let csrs = make_csrs(64)?;
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < Duration::from_secs(1) {
        authority.issue(
            &caller,
            &csrs[n % csrs.len()],
            0,
            time::OffsetDateTime::now_utc(),
        )?;
        n += 1;
    }
    if n == 0 {
        bail!("nothing issued");
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}
