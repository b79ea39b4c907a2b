//! Application HTTP probes sent through the proxy agent.
//!
//! With inbound traffic redirected to the proxy (and mTLS required), the
//! kubelet's plain HTTP probes would fail. Each `httpGet` liveness, readiness
//! and startup probe is rewritten to the agent's status port at
//! `/app-health/<container>/livez|readyz|startupz`; the original probe (its
//! named port resolved to a number) goes to the agent in `ISTIO_KUBE_APP_PROBERS`,
//! and the agent probes the application from inside the pod.
//!
//! A pod opts out with `sidecar.istio.io/rewriteAppHTTPProbers: "false"`.

use serde_json::{Map, Value, json};

/// The opt-out annotation.
pub const REWRITE_ANNOTATION: &str = "sidecar.istio.io/rewriteAppHTTPProbers";

const PROBES: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];

/// Rewrites the HTTP probes of `containers` in place; returns the originals by
/// their new path (empty when nothing was rewritten).
pub fn rewrite(containers: &mut [Value], status_port: u16) -> Map<String, Value> {
    let mut probers = Map::new();
    for container in containers.iter_mut() {
        let Some(container) = container.as_object_mut() else {
            continue;
        };
        let Some(name) = container.get("name").and_then(Value::as_str) else {
            continue;
        };
        let name = name.to_string();
        let ports = container.get("ports").cloned();
        for (field, suffix) in PROBES {
            let Some(probe) = container.get_mut(field).and_then(Value::as_object_mut) else {
                continue;
            };
            let Some(http) = probe.get("httpGet").and_then(Value::as_object) else {
                continue;
            };
            let Some(port) = resolve_port(http.get("port"), ports.as_ref()) else {
                continue;
            };
            let mut original = http.clone();
            original.insert("port".into(), json!(port));
            let mut saved = Map::new();
            saved.insert("httpGet".into(), Value::Object(original));
            if let Some(timeout) = probe.get("timeoutSeconds") {
                saved.insert("timeoutSeconds".into(), timeout.clone());
            }
            let path = format!("/app-health/{name}/{suffix}");
            probe.insert(
                "httpGet".into(),
                json!({"path": path, "port": status_port, "scheme": "HTTP"}),
            );
            probers.insert(path, Value::Object(saved));
        }
    }
    probers
}

/// A probe's port as a number: given as one, or named after a container port.
fn resolve_port(port: Option<&Value>, ports: Option<&Value>) -> Option<u64> {
    match port? {
        Value::Number(n) => n.as_u64().filter(|p| (1..=65535).contains(p)),
        Value::String(s) => match s.parse::<u64>() {
            Ok(p) => Some(p).filter(|p| (1..=65535).contains(p)),
            Err(_) => ports?.as_array()?.iter().find_map(|p| {
                (p.get("name")?.as_str()? == s)
                    .then(|| p.get("containerPort")?.as_u64())
                    .flatten()
            }),
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_probes_are_rewritten_and_kept_for_the_agent() {
        let mut containers = vec![json!({
            "name": "web",
            "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "/live", "port": "http", "httpHeaders": [{"name": "X", "value": "1"}]}, "timeoutSeconds": 3},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8081, "scheme": "HTTPS"}},
            "startupProbe": {"tcpSocket": {"port": 8080}},
        })];
        let probers = rewrite(&mut containers, 15020);
        assert_eq!(
            containers[0]["livenessProbe"],
            json!({"httpGet": {"path": "/app-health/web/livez", "port": 15020, "scheme": "HTTP"}, "timeoutSeconds": 3})
        );
        assert_eq!(
            containers[0]["readinessProbe"]["httpGet"],
            json!({"path": "/app-health/web/readyz", "port": 15020, "scheme": "HTTP"})
        );
        assert_eq!(
            containers[0]["startupProbe"],
            json!({"tcpSocket": {"port": 8080}})
        );
        assert_eq!(
            Value::Object(probers),
            json!({
                "/app-health/web/livez": {"httpGet": {"path": "/live", "port": 8080, "httpHeaders": [{"name": "X", "value": "1"}]}, "timeoutSeconds": 3},
                "/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8081, "scheme": "HTTPS"}},
            })
        );
    }

    #[test]
    fn unresolvable_ports_are_left_alone() {
        let mut containers = vec![json!({
            "name": "web",
            "livenessProbe": {"httpGet": {"path": "/live", "port": "missing"}},
            "readinessProbe": {"httpGet": {"path": "/live", "port": 0}},
        })];
        let before = containers.clone();
        assert!(rewrite(&mut containers, 15020).is_empty());
        assert_eq!(containers, before);
    }
}
