//! Injecting the sidecar into one pod (or pod template).
//!
//! The pod is worked on as JSON, so fields this code does not know (newer API
//! fields, extensions) pass through untouched; the webhook answers with the JSON
//! patch between the submitted pod and the injected one.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{
    config::InjectorConfig,
    policy::{self, PodFacts, SkipReason},
    probes,
    redirect::{AnnotationError, Redirect},
    selector::Labels,
    template::{Template, TemplateError},
};

/// Annotation: the container `kubectl exec/logs` use by default.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
/// Annotation: the container `kubectl logs` uses by default.
pub const DEFAULT_LOGS_CONTAINER: &str = "kubectl.kubernetes.io/default-logs-container";
/// Label: the workload's traffic is mTLS capable.
pub const TLS_MODE: &str = "security.istio.io/tlsMode";
/// Label: the service name telemetry reports the workload under.
pub const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
/// Label: the service revision telemetry reports.
pub const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

/// Why a pod cannot be injected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// The object is not a pod this code can read.
    #[error("invalid pod: {0}")]
    InvalidPod(String),
    /// A traffic annotation has a bad value.
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    /// The template failed for this pod.
    #[error(transparent)]
    Template(#[from] TemplateError),
}

impl InjectError {
    /// A metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            InjectError::InvalidPod(_) => "invalid_pod",
            InjectError::Annotation(_) => "invalid_annotation",
            InjectError::Template(_) => "template",
        }
    }
}

/// What happened to a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Injection {
    /// Left as it was.
    Skipped {
        /// Why.
        reason: SkipReason,
        /// Something the pod's author should know.
        warnings: Vec<String>,
    },
    /// The injected pod.
    Injected {
        /// The pod with its sidecar.
        pod: Value,
        /// Something the pod's author should know.
        warnings: Vec<String>,
    },
}

/// A configuration with its compiled template.
#[derive(Debug)]
pub struct Injector {
    config: InjectorConfig,
    template: Template,
}

/// The template's context.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Context<'a> {
    values: &'a crate::config::Values,
    redirect: &'a Redirect,
    namespace: &'a str,
    pod: &'a Value,
    workload: Workload,
    app_probers: String,
    revision: &'a str,
    annotations: &'a Labels,
    labels: &'a Labels,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Workload {
    name: String,
    canonical_name: String,
    canonical_revision: String,
    service_account: String,
}

impl Injector {
    /// Compiles the configuration's template (or the built-in one).
    pub fn new(config: InjectorConfig) -> Result<Self, TemplateError> {
        let template = Template::compile(
            config
                .template
                .as_deref()
                .unwrap_or(crate::template::DEFAULT_TEMPLATE),
        )?;
        Ok(Self { config, template })
    }

    /// The configuration.
    pub fn config(&self) -> &InjectorConfig {
        &self.config
    }

    /// Injects `pod` (a Pod, or a workload's pod template: `metadata` and `spec`)
    /// living in `namespace`. `namespace_labels` is `None` when the namespace was
    /// already selected by the webhook configuration.
    pub fn inject(
        &self,
        pod: &Value,
        namespace: &str,
        namespace_labels: Option<&Labels>,
    ) -> Result<Injection, InjectError> {
        let view = PodView::read(pod)?;
        let decision = policy::decide(
            &self.config,
            &PodFacts {
                namespace,
                labels: &view.labels,
                annotations: &view.annotations,
                host_network: view.host_network,
            },
            namespace_labels,
        );
        let warnings: Vec<String> = decision.warning.into_iter().collect();
        if let Err(reason) = decision.outcome {
            return Ok(Injection::Skipped { reason, warnings });
        }
        let values = &self.config.values;
        let redirect = Redirect::for_pod(values, &view.annotations)?;

        let mut out = pod.clone();
        let rewrite = values.rewrite_app_http_probers
            && view
                .annotations
                .get(probes::REWRITE_ANNOTATION)
                .is_none_or(|v| !v.trim().eq_ignore_ascii_case("false"));
        let app_probers = match out
            .pointer_mut("/spec/containers")
            .and_then(Value::as_array_mut)
        {
            Some(containers) if rewrite => probes::rewrite(containers, values.status_port),
            _ => Map::new(),
        };

        let workload = workload(pod, &view);
        let context = Context {
            values,
            redirect: &redirect,
            namespace,
            pod,
            app_probers: if app_probers.is_empty() {
                String::new()
            } else {
                Value::Object(app_probers).to_string()
            },
            workload,
            revision: &self.config.revision,
            annotations: &view.annotations,
            labels: &view.labels,
        };
        let sidecar = self.template.render(&context)?;
        let canonical = (
            context.workload.canonical_name.clone(),
            context.workload.canonical_revision.clone(),
        );

        let spec = out
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| InjectError::InvalidPod("spec is not an object".into()))?;
        let status = json!({
            "initContainers": names(&sidecar.init_containers),
            "containers": names(&sidecar.containers),
            "volumes": names(&sidecar.volumes),
            "imagePullSecrets": names(&sidecar.image_pull_secrets),
            "revision": self.config.revision,
        });
        merge_named(
            spec,
            "initContainers",
            sidecar.init_containers,
            Place::First,
        );
        merge_named(spec, "containers", sidecar.containers, Place::Last);
        merge_named(spec, "volumes", sidecar.volumes, Place::Last);
        merge_named(
            spec,
            "imagePullSecrets",
            sidecar.image_pull_secrets,
            Place::Last,
        );

        let metadata = object_entry(
            out.as_object_mut()
                .ok_or_else(|| InjectError::InvalidPod("not an object".into()))?,
            "metadata",
        );
        let annotations = object_entry(metadata, "annotations");
        annotations.insert(policy::STATUS.into(), Value::String(status.to_string()));
        if let Some(first) = &view.first_container {
            for key in [DEFAULT_CONTAINER, DEFAULT_LOGS_CONTAINER] {
                annotations
                    .entry(key)
                    .or_insert_with(|| Value::String(first.clone()));
            }
        }
        for (key, value) in &self.config.injected_annotations {
            annotations
                .entry(key.clone())
                .or_insert_with(|| Value::String(value.clone()));
        }
        let labels = object_entry(metadata, "labels");
        for (key, value) in [
            (TLS_MODE, "istio".to_string()),
            (CANONICAL_NAME, canonical.0),
            (CANONICAL_REVISION, canonical.1),
        ] {
            labels.entry(key).or_insert(Value::String(value));
        }
        Ok(Injection::Injected { pod: out, warnings })
    }
}

/// What the policy and template read from a pod, checked on the way.
struct PodView {
    labels: Labels,
    annotations: Labels,
    host_network: bool,
    first_container: Option<String>,
}

impl PodView {
    fn read(pod: &Value) -> Result<Self, InjectError> {
        let invalid = |m: &str| InjectError::InvalidPod(m.to_string());
        let pod = pod.as_object().ok_or_else(|| invalid("not an object"))?;
        let metadata = match pod.get("metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(invalid("metadata is not an object")),
        };
        let string_map = |field: &str| -> Result<Labels, InjectError> {
            match metadata.and_then(|m| m.get(field)) {
                None | Some(Value::Null) => Ok(Labels::new()),
                Some(Value::Object(map)) => map
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => Ok((k.clone(), s.clone())),
                        _ => Err(InjectError::InvalidPod(format!(
                            "metadata.{field}.{k} is not a string"
                        ))),
                    })
                    .collect(),
                Some(_) => Err(InjectError::InvalidPod(format!(
                    "metadata.{field} is not an object"
                ))),
            }
        };
        let labels = string_map("labels")?;
        let annotations = string_map("annotations")?;
        let spec = pod
            .get("spec")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid("spec is missing or not an object"))?;
        let host_network = match spec.get("hostNetwork") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("spec.hostNetwork is not a boolean")),
        };
        let containers = spec
            .get("containers")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("spec.containers is missing or not a list"))?;
        if containers.is_empty() {
            return Err(invalid("spec.containers is empty"));
        }
        for field in [
            "containers",
            "initContainers",
            "volumes",
            "imagePullSecrets",
        ] {
            match spec.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        if !item.is_object() {
                            return Err(InjectError::InvalidPod(format!(
                                "spec.{field}[{i}] is not an object"
                            )));
                        }
                        if field != "imagePullSecrets"
                            && !item.get("name").is_some_and(Value::is_string)
                        {
                            return Err(InjectError::InvalidPod(format!(
                                "spec.{field}[{i}] has no name"
                            )));
                        }
                    }
                }
                Some(_) => {
                    return Err(InjectError::InvalidPod(format!(
                        "spec.{field} is not a list"
                    )));
                }
            }
        }
        let first_container = containers
            .first()
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Self {
            labels,
            annotations,
            host_network,
            first_container,
        })
    }
}

/// The workload's name and the canonical service labels telemetry reports.
fn workload(pod: &Value, view: &PodView) -> Workload {
    let str_at = |path: &str| pod.pointer(path).and_then(Value::as_str).unwrap_or("");
    // A controller's pod: the owner's name; else the pod's name or generateName
    // without the suffixes controllers add (`-<hash>-`).
    let owner = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|owners| {
            owners
                .iter()
                .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        })
        .and_then(|o| {
            let kind = o.get("kind")?.as_str()?;
            let name = o.get("name")?.as_str()?;
            Some(match kind {
                // A Deployment's ReplicaSet is `<deployment>-<hash>`.
                "ReplicaSet" => name.rsplit_once('-').map_or(name, |(d, _)| d).to_string(),
                _ => name.to_string(),
            })
        });
    let name = owner
        .or_else(|| Some(str_at("/metadata/name").to_string()).filter(|n| !n.is_empty()))
        .or_else(|| {
            let generate = str_at("/metadata/generateName").trim_end_matches('-');
            Some(generate.to_string()).filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| "unknown".into());
    let label = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| view.labels.get(*k).filter(|v| !v.is_empty()).cloned())
    };
    Workload {
        canonical_name: label(&[CANONICAL_NAME, "app.kubernetes.io/name", "app"])
            .unwrap_or_else(|| name.clone()),
        canonical_revision: label(&[CANONICAL_REVISION, "app.kubernetes.io/version", "version"])
            .unwrap_or_else(|| "latest".into()),
        service_account: Some(str_at("/spec/serviceAccountName"))
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string(),
        name,
    }
}

fn names(items: &[Value]) -> Vec<&str> {
    items
        .iter()
        .filter_map(|i| i.get("name").and_then(Value::as_str))
        .collect()
}

/// Where added items go.
#[derive(Clone, Copy)]
enum Place {
    First,
    Last,
}

/// Adds `added` to the list `field` of `spec`. An item with the name of one the
/// pod already has is merged with it, the pod's own fields winning (so a pod can
/// set, say, the proxy's resources by declaring a container of that name), and
/// takes the added item's place. A container of the pod with `image: auto` keeps
/// the injected image.
fn merge_named(spec: &mut Map<String, Value>, field: &str, added: Vec<Value>, place: Place) {
    if added.is_empty() {
        return;
    }
    let existing = match spec.remove(field) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    let name_of = |v: &Value| v.get("name").and_then(Value::as_str).map(str::to_string);
    let mut by_name: BTreeMap<String, Value> = BTreeMap::new();
    let added_names: Vec<Option<String>> = added.iter().map(name_of).collect();
    let mut kept = Vec::with_capacity(existing.len());
    for item in existing {
        match name_of(&item) {
            Some(n) if added_names.iter().any(|a| a.as_deref() == Some(n.as_str())) => {
                by_name.insert(n, item);
            }
            _ => kept.push(item),
        }
    }
    let merged: Vec<Value> = added
        .into_iter()
        .map(|mut item| {
            if let Some(own) = name_of(&item).and_then(|n| by_name.remove(&n))
                && let (Some(target), Value::Object(mut own)) = (item.as_object_mut(), own)
            {
                // `image: auto` asks for the injected image.
                if own.get("image").and_then(Value::as_str) == Some("auto") {
                    own.remove("image");
                }
                target.extend(own);
            }
            item
        })
        .collect();
    let list = match place {
        Place::First => merged.into_iter().chain(kept).collect(),
        Place::Last => kept.into_iter().chain(merged).collect(),
    };
    spec.insert(field.into(), Value::Array(list));
}

/// `map[key]` as an object, created (or replaced, when it is null) as needed.
fn object_entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(m) => m,
        _ => unreachable_object(),
    }
}

#[allow(clippy::unreachable)]
fn unreachable_object() -> ! {
    unreachable!("the entry was just made an object")
}

#[cfg(test)]
mod tests;
