//! The citadel binary's Kubernetes controllers when RBAC forbids them: a watch
//! the API server refuses, and a write it refuses, are logged naming verb and
//! resource and retried, and the Secret is written once the permission is there.
//! kube-testserver stands in for the API server.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dromon_e2e::citadel::CitadelProcess;
use kube_testserver::{Fault, KubeTestServer};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_watches_and_writes_are_logged_retried_and_recovered_from() {
    let dir = tempfile::tempdir().unwrap();
    let server = KubeTestServer::start().await.unwrap();
    for object in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "web", "namespace": "shop"}}),
    ] {
        server.apply_object(object).unwrap();
    }
    server.inject_fault(Fault::new("serviceaccounts", 403).verb("list"));
    let kubeconfig = server.write_kubeconfig(dir.path()).unwrap();
    let citadel = CitadelProcess::start(
        &dir.path().join("citadel"),
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--kube-secrets",
            "--secret-namespaces",
            "shop",
            "--lease-namespace",
            "shop",
        ],
    )
    .await
    .unwrap();
    let secret = || server.get_object("v1", "Secret", "shop", "istio.web");

    // The list of ServiceAccounts is refused: the log says what was refused, and
    // citadel keeps serving and keeps trying.
    citadel
        .child
        .await_log(
            "cannot list resource \"serviceaccounts\" in API group \"\" in the namespace \"shop\"",
            WAIT,
        )
        .await
        .unwrap();
    assert!(secret().is_none());
    let (status, _) = dromon_e2e::http_get(citadel.monitoring, "/ready")
        .await
        .unwrap();
    assert_eq!(status, 200);

    // Listing is allowed, creating Secrets is not: the write's refusal is logged
    // with verb, resource and namespace, counted, and retried.
    server.clear_faults();
    server.inject_fault(Fault::new("secrets", 403).verb("create"));
    citadel
        .child
        .await_log("forbidden: cannot create secrets in namespace shop", WAIT)
        .await
        .unwrap();
    assert!(secret().is_none());
    let (_, metrics) = dromon_e2e::http_get(citadel.monitoring, "/metrics")
        .await
        .unwrap();
    let errors = dromon_e2e::citadel::metric_value(
        &metrics,
        "citadel_controller_errors_total{controller=\"secrets\"}",
    )
    .unwrap_or(0.0);
    assert!(errors >= 1.0, "{metrics}");

    // With the permission granted, the Secret is written on the next attempt.
    server.clear_faults();
    let deadline = tokio::time::Instant::now() + WAIT;
    while secret().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "istio.web never written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
