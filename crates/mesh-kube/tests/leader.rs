//! Leader election against kube-testserver: one leader at a time, hand-over on
//! release, take-over of an expired Lease, stepping down when the API is gone.

#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{
    api::coordination::v1::Lease,
    jiff::{SignedDuration, Timestamp},
};
use kube_testserver::{Fault, KubeTestServer};
use mesh_kube::leader::{LeaderElector, LeaderHandle, LeaderMetrics, LeaseConfig};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

const NS: &str = "istio-system";
const LEASE: &str = "galley-leader";
const DURATION: Duration = Duration::from_millis(1000);
const DEADLINE: Duration = Duration::from_millis(600);
const RETRY: Duration = Duration::from_millis(200);
/// Slack for request latency on a loaded test machine.
const SLACK: Duration = Duration::from_millis(500);

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig::new(NS, LEASE, identity).with_timings(DURATION, DEADLINE, RETRY)
}

/// A test server with the Lease's namespace.
async fn start() -> KubeTestServer {
    let server = KubeTestServer::start().await.unwrap();
    server
        .apply_object(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    server
}

fn elector(server: &KubeTestServer, identity: &str) -> LeaderElector {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("mesh_kube=debug")
        .try_init();
    LeaderElector::new(server.client(), config(identity)).unwrap()
}

fn lease(server: &KubeTestServer) -> Option<Lease> {
    server
        .get_object("coordination.k8s.io/v1", "Lease", NS, LEASE)
        .map(|v| serde_json::from_value(v).unwrap())
}

fn holder(server: &KubeTestServer) -> Option<String> {
    lease(server)
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

fn transitions(server: &KubeTestServer) -> i32 {
    lease(server)
        .and_then(|l| l.spec)
        .and_then(|s| s.lease_transitions)
        .unwrap_or(-1)
}

/// Watches several electors and fails the test if two ever lead at once.
struct OneLeaderCheck {
    violated: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl OneLeaderCheck {
    fn watch(handles: &[&LeaderHandle]) -> Self {
        let violated = Arc::new(AtomicBool::new(false));
        let receivers: Vec<_> = handles.iter().map(|h| h.subscribe()).collect();
        let mut tasks = Vec::new();
        for (i, rx) in receivers.iter().enumerate() {
            let mut rx = rx.clone();
            let others: Vec<_> = receivers
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, r)| r.clone())
                .collect();
            let violated = violated.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    if *rx.borrow_and_update() && others.iter().any(|o| *o.borrow()) {
                        violated.store(true, Ordering::SeqCst);
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }));
        }
        Self { violated, tasks }
    }

    fn assert_held(self) {
        for t in &self.tasks {
            t.abort();
        }
        assert!(
            !self.violated.load(Ordering::SeqCst),
            "two electors led at the same time"
        );
    }
}

async fn wait_leading(handle: &mut LeaderHandle, within: Duration) {
    timeout(within, handle.wait_until(true))
        .await
        .expect("the elector became the leader in time");
}

#[tokio::test]
async fn one_of_two_electors_leads_and_its_release_hands_over_within_a_retry_period() {
    let server = start().await;
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let mut a = elector(&server, "a").spawn(stop_a.clone());
    wait_leading(&mut a, Duration::from_secs(2)).await;
    let mut b = elector(&server, "b").spawn(stop_b.clone());
    let check = OneLeaderCheck::watch(&[&a, &b]);
    // b keeps trying while a renews: a stays the leader.
    tokio::time::sleep(DURATION * 2).await;
    assert!(a.is_leader() && !b.is_leader());
    assert_eq!(holder(&server).as_deref(), Some("a"));
    assert_eq!(transitions(&server), 0);

    // a shuts down: it releases the lease and b takes it within a retry period.
    stop_a.cancel();
    a.stopped().await;
    let released = Instant::now();
    assert_eq!(holder(&server), None, "the release clears holderIdentity");
    wait_leading(&mut b, RETRY + SLACK).await;
    assert!(
        released.elapsed() < DURATION,
        "not waiting for the lease to expire"
    );
    assert_eq!(holder(&server).as_deref(), Some("b"));
    assert_eq!(
        transitions(&server),
        1,
        "a take-over counts as a transition"
    );
    check.assert_held();
    stop_b.cancel();
    b.stopped().await;
}

#[tokio::test]
async fn a_lease_left_by_a_dead_holder_is_taken_over_once_it_expires() {
    let server = start().await;
    let renewed = Timestamp::now();
    server
        .apply_object(serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": NS},
            "spec": {"holderIdentity": "dead-pod-x7", "leaseDurationSeconds": 1,
                     "renewTime": renewed.to_string(), "acquireTime": renewed.to_string(),
                     "leaseTransitions": 4}
        }))
        .unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = LeaderMetrics::register(&mut registry);
    let stop = CancellationToken::new();
    let mut e = elector(&server, "heir")
        .with_metrics(metrics.clone())
        .spawn(stop.clone());
    wait_leading(&mut e, DURATION + RETRY + SLACK).await;
    let taken = Timestamp::now();
    assert!(
        taken.duration_since(renewed) >= SignedDuration::from_secs(1),
        "taken before the lease expired ({:?} after the renewal)",
        taken.duration_since(renewed)
    );
    let spec = lease(&server).unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("heir"));
    assert_eq!(spec.lease_transitions, Some(5));
    assert!(spec.acquire_time.unwrap().0 > renewed);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"leader_election_leading{lease="istio-system/galley-leader"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"leader_election_transitions_total{lease="istio-system/galley-leader",event="acquired"} 1"#
        ),
        "{text}"
    );
    stop.cancel();
    e.stopped().await;
}

#[tokio::test]
async fn racing_electors_never_lead_together() {
    let server = start().await;
    let leads = Arc::new(AtomicUsize::new(0));
    for round in 0..12 {
        // Every other round starts from no Lease (both create: one gets 409
        // AlreadyExists), the others from a released one (both update the same
        // resourceVersion: one gets 409 Conflict); some rounds also get an injected
        // conflict on the first update.
        if round % 2 == 0 {
            server.delete_object("coordination.k8s.io/v1", "Lease", NS, LEASE);
        }
        if round % 3 == 0 {
            server.inject_fault(Fault::new("leases", 409).verb("update").times(1));
        }
        let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
        let a = elector(&server, &format!("a{round}")).spawn(stop_a.clone());
        let b = elector(&server, &format!("b{round}")).spawn(stop_b.clone());
        let check = OneLeaderCheck::watch(&[&a, &b]);
        let mut ra = a.subscribe();
        let mut rb = b.subscribe();
        timeout(Duration::from_secs(3), async {
            tokio::select! {
                _ = ra.wait_for(|l| *l) => {}
                _ = rb.wait_for(|l| *l) => {}
            }
        })
        .await
        .expect("someone leads");
        // Both keep running for a while: still exactly one leader.
        tokio::time::sleep(RETRY * 3).await;
        assert!(
            a.is_leader() ^ b.is_leader(),
            "round {round}: exactly one leader"
        );
        let (first, stop_first, mut second, stop_second) = if a.is_leader() {
            (a, stop_a, b, stop_b)
        } else {
            (b, stop_b, a, stop_a)
        };
        leads.fetch_add(1, Ordering::SeqCst);
        // The leader leaves; the other takes over.
        stop_first.cancel();
        first.stopped().await;
        wait_leading(&mut second, RETRY + SLACK).await;
        check.assert_held();
        stop_second.cancel();
        second.stopped().await;
        assert_eq!(holder(&server), None, "round {round}: released on shutdown");
        server.clear_faults();
    }
    assert_eq!(leads.load(Ordering::SeqCst), 12);
}

#[tokio::test]
async fn the_leader_steps_down_when_the_api_is_unreachable_past_the_renew_deadline() {
    let server = start().await;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = LeaderMetrics::register(&mut registry);
    let stop = CancellationToken::new();
    let mut e = elector(&server, "solo")
        .with_metrics(metrics.clone())
        .spawn(stop.clone());
    wait_leading(&mut e, Duration::from_secs(2)).await;
    server.set_unreachable(true).await.unwrap();
    let cut = Instant::now();
    timeout(DEADLINE + SLACK, e.wait_until(false))
        .await
        .expect("stepped down within the renew deadline");
    let after = cut.elapsed();
    // The last renewal started about a retry period (at most) before the cut.
    assert!(
        after + RETRY * 2 >= DEADLINE,
        "stepped down too early: {after:?}"
    );
    assert!(
        after < DURATION,
        "stepped down before the lease expires: {after:?}"
    );
    // The API comes back: the Lease still names it, so it leads again.
    server.set_unreachable(false).await.unwrap();
    wait_leading(&mut e, RETRY + SLACK).await;
    assert_eq!(holder(&server).as_deref(), Some("solo"));
    stop.cancel();
    e.stopped().await;
    let count = |event: &str| {
        metrics
            .transitions
            .get_or_create(&mesh_kube::leader::TransitionLabels {
                lease: format!("{NS}/{LEASE}"),
                event: event.into(),
            })
            .get()
    };
    assert_eq!(
        (count("acquired"), count("lost"), count("released")),
        (2, 1, 1)
    );
    assert_eq!(holder(&server), None);
}

#[tokio::test]
async fn work_runs_only_while_leading_and_finishes_before_the_release() {
    let server = start().await;
    let stop = CancellationToken::new();
    let elector = elector(&server, "worker");
    let running = Arc::new(AtomicBool::new(false));
    let holder_at_end: Arc<Mutex<Option<Option<String>>>> = Arc::default();
    let run = {
        let running = running.clone();
        let holder_at_end = holder_at_end.clone();
        let server_url = server.url();
        let stop = stop.clone();
        async move {
            elector
                .run_as_leader(stop, |leading| {
                    let running = running.clone();
                    let holder_at_end = holder_at_end.clone();
                    let server_url = server_url.clone();
                    async move {
                        running.store(true, Ordering::SeqCst);
                        leading.cancelled().await;
                        // Still the holder while the work winds down.
                        tokio::time::sleep(RETRY * 2).await;
                        let seen = read_holder(&server_url).await;
                        *holder_at_end.lock().unwrap() = Some(seen);
                        running.store(false, Ordering::SeqCst);
                    }
                })
                .await;
        }
    };
    let task = tokio::spawn(run);
    timeout(Duration::from_secs(2), async {
        while !running.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the work started");
    stop.cancel();
    task.await.unwrap();
    assert!(!running.load(Ordering::SeqCst));
    assert_eq!(
        holder_at_end.lock().unwrap().clone().flatten().as_deref(),
        Some("worker")
    );
    assert_eq!(holder(&server), None);
}

async fn read_holder(url: &str) -> Option<String> {
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let api: kube::Api<Lease> = kube::Api::namespaced(client, NS);
    api.get_opt(LEASE)
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

#[tokio::test]
async fn a_conflicting_write_is_retried_with_a_fresh_read_in_the_same_attempt() {
    let server = start().await;
    let long_ago = Timestamp::now()
        .checked_sub(SignedDuration::from_secs(60))
        .unwrap();
    server
        .apply_object(serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": NS},
            "spec": {"holderIdentity": "gone", "leaseDurationSeconds": 1,
                     "renewTime": long_ago.to_string(), "leaseTransitions": 7}
        }))
        .unwrap();
    // The first two updates are refused as stale; the third read-then-write succeeds.
    server.inject_fault(Fault::new("leases", 409).verb("update").times(2));
    // A long retry period: leading within it means the first attempt succeeded.
    let config = LeaseConfig::new(NS, LEASE, "retrier").with_timings(
        Duration::from_secs(20),
        Duration::from_secs(10),
        Duration::from_secs(5),
    );
    let stop = CancellationToken::new();
    let mut e = LeaderElector::new(server.client(), config)
        .unwrap()
        .spawn(stop.clone());
    wait_leading(&mut e, Duration::from_secs(3)).await;
    assert_eq!(holder(&server).as_deref(), Some("retrier"));
    assert_eq!(transitions(&server), 8, "one take-over, counted once");
    stop.cancel();
    e.stopped().await;
}
