//! `meshctl up`: the whole control plane on one host, in one process.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::Args;
use galley::{GalleyConfig, SourceConfig, source::dir::Debounce};

use crate::{ports, sample};

/// `meshctl up` flags.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Directory of configuration YAML to serve (default: the bookinfo sample,
    /// copied to `<data>/config` on first start).
    #[arg(long, env = "DROMON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for state (certificate ledger, quotas, logs) and the sample config.
    #[arg(long, env = "DROMON_DATA", default_value = ".dromon")]
    pub data: PathBuf,
    /// Address every component listens on.
    #[arg(long, env = "DROMON_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Namespace given to resources that name none.
    #[arg(long, default_value = "default")]
    pub default_namespace: String,
}

/// Runs `meshctl up` until `shutdown` fires.
pub async fn up(args: UpArgs, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data).map_err(|e| {
        anyhow::anyhow!("cannot create data directory {}: {e}", args.data.display())
    })?;
    let config_dir = match &args.config {
        Some(dir) => dir.clone(),
        None => sample::materialize(&args.data).map_err(|e| {
            anyhow::anyhow!(
                "cannot write the sample configuration under {}: {e}",
                args.data.display()
            )
        })?,
    };
    let at = |port: u16| SocketAddr::new(args.bind, port);

    let galley = galley::start(
        GalleyConfig {
            source: SourceConfig::Directory {
                path: config_dir.clone(),
                debounce: Debounce::default(),
            },
            mcp_addr: at(ports::GALLEY_MCP),
            monitoring_addr: at(ports::GALLEY_MONITORING),
            default_namespace: args.default_namespace.clone(),
            tls: None,
        },
        shutdown.clone(),
    )
    .await?;

    let pilot = pilot::server::start(
        pilot::server::PilotConfig {
            from: pilot::server::ConfigFrom::Galley(format!("http://{}", galley.mcp_addr)),
            xds_addr: at(ports::PILOT_XDS),
            monitoring_addr: at(ports::PILOT_MONITORING),
            debounce: Duration::from_millis(100),
            debounce_max: Duration::from_secs(10),
            tls: None,
        },
        shutdown.clone(),
    )
    .await?;

    for (name, readiness) in [("galley", &galley.readiness), ("pilot", &pilot.readiness)] {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            ready = tokio::time::timeout(Duration::from_secs(30), readiness.wait()) => {
                if ready.is_err() {
                    eprintln!("warning: {name} is not ready after 30s; see the logs");
                }
            }
        }
    }
    let endpoints: Vec<(&str, String, &str)> = vec![
        (
            "galley",
            galley.mcp_addr.to_string(),
            "MCP over xDS (gRPC, ADS: SotW and delta)",
        ),
        (
            "galley",
            format!("http://{}", galley.monitoring_addr),
            "/metrics /ready /debug/configz /debug/syncz /debug/analyze /debug/errors",
        ),
        (
            "pilot",
            pilot.xds_addr.to_string(),
            "Envoy xDS v3 (ADS: SotW and delta), proxyless gRPC",
        ),
        (
            "pilot",
            format!("http://{}", pilot.monitoring_addr),
            "/metrics /ready /debug/syncz /debug/configz /debug/registryz /debug/config_dump",
        ),
    ];
    println!("Dromon control plane is up.");
    println!("  config: {}", config_dir.display());
    println!("  data:   {}", args.data.display());
    println!();
    for (component, endpoint, what) in [("component", "endpoint".to_string(), "what")]
        .into_iter()
        .chain(endpoints)
    {
        println!("  {component:<18} {endpoint:<26} {what}");
    }
    println!();
    println!(
        "Edit files under {} and galley publishes them. Ctrl-C stops.",
        config_dir.display()
    );

    // Any component stopping (on error, or on shutdown) stops the others.
    let stop_all = |result| {
        shutdown.cancel();
        result
    };
    let (g, p) = tokio::join!(
        async { stop_all(galley.wait().await.map_err(|e| e.to_string())) },
        async { stop_all(pilot.wait().await.map_err(|e| e.to_string())) }
    );
    g.map_err(|e| anyhow::anyhow!("galley: {e}"))?;
    p.map_err(|e| anyhow::anyhow!("pilot: {e}"))
}
