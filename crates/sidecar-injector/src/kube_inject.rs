//! Offline injection of multi-document YAML (`meshctl kube-inject -f FILE`).
//!
//! Pods, and the pod templates of Deployments, ReplicaSets, StatefulSets,
//! DaemonSets, Jobs and CronJobs, are injected as the webhook would (the
//! namespace taken as selected). Every other document, and every workload left
//! alone, is copied byte for byte, comments and all; an injected document is
//! written out anew.

use serde_json::Value;

use crate::{
    inject::{InjectError, Injection, Injector},
    policy::SkipReason,
};

/// What happened to one document.
#[derive(Debug, Clone, PartialEq)]
pub enum DocumentResult {
    /// Not a workload (or empty): copied.
    Untouched,
    /// A workload left alone: copied.
    Skipped(SkipReason),
    /// A workload injected.
    Injected,
}

/// One document's report.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentReport {
    /// Its position, from 1.
    pub index: usize,
    /// `Kind/name`, when it has them.
    pub object: String,
    /// What happened.
    pub result: DocumentResult,
    /// Warnings for the workload's author.
    pub warnings: Vec<String>,
}

/// Why the input cannot be injected.
#[derive(Debug, thiserror::Error)]
pub enum KubeInjectError {
    /// A document is not YAML.
    #[error("document {index}: not valid YAML: {message}")]
    Parse {
        /// Its position, from 1.
        index: usize,
        /// The parser's message.
        message: String,
    },
    /// A workload cannot be injected.
    #[error("document {index} ({object}): {source}")]
    Inject {
        /// Its position, from 1.
        index: usize,
        /// `Kind/name`.
        object: String,
        /// Why.
        #[source]
        source: InjectError,
    },
    /// A workload has no pod template where its kind puts one.
    #[error("document {index} ({object}): no pod template at {path}")]
    NoTemplate {
        /// Its position, from 1.
        index: usize,
        /// `Kind/name`.
        object: String,
        /// Where it was looked for.
        path: &'static str,
    },
}

/// Where each workload kind keeps its pod (template).
fn template_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Injects every workload of `input`; `namespace` is used for documents that name
/// none.
pub fn inject_documents(
    injector: &Injector,
    input: &str,
    namespace: &str,
) -> Result<(String, Vec<DocumentReport>), KubeInjectError> {
    let mut out = String::with_capacity(input.len() * 2);
    let mut reports = Vec::new();
    let mut body = String::new();
    let mut index = 0;
    let mut flush = |body: &mut String, out: &mut String| -> Result<(), KubeInjectError> {
        index += 1;
        let (text, report) = inject_document(injector, body, index, namespace)?;
        out.push_str(&text);
        if let Some(report) = report {
            reports.push(report);
        }
        body.clear();
        Ok(())
    };
    for line in input.split_inclusive('\n') {
        if is_separator(line) {
            flush(&mut body, &mut out)?;
            out.push_str(line);
        } else {
            body.push_str(line);
        }
    }
    flush(&mut body, &mut out)?;
    Ok((out, reports))
}

fn is_separator(line: &str) -> bool {
    let line = line.trim_end_matches(['\n', '\r']);
    line == "---"
        || line
            .strip_prefix("---")
            .is_some_and(|rest| rest.starts_with([' ', '\t']))
}

fn inject_document(
    injector: &Injector,
    text: &str,
    index: usize,
    default_namespace: &str,
) -> Result<(String, Option<DocumentReport>), KubeInjectError> {
    let has_content = text.lines().any(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with('#')
    });
    if !has_content {
        return Ok((text.to_string(), None));
    }
    let mut doc: Value = serde_norway::from_str(text).map_err(|e| KubeInjectError::Parse {
        index,
        message: e.to_string(),
    })?;
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let object = format!("{kind}/{name}");
    let report = |result, warnings| {
        Some(DocumentReport {
            index,
            object: object.clone(),
            result,
            warnings,
        })
    };
    let Some(path) = template_path(kind) else {
        return Ok((
            text.to_string(),
            report(DocumentResult::Untouched, Vec::new()),
        ));
    };
    let namespace = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(default_namespace)
        .to_string();
    let Some(pod) = doc.pointer_mut(path) else {
        return Err(KubeInjectError::NoTemplate {
            index,
            object,
            path,
        });
    };
    match injector.inject(pod, &namespace, None) {
        Ok(Injection::Injected {
            pod: injected,
            warnings,
        }) => {
            *pod = injected;
            let mut yaml = serde_norway::to_string(&doc).map_err(|e| KubeInjectError::Parse {
                index,
                message: e.to_string(),
            })?;
            if !yaml.ends_with('\n') {
                yaml.push('\n');
            }
            Ok((yaml, report(DocumentResult::Injected, warnings)))
        }
        Ok(Injection::Skipped { reason, warnings }) => Ok((
            text.to_string(),
            report(DocumentResult::Skipped(reason), warnings),
        )),
        Err(source) => Err(KubeInjectError::Inject {
            index,
            object,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InjectorConfig;

    fn injector() -> Injector {
        Injector::new(InjectorConfig::default()).expect("default template")
    }

    const INPUT: &str = "# the shop
apiVersion: v1
kind: Service
metadata: {name: web}   # stays as written
spec: {ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
--- # a batch job
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: '0 1 * * *'
  jobTemplate:
    spec:
      template:
        spec: {restartPolicy: Never, containers: [{name: run, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: opted-out
  annotations: {sidecar.istio.io/inject: 'false'}
spec: {containers: [{name: x, image: busybox}]}
---
";

    #[test]
    fn workloads_are_injected_and_everything_else_is_copied() {
        let (out, reports) = inject_documents(&injector(), INPUT, "default").expect("injects");
        let results: Vec<_> = reports
            .iter()
            .map(|r| (r.object.as_str(), &r.result))
            .collect();
        assert_eq!(
            results,
            vec![
                ("Service/web", &DocumentResult::Untouched),
                ("Deployment/web", &DocumentResult::Injected),
                ("CronJob/nightly", &DocumentResult::Injected),
                (
                    "Pod/opted-out",
                    &DocumentResult::Skipped(SkipReason::PodOptOut)
                ),
            ]
        );
        // The untouched documents and separators are byte for byte the same.
        assert!(out.starts_with("# the shop\napiVersion: v1\nkind: Service\nmetadata: {name: web}   # stays as written\n"));
        assert!(out.contains("--- # a batch job\n"));
        assert!(out.contains(
            "metadata:\n  name: opted-out\n  annotations: {sidecar.istio.io/inject: 'false'}\n"
        ));

        let docs: Vec<Value> = out
            .split("\n---")
            .filter_map(|d| {
                serde_norway::from_str::<Value>(d.trim_start_matches(" # a batch job")).ok()
            })
            .filter(|d| !d.is_null())
            .collect();
        let deployment = &docs[1];
        let containers = deployment
            .pointer("/spec/template/spec/containers")
            .expect("containers");
        assert_eq!(containers[1]["name"], "istio-proxy");
        assert_eq!(
            deployment["spec"]["selector"],
            serde_json::json!({"matchLabels": {"app": "web"}})
        );
        let cron = &docs[2];
        assert_eq!(
            cron.pointer("/spec/jobTemplate/spec/template/spec/initContainers/0/name"),
            Some(&Value::String("istio-init".into()))
        );

        // Injecting the output again changes nothing.
        let (again, reports) = inject_documents(&injector(), &out, "default").expect("again");
        assert_eq!(again, out);
        assert!(reports.iter().all(|r| r.result != DocumentResult::Injected));
    }

    #[test]
    fn errors_name_the_document() {
        let err = inject_documents(&injector(), "kind: Pod\n---\nkind: [\n", "default")
            .expect_err("yaml");
        assert!(err.to_string().starts_with("document 1"), "{err}");
        let err =
            inject_documents(&injector(), "a: 1\n---\nkind: [\n", "default").expect_err("yaml");
        assert!(
            err.to_string().starts_with("document 2: not valid YAML"),
            "{err}"
        );
        let err = inject_documents(
            &injector(),
            "kind: Deployment\nmetadata: {name: d}\nspec: {}\n",
            "default",
        )
        .expect_err("no template");
        assert!(err.to_string().contains("Deployment/d"), "{err}");
        let err = inject_documents(
            &injector(),
            "kind: Pod\nmetadata: {name: p, annotations: {traffic.sidecar.istio.io/excludeInboundPorts: 'ssh'}}\nspec: {containers: [{name: a}]}\n",
            "default",
        )
        .expect_err("annotation");
        assert!(err.to_string().contains("excludeInboundPorts"), "{err}");
    }
}
