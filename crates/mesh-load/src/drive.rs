//! Request loops shared by the request/response scenarios (citadel, mixer):
//! a closed loop (a fixed number of requests always in flight) for throughput,
//! and an open loop (requests started on a schedule, each timed from its
//! scheduled start, so a stall shows as latency) for latency at a given rate.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

/// One kind of request a scenario sends.
pub trait Unit: Send + Sync + Sized + 'static {
    /// Sends request number `i`; whether it succeeded.
    fn one(&self, i: usize) -> impl Future<Output = bool> + Send;

    /// The same requests over connections of its own, opened on the current
    /// runtime: the open loop runs on a thread of its own, and connections whose
    /// tasks live there cost no hand-over between threads. `None` (the default)
    /// shares `self`'s connections.
    fn reopen(&self) -> impl Future<Output = anyhow::Result<Option<Self>>> + Send {
        async { Ok(None) }
    }
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
///
/// Like [`open_loop`], the loop runs on a thread of its own with a
/// single-threaded runtime, over connections it opens there ([`Unit::reopen`]).
pub async fn closed_loop<W: Unit>(
    work: &Arc<W>,
    concurrency: usize,
    duration: Duration,
) -> Outcome {
    // A loop that cannot start has sent nothing.
    on_own_thread("closed-loop", work, 0, move |work| {
        closed_loop_here(work, concurrency, duration)
    })
    .await
}

/// [`closed_loop`] on the current runtime.
async fn closed_loop_here<W: Unit>(
    work: Arc<W>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let deadline = start + duration;
    let concurrency = concurrency.max(1);
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            let (mut samples, mut errors) = (Vec::new(), 0);
            loop {
                let s = Instant::now();
                if s >= deadline {
                    break;
                }
                if work.one(i).await {
                    samples.push(s.elapsed());
                } else {
                    errors += 1;
                }
                i += concurrency;
            }
            (samples, errors)
        }));
    }
    let mut out = Outcome::default();
    for t in tasks {
        match t.await {
            Ok((samples, errors)) => {
                out.samples.extend(samples);
                out.errors += errors;
            }
            Err(e) => anyhow::bail!("a closed-loop task failed: {e}"),
        }
    }
    out.ok = out.samples.len() as u64;
    out.elapsed = start.elapsed();
    Ok(out)
}

/// Requests started `rate` times a second for `duration`, each timed from its
/// scheduled start, so a late start counts as latency.
///
/// The loop runs on a thread of its own with a single-threaded runtime, over
/// connections it opens there ([`Unit::reopen`]): starting a request, writing
/// it and reading its answer all happen on that one thread, so the load costs
/// one wake-up per request or answer rather than a hand-over between threads
/// for each. It waits for the next request on a timerfd ([`PreciseTimer`]):
/// tokio's timer rounds up to the next millisecond, which would add up to 1 ms
/// to every latency.
pub async fn open_loop<W: Unit>(work: &Arc<W>, rate: u64, duration: Duration) -> Outcome {
    let total = request_count(rate, duration);
    on_own_thread("open-loop", work, total, move |work| {
        open_loop_here(work, rate, duration)
    })
    .await
}

/// Runs `run` on a new thread named `name`, on a single-threaded runtime, with
/// `work` reopened there ([`Unit::reopen`]) or shared when it does not reopen.
/// A loop that cannot run prints why and counts `unsent` requests as errors.
async fn on_own_thread<W, F, Fut>(name: &str, work: &Arc<W>, unsent: u64, run: F) -> Outcome
where
    W: Unit,
    F: FnOnce(Arc<W>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<Outcome>>,
{
    let work = work.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let out = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| {
                    rt.block_on(async move {
                        let work = match work.reopen().await? {
                            Some(own) => Arc::new(own),
                            None => work,
                        };
                        run(work).await
                    })
                });
            let _ = tx.send(out);
        });
    let failed = |e: anyhow::Error| {
        eprintln!("{name}: {e:#}");
        Outcome {
            errors: unsent,
            ..Outcome::default()
        }
    };
    if let Err(e) = spawned {
        return failed(e.into());
    }
    match rx.await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => failed(e),
        Err(_) => failed(anyhow::anyhow!("the loop's thread ended early")),
    }
}

/// How many requests `rate` a second make in `duration`.
fn request_count(rate: u64, duration: Duration) -> u64 {
    (rate.max(1) as f64 * duration.as_secs_f64()) as u64
}

/// The open loop's shortest wait between starting requests.
const MIN_WAIT: Duration = Duration::from_micros(100);

/// [`open_loop`] on the current (single-threaded) runtime.
async fn open_loop_here<W: Unit>(
    work: Arc<W>,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let rate = rate.max(1);
    let total = request_count(rate, duration);
    // Request `n` is due `n / rate` seconds after the start.
    let due = move |start: Instant, n: u64| {
        start + Duration::from_nanos(n.saturating_mul(1_000_000_000) / rate)
    };
    let timer = PreciseTimer::new()?;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut n = 0;
    while n < total {
        let now = Instant::now();
        while n < total && due(start, n) <= now {
            let scheduled = due(start, n);
            let work = work.clone();
            let i = usize::try_from(n).unwrap_or(usize::MAX);
            tasks.push(tokio::spawn(async move {
                let ok = work.one(i).await;
                (ok, scheduled.elapsed())
            }));
            n += 1;
        }
        if n < total {
            // The requests just started run while the loop waits. It waits at
            // least `MIN_WAIT`, starting what fell due meanwhile together: a
            // timer per request would cost the load three system calls each.
            // A request started late is timed from when it was due.
            timer
                .sleep_until(due(start, n).max(Instant::now() + MIN_WAIT))
                .await?;
        }
    }
    let mut out = Outcome {
        samples: Vec::with_capacity(tasks.len()),
        ..Outcome::default()
    };
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
    Ok(out)
}

/// A one-shot timer of microsecond precision on the current runtime: a Linux
/// timerfd, waited on by the runtime's I/O driver like a socket.
pub struct PreciseTimer {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl PreciseTimer {
    /// A timer on the monotonic clock (the one [`Instant`] reads).
    pub fn new() -> std::io::Result<Self> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // Deprecated for descriptors that could change under the registration; an
        // `OwnedFd` held by the `AsyncFd` itself stays the same open timer until
        // both are dropped together.
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?;
        Ok(Self { fd })
    }

    /// Returns at `at`, or at once when it has passed.
    pub async fn sleep_until(&self, at: Instant) -> std::io::Result<()> {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        let wait = at.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Ok(());
        }
        let value = Timespec {
            tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        timerfd_settime(
            self.fd.get_ref(),
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: zero,
                it_value: value,
            },
        )?;
        loop {
            let mut ready = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            match ready.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut expirations).map_err(std::io::Error::from)
            }) {
                Ok(result) => return result.map(|_| ()),
                // Not expired yet: readiness was cleared, wait again.
                Err(_would_block) => continue,
            }
        }
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    /// Counts its requests and where they ran; odd requests fail.
    #[derive(Default)]
    struct Probe {
        reopened: bool,
        reopen_fails: bool,
        reopens: Arc<AtomicU64>,
        on_reopened: Arc<AtomicU64>,
        off_thread: Arc<AtomicBool>,
    }

    impl Unit for Probe {
        async fn one(&self, i: usize) -> bool {
            if !matches!(
                std::thread::current().name(),
                Some("open-loop" | "closed-loop")
            ) {
                self.off_thread.store(true, Ordering::Relaxed);
            }
            if self.reopened {
                self.on_reopened.fetch_add(1, Ordering::Relaxed);
            }
            tokio::task::yield_now().await;
            i.is_multiple_of(2)
        }

        async fn reopen(&self) -> anyhow::Result<Option<Self>> {
            self.reopens.fetch_add(1, Ordering::Relaxed);
            anyhow::ensure!(!self.reopen_fails, "cannot connect");
            Ok(Some(Self {
                reopened: true,
                reopen_fails: false,
                reopens: self.reopens.clone(),
                on_reopened: self.on_reopened.clone(),
                off_thread: self.off_thread.clone(),
            }))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_open_loop_sends_every_request_from_its_own_thread_over_its_own_connections() {
        let probe = Arc::new(Probe::default());
        let out = open_loop(&probe, 2000, Duration::from_millis(50)).await;
        assert_eq!((out.ok, out.errors), (50, 50));
        assert_eq!(out.samples.len(), 50);
        assert_eq!(probe.reopens.load(Ordering::Relaxed), 1);
        assert_eq!(probe.on_reopened.load(Ordering::Relaxed), 100);
        assert!(!probe.off_thread.load(Ordering::Relaxed));
        // The last request is due 49.5 ms after the start.
        assert!(out.elapsed >= Duration::from_micros(49_500), "{out:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_closed_loop_sends_every_request_from_its_own_thread_over_its_own_connections() {
        let probe = Arc::new(Probe::default());
        let out = closed_loop(&probe, 4, Duration::from_millis(30)).await;
        assert!(out.ok > 0 && out.errors > 0, "{out:?}");
        assert_eq!(out.samples.len() as u64, out.ok);
        assert_eq!(probe.reopens.load(Ordering::Relaxed), 1);
        assert_eq!(
            probe.on_reopened.load(Ordering::Relaxed),
            out.ok + out.errors
        );
        assert!(!probe.off_thread.load(Ordering::Relaxed));
        assert!(out.elapsed >= Duration::from_millis(30), "{out:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_loop_that_cannot_connect_sends_nothing() {
        let probe = Arc::new(Probe {
            reopen_fails: true,
            ..Probe::default()
        });
        let out = closed_loop(&probe, 4, Duration::from_millis(20)).await;
        assert_eq!((out.ok, out.errors), (0, 0));
        assert_eq!(probe.on_reopened.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_loop_that_cannot_connect_counts_every_request_as_an_error() {
        let probe = Arc::new(Probe {
            reopen_fails: true,
            ..Probe::default()
        });
        let out = open_loop(&probe, 1000, Duration::from_millis(20)).await;
        assert_eq!((out.ok, out.errors), (0, 20));
        assert_eq!(probe.on_reopened.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_precise_timer_never_returns_early_and_returns_at_once_when_due() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let timer = PreciseTimer::new().unwrap();
            for micros in [150, 900, 2_500] {
                let at = Instant::now() + Duration::from_micros(micros);
                timer.sleep_until(at).await.unwrap();
                assert!(Instant::now() >= at, "woke before {micros} µs");
            }
            // A deadline already passed: no wait, and the timer stays usable.
            timer
                .sleep_until(Instant::now() - Duration::from_millis(1))
                .await
                .unwrap();
            let at = Instant::now() + Duration::from_micros(300);
            timer.sleep_until(at).await.unwrap();
            assert!(Instant::now() >= at);
        });
    }
}
