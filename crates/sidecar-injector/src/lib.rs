//! Dromon's sidecar injector: a mutating admission webhook that adds the proxy
//! (an init container redirecting traffic, the proxy container, its volumes) to
//! pods, and the same injection offline for `meshctl kube-inject`.
//!
//! - [`config`]: policy, selectors, values and template, from YAML.
//! - [`policy`]: whether a pod is injected.
//! - [`redirect`]: the `traffic.sidecar.istio.io/*` annotations, checked.
//! - [`probes`]: application HTTP probes sent through the proxy agent.
//! - [`template`]: the minijinja sidecar template.
//! - [`inject`]: one pod (or pod template) injected, as JSON.
//! - [`webhook`]: `POST /inject`, AdmissionReview v1 and v1beta1.
//! - [`kube_inject`]: multi-document YAML, workloads injected, the rest copied.
//! - [`server`]: the process: HTTPS webhook, monitoring, reloads.

pub mod args;
pub mod config;
pub mod inject;
pub mod kube_inject;
pub mod metrics;
pub mod policy;
pub mod probes;
pub mod redirect;
pub mod samples;
pub mod selector;
pub mod server;
pub mod template;
pub mod webhook;

pub use config::{InjectorConfig, Policy, Values};
pub use inject::{InjectError, Injection, Injector};
pub use server::{InjectorServerConfig, SidecarInjectorError, run};
