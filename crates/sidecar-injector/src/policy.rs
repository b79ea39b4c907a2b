//! Whether a pod gets a sidecar.
//!
//! In order:
//! 1. pods on the host network, pods in ignored namespaces and pods already
//!    injected are left alone;
//! 2. a pod or namespace labelled `istio.io/rev` with another revision belongs to
//!    another injector;
//! 3. when the namespace's labels are known: `istio-injection=disabled` leaves its
//!    pods alone; a namespace with neither `istio-injection=enabled` nor this
//!    revision's `istio.io/rev` only has pods injected that ask to be (the two
//!    selectors of the webhook configuration, applied here when the injector is
//!    called for every namespace, as `meshctl kube-inject` is);
//! 4. the pod's `sidecar.istio.io/inject` label, else its annotation: `true` (or
//!    `y`, `yes`, `on`) injects, any other value does not;
//! 5. without one: `neverInjectSelector`, then `alwaysInjectSelector`, then the
//!    policy (`enabled` injects).

use std::fmt;

use crate::{
    config::{InjectorConfig, Policy},
    selector::Labels,
};

/// The label and annotation a pod asks (or refuses) injection with.
pub const INJECT: &str = "sidecar.istio.io/inject";
/// The annotation recording an injection.
pub const STATUS: &str = "sidecar.istio.io/status";
/// The namespace label selecting injection.
pub const NAMESPACE_INJECTION: &str = "istio-injection";
/// The revision label, on namespaces and pods.
pub const REVISION: &str = "istio.io/rev";

/// Why a pod is not injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// `hostNetwork: true`: redirecting the node's traffic is never wanted.
    HostNetwork,
    /// The namespace is in `ignoredNamespaces`.
    IgnoredNamespace,
    /// The pod already carries `sidecar.istio.io/status`.
    AlreadyInjected,
    /// The pod or namespace names another revision.
    OtherRevision,
    /// The namespace is labelled `istio-injection=disabled`.
    NamespaceDisabled,
    /// The namespace is not selected and the pod did not ask.
    NamespaceNotSelected,
    /// The pod's label or annotation says no.
    PodOptOut,
    /// A `neverInjectSelector` matched.
    NeverInjectSelector,
    /// The policy is disabled and nothing asked for injection.
    PolicyDisabled,
}

impl SkipReason {
    /// A metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::HostNetwork => "host_network",
            SkipReason::IgnoredNamespace => "ignored_namespace",
            SkipReason::AlreadyInjected => "already_injected",
            SkipReason::OtherRevision => "other_revision",
            SkipReason::NamespaceDisabled => "namespace_disabled",
            SkipReason::NamespaceNotSelected => "namespace_not_selected",
            SkipReason::PodOptOut => "pod_opt_out",
            SkipReason::NeverInjectSelector => "never_inject_selector",
            SkipReason::PolicyDisabled => "policy_disabled",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::HostNetwork => "the pod uses the host network",
            SkipReason::IgnoredNamespace => "the namespace is ignored",
            SkipReason::AlreadyInjected => "the pod is already injected",
            SkipReason::OtherRevision => "the pod belongs to another revision",
            SkipReason::NamespaceDisabled => "the namespace has injection disabled",
            SkipReason::NamespaceNotSelected => "the namespace is not selected for injection",
            SkipReason::PodOptOut => "the pod opts out",
            SkipReason::NeverInjectSelector => "a neverInjectSelector matches",
            SkipReason::PolicyDisabled => "the policy is disabled and the pod did not ask",
        })
    }
}

/// What the policy needs to know about a pod.
#[derive(Debug, Clone)]
pub struct PodFacts<'a> {
    /// The pod's namespace.
    pub namespace: &'a str,
    /// Its labels.
    pub labels: &'a Labels,
    /// Its annotations.
    pub annotations: &'a Labels,
    /// `spec.hostNetwork`.
    pub host_network: bool,
}

/// The decision, and a warning when the pod's own setting could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `Ok(())` to inject.
    pub outcome: Result<(), SkipReason>,
    /// Something the pod's author should know (an unrecognized inject value).
    pub warning: Option<String>,
}

/// Decides for one pod; `namespace_labels` is `None` when the webhook
/// configuration's selectors already chose the namespace.
pub fn decide(
    config: &InjectorConfig,
    pod: &PodFacts<'_>,
    namespace_labels: Option<&Labels>,
) -> Decision {
    let skip = |reason| Decision {
        outcome: Err(reason),
        warning: None,
    };
    if pod.host_network {
        return skip(SkipReason::HostNetwork);
    }
    if config.ignored_namespaces.iter().any(|n| n == pod.namespace) {
        return skip(SkipReason::IgnoredNamespace);
    }
    if pod.annotations.contains_key(STATUS) {
        return skip(SkipReason::AlreadyInjected);
    }
    let pod_revision = pod.labels.get(REVISION);
    let namespace_revision = namespace_labels.and_then(|l| l.get(REVISION));
    if pod_revision
        .or(namespace_revision)
        .is_some_and(|r| *r != config.revision)
    {
        return skip(SkipReason::OtherRevision);
    }

    // The pod's own say: the label wins over the annotation.
    let asked = pod
        .labels
        .get(INJECT)
        .or_else(|| pod.annotations.get(INJECT));
    let mut warning = None;
    let explicit = asked.map(|value| match value.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "on" => true,
        "n" | "no" | "false" | "off" => false,
        _ => {
            warning = Some(format!(
                "{INJECT}={value:?} is not one of true, false, yes, no, y, n, on, off: the pod is not injected"
            ));
            false
        }
    });
    let with_warning = |outcome| Decision {
        outcome,
        warning: warning.clone(),
    };

    if let Some(labels) = namespace_labels {
        match labels.get(NAMESPACE_INJECTION).map(String::as_str) {
            Some("disabled") => return with_warning(Err(SkipReason::NamespaceDisabled)),
            Some("enabled") => {}
            _ if namespace_revision.is_some() => {}
            _ if explicit == Some(true) => {}
            _ => return with_warning(Err(SkipReason::NamespaceNotSelected)),
        }
    }

    match explicit {
        Some(true) => with_warning(Ok(())),
        Some(false) => with_warning(Err(SkipReason::PodOptOut)),
        None => {
            if config
                .never_inject_selector
                .iter()
                .any(|s| s.matches(pod.labels))
            {
                with_warning(Err(SkipReason::NeverInjectSelector))
            } else if config
                .always_inject_selector
                .iter()
                .any(|s| s.matches(pod.labels))
            {
                with_warning(Ok(()))
            } else {
                match config.policy {
                    Policy::Enabled => with_warning(Ok(())),
                    Policy::Disabled => with_warning(Err(SkipReason::PolicyDisabled)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::LabelSelector;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(
        config: &InjectorConfig,
        pod_labels: &[(&str, &str)],
        pod_annotations: &[(&str, &str)],
        namespace: Option<&[(&str, &str)]>,
    ) -> Result<(), SkipReason> {
        let (l, a) = (labels(pod_labels), labels(pod_annotations));
        let ns = namespace.map(labels);
        let facts = PodFacts {
            namespace: "shop",
            labels: &l,
            annotations: &a,
            host_network: false,
        };
        decide(config, &facts, ns.as_ref()).outcome
    }

    #[test]
    fn policy_and_pod_settings() {
        let enabled = InjectorConfig::default();
        let disabled = InjectorConfig {
            policy: Policy::Disabled,
            ..InjectorConfig::default()
        };
        assert_eq!(run(&enabled, &[], &[], None), Ok(()));
        assert_eq!(
            run(&disabled, &[], &[], None),
            Err(SkipReason::PolicyDisabled)
        );
        assert_eq!(run(&disabled, &[], &[(INJECT, "true")], None), Ok(()));
        assert_eq!(run(&disabled, &[(INJECT, "YES")], &[], None), Ok(()));
        assert_eq!(
            run(&enabled, &[], &[(INJECT, "off")], None),
            Err(SkipReason::PodOptOut)
        );
        // The label wins over the annotation.
        assert_eq!(
            run(&enabled, &[(INJECT, "false")], &[(INJECT, "true")], None),
            Err(SkipReason::PodOptOut)
        );
        assert_eq!(
            run(&enabled, &[], &[(STATUS, "{}")], None),
            Err(SkipReason::AlreadyInjected)
        );
    }

    #[test]
    fn unrecognized_values_do_not_inject_and_warn() {
        let (l, a) = (Labels::new(), labels(&[(INJECT, "maybe")]));
        let facts = PodFacts {
            namespace: "shop",
            labels: &l,
            annotations: &a,
            host_network: false,
        };
        let d = decide(&InjectorConfig::default(), &facts, None);
        assert_eq!(d.outcome, Err(SkipReason::PodOptOut));
        assert!(d.warning.expect("warning").contains("maybe"));
    }

    #[test]
    fn selectors_apply_only_without_a_pod_setting() {
        let config = InjectorConfig {
            policy: Policy::Disabled,
            never_inject_selector: vec![LabelSelector {
                match_labels: labels(&[("job", "build")]),
                ..LabelSelector::default()
            }],
            always_inject_selector: vec![LabelSelector {
                match_labels: labels(&[("mesh", "on")]),
                ..LabelSelector::default()
            }],
            ..InjectorConfig::default()
        };
        assert_eq!(run(&config, &[("mesh", "on")], &[], None), Ok(()));
        assert_eq!(
            run(&config, &[("mesh", "on"), ("job", "build")], &[], None),
            Err(SkipReason::NeverInjectSelector)
        );
        assert_eq!(
            run(&config, &[("job", "build")], &[(INJECT, "true")], None),
            Ok(())
        );
    }

    #[test]
    fn namespaces_and_revisions() {
        let config = InjectorConfig::default();
        let enabled: &[(&str, &str)] = &[(NAMESPACE_INJECTION, "enabled")];
        assert_eq!(run(&config, &[], &[], Some(enabled)), Ok(()));
        assert_eq!(
            run(
                &config,
                &[],
                &[],
                Some(&[(NAMESPACE_INJECTION, "disabled")])
            ),
            Err(SkipReason::NamespaceDisabled)
        );
        assert_eq!(
            run(
                &config,
                &[(INJECT, "true")],
                &[],
                Some(&[(NAMESPACE_INJECTION, "disabled")])
            ),
            Err(SkipReason::NamespaceDisabled)
        );
        assert_eq!(
            run(&config, &[], &[], Some(&[])),
            Err(SkipReason::NamespaceNotSelected)
        );
        assert_eq!(run(&config, &[(INJECT, "true")], &[], Some(&[])), Ok(()));
        assert_eq!(
            run(&config, &[], &[], Some(&[(REVISION, "default")])),
            Ok(())
        );
        assert_eq!(
            run(&config, &[], &[], Some(&[(REVISION, "canary")])),
            Err(SkipReason::OtherRevision)
        );
        assert_eq!(
            run(&config, &[(REVISION, "canary")], &[], Some(enabled)),
            Err(SkipReason::OtherRevision)
        );
    }

    #[test]
    fn host_network_and_ignored_namespaces() {
        let (l, a) = (labels(&[(INJECT, "true")]), Labels::new());
        let host = PodFacts {
            namespace: "shop",
            labels: &l,
            annotations: &a,
            host_network: true,
        };
        let config = InjectorConfig::default();
        assert_eq!(
            decide(&config, &host, None).outcome,
            Err(SkipReason::HostNetwork)
        );
        let system = PodFacts {
            namespace: "kube-system",
            host_network: false,
            ..host
        };
        assert_eq!(
            decide(&config, &system, None).outcome,
            Err(SkipReason::IgnoredNamespace)
        );
    }
}
