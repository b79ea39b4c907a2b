use serde_json::{Value, json};

use super::*;
use crate::{config::Values, policy::STATUS};

fn injector() -> Injector {
    Injector::new(InjectorConfig::default()).expect("default template")
}

fn web_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9f8c6b5-",
            "labels": {"app": "web", "version": "v2"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c6b5", "controller": true, "uid": "1"}],
        },
        "spec": {
            "serviceAccountName": "web",
            "initContainers": [{"name": "migrate", "image": "web:2"}],
            "containers": [{
                "name": "web",
                "image": "web:2",
                "ports": [{"name": "http", "containerPort": 8080}],
                "livenessProbe": {"httpGet": {"path": "/live", "port": "http"}},
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "futureField": {"kept": true},
        },
    })
}

fn injected(pod: &Value) -> Value {
    match injector().inject(pod, "shop", None).expect("injects") {
        Injection::Injected { pod, .. } => pod,
        Injection::Skipped { reason, .. } => panic!("skipped: {reason}"),
    }
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i["name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| &e["value"])
}

#[test]
fn a_pod_gets_its_sidecar() {
    let pod = web_pod();
    let out = injected(&pod);
    assert_eq!(names(&out, "initContainers"), ["istio-init", "migrate"]);
    assert_eq!(names(&out, "containers"), ["web", "istio-proxy"]);
    assert_eq!(
        names(&out, "volumes"),
        [
            "data",
            "workload-socket",
            "istio-envoy",
            "istio-data",
            "istio-token",
            "istiod-ca-cert",
            "istio-podinfo"
        ]
    );
    // Unknown fields pass through.
    assert_eq!(out["spec"]["futureField"], json!({"kept": true}));

    let init = &out["spec"]["initContainers"][0];
    let args: Vec<&str> = init["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args,
        [
            "istio-iptables",
            "-p",
            "15001",
            "-z",
            "15006",
            "-u",
            "1337",
            "-m",
            "REDIRECT",
            "-i",
            "*",
            "-x",
            "",
            "-b",
            "*",
            "-d",
            "15020,15021,15090"
        ]
    );
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );

    let proxy = &out["spec"]["containers"][1];
    assert_eq!(proxy["image"], Values::default().proxy_image);
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    assert_eq!(proxy["securityContext"]["runAsNonRoot"], true);
    let args = proxy["args"].as_array().expect("args");
    assert!(args.contains(&json!("pilot.istio-system.svc:15011")));
    assert!(args.contains(&json!("shop.svc.cluster.local")));
    assert_eq!(
        env(proxy, "CA_ADDR"),
        Some(&json!("citadel.istio-system.svc:8060"))
    );
    assert_eq!(env(proxy, "ISTIO_META_WORKLOAD_NAME"), Some(&json!("web")));

    // The app's HTTP probe goes through the agent, which gets the original.
    let web = &out["spec"]["containers"][0];
    assert_eq!(
        web["livenessProbe"]["httpGet"],
        json!({"path": "/app-health/web/livez", "port": 15020, "scheme": "HTTP"})
    );
    let probers: Value = serde_json::from_str(
        env(proxy, "ISTIO_KUBE_APP_PROBERS")
            .and_then(Value::as_str)
            .expect("probers"),
    )
    .expect("json");
    assert_eq!(
        probers,
        json!({"/app-health/web/livez": {"httpGet": {"path": "/live", "port": 8080}}})
    );

    let annotations = &out["metadata"]["annotations"];
    let status: Value =
        serde_json::from_str(annotations[STATUS].as_str().expect("status")).expect("json");
    assert_eq!(status["containers"], json!(["istio-proxy"]));
    assert_eq!(status["initContainers"], json!(["istio-init"]));
    assert_eq!(status["revision"], "default");
    assert_eq!(annotations[DEFAULT_CONTAINER], "web");
    let labels = &out["metadata"]["labels"];
    assert_eq!(labels[TLS_MODE], "istio");
    assert_eq!(labels[CANONICAL_NAME], "web");
    assert_eq!(labels[CANONICAL_REVISION], "v2");
    assert_eq!(labels["app"], "web");

    // The patch between the two gives the injected pod; injecting again is a no-op.
    let patch = mesh_admission::patch::diff(&pod, &out);
    assert_eq!(
        mesh_admission::patch::apply(&pod, &patch).expect("applies"),
        out
    );
    assert!(matches!(
        injector().inject(&out, "shop", None),
        Ok(Injection::Skipped {
            reason: SkipReason::AlreadyInjected,
            ..
        })
    ));
}

#[test]
fn a_pods_own_proxy_container_overrides_the_template() {
    let mut pod = web_pod();
    pod["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .insert(
            0,
            json!({"name": "istio-proxy", "image": "auto", "resources": {"limits": {"memory": "256Mi"}}}),
        );
    let out = injected(&pod);
    assert_eq!(names(&out, "containers"), ["web", "istio-proxy"]);
    let proxy = &out["spec"]["containers"][1];
    assert_eq!(proxy["resources"], json!({"limits": {"memory": "256Mi"}}));
    assert_eq!(proxy["image"], Values::default().proxy_image);
}

#[test]
fn opting_out_of_probe_rewriting_and_annotations_reach_the_init_container() {
    let mut pod = web_pod();
    pod["metadata"]["annotations"] = json!({
        "sidecar.istio.io/rewriteAppHTTPProbers": "false",
        "traffic.sidecar.istio.io/excludeOutboundPorts": "5432,6379",
        "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8",
    });
    let out = injected(&pod);
    assert_eq!(
        out["spec"]["containers"][0]["livenessProbe"],
        pod["spec"]["containers"][0]["livenessProbe"]
    );
    assert_eq!(
        env(&out["spec"]["containers"][1], "ISTIO_KUBE_APP_PROBERS"),
        None
    );
    let args = out["spec"]["initContainers"][0]["args"]
        .as_array()
        .expect("args");
    let after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    assert_eq!(after("-o"), Some(json!("5432,6379")));
    assert_eq!(after("-i"), Some(json!("10.0.0.0/8")));
    assert_eq!(after("-q"), None);
}

#[test]
fn labels_cannot_change_the_rendered_yaml() {
    let mut pod = web_pod();
    pod["metadata"]["labels"]["app"] = json!("web\"\n- name: evil\n  image: x # }} {{");
    let out = injected(&pod);
    assert_eq!(names(&out, "containers"), ["web", "istio-proxy"]);
    assert_eq!(
        out["metadata"]["labels"][CANONICAL_NAME],
        pod["metadata"]["labels"]["app"]
    );
}

#[test]
fn malformed_pods_are_refused_with_the_reason() {
    let cases = [
        (json!(null), "not an object"),
        (json!([]), "not an object"),
        (json!({"metadata": {}}), "spec"),
        (json!({"spec": {"containers": []}}), "empty"),
        (json!({"spec": {"containers": {}}}), "spec.containers"),
        (json!({"spec": {"containers": [7]}}), "spec.containers[0]"),
        (
            json!({"spec": {"containers": [{"image": "x"}]}}),
            "has no name",
        ),
        (
            json!({"metadata": 3, "spec": {"containers": [{"name": "a"}]}}),
            "metadata",
        ),
        (
            json!({"metadata": {"labels": {"a": 1}}, "spec": {"containers": [{"name": "a"}]}}),
            "metadata.labels.a",
        ),
        (
            json!({"metadata": {"annotations": []}, "spec": {"containers": [{"name": "a"}]}}),
            "metadata.annotations",
        ),
        (
            json!({"spec": {"hostNetwork": "yes", "containers": [{"name": "a"}]}}),
            "hostNetwork",
        ),
        (
            json!({"spec": {"volumes": "x", "containers": [{"name": "a"}]}}),
            "spec.volumes",
        ),
    ];
    for (pod, expected) in cases {
        match injector().inject(&pod, "shop", None) {
            Err(InjectError::InvalidPod(message)) => {
                assert!(message.contains(expected), "{pod}: {message}")
            }
            other => panic!("{pod}: {other:?}"),
        }
    }
}

#[test]
fn a_minimal_pod_is_injected() {
    let pod = json!({"spec": {"containers": [{"name": "a"}]}});
    let out = injected(&pod);
    assert_eq!(names(&out, "containers"), ["a", "istio-proxy"]);
    assert_eq!(out["metadata"]["labels"][CANONICAL_NAME], "unknown");
    assert_eq!(out["metadata"]["labels"][CANONICAL_REVISION], "latest");
}
