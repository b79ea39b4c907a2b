//! The injector's configuration: when to inject, and what.
//!
//! ```yaml
//! policy: enabled                 # or disabled: only pods that ask are injected
//! revision: default               # this injector's control-plane revision
//! neverInjectSelector:            # pods never injected unless they ask
//! - matchExpressions: [{key: openshift.io/build.name, operator: Exists}]
//! alwaysInjectSelector: []        # pods injected even when the policy is disabled
//! injectedAnnotations: {}         # added to every injected pod
//! values:                         # what the template renders with
//!   proxyImage: docker.io/istio/proxyv2:1.24.2
//!   pilotAddress: pilot.istio-system.svc:15011
//! template: |                     # optional: replaces the built-in template
//!   ...
//! ```
//!
//! Every field has a default, so an empty file (or none) is a working
//! configuration; unknown top-level fields are refused with their name, so a typo
//! does not silently change nothing.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::selector::LabelSelector;

/// Whether pods are injected unless they say otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Pods are injected unless they opt out (or a never-selector matches).
    #[default]
    Enabled,
    /// Pods are injected only when they opt in (or an always-selector matches).
    Disabled,
}

/// The injector's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectorConfig {
    /// The default decision.
    #[serde(default)]
    pub policy: Policy,
    /// This injector's control-plane revision; pods and namespaces labelled
    /// `istio.io/rev` with another revision are left to that one.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Pods matching any of these are not injected, unless they ask to be.
    #[serde(default)]
    pub never_inject_selector: Vec<LabelSelector>,
    /// Pods matching any of these are injected, unless they ask not to be.
    #[serde(default)]
    pub always_inject_selector: Vec<LabelSelector>,
    /// Namespaces whose pods are never injected.
    #[serde(default = "default_ignored_namespaces")]
    pub ignored_namespaces: Vec<String>,
    /// Annotations added to every injected pod (a pod's own value wins).
    #[serde(default)]
    pub injected_annotations: BTreeMap<String, String>,
    /// Values the template renders with.
    #[serde(default)]
    pub values: Values,
    /// A minijinja template replacing the built-in one.
    #[serde(default)]
    pub template: Option<String>,
}

impl Default for InjectorConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            revision: default_revision(),
            never_inject_selector: Vec::new(),
            always_inject_selector: Vec::new(),
            ignored_namespaces: default_ignored_namespaces(),
            injected_annotations: BTreeMap::new(),
            values: Values::default(),
            template: None,
        }
    }
}

fn default_revision() -> String {
    "default".into()
}

fn default_ignored_namespaces() -> Vec<String> {
    vec!["kube-system".into(), "kube-public".into()]
}

/// What the template renders with. Besides the fields below, any other value is
/// kept and reachable from a custom template as `values.<name>`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Values {
    /// The proxy container's image.
    pub proxy_image: String,
    /// The traffic-redirection init container's image.
    pub proxy_init_image: String,
    /// `imagePullPolicy` of both.
    pub image_pull_policy: String,
    /// pilot's xDS address (`host:port`).
    pub pilot_address: String,
    /// citadel's CA address (`host:port`).
    pub citadel_address: String,
    /// The mesh's trust domain.
    pub trust_domain: String,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// The proxy's user and group id; its own traffic is not redirected.
    #[serde(rename = "proxyUID")]
    pub proxy_uid: u32,
    /// The proxy agent's status port: health and the rewritten app probes.
    pub status_port: u16,
    /// The proxy's readiness port.
    pub readiness_port: u16,
    /// The proxy's Prometheus port.
    pub stats_port: u16,
    /// Where outbound traffic is redirected.
    pub outbound_port: u16,
    /// Where inbound traffic is redirected.
    pub inbound_port: u16,
    /// The proxy's log level.
    pub log_level: String,
    /// The proxy's worker threads.
    pub concurrency: u32,
    /// Resources of the proxy container.
    pub proxy_resources: Value,
    /// Resources of the init container.
    pub proxy_init_resources: Value,
    /// Outbound IP ranges redirected unless a pod's annotation says otherwise.
    #[serde(rename = "includeOutboundIPRanges")]
    pub include_outbound_ip_ranges: String,
    /// Outbound IP ranges not redirected unless a pod's annotation says otherwise.
    #[serde(rename = "excludeOutboundIPRanges")]
    pub exclude_outbound_ip_ranges: String,
    /// Whether HTTP probes of the application go through the proxy agent.
    #[serde(rename = "rewriteAppHTTPProbers")]
    pub rewrite_app_http_probers: bool,
    /// Any other value, for custom templates.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for Values {
    fn default() -> Self {
        Self {
            proxy_image: "docker.io/istio/proxyv2:1.24.2".into(),
            proxy_init_image: "docker.io/istio/proxyv2:1.24.2".into(),
            image_pull_policy: "IfNotPresent".into(),
            pilot_address: "pilot.istio-system.svc:15011".into(),
            citadel_address: "citadel.istio-system.svc:8060".into(),
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            proxy_uid: 1337,
            status_port: 15020,
            readiness_port: 15021,
            stats_port: 15090,
            outbound_port: 15001,
            inbound_port: 15006,
            log_level: "warning".into(),
            concurrency: 2,
            proxy_resources: json!({
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"cpu": "2", "memory": "1Gi"},
            }),
            proxy_init_resources: json!({
                "requests": {"cpu": "10m", "memory": "10Mi"},
                "limits": {"cpu": "100m", "memory": "50Mi"},
            }),
            include_outbound_ip_ranges: "*".into(),
            exclude_outbound_ip_ranges: String::new(),
            rewrite_app_http_probers: true,
            extra: Map::new(),
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not describe a configuration.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file (or `<inline>`).
        origin: String,
        /// What is wrong, with the field's path.
        message: String,
    },
}

impl InjectorConfig {
    /// Reads a configuration from YAML text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let config: InjectorConfig = if text.trim().is_empty() {
            InjectorConfig::default()
        } else {
            let de = serde_norway::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner().to_string();
                // The YAML reader sometimes names the path itself.
                if path == "." || path.is_empty() || inner.starts_with(&format!("{path}:")) {
                    invalid(inner)
                } else {
                    invalid(format!("{path}: {inner}"))
                }
            })?
        };
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    /// Reads a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    fn validate(&self) -> Result<(), String> {
        for (field, selectors) in [
            ("neverInjectSelector", &self.never_inject_selector),
            ("alwaysInjectSelector", &self.always_inject_selector),
        ] {
            for (i, s) in selectors.iter().enumerate() {
                s.validate().map_err(|e| format!("{field}[{i}]: {e}"))?;
            }
        }
        if self.revision.is_empty() {
            return Err("revision: must not be empty".into());
        }
        let v = &self.values;
        for (field, value) in [
            ("values.proxyImage", &v.proxy_image),
            ("values.proxyInitImage", &v.proxy_init_image),
            ("values.pilotAddress", &v.pilot_address),
            ("values.citadelAddress", &v.citadel_address),
            ("values.trustDomain", &v.trust_domain),
        ] {
            if value.trim().is_empty() {
                return Err(format!("{field}: must not be empty"));
            }
        }
        // The defaults must themselves be valid annotation values.
        crate::redirect::check_ip_ranges(&v.include_outbound_ip_ranges, true)
            .map_err(|e| format!("values.includeOutboundIPRanges: {e}"))?;
        crate::redirect::check_ip_ranges(&v.exclude_outbound_ip_ranges, false)
            .map_err(|e| format!("values.excludeOutboundIPRanges: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_is_the_default() {
        let config = InjectorConfig::from_yaml("", "x").expect("default");
        assert_eq!(config, InjectorConfig::default());
        assert_eq!(config.values.proxy_uid, 1337);
    }

    #[test]
    fn fields_and_extra_values_are_read() {
        let config = InjectorConfig::from_yaml(
            "policy: disabled\nrevision: canary\nalwaysInjectSelector: [{matchLabels: {mesh: 'yes'}}]\nvalues:\n  proxyImage: example.com/proxy:1\n  sidecarFlavour: lean\n",
            "cfg.yaml",
        )
        .expect("parses");
        assert_eq!(config.policy, Policy::Disabled);
        assert_eq!(config.revision, "canary");
        assert_eq!(config.always_inject_selector.len(), 1);
        assert_eq!(config.values.proxy_image, "example.com/proxy:1");
        assert_eq!(config.values.pilot_address, Values::default().pilot_address);
        assert_eq!(config.values.extra["sidecarFlavour"], "lean");
    }

    #[test]
    fn mistakes_are_named_with_their_path() {
        let err = InjectorConfig::from_yaml("polcy: enabled\n", "cfg.yaml").expect_err("typo");
        let text = err.to_string();
        assert!(text.starts_with("cfg.yaml: "), "{text}");
        assert!(text.contains("polcy"), "{text}");

        let err = InjectorConfig::from_yaml("policy: sometimes\n", "cfg.yaml").expect_err("bad");
        assert!(err.to_string().contains("policy"), "{err}");

        let err = InjectorConfig::from_yaml("values:\n  proxyUID: -3\n", "cfg.yaml")
            .expect_err("negative uid");
        assert!(err.to_string().contains("proxyUID"), "{err}");

        let err = InjectorConfig::from_yaml(
            "neverInjectSelector: [{matchExpressions: [{key: a, operator: In}]}]\n",
            "cfg.yaml",
        )
        .expect_err("selector");
        assert!(err.to_string().contains("neverInjectSelector[0]"), "{err}");

        let err =
            InjectorConfig::from_yaml("values:\n  excludeOutboundIPRanges: 10.0.0.0/33\n", "c")
                .expect_err("range");
        assert!(err.to_string().contains("excludeOutboundIPRanges"), "{err}");
    }
}
