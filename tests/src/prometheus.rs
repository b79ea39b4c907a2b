//! A real Prometheus server (Debian's `prometheus`, installed by the test
//! command) on a temporary directory, scraping given targets every second.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, bail};

use crate::{ChildGuard, free_port, http_json, wait_http_ok};

/// A running Prometheus server.
pub struct PrometheusServer {
    _child: ChildGuard,
    _dir: tempfile::TempDir,
    /// Its HTTP address.
    pub addr: SocketAddr,
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl PrometheusServer {
    /// Starts Prometheus scraping `targets` (`host:port`, path `/metrics`) every
    /// second, and waits until it is ready.
    pub async fn start(targets: &[SocketAddr]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: dromon\n  static_configs: [{{targets: [{}]}}]\n",
            list.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = ChildGuard::spawn_path(
            std::path::Path::new("prometheus"),
            &[
                &format!("--config.file={}", config_path.display()),
                &format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                &format!("--web.listen-address={addr}"),
            ],
        )
        .context("starting prometheus (Debian's prometheus package)")?;
        wait_http_ok(addr, "/-/ready", Duration::from_secs(60)).await?;
        Ok(Self {
            _child: child,
            _dir: dir,
            addr,
        })
    }

    /// The value of an instant PromQL query returning one sample, if it
    /// returns one.
    pub async fn query_scalar(&self, promql: &str) -> anyhow::Result<Option<f64>> {
        let json = http_json(
            self.addr,
            &format!("/api/v1/query?query={}", encode(promql)),
        )
        .await?;
        if json["status"] != "success" {
            bail!("query {promql}: {json}");
        }
        let result = json["data"]["result"].as_array().context("no result")?;
        match result.as_slice() {
            [] => Ok(None),
            [one] => {
                let v = one["value"][1].as_str().context("no value")?;
                Ok(Some(v.parse()?))
            }
            _ => bail!("query {promql} returned {} series", result.len()),
        }
    }

    /// Whether every scrape target is up.
    pub async fn targets_up(&self) -> anyhow::Result<bool> {
        let json = http_json(self.addr, "/api/v1/targets").await?;
        let active = json["data"]["activeTargets"]
            .as_array()
            .context("no targets")?;
        Ok(!active.is_empty() && active.iter().all(|t| t["health"] == "up"))
    }
}
