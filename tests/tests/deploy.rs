//! Deployment files, checked statically (no Kubernetes API server and no Docker
//! engine are needed):
//!
//! - every Helm chart passes `helm lint --strict`;
//! - the umbrella chart renders for each value set in `charts/dromon/ci/`, every
//!   rendered object passes `kubernetes-validate --strict` for Kubernetes 1.31, and
//!   the objects have the shape the deployment promises (components, ports, probes,
//!   hardening, replicas, webhooks, least-privilege RBAC);
//! - `helm template --include-crds` adds the Istio CRDs of `charts/dromon/crds/`, and
//!   they validate too;
//! - the schema check really refuses a broken manifest, and the charts' value schemas
//!   refuse bad values;
//! - `docker-compose config` accepts docker-compose.yml, which runs every component
//!   with PostgreSQL and Prometheus, health checks and ordered start-up.
//!
//! Needs helm and docker-compose (on PATH or in `.tools/bin`) and kubernetes-validate
//! in `.venv`, all installed by `scripts/install-test-deps.sh`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use dromon_e2e::repo;
use serde::Deserialize;
use serde_json::Value;

/// The Kubernetes version manifests are validated against.
const KUBERNETES_VERSION: &str = "1.31.0";
/// The release namespace the charts are rendered into.
const NAMESPACE: &str = "dromon-system";
const RELEASE: &str = "dromon";

const COMPONENTS: [&str; 6] = [
    "galley",
    "pilot",
    "citadel",
    "mixer-policy",
    "mixer-telemetry",
    "sidecar-injector",
];

/// Service ports (in the cluster) each component's Service must offer by default.
fn service_ports(component: &str) -> &'static [u16] {
    match component {
        "galley" => &[9901, 15014],
        "pilot" => &[15010, 15014],
        "citadel" => &[8060, 15014],
        "mixer-policy" => &[9091, 15014],
        "mixer-telemetry" => &[9091, 15014, 42422],
        "sidecar-injector" => &[443, 15014],
        _ => unreachable!("unknown component {component}"),
    }
}

/// Ports each component listens on in its container.
fn container_ports(component: &str) -> &'static [u16] {
    match component {
        "sidecar-injector" => &[9443, 15014],
        other => service_ports(other),
    }
}

// ---- tools -------------------------------------------------------------------------

/// A tool from the repository's `.tools/bin`, else from PATH.
fn tool(name: &str) -> PathBuf {
    let local = repo().join(".tools/bin").join(name);
    if local.is_file() {
        return local;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "{name} not found in {} nor on PATH: run scripts/install-test-deps.sh",
            repo().join(".tools/bin").display()
        )
    })
}

fn kubernetes_validate() -> PathBuf {
    let path = repo().join(".venv/bin/kubernetes-validate");
    assert!(
        path.is_file(),
        "{} missing: run scripts/install-test-deps.sh",
        path.display()
    );
    path
}

fn run(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

fn expect_success(command: &mut Command) -> String {
    let shown = format!("{command:?}");
    let out = run(command);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The charts copied into a temporary directory, the umbrella chart's dependencies
/// built there from the sibling charts (file://, no network), helm's own state kept
/// in the same directory so no user repository is consulted.
struct Charts {
    dir: tempfile::TempDir,
}

impl Charts {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        copy_dir(&repo().join("charts"), &dir.path().join("charts"));
        let charts = Self { dir };
        let dromon = charts.chart("dromon");
        // Dependencies vendored in a working copy are rebuilt from the sources.
        let _ = std::fs::remove_dir_all(dromon.join("charts"));
        let _ = std::fs::remove_file(dromon.join("Chart.lock"));
        expect_success(
            charts
                .helm()
                .args(["dependency", "build", "--skip-refresh"])
                .arg(&dromon),
        );
        charts
    }

    fn chart(&self, name: &str) -> PathBuf {
        self.dir.path().join("charts").join(name)
    }

    fn helm(&self) -> Command {
        let mut command = Command::new(tool("helm"));
        let home = self.dir.path().join("helm-home");
        command
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env("KUBECONFIG", home.join("no-kubeconfig"));
        command
    }

    /// `helm template` of the umbrella chart with extra arguments (value files, --set).
    fn template_with(&self, args: &[&str]) -> Output {
        run(self
            .helm()
            .args(["template", RELEASE])
            .arg(self.chart("dromon"))
            .args([
                "--namespace",
                NAMESPACE,
                "--kube-version",
                KUBERNETES_VERSION,
            ])
            .args(args))
    }

    /// The umbrella chart rendered with `ci/<set>-values.yaml`.
    fn render(&self, set: &str) -> Rendered {
        let values = repo().join(format!("charts/dromon/ci/{set}-values.yaml"));
        assert!(values.is_file(), "{} missing", values.display());
        let out = self.template_with(&["--values", values.to_str().expect("utf-8 path")]);
        assert!(
            out.status.success(),
            "helm template with {set} values failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Rendered {
            objects: parse_documents(&text),
            text,
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

fn parse_documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .filter_map(|doc| {
            let value = serde_norway::Value::deserialize(doc).expect("rendered YAML parses");
            (!value.is_null()).then(|| serde_json::to_value(value).expect("YAML as JSON"))
        })
        .collect()
}

// ---- rendered manifests ------------------------------------------------------------

struct Rendered {
    text: String,
    objects: Vec<Value>,
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn kind(object: &Value) -> &str {
    str_at(object, "/kind")
}

fn name(object: &Value) -> &str {
    str_at(object, "/metadata/name")
}

fn component_of(object: &Value) -> &str {
    str_at(object, "/metadata/labels/app.kubernetes.io~1name")
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Rendered {
    fn of_kind<'a>(&'a self, wanted: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| kind(o) == wanted)
    }

    fn one<'a>(&'a self, wanted: &'a str, component: &str) -> &'a Value {
        let found: Vec<&Value> = self
            .of_kind(wanted)
            .filter(|o| component_of(o) == component)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {wanted} of {component}, found {}",
            found.len()
        );
        found[0]
    }

    fn components(&self) -> BTreeSet<String> {
        self.of_kind("Deployment")
            .map(|d| component_of(d).to_owned())
            .collect()
    }

    /// Every object passes kubernetes-validate --strict, and every object has a schema.
    fn assert_schema_valid(&self, set: &str) {
        let (ok, report) = validate_manifest(&self.text);
        assert!(
            ok,
            "{set}: kubernetes-validate refused the manifests:\n{report}"
        );
        let passed = report
            .lines()
            .filter(|line| line.starts_with("INFO") && line.contains(" passed "))
            .count();
        assert_eq!(
            passed,
            self.objects.len(),
            "{set}: not every object was validated:\n{report}"
        );
    }
}

/// Runs kubernetes-validate on a manifest; (accepted without warnings, its report).
fn validate_manifest(manifest: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("manifest.yaml");
    std::fs::write(&file, manifest).expect("write manifest");
    let out = run(Command::new(kubernetes_validate())
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .arg(&file));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let warned = report
        .lines()
        .any(|l| l.starts_with("WARN") || l.starts_with("ERROR"));
    (out.status.success() && !warned, report)
}

/// The shape every Deployment must have: ports, probes on the monitoring port,
/// resources, non-root and read-only with every capability dropped.
fn assert_hardened_deployment(deployment: &Value) {
    let component = component_of(deployment);
    let pod = deployment.pointer("/spec/template/spec").expect("pod spec");
    assert_eq!(
        pod.pointer("/securityContext/runAsNonRoot"),
        Some(&Value::Bool(true)),
        "{component}: pod runAsNonRoot"
    );
    assert_ne!(
        pod.pointer("/securityContext/runAsUser")
            .and_then(Value::as_u64),
        Some(1337),
        "{component}: uid 1337 belongs to the proxies"
    );
    let containers = pod
        .pointer("/containers")
        .and_then(Value::as_array)
        .expect("containers");
    assert_eq!(containers.len(), 1, "{component}: one container");
    let c = &containers[0];
    let ports: BTreeMap<String, u64> = c
        .pointer("/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            (
                str_at(p, "/name").to_owned(),
                p.pointer("/containerPort")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            )
        })
        .collect();
    for port in container_ports(component) {
        assert!(
            ports.values().any(|p| p == &u64::from(*port)),
            "{component}: container port {port} missing from {ports:?}"
        );
    }
    assert_eq!(ports.get("http-monitoring"), Some(&15014), "{component}");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/ready")] {
        assert_eq!(
            str_at(c, &format!("/{probe}/httpGet/path")),
            path,
            "{component}: {probe}"
        );
        assert_eq!(
            str_at(c, &format!("/{probe}/httpGet/port")),
            "http-monitoring",
            "{component}: {probe} on the monitoring port"
        );
    }
    assert!(
        c.pointer("/resources/requests/cpu").is_some()
            && c.pointer("/resources/requests/memory").is_some()
            && c.pointer("/resources/limits/memory").is_some(),
        "{component}: resources"
    );
    let sc = c
        .pointer("/securityContext")
        .expect("container securityContext");
    assert_eq!(sc.pointer("/runAsNonRoot"), Some(&Value::Bool(true)));
    assert_eq!(
        sc.pointer("/readOnlyRootFilesystem"),
        Some(&Value::Bool(true)),
        "{component}: readOnlyRootFilesystem"
    );
    assert_eq!(
        sc.pointer("/allowPrivilegeEscalation"),
        Some(&Value::Bool(false))
    );
    assert_eq!(
        strings(sc.pointer("/capabilities/drop")),
        ["ALL"],
        "{component}: drop ALL"
    );
    assert!(
        strings(sc.pointer("/capabilities/add")).is_empty(),
        "{component}: no capability added"
    );
}

/// No rule of any Role or ClusterRole uses a wildcard or a privilege-granting verb.
fn assert_least_privilege(rendered: &Rendered) {
    let roles: Vec<&Value> = rendered
        .objects
        .iter()
        .filter(|o| matches!(kind(o), "Role" | "ClusterRole"))
        .collect();
    for role in roles {
        let rules = role
            .pointer("/rules")
            .and_then(Value::as_array)
            .expect("rules");
        assert!(!rules.is_empty(), "{} has no rules", name(role));
        for rule in rules {
            for field in ["verbs", "resources", "apiGroups", "resourceNames"] {
                let values = strings(rule.get(field));
                assert!(
                    !values.iter().any(|v| v.contains('*')),
                    "{} {}: wildcard in {field}: {values:?}",
                    kind(role),
                    name(role)
                );
            }
            let verbs = strings(rule.get("verbs"));
            assert!(!verbs.is_empty(), "{}: a rule without verbs", name(role));
            for verb in ["escalate", "bind", "impersonate"] {
                assert!(
                    !verbs.iter().any(|v| v == verb),
                    "{}: verb {verb}",
                    name(role)
                );
            }
            assert!(
                rule.get("nonResourceURLs").is_none(),
                "{}: nonResourceURLs",
                name(role)
            );
        }
    }
    for binding in rendered
        .objects
        .iter()
        .filter(|o| matches!(kind(o), "RoleBinding" | "ClusterRoleBinding"))
    {
        for subject in binding
            .pointer("/subjects")
            .and_then(Value::as_array)
            .expect("subjects")
        {
            assert_eq!(str_at(subject, "/kind"), "ServiceAccount");
            assert_eq!(str_at(subject, "/namespace"), NAMESPACE);
        }
        let role = str_at(binding, "/roleRef/name");
        assert!(
            rendered
                .objects
                .iter()
                .any(|o| name(o) == role && kind(o) == str_at(binding, "/roleRef/kind")),
            "{} binds {role}, which the chart does not render",
            name(binding)
        );
    }
}

/// Every webhook states failurePolicy and timeoutSeconds, has no side effects, and
/// is never sent the release namespace.
fn assert_webhooks(rendered: &Rendered) -> usize {
    let mut count = 0;
    for config in rendered
        .of_kind("MutatingWebhookConfiguration")
        .chain(rendered.of_kind("ValidatingWebhookConfiguration"))
    {
        let (path, component) = if kind(config) == "MutatingWebhookConfiguration" {
            ("/inject", "sidecar-injector")
        } else {
            ("/validate", "galley")
        };
        for webhook in config
            .pointer("/webhooks")
            .and_then(Value::as_array)
            .expect("webhooks")
        {
            count += 1;
            let hook = str_at(webhook, "/name");
            assert!(
                matches!(str_at(webhook, "/failurePolicy"), "Fail" | "Ignore"),
                "{hook}: failurePolicy stated"
            );
            let timeout = webhook
                .pointer("/timeoutSeconds")
                .and_then(Value::as_u64)
                .unwrap_or_else(|| panic!("{hook}: timeoutSeconds stated"));
            assert!((1..=30).contains(&timeout), "{hook}: timeoutSeconds");
            assert_eq!(str_at(webhook, "/sideEffects"), "None", "{hook}");
            let versions = strings(webhook.pointer("/admissionReviewVersions"));
            assert_eq!(versions, ["v1", "v1beta1"], "{hook}");
            assert_eq!(str_at(webhook, "/clientConfig/service/path"), path);
            assert_eq!(
                webhook.pointer("/clientConfig/service/port"),
                Some(&Value::from(443))
            );
            assert_eq!(
                str_at(webhook, "/clientConfig/service/namespace"),
                NAMESPACE
            );
            let service = str_at(webhook, "/clientConfig/service/name");
            let svc = rendered.one("Service", component);
            assert_eq!(name(svc), service, "{hook} names its component's Service");
            let excludes_release = webhook
                .pointer("/namespaceSelector/matchExpressions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|e| {
                    str_at(e, "/key") == "kubernetes.io/metadata.name"
                        && str_at(e, "/operator") == "NotIn"
                        && strings(e.get("values")).iter().any(|v| v == NAMESPACE)
                });
            assert!(
                excludes_release,
                "{hook}: the release namespace is excluded"
            );
        }
    }
    count
}

fn assert_services(rendered: &Rendered, component: &str) {
    let service = rendered.one("Service", component);
    let ports: Vec<u64> = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.pointer("/port").and_then(Value::as_u64))
        .collect();
    for port in service_ports(component) {
        assert!(
            ports.contains(&u64::from(*port)),
            "{component}: Service port {port} missing from {ports:?}"
        );
    }
}

fn env_of<'a>(deployment: &'a Value, var: &str) -> Option<&'a Value> {
    deployment
        .pointer("/spec/template/spec/containers/0/env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|e| str_at(e, "/name") == var)
}

/// The Istio resources galley reads, as `(group, plural)`.
const ISTIO_RESOURCES: [(&str, &str); 12] = [
    ("networking.istio.io", "virtualservices"),
    ("networking.istio.io", "destinationrules"),
    ("networking.istio.io", "gateways"),
    ("networking.istio.io", "serviceentries"),
    ("networking.istio.io", "sidecars"),
    ("security.istio.io", "peerauthentications"),
    ("security.istio.io", "authorizationpolicies"),
    ("security.istio.io", "requestauthentications"),
    ("config.istio.io", "handlers"),
    ("config.istio.io", "instances"),
    ("config.istio.io", "rules"),
    ("config.istio.io", "attributemanifests"),
];

/// galley's RBAC: reading the Istio resources; when `writes`, also `patch` on
/// exactly their `status` subresources and a Role for its Lease
/// (get/create/update on leases), and no other write.
fn assert_galley_writes_status_only(rendered: &Rendered, writes: bool) {
    let role = rendered.one("ClusterRole", "galley");
    let mut patched: Vec<(String, String)> = Vec::new();
    for rule in role
        .pointer("/rules")
        .and_then(Value::as_array)
        .expect("rules")
    {
        let verbs = strings(rule.get("verbs"));
        if verbs == ["get", "list", "watch"] {
            continue;
        }
        assert_eq!(verbs, ["patch"], "galley's only write is patch: {rule}");
        for group in strings(rule.get("apiGroups")) {
            for resource in strings(rule.get("resources")) {
                patched.push((group.clone(), resource));
            }
        }
    }
    let mut expected: Vec<(String, String)> = if writes {
        ISTIO_RESOURCES
            .iter()
            .map(|(g, r)| ((*g).to_owned(), format!("{r}/status")))
            .collect()
    } else {
        Vec::new()
    };
    patched.sort();
    expected.sort();
    assert_eq!(
        patched, expected,
        "galley patches the status subresources only"
    );
    let lease_roles: Vec<&Value> = rendered
        .of_kind("Role")
        .filter(|o| component_of(o) == "galley")
        .collect();
    if !writes {
        assert!(lease_roles.is_empty(), "no Lease role for galley");
        return;
    }
    assert_eq!(lease_roles.len(), 1);
    let rules = lease_roles[0]
        .pointer("/rules")
        .and_then(Value::as_array)
        .expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(strings(rules[0].get("apiGroups")), ["coordination.k8s.io"]);
    assert_eq!(strings(rules[0].get("resources")), ["leases"]);
    assert_eq!(strings(rules[0].get("verbs")), ["get", "create", "update"]);
    assert_eq!(str_at(lease_roles[0], "/metadata/namespace"), NAMESPACE);
    assert!(
        rendered
            .of_kind("RoleBinding")
            .any(|b| component_of(b) == "galley"
                && str_at(b, "/roleRef/name") == name(lease_roles[0])),
        "galley's Lease role is bound"
    );
}

// ---- tests ---------------------------------------------------------------------------

#[test]
fn every_chart_passes_helm_lint() {
    let charts = Charts::new();
    for chart in COMPONENTS {
        expect_success(
            charts
                .helm()
                .args(["lint", "--strict", "--namespace", NAMESPACE])
                .arg(charts.chart(chart)),
        );
    }
    for set in ["defaults", "minimal", "ha"] {
        let values = repo().join(format!("charts/dromon/ci/{set}-values.yaml"));
        expect_success(
            charts
                .helm()
                .args(["lint", "--strict", "--namespace", NAMESPACE])
                .arg(charts.chart("dromon"))
                .arg("--values")
                .arg(values),
        );
    }
    // Every chart has a values schema naming each of its top-level values.
    for chart in COMPONENTS.iter().chain(&["dromon"]) {
        let dir = repo().join("charts").join(chart);
        let schema: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("values.schema.json")).expect("values.schema.json"),
        )
        .expect("values.schema.json is JSON");
        let values = std::fs::read_to_string(dir.join("values.yaml")).expect("values.yaml");
        let top_level = values
            .lines()
            .filter(|l| !l.starts_with([' ', '#']) && l.contains(':'))
            .filter_map(|l| l.split(':').next());
        for key in top_level {
            assert!(
                schema.pointer(&format!("/properties/{key}")).is_some(),
                "{chart}: {key} is not in values.schema.json"
            );
        }
    }
}

#[test]
fn defaults_render_every_component_valid_and_hardened() {
    let charts = Charts::new();
    let rendered = charts.render("defaults");
    rendered.assert_schema_valid("defaults");
    let want: BTreeSet<String> = COMPONENTS.iter().map(|c| (*c).to_owned()).collect();
    assert_eq!(rendered.components(), want);
    for component in COMPONENTS {
        let deployment = rendered.one("Deployment", component);
        assert_hardened_deployment(deployment);
        assert_eq!(
            deployment.pointer("/spec/replicas"),
            Some(&Value::from(1)),
            "{component}"
        );
        assert_services(&rendered, component);
        rendered.one("ServiceAccount", component);
        rendered.one("PodDisruptionBudget", component);
    }
    // Components follow each other through this release's Services.
    let pilot = rendered.one("Deployment", "pilot");
    assert_eq!(
        str_at(
            env_of(pilot, "PILOT_GALLEY").expect("PILOT_GALLEY"),
            "/value"
        ),
        format!("http://{RELEASE}-galley.{NAMESPACE}.svc:9901")
    );
    // The injector: webhook on 443 -> 9443, its TLS Secret and its configuration.
    let injector = rendered.one("Service", "sidecar-injector");
    let webhook_port = injector
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.pointer("/port") == Some(&Value::from(443)))
        .expect("port 443");
    assert_eq!(str_at(webhook_port, "/targetPort"), "https-webhook");
    let injector = rendered.one("Deployment", "sidecar-injector");
    assert_eq!(
        str_at(
            env_of(injector, "SIDECAR_INJECTOR_WEBHOOK_ADDR").expect("webhook addr"),
            "/value"
        ),
        "0.0.0.0:9443"
    );
    let secret = injector
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|v| v.pointer("/secret/secretName").and_then(Value::as_str));
    assert_eq!(secret, Some("dromon-sidecar-injector-tls"));
    let config = rendered
        .of_kind("ConfigMap")
        .find(|c| name(c) == format!("{RELEASE}-sidecar-injector-config"))
        .expect("the injector's ConfigMap");
    let config: Value =
        serde_norway::from_str::<serde_norway::Value>(str_at(config, "/data/config.yaml"))
            .map(|v| serde_json::to_value(v).expect("JSON"))
            .expect("the injector's config is YAML");
    assert_eq!(str_at(&config, "/policy"), "enabled");
    assert_eq!(
        str_at(&config, "/values/pilotAddress"),
        format!("{RELEASE}-pilot.{NAMESPACE}.svc:15011")
    );
    assert_eq!(str_at(&config, "/values/trustDomain"), "cluster.local");
    assert!(
        rendered
            .of_kind("ConfigMap")
            .any(|c| name(c) == format!("{RELEASE}-mesh-config")),
        "the mesh configuration ConfigMap"
    );
    // galley's validating webhook stays off by default.
    assert_eq!(rendered.of_kind("MutatingWebhookConfiguration").count(), 1);
    assert_eq!(
        rendered.of_kind("ValidatingWebhookConfiguration").count(),
        0
    );
    assert_eq!(assert_webhooks(&rendered), 2);
    assert_least_privilege(&rendered);
    // The mixers never call the Kubernetes API.
    for mixer in ["mixer-policy", "mixer-telemetry"] {
        let pod = rendered.one("Deployment", mixer);
        assert_eq!(
            pod.pointer("/spec/template/spec/automountServiceAccountToken"),
            Some(&Value::Bool(false)),
            "{mixer}"
        );
    }
}

#[test]
fn minimal_renders_pilot_alone() {
    let charts = Charts::new();
    let rendered = charts.render("minimal");
    rendered.assert_schema_valid("minimal");
    assert_eq!(rendered.components(), BTreeSet::from(["pilot".to_owned()]));
    for object in &rendered.objects {
        assert_eq!(
            component_of(object),
            "pilot",
            "{} {} belongs to another component",
            kind(object),
            name(object)
        );
    }
    assert_hardened_deployment(rendered.one("Deployment", "pilot"));
    assert_eq!(assert_webhooks(&rendered), 0);
    assert_least_privilege(&rendered);
}

#[test]
fn kubernetes_modes_render_valid_and_switch_each_component_to_the_cluster() {
    let charts = Charts::new();
    let rendered = charts.render("kubernetes");
    rendered.assert_schema_valid("kubernetes");
    assert_least_privilege(&rendered);
    let value = |deployment: &Value, var: &str| {
        env_of(deployment, var)
            .map(|e| str_at(e, "/value").to_owned())
            .unwrap_or_default()
    };
    let galley = rendered.one("Deployment", "galley");
    assert_eq!(value(galley, "GALLEY_KUBE"), "true");
    assert_eq!(value(galley, "DROMON_KUBE_IN_CLUSTER"), "true");
    assert_eq!(value(galley, "GALLEY_WATCH_NAMESPACES"), "shop,payments");
    // One source only: no configuration directory beside the cluster.
    assert!(env_of(galley, "GALLEY_CONFIG_DIR").is_none());
    assert_eq!(
        value(galley, "GALLEY_WEBHOOK_TLS_DIR"),
        "/etc/dromon/webhook-certs"
    );
    // galley writes analysis messages into status, elected through a Lease in the
    // release namespace.
    assert_eq!(value(galley, "GALLEY_WRITE_STATUS"), "true");
    assert_eq!(value(galley, "GALLEY_LEASE_NAMESPACE"), NAMESPACE);
    assert_galley_writes_status_only(&rendered, true);
    // writeStatus: false leaves galley read-only.
    let values = repo().join("charts/dromon/ci/kubernetes-values.yaml");
    let out = charts.template_with(&[
        "--values",
        values.to_str().expect("utf-8 path"),
        "--set",
        "galley.writeStatus=false",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read_only = Rendered {
        objects: parse_documents(&String::from_utf8_lossy(&out.stdout)),
        text: String::new(),
    };
    assert_galley_writes_status_only(&read_only, false);
    let galley_read_only = read_only.one("Deployment", "galley");
    assert_eq!(value(galley_read_only, "GALLEY_WRITE_STATUS"), "false");
    assert!(env_of(galley_read_only, "GALLEY_LEASE_NAMESPACE").is_none());
    let pilot = rendered.one("Deployment", "pilot");
    assert_eq!(value(pilot, "PILOT_KUBE"), "true");
    assert_eq!(value(pilot, "PILOT_CLUSTER_DOMAIN"), "cluster.local");
    assert_eq!(value(pilot, "PILOT_TRUST_DOMAIN"), "cluster.local");
    let citadel = rendered.one("Deployment", "citadel");
    assert_eq!(value(citadel, "CITADEL_KUBE_TOKEN_REVIEW"), "true");
    assert_eq!(value(citadel, "CITADEL_KUBE_SECRETS"), "true");
    // citadel patches exactly the webhook configurations this release renders.
    let mut patched: Vec<String> = value(citadel, "CITADEL_PATCH_WEBHOOKS")
        .split(',')
        .map(str::to_owned)
        .collect();
    patched.sort();
    let mut webhooks: Vec<String> = rendered
        .objects
        .iter()
        .filter(|o| kind(o).ends_with("WebhookConfiguration"))
        .map(|o| name(o).to_owned())
        .collect();
    webhooks.sort();
    assert_eq!(patched, webhooks);
    // The injector's two webhook entries and galley's one.
    assert_eq!(assert_webhooks(&rendered), 3);
    // citadel issues both webhooks' serving certificates: each names the Service the
    // webhook configuration calls, for the account the Deployment runs as, and the
    // Deployment serves from that account's istio.<sa> Secret. The caBundle is
    // citadel's to fill, so the chart leaves it out.
    let dns_certs = value(citadel, "CITADEL_DNS_CERTS");
    let mut wanted = Vec::new();
    for (component, volume) in [("sidecar-injector", "certs"), ("galley", "webhook-certs")] {
        let deployment = rendered.one("Deployment", component);
        let account = str_at(deployment, "/spec/template/spec/serviceAccountName");
        let service = name(rendered.one("Service", component));
        wanted.push(format!("{NAMESPACE}/{account}={service}.{NAMESPACE}.svc"));
        let secret = deployment
            .pointer("/spec/template/spec/volumes")
            .and_then(Value::as_array)
            .and_then(|v| v.iter().find(|v| str_at(v, "/name") == volume))
            .map(|v| str_at(v, "/secret/secretName"))
            .unwrap_or_else(|| panic!("{component}: volume {volume}"));
        assert_eq!(secret, format!("istio.{account}"), "{component}");
    }
    assert_eq!(dns_certs, wanted.join(";"));
    assert!(
        !rendered.text.contains("caBundle:"),
        "caBundle left to citadel"
    );
    // With only the webhooks' certificates wanted, citadel serves only its namespace.
    assert_eq!(value(citadel, "CITADEL_SECRET_NAMESPACES"), "");
    let only_webhooks =
        charts.template_with(&["--set", "global.webhookCertificates.fromCitadel=true"]);
    assert!(only_webhooks.status.success());
    let text = String::from_utf8_lossy(&only_webhooks.stdout);
    let objects = parse_documents(&text);
    let citadel = objects
        .iter()
        .find(|o| kind(o) == "Deployment" && name(o).ends_with("citadel"))
        .expect("citadel");
    assert_eq!(value(citadel, "CITADEL_KUBE_SECRETS"), "true");
    assert_eq!(value(citadel, "CITADEL_SECRET_NAMESPACES"), NAMESPACE);
    // The defaults stay on files and off the cluster.
    let defaults = charts.render("defaults");
    assert!(env_of(defaults.one("Deployment", "galley"), "GALLEY_KUBE").is_none());
    assert_galley_writes_status_only(&defaults, false);
    assert!(
        env_of(defaults.one("Deployment", "galley"), "GALLEY_WRITE_STATUS").is_none(),
        "no status writer without the Kubernetes source"
    );
    assert!(env_of(defaults.one("Deployment", "pilot"), "PILOT_KUBE").is_none());
    assert!(
        env_of(
            defaults.one("Deployment", "citadel"),
            "CITADEL_KUBE_SECRETS"
        )
        .is_none()
    );
}

#[test]
fn ha_renders_three_replicas_autoscaled_with_budgets_and_postgresql() {
    let charts = Charts::new();
    let rendered = charts.render("ha");
    rendered.assert_schema_valid("ha");
    for component in COMPONENTS {
        let deployment = rendered.one("Deployment", component);
        assert_hardened_deployment(deployment);
        let hpa = rendered.one("HorizontalPodAutoscaler", component);
        assert_eq!(str_at(hpa, "/apiVersion"), "autoscaling/v2");
        assert_eq!(str_at(hpa, "/spec/scaleTargetRef/name"), name(deployment));
        assert_eq!(
            hpa.pointer("/spec/minReplicas"),
            Some(&Value::from(3)),
            "{component}: three replicas at least"
        );
        // The autoscaler owns the replica count; otherwise it must be three.
        if let Some(replicas) = deployment.pointer("/spec/replicas") {
            assert_eq!(replicas, &Value::from(3), "{component}");
        }
        let pdb = rendered.one("PodDisruptionBudget", component);
        assert_eq!(str_at(pdb, "/apiVersion"), "policy/v1");
        assert_eq!(
            pdb.pointer("/spec/minAvailable"),
            Some(&Value::from(2)),
            "{component}"
        );
    }
    for (component, var) in [
        ("citadel", "CITADEL_LEDGER"),
        ("mixer-policy", "MIXER_POLICY_QUOTA_DATABASE"),
        ("mixer-telemetry", "MIXER_TELEMETRY_LOG_DATABASE"),
    ] {
        let env = env_of(rendered.one("Deployment", component), var)
            .unwrap_or_else(|| panic!("{component}: {var}"));
        assert_eq!(
            str_at(env, "/valueFrom/secretKeyRef/name"),
            "dromon-postgresql",
            "{component}: {var} from the Secret"
        );
        assert_eq!(str_at(env, "/valueFrom/secretKeyRef/key"), "url");
    }
    // mTLS between the components: pilot follows galley on 9902.
    let pilot = rendered.one("Deployment", "pilot");
    assert_eq!(
        str_at(
            env_of(pilot, "PILOT_GALLEY").expect("PILOT_GALLEY"),
            "/value"
        ),
        format!("https://{RELEASE}-galley.{NAMESPACE}.svc:9902")
    );
    assert_eq!(
        rendered.of_kind("ValidatingWebhookConfiguration").count(),
        1
    );
    assert_eq!(assert_webhooks(&rendered), 3);
    assert_least_privilege(&rendered);
}

#[test]
fn schema_validation_refuses_broken_manifests_and_values() {
    let charts = Charts::new();
    let rendered = charts.render("minimal");
    let deployment = rendered.one("Deployment", "pilot");

    let (ok, report) = validate_manifest(&serde_json::to_string(deployment).expect("JSON"));
    assert!(ok, "the rendered Deployment is valid:\n{report}");

    // A field of the wrong type.
    let mut wrong_type = deployment.clone();
    wrong_type["spec"]["replicas"] = Value::from("three");
    let (ok, report) = validate_manifest(&serde_json::to_string(&wrong_type).expect("JSON"));
    assert!(!ok, "a string replica count was accepted:\n{report}");
    assert!(report.contains("replicas"), "{report}");

    // A field Kubernetes does not know (refused by --strict).
    let mut unknown = deployment.clone();
    unknown["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = Value::from("misspelt");
    let (ok, report) = validate_manifest(&serde_json::to_string(&unknown).expect("JSON"));
    assert!(!ok, "an unknown field was accepted:\n{report}");
    assert!(report.contains("livenesProbe"), "{report}");

    // A required field missing.
    let mut missing = deployment.clone();
    missing["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("selector");
    let (ok, report) = validate_manifest(&serde_json::to_string(&missing).expect("JSON"));
    assert!(!ok, "a Deployment without selector was accepted:\n{report}");

    // Values the charts refuse: a misspelt key, a bad enum, several citadels without a
    // shared CA, PostgreSQL without a URL.
    for (set, why) in [
        ("pilot.replica=3", "Additional property replica"),
        (
            "sidecar-injector.webhook.failurePolicy=Sometimes",
            "failurePolicy",
        ),
        (
            "galley.validationWebhook.timeoutSeconds=60",
            "timeoutSeconds",
        ),
        ("citadel.replicas=3", "cacerts"),
        (
            "global.webhookCertificates.fromCitadel=true,sidecar-injector.serviceAccount.name=x",
            "default service account",
        ),
        ("global.postgresql.enabled=true", "postgresql"),
    ] {
        let out = charts.template_with(&["--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(stderr.contains(why), "--set {set}: {stderr}");
    }
}

#[test]
fn include_crds_renders_the_istio_crds_valid() {
    // The umbrella chart's crds/ (generated by `cargo run -p mesh-kube --bin gen-crds`)
    // is installed by Helm itself; `helm template` shows it only when asked.
    let committed: BTreeSet<String> = std::fs::read_dir(repo().join("charts/dromon/crds"))
        .expect("charts/dromon/crds")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            name.strip_suffix(".yaml").map(str::to_owned)
        })
        .collect();
    assert_eq!(committed.len(), 12, "{committed:?}");
    let charts = Charts::new();
    let values = repo().join("charts/dromon/ci/defaults-values.yaml");
    let out = charts.template_with(&[
        "--include-crds",
        "--values",
        values.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "helm template --include-crds failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rendered = Rendered {
        objects: parse_documents(&text),
        text,
    };
    let crds: BTreeSet<String> = rendered
        .of_kind("CustomResourceDefinition")
        .map(|crd| name(crd).to_owned())
        .collect();
    assert_eq!(crds, committed);
    for group in [
        "networking.istio.io",
        "security.istio.io",
        "config.istio.io",
    ] {
        assert!(
            crds.iter().any(|c| c.ends_with(&format!(".{group}"))),
            "no CRD of {group}"
        );
    }
    rendered.assert_schema_valid("defaults with CRDs");
    assert_eq!(
        charts
            .render("defaults")
            .of_kind("CustomResourceDefinition")
            .count(),
        0,
        "CRDs belong in crds/, not templates/"
    );
}

// ---- containers ------------------------------------------------------------------------

#[test]
fn dockerfile_has_a_hardened_target_per_component() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    for target in COMPONENTS.iter().chain(&["meshctl"]) {
        assert!(
            dockerfile.contains(&format!("FROM runtime AS {target}\n")),
            "Dockerfile: no target {target}"
        );
        assert!(
            dockerfile.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{target}\"]")),
            "Dockerfile: {target}'s entrypoint"
        );
    }
    assert!(dockerfile.contains("USER 10001:10001"));
    assert!(dockerfile.contains("http://127.0.0.1:15014/healthz"));
    assert!(dockerfile.contains("cargo build --release --locked"));
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    for entry in ["target", ".git", ".venv"] {
        assert!(ignore.lines().any(|l| l == entry), ".dockerignore: {entry}");
    }
}

#[test]
fn compose_file_runs_every_component_with_postgres_and_prometheus() {
    let out = expect_success(
        Command::new(tool("docker-compose"))
            .current_dir(repo())
            .args(["--file", "docker-compose.yml", "config"]),
    );
    let compose: Value =
        serde_json::to_value(serde_norway::from_str::<serde_norway::Value>(&out).expect("YAML"))
            .expect("JSON");
    let services = compose
        .pointer("/services")
        .and_then(Value::as_object)
        .expect("services");
    for service in COMPONENTS.iter().chain(&["postgres", "prometheus"]) {
        assert!(services.contains_key(*service), "service {service} missing");
    }
    for component in COMPONENTS {
        let s = &services[component];
        assert_eq!(str_at(s, "/build/target"), component, "{component}: build");
        let test = strings(s.pointer("/healthcheck/test")).join(" ");
        assert!(
            test.contains("127.0.0.1:15014/ready"),
            "{component}: healthcheck {test:?}"
        );
        let published: Vec<u16> = s
            .pointer("/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| match p {
                Value::String(spec) => spec
                    .split('/')
                    .next()
                    .and_then(|s| s.rsplit(':').next())
                    .and_then(|p| p.parse().ok()),
                other => other
                    .pointer("/target")
                    .and_then(Value::as_u64)
                    .map(|p| p as u16),
            })
            .collect();
        for port in container_ports(component) {
            assert!(
                published.contains(port),
                "{component}: container port {port} not published ({published:?})"
            );
        }
        let depends = s
            .pointer("/depends_on")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("{component}: depends_on"));
        assert!(
            depends
                .values()
                .all(|d| str_at(d, "/condition") == "service_healthy"),
            "{component}: waits for healthy dependencies"
        );
    }
    let depends = |service: &str, on: &str| {
        str_at(&services[service], &format!("/depends_on/{on}/condition")).to_owned()
    };
    assert_eq!(depends("citadel", "postgres"), "service_healthy");
    assert_eq!(depends("pilot", "galley"), "service_healthy");
    for mixer in ["mixer-policy", "mixer-telemetry"] {
        assert_eq!(depends(mixer, "galley"), "service_healthy");
        assert_eq!(depends(mixer, "postgres"), "service_healthy");
    }
    assert!(services["postgres"].pointer("/healthcheck/test").is_some());
    assert!(
        services["prometheus"]
            .pointer("/healthcheck/test")
            .is_some()
    );
    // PostgreSQL holds citadel's ledger and the mixers' databases.
    for (service, var) in [
        ("citadel", "CITADEL_LEDGER"),
        ("mixer-policy", "MIXER_POLICY_QUOTA_DATABASE"),
        ("mixer-telemetry", "MIXER_TELEMETRY_LOG_DATABASE"),
    ] {
        let url = str_at(&services[service], &format!("/environment/{var}"));
        assert!(url.starts_with("postgres://"), "{service}: {var}={url}");
        assert!(url.contains("@postgres:5432/"), "{service}: {var}={url}");
    }
    // galley serves the bookinfo sample.
    let galley_volumes = serde_json::to_string(&services["galley"]["volumes"]).expect("JSON");
    assert!(
        galley_volumes.contains("examples/bookinfo"),
        "{galley_volumes}"
    );
    // Named volumes for the state.
    let volumes = compose
        .pointer("/volumes")
        .and_then(Value::as_object)
        .expect("volumes");
    for volume in ["postgres-data", "citadel-data", "prometheus-data"] {
        assert!(volumes.contains_key(volume), "volume {volume}");
    }
    // Prometheus scrapes every monitoring port and the mesh metrics.
    let prometheus: Value = serde_json::to_value(
        serde_norway::from_str::<serde_norway::Value>(
            &std::fs::read_to_string(repo().join("deploy/prometheus.yml"))
                .expect("deploy/prometheus.yml"),
        )
        .expect("YAML"),
    )
    .expect("JSON");
    let targets: BTreeSet<String> = prometheus
        .pointer("/scrape_configs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|job| {
            job.pointer("/static_configs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|sc| strings(sc.get("targets")))
                .collect::<Vec<_>>()
        })
        .collect();
    for component in COMPONENTS {
        assert!(
            targets.contains(&format!("{component}:15014")),
            "prometheus does not scrape {component}: {targets:?}"
        );
    }
    assert!(targets.contains("mixer-telemetry:42422"));
    let mounted = serde_json::to_string(&services["prometheus"]["volumes"]).expect("JSON");
    assert!(mounted.contains("deploy/prometheus.yml"), "{mounted}");
}

#[test]
fn the_rendered_injector_configuration_is_accepted_by_the_injector() {
    let charts = Charts::new();
    let rendered = charts.render("defaults");
    let config_map = rendered.one("ConfigMap", "sidecar-injector");
    let config = config_map
        .pointer("/data/config.yaml")
        .and_then(Value::as_str)
        .expect("the injector ConfigMap holds config.yaml");
    let dir = tempfile::tempdir().expect("temporary directory");
    let (config_path, pod) = (dir.path().join("config.yaml"), dir.path().join("pod.yaml"));
    std::fs::write(&config_path, config).expect("write config");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec: {containers: [{name: web, image: web}]}\n",
    )
    .expect("write pod");
    let meshctl = dromon_e2e::bin_path("meshctl").expect("meshctl built");
    let out = expect_success(
        Command::new(meshctl)
            .args(["kube-inject", "--injector-config"])
            .arg(&config_path)
            .arg("-f")
            .arg(&pod),
    );
    let injected = parse_documents(&out);
    let containers = strings(Some(
        &injected[0]["spec"]["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .map(|c| c["name"].clone())
            .collect::<Value>(),
    ));
    assert_eq!(containers, ["web", "istio-proxy"]);
    // The proxies are pointed at this release's pilot and citadel.
    assert!(out.contains(".svc:15011"), "{out}");
    assert!(out.contains(".svc:8060"), "{out}");
}
