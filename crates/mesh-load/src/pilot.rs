//! The pilot scenario: a real pilot process and thousands of simulated proxies.
//!
//! `mesh-load pilot` generates a mesh ([`crate::pilotgen`]) in a directory, starts
//! the `galley` binary on it and the `pilot` binary following that galley (as the
//! mesh deploys them: two processes; `--embedded-galley` runs pilot alone on the
//! directory instead), on free loopback ports, waits for `/ready`, then measures:
//! 1. *connect*: proxies connect in bursts of `--connect-burst` (default: all at
//!    once); the clock runs from a burst's start to each proxy holding and having
//!    ACKed its whole configuration;
//! 2. *endpoint change*, `--rounds` times: one ServiceEntry's endpoints are rewritten;
//!    from the file write to each proxy's ACK of the new EDS version;
//! 3. *full change*, `--rounds` times: a service on the shared port is replaced,
//!    which changes every proxy's clusters, listeners and routes; from the write to
//!    each proxy's ACK of the new routes with everything they lead to.
//!
//! Figures per proxy and per round (the slowest proxy), raw and with pilot's
//! debounce subtracted; pilot's RSS (VmRSS, VmHWM) and CPU seconds per push, and
//! galley's beside them. pilot is stopped with SIGTERM at the end. [`PilotProcess`]
//! is also what the restart end-to-end test drives.

use dromon_e2e::GalleyProcess;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use dromon_e2e::{free_port, http_get};

use crate::{
    pilotgen::{self, MeshShape},
    proc,
    proxy_sim::{Fleet, FleetConfig, Kind, Protocol, ProxyReport, proxy_specs},
    stats,
};

/// `mesh-load pilot` flags.
#[derive(Debug, Clone, Args)]
pub struct PilotArgs {
    /// The pilot binary (default: next to this one).
    #[arg(long)]
    pub pilot_bin: Option<PathBuf>,
    /// The galley binary (default: next to the pilot binary, else next to this one).
    #[arg(long)]
    pub galley_bin: Option<PathBuf>,
    /// Run pilot alone on the generated directory (`--config-dir`: galley's
    /// directory source inside pilot's process) instead of following a galley
    /// process; pilot's RSS and CPU then include galley's.
    #[arg(long)]
    pub embedded_galley: bool,
    /// Services in the generated mesh.
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Endpoints per service.
    #[arg(long, default_value_t = 2)]
    pub endpoints: usize,
    /// Every n-th service gets a DestinationRule and a VirtualService (0: none).
    #[arg(long, default_value_t = 5)]
    pub routed_every: usize,
    /// Simulated proxies.
    #[arg(long, default_value_t = 2000)]
    pub proxies: usize,
    /// Proxies connecting at once (default: all of them); each burst starts when
    /// the previous one is served.
    #[arg(long)]
    pub connect_burst: Option<usize>,
    /// Namespaces the services and proxies spread over.
    #[arg(long, default_value_t = 10)]
    pub namespaces: usize,
    /// Distinct `app` labels among the proxies.
    #[arg(long, default_value_t = 50)]
    pub apps: usize,
    /// Use the delta protocol instead of state of the world.
    #[arg(long)]
    pub delta: bool,
    /// Simulate proxyless gRPC clients (GENERATOR=grpc, listeners by name).
    #[arg(long)]
    pub proxyless: bool,
    /// Listeners each proxyless client asks for.
    #[arg(long, default_value_t = 4)]
    pub listeners_per_proxy: usize,
    /// Rounds of each change scenario.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// pilot's `--debounce`.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub debounce: Duration,
    /// Longest wait for any one phase.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// After the connect, wait this long with every proxy connected and idle, then
    /// report pilot's RSS again (what stays once the connect burst has settled).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub settle: Option<Duration>,
    /// Keep pilot's log (stderr) in this file instead of a temporary one.
    #[arg(long)]
    pub pilot_log: Option<PathBuf>,
}

/// A pilot child process, stopped (SIGKILL) when dropped.
pub struct PilotProcess {
    child: Option<Child>,
    /// xDS address.
    pub xds: SocketAddr,
    /// Monitoring address.
    pub monitoring: SocketAddr,
    log: PathBuf,
}

/// Where pilot runs and on what.
#[derive(Debug, Clone)]
pub struct PilotLaunch {
    /// The binary.
    pub bin: PathBuf,
    /// Its configuration directory (`--config-dir`), read when `galley` is unset.
    pub config_dir: PathBuf,
    /// The galley to follow (`--galley`), instead of reading `config_dir`.
    pub galley: Option<String>,
    /// xDS address.
    pub xds: SocketAddr,
    /// Monitoring address.
    pub monitoring: SocketAddr,
    /// `--debounce`.
    pub debounce: Duration,
    /// stderr goes here.
    pub log: PathBuf,
}

impl PilotLaunch {
    /// A launch on free loopback ports, the binary next to this executable.
    pub fn new(config_dir: &Path, log: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            bin: dromon_e2e::bin_path("pilot")?,
            config_dir: config_dir.to_path_buf(),
            galley: None,
            xds: loopback_port()?,
            monitoring: loopback_port()?,
            debounce: Duration::from_millis(100),
            log: log.to_path_buf(),
        })
    }
}

fn loopback_port() -> anyhow::Result<SocketAddr> {
    let port = free_port();
    if port == 0 {
        bail!("no free loopback port");
    }
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

impl PilotProcess {
    /// Starts pilot (stderr appended to the launch's log file).
    pub fn start(launch: &PilotLaunch) -> anyhow::Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&launch.log)
            .with_context(|| format!("cannot open {}", launch.log.display()))?;
        let mut command = Command::new(&launch.bin);
        match &launch.galley {
            Some(galley) => command.arg("--galley").arg(galley),
            None => command.arg("--config-dir").arg(&launch.config_dir),
        };
        let child = command
            .args([
                "--xds-addr",
                &launch.xds.to_string(),
                "--monitoring-addr",
                &launch.monitoring.to_string(),
                "--debounce",
                &format!("{}ms", launch.debounce.as_millis()),
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start pilot ({})", launch.bin.display()))?;
        Ok(Self {
            child: Some(child),
            xds: launch.xds,
            monitoring: launch.monitoring,
            log: launch.log.clone(),
        })
    }

    /// The process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits for `/ready`; fails early, with the end of pilot's log, if it exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "pilot exited before it was ready ({status}); its log ends:\n{}",
                    self.log_tail()
                );
            }
            if let Ok((200, _)) = http_get(self.monitoring, "/ready").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "pilot not ready within {timeout:?}; its log ends:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of pilot's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, then waits for the exit (SIGKILL after `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("pilot already stopped")?;
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !sent.success() {
            bail!("kill -TERM {} failed", child.id());
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("pilot did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PilotProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct PilotReport {
    /// Per proxy: connect to complete.
    pub connect: stats::Summary,
    /// Per proxy, over every endpoint round: write to EDS ACK.
    pub endpoint: Option<stats::Summary>,
    /// Per round: write to the last proxy's EDS ACK.
    pub endpoint_rounds: Option<stats::Summary>,
    /// Per proxy, over every full round.
    pub full: Option<stats::Summary>,
    /// Per round: write to the last proxy's complete configuration.
    pub full_rounds: Option<stats::Summary>,
    /// pilot CPU seconds per endpoint push.
    pub cpu_per_endpoint_push: f64,
    /// pilot CPU seconds per full push.
    pub cpu_per_full_push: f64,
    /// pilot VmRSS / VmHWM at the end, KiB.
    pub rss_kib: (u64, u64),
}

fn pilot_bin(args: &PilotArgs) -> anyhow::Result<PathBuf> {
    match &args.pilot_bin {
        Some(p) if p.is_file() => Ok(p.clone()),
        Some(p) => bail!("--pilot-bin {}: no such file", p.display()),
        None => dromon_e2e::bin_path("pilot")
            .context("cannot find the pilot binary; build it or pass --pilot-bin"),
    }
}

fn galley_bin(args: &PilotArgs, pilot: &Path) -> anyhow::Result<PathBuf> {
    match &args.galley_bin {
        Some(p) if p.is_file() => Ok(p.clone()),
        Some(p) => bail!("--galley-bin {}: no such file", p.display()),
        None => match pilot.parent().map(|d| d.join("galley")) {
            Some(beside) if beside.is_file() => Ok(beside),
            _ => dromon_e2e::bin_path("galley")
                .context("cannot find the galley binary; build it or pass --galley-bin"),
        },
    }
}

/// CPU seconds of pilot and, when it runs apart, galley.
fn pilot_and_galley_cpu(pilot: u32, galley: Option<&GalleyProcess>) -> (f64, f64) {
    (
        proc::cpu_seconds(pilot).unwrap_or_default(),
        galley
            .and_then(|g| proc::cpu_seconds(g.child.id()))
            .unwrap_or_default(),
    )
}

/// CPU seconds per round of pilot and of galley between two
/// [`pilot_and_galley_cpu`] readings.
fn per_push(before: (f64, f64), after: (f64, f64), rounds: usize) -> (f64, f64) {
    if rounds == 0 {
        return (0.0, 0.0);
    }
    let n = rounds as f64;
    ((after.0 - before.0) / n, (after.1 - before.1) / n)
}

/// `", galley <s> s"` when galley runs apart.
fn galley_cpu(galley: Option<&GalleyProcess>, seconds: f64) -> String {
    match galley {
        Some(_) => format!(", galley {seconds:.3} s"),
        None => String::new(),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn since(at: Option<Instant>, start: Instant) -> Option<Duration> {
    at.map(|a| a.saturating_duration_since(start))
}

fn minus(s: &stats::Summary, d: Duration) -> String {
    let ms = |x: Duration| x.saturating_sub(d).as_secs_f64() * 1000.0;
    format!(
        "p50={:.1}ms p99={:.1}ms max={:.1}ms",
        ms(s.p50),
        ms(s.p99),
        ms(s.max)
    )
}

/// Runs the scenario and prints its figures.
pub async fn run(args: PilotArgs) -> anyhow::Result<()> {
    run_report(args).await.map(|_| ())
}

/// Runs the scenario, prints and returns its figures.
pub async fn run_report(args: PilotArgs) -> anyhow::Result<PilotReport> {
    if args.proxies == 0 || args.services == 0 {
        bail!("--proxies and --services must be at least 1");
    }
    let nofile = proc::raise_nofile_limit();
    let bin = pilot_bin(&args)?;
    let dir = tempfile::tempdir()?;
    let config_dir = dir.path().join("config");
    let shape = MeshShape {
        services: args.services,
        endpoints: args.endpoints.max(1),
        namespaces: args.namespaces.max(1),
        routed_every: args.routed_every,
    };
    let files = pilotgen::write(&config_dir, &shape)?;
    let galley = if args.embedded_galley {
        None
    } else {
        Some(
            dromon_e2e::start_galley_at(&galley_bin(&args, &bin)?, &config_dir, args.timeout)
                .await?,
        )
    };
    let launch = PilotLaunch {
        bin,
        config_dir,
        galley: galley.as_ref().map(|g| format!("http://{}", g.mcp)),
        xds: loopback_port()?,
        monitoring: loopback_port()?,
        debounce: args.debounce,
        log: args
            .pilot_log
            .clone()
            .unwrap_or_else(|| dir.path().join("pilot.log")),
    };
    let started = Instant::now();
    let mut pilot = PilotProcess::start(&launch)?;
    pilot.wait_ready(args.timeout).await?;
    let ready_in = started.elapsed();
    let pid = pilot.pid();
    let (rss_idle, _) = proc::memory_kib(pid).unwrap_or_default();
    let protocol = if args.delta {
        Protocol::Delta
    } else {
        Protocol::Sotw
    };
    println!(
        "pilot: {} services x {} endpoints ({} routed), {} {} {} over {} namespaces, debounce {:?}, RLIMIT_NOFILE {}",
        shape.services,
        shape.endpoints,
        if shape.routed_every > 0 {
            shape.services.div_ceil(shape.routed_every)
        } else {
            0
        },
        args.proxies,
        protocol.as_str(),
        if args.proxyless {
            "proxyless clients"
        } else {
            "sidecars"
        },
        shape.namespaces,
        args.debounce,
        nofile
            .map(|n| n.to_string())
            .unwrap_or_else(|e| e.to_string()),
    );
    println!(
        "  process start to /ready: {:.0} ms; RSS with no proxy {:.1} MiB; {}",
        ready_in.as_secs_f64() * 1000.0,
        mib(rss_idle),
        match &galley {
            Some(g) => format!(
                "following a galley process (RSS {:.1} MiB)",
                mib(proc::memory_kib(g.child.id()).unwrap_or_default().0)
            ),
            None => "galley embedded (--config-dir)".to_string(),
        }
    );

    // The changing service first, so every proxyless client follows it.
    let hosts = pilotgen::hosts(&shape);
    let specs = proxy_specs(
        args.proxies,
        shape.namespaces,
        args.apps,
        args.proxyless
            .then_some((hosts.as_slice(), pilotgen::PORT, args.listeners_per_proxy)),
    );
    let specs = specs
        .into_iter()
        .map(|mut s| {
            if let Some(l) = s.listeners.as_mut() {
                let first = format!("{}:{}", hosts[0], pilotgen::PORT);
                if !l.contains(&first) {
                    l.pop();
                    l.push(first);
                    l.sort();
                }
            }
            s
        })
        .collect::<Vec<_>>();
    let mut fleet = Fleet::new(FleetConfig {
        endpoint: format!("http://{}", pilot.xds),
        protocol,
        backoff_min: Duration::from_millis(500),
        backoff_max: Duration::from_secs(10),
    });

    // 1. Connect.
    let cpu0 = proc::cpu_seconds(pid).unwrap_or_default();
    let burst = args.connect_burst.unwrap_or(args.proxies).max(1);
    let mut connect_samples = Vec::with_capacity(args.proxies);
    let mut burst_times = Vec::new();
    let mut specs = specs.into_iter().peekable();
    while specs.peek().is_some() {
        let start = Instant::now();
        let first = fleet.len();
        for spec in specs.by_ref().take(burst) {
            fleet.spawn(spec);
        }
        let reports = fleet
            .wait_until(args.timeout, |r| all_complete(&r[first..]))
            .await
            .context("connect")?;
        for r in &reports[first..] {
            connect_samples.extend(since(r.complete_since, start));
        }
        burst_times.push(start.elapsed());
    }
    let connect_cpu = proc::cpu_seconds(pid).unwrap_or_default() - cpu0;
    let connect = stats::summarize(&connect_samples).context("no proxy connected")?;
    let (rss_connected, hwm_connected) = proc::memory_kib(pid).unwrap_or_default();
    let reports = fleet.reports();
    let sample = &reports[0];
    println!(
        "  each proxy holds {} clusters, {} assignments, {} listeners, {} route configurations",
        sample.of(Kind::Cds).resources,
        sample.of(Kind::Eds).resources,
        sample.of(Kind::Lds).resources,
        sample.of(Kind::Rds).resources
    );
    println!(
        "  connect, bursts of {burst}: connect -> complete config ACKed, per proxy: {connect}"
    );
    let slowest = burst_times.iter().max().copied().unwrap_or_default();
    println!(
        "    slowest burst served whole in {:.0} ms; pilot CPU {connect_cpu:.2} s; {} reconnects",
        slowest.as_secs_f64() * 1000.0,
        reports.iter().map(|r| r.failures).sum::<u32>()
    );
    print_errors(&reports);
    let bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    println!(
        "    received {:.1} MiB in {} responses ({:.2} MiB per proxy)",
        mib(bytes / 1024),
        reports.iter().map(|r| r.responses).sum::<u64>(),
        mib(bytes / 1024) / reports.len() as f64
    );
    println!(
        "    pilot RSS after connect: {:.1} MiB (peak {:.1} MiB)",
        mib(rss_connected),
        mib(hwm_connected)
    );
    if let Some(settle) = args.settle {
        tokio::time::sleep(settle).await;
        let (rss, _) = proc::memory_kib(pid).unwrap_or_default();
        println!(
            "    pilot RSS {:.0} s after connect, proxies idle: {:.1} MiB",
            settle.as_secs_f64(),
            mib(rss)
        );
    }

    // 2. Endpoint changes.
    let bytes_before = received(&fleet);
    let mut endpoint_samples = Vec::new();
    let mut endpoint_rounds = Vec::new();
    let cpu0 = pilot_and_galley_cpu(pid, galley.as_ref());
    for round in 1..=args.rounds {
        let before: Vec<String> = fleet
            .reports()
            .iter()
            .map(|r| r.of(Kind::Eds).version.clone())
            .collect();
        pilotgen::write_endpoint_change(&files, &shape, round)?;
        let written = Instant::now();
        let reports = fleet
            .wait_until(args.timeout, |r| {
                let behind = r
                    .iter()
                    .filter(|p| !p.complete || p.of(Kind::Eds).version == before[p.index])
                    .count();
                if behind == 0 {
                    Ok(())
                } else {
                    Err(format!("{behind} proxies without the new endpoints"))
                }
            })
            .await
            .with_context(|| format!("endpoint change, round {round}"))?;
        let times: Vec<Duration> = reports
            .iter()
            .filter_map(|r| since(r.of(Kind::Eds).changed_at, written))
            .collect();
        endpoint_rounds.extend(times.iter().max().copied());
        endpoint_samples.extend(times);
        settle().await;
    }
    let (cpu_per_endpoint_push, galley_per_endpoint_push) = per_push(
        cpu0,
        pilot_and_galley_cpu(pid, galley.as_ref()),
        args.rounds,
    );
    let endpoint = stats::summarize(&endpoint_samples);
    let endpoint_bytes = received(&fleet) - bytes_before;
    let endpoint_round_summary = stats::summarize(&endpoint_rounds);
    if let (Some(per_proxy), Some(per_round)) = (&endpoint, &endpoint_round_summary) {
        println!("  endpoint change: write -> EDS ACK, per proxy: {per_proxy}");
        println!(
            "    minus debounce {:?}: {}",
            args.debounce,
            minus(per_proxy, args.debounce)
        );
        println!("    write -> last proxy's ACK, per round: {per_round}");
        println!(
            "    minus debounce: {}; pilot CPU per push {:.3} s{}",
            minus(per_round, args.debounce),
            cpu_per_endpoint_push,
            galley_cpu(galley.as_ref(), galley_per_endpoint_push)
        );
        per_push_bytes(endpoint_bytes, args.rounds, args.proxies);
    }

    // 3. Full changes.
    let bytes_before = received(&fleet);
    let mut full_samples = Vec::new();
    let mut full_rounds = Vec::new();
    let cpu0 = pilot_and_galley_cpu(pid, galley.as_ref());
    for round in 1..=args.rounds {
        let before: Vec<String> = fleet
            .reports()
            .iter()
            .map(|r| r.of(Kind::Rds).version.clone())
            .collect();
        pilotgen::write_full_change(&files.extra, &shape, round)?;
        let written = Instant::now();
        let reports = fleet
            .wait_until(args.timeout, |r| {
                let behind = r
                    .iter()
                    .filter(|p| !p.complete || p.of(Kind::Rds).version == before[p.index])
                    .count();
                if behind == 0 {
                    Ok(())
                } else {
                    Err(format!("{behind} proxies without the new configuration"))
                }
            })
            .await
            .with_context(|| format!("full change, round {round}"))?;
        let times: Vec<Duration> = reports
            .iter()
            .filter_map(|r| full_done_at(r, written))
            .collect();
        full_rounds.extend(times.iter().max().copied());
        full_samples.extend(times);
        settle().await;
    }
    let (cpu_per_full_push, galley_per_full_push) = per_push(
        cpu0,
        pilot_and_galley_cpu(pid, galley.as_ref()),
        args.rounds,
    );
    let full = stats::summarize(&full_samples);
    let full_bytes = received(&fleet) - bytes_before;
    let full_round_summary = stats::summarize(&full_rounds);
    if let (Some(per_proxy), Some(per_round)) = (&full, &full_round_summary) {
        println!("  full change: write -> whole new config ACKed, per proxy: {per_proxy}");
        println!("    minus debounce: {}", minus(per_proxy, args.debounce));
        println!("    write -> last proxy, per round: {per_round}");
        println!(
            "    minus debounce: {}; pilot CPU per push {:.3} s{}",
            minus(per_round, args.debounce),
            cpu_per_full_push,
            galley_cpu(galley.as_ref(), galley_per_full_push)
        );
        per_push_bytes(full_bytes, args.rounds, args.proxies);
    }

    print_errors(&fleet.reports());
    let rss_kib = proc::memory_kib(pid).unwrap_or_default();
    let own = proc::memory_kib(std::process::id()).unwrap_or_default();
    println!(
        "  pilot RSS at the end: {:.1} MiB, peak (VmHWM) {:.1} MiB; pilot CPU total {:.1} s",
        mib(rss_kib.0),
        mib(rss_kib.1),
        proc::cpu_seconds(pid).unwrap_or_default()
    );
    if let Some(g) = &galley {
        let (rss, hwm) = proc::memory_kib(g.child.id()).unwrap_or_default();
        println!(
            "  galley RSS at the end: {:.1} MiB, peak {:.1} MiB; galley CPU total {:.1} s",
            mib(rss),
            mib(hwm),
            proc::cpu_seconds(g.child.id()).unwrap_or_default()
        );
    }
    println!(
        "  mesh-load itself: CPU {:.1} s, RSS {:.1} MiB (same machine, same cores)",
        proc::cpu_seconds(std::process::id()).unwrap_or_default(),
        mib(own.0)
    );
    fleet.shutdown().await;
    let status = pilot.terminate(Duration::from_secs(15))?;
    println!("  pilot stopped with SIGTERM: {status}");
    Ok(PilotReport {
        connect,
        endpoint,
        endpoint_rounds: endpoint_round_summary,
        full,
        full_rounds: full_round_summary,
        cpu_per_endpoint_push,
        cpu_per_full_push,
        rss_kib,
    })
}

fn received(fleet: &Fleet) -> u64 {
    fleet.reports().iter().map(|r| r.bytes).sum()
}

fn per_push_bytes(bytes: u64, rounds: usize, proxies: usize) {
    let pushes = (rounds * proxies).max(1) as f64;
    println!(
        "    received {:.1} MiB in all, {:.1} KiB per proxy per push",
        mib(bytes / 1024),
        bytes as f64 / 1024.0 / pushes
    );
}

/// Prints how many proxies lost a stream, by error.
fn print_errors(reports: &[ProxyReport]) {
    let mut by_error: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for r in reports.iter().filter(|r| r.failures > 0) {
        *by_error
            .entry(r.last_error.as_deref().unwrap_or("?"))
            .or_default() += 1;
    }
    for (error, n) in by_error {
        println!("    {n} proxies lost a stream; last error: {error}");
    }
}

/// A pause between rounds, so one round's pushes never overlap the next write.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Every proxy complete, or how many are not (and a sample error).
pub fn all_complete(reports: &[ProxyReport]) -> Result<(), String> {
    let behind: Vec<&ProxyReport> = reports.iter().filter(|r| !r.complete).collect();
    match behind.first() {
        None => Ok(()),
        Some(r) => Err(format!(
            "{} of {} proxies incomplete (e.g. proxy {}: {} streams, last error {:?})",
            behind.len(),
            reports.len(),
            r.index,
            r.streams,
            r.last_error
        )),
    }
}

/// When a proxy had the whole new configuration after a full change at `written`:
/// the latest of its changed types and of becoming complete.
fn full_done_at(r: &ProxyReport, written: Instant) -> Option<Duration> {
    let mut last = since(r.complete_since, written)?;
    for kind in Kind::ALL {
        if let Some(at) = r.of(kind).changed_at
            && at >= written
        {
            last = last.max(at - written);
        }
    }
    Some(last)
}
