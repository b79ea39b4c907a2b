//! pilot killed and restarted under 200 connected proxies (RELIABILITY.md, xDS 8).
//!
//! The real pilot binary serves a generated mesh from a directory; 100 SotW and 100
//! delta proxies from mesh-load's simulator hold its whole configuration. pilot is
//! SIGKILLed and started again on the same ports. Every proxy must reconnect, with
//! jittered backoff (the reconnect times are spread, not one instant), and converge
//! to the same versions as before (the versions are content hashes); then an endpoint
//! change must reach all 200.

#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use dromon_e2e::http_json;
use mesh_load::{
    pilot::{PilotLaunch, PilotProcess, all_complete},
    pilotgen::{self, MeshShape},
    proxy_sim::{Fleet, FleetConfig, Kind, Protocol, ProxyReport, proxy_specs},
};

const PER_PROTOCOL: usize = 100;
const WAIT: Duration = Duration::from_secs(20);

fn versions(reports: &[ProxyReport]) -> Vec<[String; 4]> {
    reports
        .iter()
        .map(|r| Kind::ALL.map(|k| r.of(k).version.clone()))
        .collect()
}

async fn wait_all(
    fleets: &[&Fleet],
    what: &str,
    mut done: impl FnMut(usize, &ProxyReport) -> bool,
) -> Vec<Vec<ProxyReport>> {
    let mut out = Vec::new();
    for (i, fleet) in fleets.iter().enumerate() {
        let reports = fleet
            .wait_until(WAIT, |rs| {
                let behind = rs.iter().filter(|r| !done(i, r)).count();
                if behind == 0 {
                    Ok(())
                } else {
                    Err(format!("{behind} proxies not yet {what}"))
                }
            })
            .await
            .unwrap();
        out.push(reports);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_reconnect_with_jitter_and_converge_after_pilot_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let shape = MeshShape {
        services: 50,
        endpoints: 2,
        namespaces: 5,
        routed_every: 5,
    };
    let files = pilotgen::write(&dir.path().join("config"), &shape).unwrap();
    let mut launch =
        PilotLaunch::new(&dir.path().join("config"), &dir.path().join("pilot.log")).unwrap();
    launch.debounce = Duration::from_millis(20);
    let mut pilot = PilotProcess::start(&launch).unwrap();
    pilot.wait_ready(WAIT).await.unwrap();

    let specs = proxy_specs(2 * PER_PROTOCOL, shape.namespaces, 20, None);
    let mut fleets = Vec::new();
    for (protocol, specs) in [Protocol::Sotw, Protocol::Delta]
        .into_iter()
        .zip(specs.chunks(PER_PROTOCOL))
    {
        let mut fleet = Fleet::new(FleetConfig {
            endpoint: format!("http://{}", launch.xds),
            protocol,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
        });
        for spec in specs {
            fleet.spawn(spec.clone());
        }
        fleets.push(fleet);
    }
    let fleet_refs: Vec<&Fleet> = fleets.iter().collect();
    for f in &fleets {
        f.wait_until(WAIT, all_complete).await.unwrap();
    }
    let before: Vec<Vec<[String; 4]>> = fleets.iter().map(|f| versions(&f.reports())).collect();
    for (f, v) in fleets.iter().zip(&before) {
        assert!(v.iter().flatten().all(|version| !version.is_empty()));
        // Outbound clusters (services, subsets of the routed ones) and, for
        // sidecars, passthrough, black hole and inbound passthrough.
        assert_eq!(f.reports()[0].of(Kind::Cds).resources, 51 + 10 * 2 + 3);
    }
    let delta_cds = fleets[1].resource_versions(0, Kind::Cds);
    assert!(delta_cds.values().all(|v| !v.is_empty()));
    let syncz = http_json(launch.monitoring, "/debug/syncz").await.unwrap();
    assert_eq!(syncz["proxies"].as_array().unwrap().len(), 2 * PER_PROTOCOL);

    // SIGKILL: every stream breaks at once.
    pilot.kill().unwrap();
    let killed = Instant::now();
    wait_all(&fleet_refs, "disconnected", |_, r| {
        r.stream_lost.is_some_and(|t| t >= killed) && !r.complete
    })
    .await;

    // Same ports again.
    let mut pilot = PilotProcess::start(&launch).unwrap();
    pilot.wait_ready(WAIT).await.unwrap();
    let after = wait_all(&fleet_refs, "reconverged", |_, r| {
        r.complete && r.stream_started.is_some_and(|t| t > killed)
    })
    .await;

    let mut reconnects: Vec<Duration> = Vec::new();
    for (i, reports) in after.iter().enumerate() {
        assert_eq!(
            versions(reports),
            before[i],
            "every {:?} proxy holds the versions it held before the kill",
            [Protocol::Sotw, Protocol::Delta][i]
        );
        for r in reports {
            assert_eq!(
                r.streams, 2,
                "proxy {}: one stream before, one after",
                r.index
            );
            reconnects.extend(r.stream_started.map(|t| t - killed));
        }
    }
    assert_eq!(fleets[1].resource_versions(0, Kind::Cds), delta_cds);
    reconnects.sort();
    let (first, last) = (reconnects[0], reconnects[reconnects.len() - 1]);
    let distinct: BTreeSet<u128> = reconnects.iter().map(|d| d.as_millis()).collect();
    eprintln!(
        "reconnected after the kill: first {first:?}, median {:?}, last {last:?}, {} distinct ms",
        reconnects[reconnects.len() / 2],
        distinct.len()
    );
    assert!(
        last - first >= Duration::from_millis(50) && distinct.len() >= 20,
        "reconnects are spread by jitter: first {first:?}, last {last:?}, {} distinct ms",
        distinct.len()
    );

    // A change after the restart reaches everyone.
    pilotgen::write_endpoint_change(&files, &shape, 1).unwrap();
    let changed = wait_all(&fleet_refs, "given the new endpoints", |i, r| {
        r.complete && r.of(Kind::Eds).version != before[i][r.index][Kind::Eds.index()]
    })
    .await;
    for (i, reports) in changed.iter().enumerate() {
        for r in reports {
            assert_ne!(
                r.of(Kind::Eds).version,
                before[i][r.index][Kind::Eds.index()]
            );
            assert_eq!(
                r.of(Kind::Cds).version,
                before[i][r.index][Kind::Cds.index()]
            );
        }
    }

    for f in fleets {
        f.shutdown().await;
    }
    assert!(pilot.terminate(Duration::from_secs(10)).unwrap().success());
}
