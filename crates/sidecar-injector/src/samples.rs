//! Sample pods and reviews of a chosen size, for benchmarks and load tests.

use serde_json::{Map, Value, json};

/// A Deployment's pod of about `bytes` of JSON (at least one container): each
/// container has ports, an HTTP readiness probe on a named port (rewritten on
/// injection), 20 environment variables and resources; each adds an annotation.
pub fn pod_of_size(bytes: usize) -> Value {
    let mut containers = Vec::new();
    let mut annotations = Map::new();
    let mut i = 0;
    let pod = |containers: &Vec<Value>, annotations: &Map<String, Value>| {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": "app-5f7b9c8d4-",
                "namespace": "shop",
                "labels": {"app": "app", "version": "v1"},
                "annotations": annotations,
            },
            "spec": {"containers": containers, "serviceAccountName": "app"},
        })
    };
    while containers.is_empty() || pod(&containers, &annotations).to_string().len() < bytes {
        let env: Vec<Value> = (0..20)
            .map(|e| json!({"name": format!("SETTING_{i}_{e}"), "value": format!("value-{i}-{e}-of-some-length")}))
            .collect();
        let container = json!({
            "name": format!("app-{i}"),
            "image": format!("registry.example.com/team/app-{i}:1.2.3"),
            "ports": [{"name": "http", "containerPort": 8080 + i}],
            "env": env,
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        });
        containers.push(container);
        annotations.insert(format!("example.com/note-{i}"), json!("x".repeat(200)));
        i += 1;
    }
    pod(&containers, &annotations)
}

/// An `admission.k8s.io/v1` review creating `pod`.
pub fn review(pod: &Value, uid: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_about_what_was_asked() {
        let small = pod_of_size(0).to_string().len();
        assert!(small < 2048, "{small}");
        let big = pod_of_size(64 * 1024).to_string().len();
        assert!((64 * 1024..80 * 1024).contains(&big), "{big}");
    }
}
