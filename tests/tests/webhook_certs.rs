//! The mesh's webhooks served with certificates citadel issues, as on a cluster:
//! citadel (the real binary, `--kube-secrets --dns-certs --patch-webhooks`)
//! writes the `istio.<sa>` Secrets of the injector's and galley's service
//! accounts with their Service DNS names and fills the webhook configurations'
//! `caBundle`; the Secrets' files are handed to the real sidecar-injector and
//! galley (as a kubelet mounts them); and a TLS client that, like the API server,
//! trusts only that `caBundle` and checks `<service>.<namespace>.svc` gets its
//! reviews answered. kube-testserver stands in for the API server.

#![allow(clippy::unwrap_used)]

use std::{future::ready, path::Path, process::Command, time::Duration};

use dromon_e2e::{
    ChildGuard, citadel::CitadelProcess, eventually, local_addr, python, repo, wait_http_ok,
};
use kube_testserver::KubeTestServer;
use serde_json::{Value, json};

const NS: &str = "dromon-system";
const INJECTOR: &str = "dromon-sidecar-injector";
const GALLEY: &str = "dromon-galley";
const WAIT: Duration = Duration::from_secs(30);

fn webhook_config(kind: &str, name: &str, service: &str, path: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": [{
            "name": format!("{service}.dromon.io"),
            "clientConfig": {"service": {"name": service, "namespace": NS, "path": path}},
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
        }],
    })
}

fn unb64(v: &Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_default())
        .unwrap_or_default()
}

/// Writes a Secret's data into `dir`, one file per key, as a kubelet mounts it.
fn mount(secret: &Value, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (key, value) in secret["data"].as_object().unwrap() {
        std::fs::write(dir.join(key), unb64(value)).unwrap();
    }
}

/// The one `caBundle` of a webhook configuration once citadel has filled it.
fn ca_bundle(server: &KubeTestServer, kind: &str, name: &str) -> Option<Vec<u8>> {
    let config = server.get_object("admissionregistration.k8s.io/v1", kind, "", name)?;
    let bundle = unb64(&config["webhooks"][0]["clientConfig"]["caBundle"]);
    (!bundle.is_empty()).then_some(bundle)
}

/// Posts `object` to a webhook at `url`, verifying the server as `server_name`
/// against `ca`; the checker's exit status and its output.
fn post(url: &str, ca: &Path, server_name: &str, object: &Path) -> (bool, String) {
    let out = Command::new(python())
        .arg(repo().join("tests/injector/check_injection.py"))
        .args(["post", "--url", url, "--ca"])
        .arg(ca)
        .arg("--object")
        .arg(object)
        .args(["--server-name", server_name])
        .output()
        .unwrap();
    let text = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    (out.status.success(), text)
}

fn dns(service: &str) -> String {
    format!("{service}.{NS}.svc")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_serve_citadel_issued_certificates_the_api_server_trusts_by_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let server = KubeTestServer::start().await.unwrap();
    server
        .apply_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    for sa in [INJECTOR, GALLEY, "other"] {
        server
            .apply_object(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                                 "metadata": {"name": sa, "namespace": NS}}))
            .unwrap();
    }
    const M: &str = "MutatingWebhookConfiguration";
    const V: &str = "ValidatingWebhookConfiguration";
    server
        .apply_object(webhook_config(M, INJECTOR, INJECTOR, "/inject"))
        .unwrap();
    server
        .apply_object(webhook_config(V, GALLEY, GALLEY, "/validate"))
        .unwrap();
    let kubeconfig = server.write_kubeconfig(dir.path()).unwrap();

    let dns_certs = format!(
        "{NS}/{INJECTOR}={},{}.cluster.local;{NS}/{GALLEY}={}",
        dns(INJECTOR),
        dns(INJECTOR),
        dns(GALLEY)
    );
    let _citadel = CitadelProcess::start(
        &dir.path().join("citadel"),
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--kube-secrets",
            "--secret-namespaces",
            NS,
            "--dns-certs",
            &dns_certs,
            "--patch-webhooks",
            &format!("{INJECTOR},{GALLEY}"),
            "--lease-namespace",
            NS,
        ],
    )
    .await
    .unwrap();

    let secret = |sa: &str| server.get_object("v1", "Secret", NS, &format!("istio.{sa}"));
    let injector_secret =
        eventually("the injector's Secret", WAIT, || ready(secret(INJECTOR))).await;
    let galley_secret = eventually("galley's Secret", WAIT, || ready(secret(GALLEY))).await;
    let injector_tls = dir.path().join("injector-certs");
    let galley_tls = dir.path().join("galley-certs");
    mount(&injector_secret, &injector_tls);
    mount(&galley_secret, &galley_tls);
    // What the API server trusts: the caBundle citadel wrote.
    let bundle = eventually("the injector's caBundle", WAIT, || {
        ready(ca_bundle(&server, M, INJECTOR))
    })
    .await;
    assert_eq!(
        eventually("galley's caBundle", WAIT, || ready(ca_bundle(
            &server, V, GALLEY
        )))
        .await,
        bundle
    );
    let ca = dir.path().join("ca-bundle.pem");
    std::fs::write(&ca, &bundle).unwrap();

    let (webhook, monitoring) = (local_addr(), local_addr());
    let injector_config = dir.path().join("injector.yaml");
    std::fs::write(&injector_config, "policy: enabled\n").unwrap();
    let _injector = ChildGuard::spawn(
        "sidecar-injector",
        &[
            "--webhook-addr",
            &webhook.to_string(),
            "--monitoring-addr",
            &monitoring.to_string(),
            "--tls-dir",
            injector_tls.to_str().unwrap(),
            "--config",
            injector_config.to_str().unwrap(),
        ],
    )
    .unwrap();
    wait_http_ok(monitoring, "/ready", WAIT).await.unwrap();
    let inject_url = format!("https://{webhook}/inject");

    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let (mcp, galley_monitoring, galley_webhook) = (local_addr(), local_addr(), local_addr());
    let _galley = ChildGuard::spawn(
        "galley",
        &[
            "--config-dir",
            config.to_str().unwrap(),
            "--mcp-addr",
            &mcp.to_string(),
            "--monitoring-addr",
            &galley_monitoring.to_string(),
            "--webhook-tls-dir",
            galley_tls.to_str().unwrap(),
            "--webhook-addr",
            &galley_webhook.to_string(),
        ],
    )
    .unwrap();
    wait_http_ok(galley_monitoring, "/ready", WAIT)
        .await
        .unwrap();
    let validate_url = format!("https://{galley_webhook}/validate");

    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec:\n  containers:\n  - {name: web, image: nginx}\n",
    )
    .unwrap();
    let (ok, out) = post(&inject_url, &ca, &dns(INJECTOR), &pod);
    assert!(ok, "{out}");
    let response: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(response["allowed"], true, "{response}");
    assert!(
        response["patch"].is_string(),
        "a proxy is added: {response}"
    );
    // The longer name in the certificate works too.
    let long = format!("{}.cluster.local", dns(INJECTOR));
    assert!(post(&inject_url, &ca, &long, &pod).0);

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: payments, namespace: shop}\nspec:\n  hosts: [payments.example.com]\n  ports: [{number: 700000, name: http, protocol: HTTP}]\n",
    )
    .unwrap();
    let (ok, out) = post(&validate_url, &ca, &dns(GALLEY), &bad);
    assert!(ok, "{out}");
    let response: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(response["allowed"], false, "{response}");

    // The name is checked: the injector's certificate does not name galley, and
    // an account without --dns-certs gets no DNS name at all.
    let (ok, out) = post(&inject_url, &ca, &dns(GALLEY), &pod);
    assert!(!ok && out.contains("TLS:"), "{out}");
    let other = eventually("the other account's Secret", WAIT, || {
        ready(secret("other"))
    })
    .await;
    let other_tls = dir.path().join("other-certs");
    mount(&other, &other_tls);
    let (webhook2, monitoring2) = (local_addr(), local_addr());
    let _impostor = ChildGuard::spawn(
        "sidecar-injector",
        &[
            "--webhook-addr",
            &webhook2.to_string(),
            "--monitoring-addr",
            &monitoring2.to_string(),
            "--tls-dir",
            other_tls.to_str().unwrap(),
            "--config",
            injector_config.to_str().unwrap(),
        ],
    )
    .unwrap();
    wait_http_ok(monitoring2, "/ready", WAIT).await.unwrap();
    let (ok, out) = post(
        &format!("https://{webhook2}/inject"),
        &ca,
        &dns(INJECTOR),
        &pod,
    );
    assert!(!ok && out.contains("TLS:"), "{out}");
}
