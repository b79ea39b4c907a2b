//! `meshctl proxy-status`: what pilot sent each connected proxy and whether the
//! proxy accepted it, per xDS type.
//!
//! Reads pilot's `/debug/syncz`. A type is SYNCED when the proxy ACKed the last
//! version sent, STALE when a sent version is not yet ACKed, NACKED when the proxy
//! rejected it (the error is shown), and `-` when the proxy never asked for it.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use serde_json::Value;

/// Arguments of `meshctl proxy-status`.
#[derive(Debug, clap::Args)]
pub struct ProxyStatusArgs {
    /// pilot's monitoring address (where `/debug/syncz` is served).
    #[arg(long, env = "MESH_PILOT_MONITORING", default_value = "127.0.0.1:15015")]
    pub pilot: SocketAddr,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Only the proxy with this node id (or `<pod>.<namespace>`).
    pub proxy: Option<String>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table, one row per proxy.
    Table,
    /// pilot's JSON as is.
    Json,
}

const TYPES: [(&str, &str); 4] = [
    ("CDS", "type.googleapis.com/envoy.config.cluster.v3.Cluster"),
    (
        "LDS",
        "type.googleapis.com/envoy.config.listener.v3.Listener",
    ),
    (
        "EDS",
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    ),
    (
        "RDS",
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    ),
];

/// Runs `meshctl proxy-status`: exit 0 when every shown proxy is SYNCED on every
/// type it asked for, 1 when one is STALE or NACKED, 2 when pilot cannot be read.
pub fn proxy_status(args: &ProxyStatusArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let syncz = match runtime.block_on(get_json(args.pilot, "/debug/syncz")) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "error: cannot read pilot's sync status at {}: {e}",
                args.pilot
            );
            return ExitCode::from(2);
        }
    };
    let mut proxies: Vec<Value> = syncz["proxies"].as_array().cloned().unwrap_or_default();
    if let Some(id) = &args.proxy {
        proxies.retain(|p| {
            let node = p["node_id"].as_str().unwrap_or_default();
            node == id || node.split('~').nth(2) == Some(id.as_str())
        });
        if proxies.is_empty() {
            eprintln!("error: no connected proxy with id {id:?}");
            return ExitCode::from(1);
        }
    }
    let all_synced = proxies.iter().all(|p| {
        TYPES
            .iter()
            .all(|(_, t)| matches!(type_state(p, t).0.as_str(), "SYNCED" | "-"))
    });
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(proxies)).unwrap_or_default()
        ),
        Output::Table => print!("{}", render(&proxies)),
    }
    if all_synced {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The state of one type for one proxy, and the NACK error if any.
fn type_state(proxy: &Value, type_url: &str) -> (String, Option<String>) {
    let t = &proxy["types"][type_url];
    if t.is_null() {
        return ("-".into(), None);
    }
    let sent = t["sent_version"].as_str();
    let acked = t["acked_version"].as_str();
    if let Some(error) = t["nack"]["error"].as_str() {
        return ("NACKED".into(), Some(error.to_string()));
    }
    let state = match (sent, acked) {
        (None, _) => "NOT SENT",
        (Some(s), Some(a)) if s == a => "SYNCED",
        _ => "STALE",
    };
    (state.into(), None)
}

/// The table `proxy-status` prints.
pub fn render(proxies: &[Value]) -> String {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "PROTOCOL".into(),
        "CDS".into(),
        "LDS".into(),
        "EDS".into(),
        "RDS".into(),
        "GROUP".into(),
    ]];
    let mut errors = Vec::new();
    for p in proxies {
        let name = p["node_id"].as_str().unwrap_or("<no node>").to_string();
        let mut row = vec![
            name.clone(),
            p["protocol"].as_str().unwrap_or_default().to_string(),
        ];
        for (label, t) in TYPES {
            let (state, error) = type_state(p, t);
            if let Some(e) = error {
                errors.push(format!("{name} {label}: {e}"));
            }
            row.push(state);
        }
        row.push(p["group"].as_str().unwrap_or_default().to_string());
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for e in errors {
        out.push_str(&format!("\n{e}"));
    }
    if out.ends_with(|c| c != '\n') {
        out.push('\n');
    }
    out
}

async fn get_json(addr: SocketAddr, path: &str) -> Result<Value, String> {
    let (status, body) =
        mesh_runtime::http_client::get(&addr.to_string(), path, Duration::from_secs(10)).await?;
    if !(200..300).contains(&status) {
        return Err(format!("{path} answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn states_per_type_and_nack_errors() {
        let proxies = vec![
            json!({"node_id": "a", "protocol": "sotw", "group": "g", "types": {
                TYPES[0].1: {"sent_version": "1", "acked_version": "1", "nack": null},
                TYPES[1].1: {"sent_version": "2", "acked_version": "1", "nack": null},
                TYPES[2].1: {"sent_version": "3", "acked_version": "2", "nack": {"version": "3", "error": "bad cluster"}},
            }}),
        ];
        let table = render(&proxies);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells, ["a", "sotw", "SYNCED", "STALE", "NACKED", "-", "g"]);
        assert!(table.contains("a EDS: bad cluster"), "{table}");
    }
}
