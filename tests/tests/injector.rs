//! sidecar-injector end to end: the real binary serving its HTTPS webhook, checked
//! from outside by independent implementations (Python's TLS and HTTP client,
//! PyPI `jsonpatch` applying the patches, `kubernetes-validate` checking the
//! injected pods against the Kubernetes schemas), and `meshctl kube-inject` on a
//! file of workloads.
//!
//! `DROMON_UPDATE_GOLDEN=1` rewrites the expected pods under
//! `tests/injector/golden/` from the webhook's answers (review the diff!).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, bail};
use dromon_e2e::{ChildGuard, http_get, http_json, local_addr, python, repo, wait_http_ok};
use serde_json::Value;

/// Writes a self-signed certificate for 127.0.0.1 as `tls.crt`/`tls.key`.
fn write_cert(dir: &Path) -> anyhow::Result<()> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?
        .self_signed(&key)?;
    // The key first: a reload in between sees a mismatch and keeps the old pair.
    std::fs::write(dir.join("tls.key.new"), key.serialize_pem())?;
    std::fs::write(dir.join("tls.crt.new"), cert.pem())?;
    std::fs::rename(dir.join("tls.key.new"), dir.join("tls.key"))?;
    std::fs::rename(dir.join("tls.crt.new"), dir.join("tls.crt"))?;
    Ok(())
}

struct Injector {
    _child: ChildGuard,
    tls: tempfile::TempDir,
    config: PathBuf,
    url: String,
    monitoring: SocketAddr,
}

impl Injector {
    async fn start(config: &str) -> anyhow::Result<Self> {
        let tls = tempfile::tempdir()?;
        write_cert(tls.path())?;
        let config_path = tls.path().join("injector.yaml");
        std::fs::write(&config_path, config)?;
        let (webhook, monitoring) = (local_addr(), local_addr());
        let child = ChildGuard::spawn(
            "sidecar-injector",
            &[
                "--webhook-addr",
                &webhook.to_string(),
                "--monitoring-addr",
                &monitoring.to_string(),
                "--tls-dir",
                &tls.path().display().to_string(),
                "--config",
                &config_path.display().to_string(),
            ],
        )?;
        wait_http_ok(monitoring, "/ready", Duration::from_secs(30)).await?;
        Ok(Self {
            _child: child,
            url: format!("https://{webhook}/inject"),
            config: config_path,
            tls,
            monitoring,
        })
    }

    fn ca(&self) -> String {
        self.tls.path().join("tls.crt").display().to_string()
    }

    /// Runs the checker script with `args`; its JSON summary.
    fn check(&self, args: &[&str]) -> anyhow::Result<Value> {
        run_checker(args)
    }

    async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let (_, text) = http_get(self.monitoring, "/metrics").await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

fn run_checker(args: &[&str]) -> anyhow::Result<Value> {
    let script = repo().join("tests/injector/check_injection.py");
    let output = Command::new(python())
        .arg(&script)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} {args:?} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().context("no summary")?;
    Ok(serde_json::from_str(line)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_injects_golden_workloads_and_answers_malformed_reviews() -> anyhow::Result<()> {
    let injector = Injector::start("policy: enabled\n").await?;
    let golden = repo().join("tests/injector/golden");
    let golden_s = golden.display().to_string();
    let ca = injector.ca();
    let mut args = vec![
        "golden",
        "--url",
        &injector.url,
        "--ca",
        &ca,
        "--dir",
        &golden_s,
    ];
    if std::env::var_os("DROMON_UPDATE_GOLDEN").is_some() {
        args.push("--update");
    }
    let summary = injector.check(&args)?;
    assert_eq!(
        summary["golden"],
        serde_json::json!({
            "host-network": "unchanged",
            "opted-out": "unchanged",
            "proxy-override": "injected",
            "traffic-annotations": "injected",
            "web-deployment-pod": "injected",
        })
    );
    // Each golden pod is reviewed twice (the second time is a no-op skip).
    assert_eq!(
        injector
            .metric("dromon_sidecar_injection_success_total")
            .await?,
        3.0
    );
    assert_eq!(
        injector
            .metric("dromon_sidecar_injection_skip_total")
            .await?,
        7.0
    );

    let summary = injector.check(&["malformed", "--url", &injector.url, "--ca", &ca])?;
    assert_eq!(summary["malformed"].as_object().map(|m| m.len()), Some(9));
    assert_eq!(
        injector
            .metric("dromon_sidecar_injection_failure_total")
            .await?,
        9.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_and_edited_configurations_are_picked_up() -> anyhow::Result<()> {
    let injector = Injector::start("policy: enabled\n").await?;
    let before = std::fs::read(injector.tls.path().join("tls.crt"))?;
    write_cert(injector.tls.path())?;
    assert_ne!(std::fs::read(injector.tls.path().join("tls.crt"))?, before);
    // Only the new certificate is trusted by the checker: the handshake succeeds
    // once the injector serves it.
    let ca = injector.ca();
    injector.check(&[
        "rotated",
        "--url",
        &injector.url,
        "--ca",
        &ca,
        "--timeout",
        "20",
    ])?;

    // A configuration edit is applied; a broken one is refused and the last good
    // one stays.
    std::fs::write(&injector.config, "policy: disabled\nrevision: canary\n")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let z = http_json(injector.monitoring, "/debug/injectorz").await?;
        if z["policy"] == "disabled" {
            assert_eq!(z["revision"], "canary");
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("the edited configuration was not applied: {z}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(&injector.config, "policy: sometimes\n")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while injector
        .metric("dromon_sidecar_injector_config_reloads_total{reason=\"error\"}")
        .await?
        < 1.0
    {
        if std::time::Instant::now() > deadline {
            bail!("the broken configuration was not noticed");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let z = http_json(injector.monitoring, "/debug/injectorz").await?;
    assert_eq!(z["policy"], "disabled");
    assert_eq!(z["revision"], "canary");
    Ok(())
}

#[test]
fn kube_inject_injects_every_workload_kind_and_copies_the_rest() -> anyhow::Result<()> {
    let input = repo().join("tests/injector/workloads.yaml");
    let dir = tempfile::tempdir()?;
    let (first, second) = (dir.path().join("once.yaml"), dir.path().join("twice.yaml"));
    let meshctl = dromon_e2e::bin_path("meshctl")?;
    for (from, to) in [(&input, &first), (&first, &second)] {
        let out = Command::new(&meshctl)
            .args(["kube-inject", "-f"])
            .arg(from)
            .arg("-o")
            .arg(to)
            .output()?;
        if !out.status.success() {
            bail!(
                "meshctl kube-inject: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Pod/debug: not injected: the pod opts out"),
            "{stderr}"
        );
    }
    // Injecting the output again changes nothing.
    assert_eq!(std::fs::read(&first)?, std::fs::read(&second)?);
    // Everything validates, and only the workloads got the proxy.
    let summary = run_checker(&["validate", &first.display().to_string()])?;
    let documents: Vec<(String, Vec<String>)> = summary["documents"]
        .as_array()
        .context("documents")?
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or_default().to_string(),
                d["containers"]
                    .as_array()
                    .map(|c| {
                        c.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect();
    let with_proxy = |kind: &str, app: &str| {
        (
            kind.to_string(),
            vec![app.to_string(), "istio-proxy".to_string()],
        )
    };
    assert_eq!(
        documents,
        vec![
            ("Service".to_string(), vec![]),
            with_proxy("Deployment", "web"),
            with_proxy("StatefulSet", "ledger"),
            with_proxy("DaemonSet", "shipper"),
            with_proxy("Job", "migrate"),
            with_proxy("CronJob", "report"),
            ("Pod".to_string(), vec!["shell".to_string()]),
        ]
    );
    // The Service is copied byte for byte, comments included.
    let text = std::fs::read_to_string(&first)?;
    let original = std::fs::read_to_string(&input)?;
    let service = original.split("\n---\n").next().context("first document")?;
    assert!(text.starts_with(service), "{text}");

    // A bad file is refused with the document named.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a}]}\n---\nkind: [\n",
    )?;
    let out = Command::new(&meshctl)
        .args(["kube-inject", "-f"])
        .arg(&bad)
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("document 2: not valid YAML"), "{stderr}");
    Ok(())
}
