//! The galley fan-out scenario.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use dromon_e2e::{ChildGuard, free_port, wait_http_ok};
use mesh_api::envoy::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{configgen, proc, stats};

/// The collections a pilot-like subscriber follows.
const COLLECTIONS: &[&str] = &[
    "networking.istio.io/v1alpha3/VirtualService",
    "networking.istio.io/v1alpha3/DestinationRule",
    "networking.istio.io/v1alpha3/Gateway",
    "networking.istio.io/v1alpha3/ServiceEntry",
    "networking.istio.io/v1alpha3/Sidecar",
    "security.istio.io/v1beta1/PeerAuthentication",
    "security.istio.io/v1beta1/AuthorizationPolicy",
    "security.istio.io/v1beta1/RequestAuthentication",
];
const VS: &str = "networking.istio.io/v1alpha3/VirtualService";

/// `mesh-load galley` flags.
#[derive(Debug, Clone, Args)]
pub struct GalleyArgs {
    /// The galley binary (default: next to this one).
    #[arg(long)]
    pub galley_bin: Option<PathBuf>,
    /// Resources in the generated configuration.
    #[arg(long, default_value_t = 10_000)]
    pub resources: usize,
    /// Concurrent MCP subscribers.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Changes to fan out.
    #[arg(long, default_value_t = 100)]
    pub rounds: usize,
    /// Subscribe with the delta protocol (as pilot and the mixers do) instead of
    /// state of the world.
    #[arg(long)]
    pub delta: bool,
    /// galley's debounce (quiet and maximum), excluded from the figures when small.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    pub debounce: Duration,
}

struct Event {
    client: usize,
    type_url: String,
    version: String,
    acked_at: Instant,
}

/// The fields of a DiscoveryResponse the load client reads; prost skips the rest
/// (the resources) without decoding them, so the client stays cheap beside the
/// server it measures.
#[derive(Clone, PartialEq, prost::Message)]
struct ResponseHead {
    #[prost(string, tag = "1")]
    version_info: String,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
}

/// The fields of a DeltaDiscoveryResponse the load client reads.
#[derive(Clone, PartialEq, prost::Message)]
struct DeltaHead {
    #[prost(string, tag = "1")]
    system_version_info: String,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
}

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

async fn delta_subscriber(
    endpoint: String,
    id: usize,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint)?
        .connect()
        .await?;
    let mut client = tonic::client::Grpc::new(channel);
    let (tx, rx) = mpsc::channel(64);
    let node = Node {
        id: format!("load-{id}"),
        cluster: "mesh-load".into(),
        ..Node::default()
    };
    for t in COLLECTIONS {
        tx.send(DeltaDiscoveryRequest {
            type_url: (*t).into(),
            node: Some(node.clone()),
            ..Default::default()
        })
        .await?;
    }
    client.ready().await?;
    let codec = tonic_prost::ProstCodec::<DeltaDiscoveryRequest, DeltaHead>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(DELTA_PATH);
    let mut stream = client
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, codec)
        .await?
        .into_inner();
    while let Some(resp) = stream.message().await? {
        tx.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })
        .await?;
        let _ = events.send(Event {
            client: id,
            type_url: resp.type_url,
            version: resp.system_version_info,
            acked_at: Instant::now(),
        });
    }
    Ok(())
}

async fn subscriber(
    endpoint: String,
    id: usize,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint)?
        .connect()
        .await?;
    let mut client = tonic::client::Grpc::new(channel);
    let (tx, rx) = mpsc::channel(64);
    let node = Node {
        id: format!("load-{id}"),
        cluster: "mesh-load".into(),
        ..Node::default()
    };
    for t in COLLECTIONS {
        tx.send(DiscoveryRequest {
            type_url: (*t).into(),
            node: Some(node.clone()),
            ..Default::default()
        })
        .await?;
    }
    client.ready().await?;
    let codec = tonic_prost::ProstCodec::<DiscoveryRequest, ResponseHead>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(SOTW_PATH);
    let mut stream = client
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, codec)
        .await?
        .into_inner();
    while let Some(resp) = stream.message().await? {
        tx.send(DiscoveryRequest {
            type_url: resp.type_url.clone(),
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })
        .await?;
        let _ = events.send(Event {
            client: id,
            type_url: resp.type_url,
            version: resp.version_info,
            acked_at: Instant::now(),
        });
    }
    Ok(())
}

/// Runs the scenario and prints its figures.
pub async fn run(args: GalleyArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let files = configgen::write_tree(dir.path(), args.resources, 50)?;
    let first_file = files.first().context("no files generated")?.clone();
    let mcp = format!("127.0.0.1:{}", free_port());
    let monitoring: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let debounce = format!("{}ms", args.debounce.as_millis().max(1));
    let bin = match &args.galley_bin {
        Some(b) => b.display().to_string(),
        None => "galley".to_string(),
    };
    let config_dir = dir.path().display().to_string();
    let galley_args = [
        "--config-dir",
        config_dir.as_str(),
        "--mcp-addr",
        mcp.as_str(),
        "--monitoring-addr",
        &monitoring.to_string(),
        "--debounce",
        debounce.as_str(),
        "--debounce-max",
        debounce.as_str(),
        "--log-level",
        "warn",
    ];
    let started = Instant::now();
    let child = match &args.galley_bin {
        Some(path) => ChildGuard::spawn_path(path, &galley_args)?,
        None => ChildGuard::spawn(&bin, &galley_args)?,
    };
    wait_http_ok(monitoring, "/ready", Duration::from_secs(60)).await?;
    let load_time = started.elapsed();
    let pid = child.id();
    let (rss_idle, _) = proc::memory_kib(pid).unwrap_or_default();

    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let connect = Instant::now();
    let mut subscribers = tokio::task::JoinSet::new();
    for id in 0..args.clients {
        let tx = ev_tx.clone();
        let endpoint = format!("http://{mcp}");
        let delta = args.delta;
        subscribers.spawn(async move {
            let result = if delta {
                delta_subscriber(endpoint, id, tx).await
            } else {
                subscriber(endpoint, id, tx).await
            };
            if let Err(e) = result {
                eprintln!("subscriber {id}: {e:#}");
            }
        });
    }
    // Initial sync: every client gets every collection.
    let mut current: HashMap<(usize, String), String> = HashMap::new();
    let want = args.clients * COLLECTIONS.len();
    while current.len() < want {
        let ev = tokio::time::timeout(Duration::from_secs(60), ev_rx.recv())
            .await
            .context("initial sync timed out")?
            .context("subscribers ended")?;
        current.insert((ev.client, ev.type_url), ev.version);
    }
    let sync_time = connect.elapsed();
    let (rss_loaded, _) = proc::memory_kib(pid).unwrap_or_default();

    let cpu_before = proc::cpu_seconds(pid).unwrap_or_default();
    let mut samples = Vec::with_capacity(args.rounds);
    let base = std::fs::read_to_string(&first_file)?;
    for round in 1..=args.rounds {
        // Change one VirtualService's weights: one collection changes.
        let text = base.replacen(
            &configgen::service_yaml(0, 0),
            &configgen::service_yaml(0, round % 99 + 1),
            1,
        );
        let previous: Vec<String> = (0..args.clients)
            .map(|c| current[&(c, VS.to_string())].clone())
            .collect();
        std::fs::write(&first_file, &text)?;
        let written = Instant::now();
        let mut pending: std::collections::HashSet<usize> = (0..args.clients).collect();
        let mut last = written;
        while !pending.is_empty() {
            let ev = tokio::time::timeout(Duration::from_secs(30), ev_rx.recv())
                .await
                .with_context(|| {
                    format!(
                        "round {round}: {} subscriber(s) never got the change",
                        pending.len()
                    )
                })?
                .context("subscribers ended")?;
            if ev.type_url == VS && ev.version != previous[ev.client] && pending.remove(&ev.client)
            {
                last = last.max(ev.acked_at);
            }
            current.insert((ev.client, ev.type_url), ev.version);
        }
        samples.push(last.duration_since(written));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = proc::cpu_seconds(pid).unwrap_or_default() - cpu_before;
    let (rss, hwm) = proc::memory_kib(pid).unwrap_or_default();
    let summary = stats::summarize(&samples).context("no samples")?;
    if summary.count != args.rounds {
        bail!("lost rounds");
    }
    let protocol = if args.delta {
        "delta"
    } else {
        "state-of-the-world"
    };
    println!(
        "galley fan-out: {} resources, {} {protocol} subscribers x {} collections, {} rounds, debounce {}",
        args.resources,
        args.clients,
        COLLECTIONS.len(),
        args.rounds,
        debounce
    );
    println!(
        "  load + first snapshot (process start to /ready): {:.0} ms",
        load_time.as_secs_f64() * 1000.0
    );
    println!(
        "  initial sync of all subscribers:                  {:.0} ms",
        sync_time.as_secs_f64() * 1000.0
    );
    println!("  file write -> last subscriber ACK:               {summary}");
    println!(
        "  galley CPU over the rounds: {cpu:.2} s ({:.2} ms per change)",
        cpu * 1000.0 / args.rounds as f64
    );
    println!(
        "  galley RSS: {:.1} MiB loaded with no subscriber, {:.1} MiB after initial sync, {:.1} MiB now, {:.1} MiB peak",
        rss_idle as f64 / 1024.0,
        rss_loaded as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    subscribers.abort_all();
    drop(child);
    Ok(())
}
