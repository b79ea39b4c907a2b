//! Request loops shared by the request/response scenarios (citadel, mixer):
//! a closed loop (a fixed number of requests always in flight) for throughput,
//! and an open loop (requests started on a schedule, each timed from its
//! scheduled start, so a stall shows as latency) for latency at a given rate.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;

/// One kind of request a scenario sends.
pub trait Unit: Send + Sync + 'static {
    /// Sends request number `i`; whether it succeeded.
    fn one(&self, i: usize) -> impl Future<Output = bool> + Send;
}

/// What a loop measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Latency of each successful request.
    pub samples: Vec<Duration>,
    /// Wall time of the loop.
    pub elapsed: Duration,
}

/// `concurrency` requests in flight for `duration`.
pub async fn closed_loop<W: Unit>(
    work: &Arc<W>,
    concurrency: usize,
    duration: Duration,
) -> Outcome {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let concurrency = concurrency.max(1);
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let work = work.clone();
        let samples = samples.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            let mut local = Vec::new();
            while Instant::now() < deadline {
                let s = Instant::now();
                if work.one(i).await {
                    local.push(s.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                i += concurrency;
            }
            samples.lock().extend(local);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    let samples = std::mem::take(&mut *samples.lock());
    Outcome {
        ok: samples.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        samples,
        elapsed,
    }
}

/// Requests started `rate` times a second for `duration`, each timed from its
/// scheduled start, so a late start counts as latency.
///
/// A thread of its own starts them: it sleeps until the next request is due
/// (a thread's sleep ends within tens of microseconds, where tokio's timer rounds
/// up to the next millisecond, which would add up to 1 ms to every latency),
/// then starts every request due by then as a task.
pub async fn open_loop<W: Unit>(work: &Arc<W>, rate: u64, duration: Duration) -> Outcome {
    let rate = rate.max(1);
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    // Request `n` is due `n / rate` seconds after the start.
    let due = move |start: Instant, n: u64| {
        start + Duration::from_nanos(n.saturating_mul(1_000_000_000) / rate)
    };
    let runtime = tokio::runtime::Handle::current();
    let work = work.clone();
    let scheduler = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        let mut n = 0;
        while n < total {
            let now = Instant::now();
            while n < total && due(start, n) <= now {
                let scheduled = due(start, n);
                let work = work.clone();
                let i = usize::try_from(n).unwrap_or(usize::MAX);
                tasks.push(runtime.spawn(async move {
                    let ok = work.one(i).await;
                    (ok, scheduled.elapsed())
                }));
                n += 1;
            }
            if n < total {
                std::thread::sleep(due(start, n).saturating_duration_since(Instant::now()));
            }
        }
        (start, tasks)
    });
    let (start, tasks) = scheduler
        .await
        .unwrap_or_else(|_| (Instant::now(), Vec::new()));
    let mut out = Outcome {
        samples: Vec::with_capacity(tasks.len()),
        ..Outcome::default()
    };
    // Requests the scheduler could not start count as errors.
    out.errors = total.saturating_sub(tasks.len() as u64);
    for t in tasks {
        match t.await {
            Ok((true, d)) => {
                out.ok += 1;
                out.samples.push(d);
            }
            _ => out.errors += 1,
        }
    }
    out.elapsed = start.elapsed();
    out
}

/// The latency summary of `samples`, or nothing when there are none.
pub fn latency(samples: &[Duration]) -> String {
    crate::stats::summarize(samples)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// The two phases of a request/response scenario and what they report.
#[derive(Debug, Clone)]
pub struct Phases {
    /// The server process measured.
    pub server: &'static str,
    /// Its pid, for CPU and memory.
    pub pid: u32,
    /// What one request is called in the output (`check`, `review`).
    pub unit: &'static str,
    /// Requests in flight in the throughput phase.
    pub concurrency: usize,
    /// Length of the throughput phase.
    pub duration: Duration,
    /// Requests per second in the latency phase (0 skips it).
    pub rate: u64,
    /// Length of the latency phase.
    pub rate_duration: Duration,
}

/// Runs the throughput phase (closed loop), then the latency phase (open loop),
/// printing each one's count, rate, latency and the CPU of both processes, and
/// the server's memory at the end.
pub async fn run_phases<W: Unit>(work: &Arc<W>, phases: &Phases) {
    let (server, pid, unit) = (phases.server, phases.pid, phases.unit);
    let cpu0 = crate::proc::cpu_pair(pid);
    let out = closed_loop(work, phases.concurrency, phases.duration).await;
    let cpu1 = crate::proc::cpu_pair(pid);
    println!(
        "throughput: {} {unit}s in {:.2}s = {:.0}/s, {} errors, concurrency {}; latency {}",
        out.ok,
        out.elapsed.as_secs_f64(),
        out.ok as f64 / out.elapsed.as_secs_f64(),
        out.errors,
        phases.concurrency,
        latency(&out.samples)
    );
    println!(
        "{}",
        crate::proc::cpu_split(server, unit, cpu0, cpu1, out.ok)
    );
    if phases.rate > 0 {
        let cpu0 = crate::proc::cpu_pair(pid);
        let out = open_loop(work, phases.rate, phases.rate_duration).await;
        let cpu1 = crate::proc::cpu_pair(pid);
        println!(
            "fixed rate {}/s for {:?}: {} ok, {} errors; latency {}",
            phases.rate,
            phases.rate_duration,
            out.ok,
            out.errors,
            latency(&out.samples)
        );
        println!(
            "{}",
            crate::proc::cpu_split(server, unit, cpu0, cpu1, out.ok + out.errors)
        );
    }
    if let Some((rss, hwm)) = crate::proc::memory_kib(pid) {
        println!(
            "{server} memory: RSS {} MiB, peak {} MiB",
            rss / 1024,
            hwm / 1024
        );
    }
}
