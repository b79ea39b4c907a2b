//! `mesh-load pilot` end to end, small: the real pilot and galley binaries (built
//! next to this test), 20 services and 50 simulated proxies, SotW and delta, pilot
//! following a galley process or reading the directory itself; every proxy must
//! converge in every scenario. And a pilot that cannot start gives a clear error.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clap::Parser;
use mesh_load::{
    Cli, Scenario,
    pilot::{PilotArgs, PilotLaunch, PilotProcess, run_report},
};

fn args(extra: &[&str]) -> PilotArgs {
    let mut argv = vec![
        "mesh-load",
        "pilot",
        "--services",
        "20",
        "--proxies",
        "50",
        "--rounds",
        "2",
        "--debounce",
        "20ms",
        "--timeout",
        "30s",
    ];
    argv.extend_from_slice(extra);
    match Cli::parse_from(argv).scenario {
        Scenario::Pilot(a) => a,
        other => panic!("parsed as {other:?}"),
    }
}

async fn converges(extra: &[&str]) {
    let report = run_report(args(extra)).await.unwrap();
    assert_eq!(report.connect.count, 50, "every proxy got its whole config");
    assert_eq!(report.endpoint.unwrap().count, 100, "50 proxies x 2 rounds");
    assert_eq!(report.full.unwrap().count, 100);
    assert_eq!(report.endpoint_rounds.unwrap().count, 2);
    assert!(report.rss_kib.0 > 0 && report.rss_kib.1 >= report.rss_kib.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_sidecars_converge() {
    converges(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_sidecars_converge() {
    converges(&["--delta"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_of_a_pilot_reading_the_directory_itself_converge() {
    converges(&["--embedded-galley"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxyless_delta_clients_converge() {
    converges(&["--delta", "--proxyless"]).await;
}

#[tokio::test]
async fn a_pilot_that_cannot_start_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("pilot");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'cannot bind: address in use' >&2\nexit 3\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut launch = PilotLaunch::new(dir.path(), &dir.path().join("log")).unwrap();
    launch.bin = fake.clone();
    let mut pilot = PilotProcess::start(&launch).unwrap();
    let err = pilot
        .wait_ready(Duration::from_secs(20))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("exited before it was ready"), "{err}");
    assert!(err.contains("address in use"), "{err}");

    let missing = run_report(args(&["--pilot-bin", "/nonexistent/pilot"]))
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("no such file"), "{missing}");
    let missing = run_report(args(&["--galley-bin", "/nonexistent/galley"]))
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("--galley-bin"), "{missing}");
}
