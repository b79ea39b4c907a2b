//! PeerAuthentication: which mutual TLS mode a sidecar's inbound ports accept, and the
//! TLS context that terminates mesh mutual TLS.
//!
//! Istio's precedence, most specific first: a policy in the workload's namespace whose
//! selector matches the workload, then the namespace's policy without a selector, then
//! the mesh-wide policy (no selector, in the root namespace `istio-system`), then
//! PERMISSIVE. A mode left UNSET inherits from the next level down. `portLevelMtls`
//! only counts on a policy with a selector, and an UNSET port inherits the workload's
//! mode. When two policies compete for one level, the first in name order wins.

use std::collections::BTreeMap;

use mesh_api::envoy::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, common_tls_context::ValidationContextType,
};
use mesh_model::security::{MtlsMode, MutualTls, PeerAuthentication};

use super::{
    MeshContext, NamedSpec, ROOT_NAMESPACE,
    chains::{SDS_DEFAULT, SDS_ROOTCA, bool_value, sds_secret},
};
use crate::proxy::Proxy;

/// A resolved mode: never UNSET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain text only.
    Disable,
    /// Mutual TLS and plain text.
    Permissive,
    /// Mutual TLS only.
    Strict,
}

/// The mutual TLS modes in force for one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsSettings {
    /// Mode of ports without a port-level setting (and of undeclared ports).
    pub workload: Mode,
    /// Port-level modes, by workload port.
    pub ports: BTreeMap<u32, Mode>,
}

impl MtlsSettings {
    /// The mode for a workload port.
    pub fn for_port(&self, port: u32) -> Mode {
        self.ports.get(&port).copied().unwrap_or(self.workload)
    }
}

fn apply(parent: Mode, setting: Option<&MutualTls>) -> Mode {
    match setting.and_then(|m| m.mode) {
        None | Some(MtlsMode::Unset) => parent,
        Some(MtlsMode::Disable) => Mode::Disable,
        Some(MtlsMode::Permissive) => Mode::Permissive,
        Some(MtlsMode::Strict) => Mode::Strict,
    }
}

fn has_selector(p: &PeerAuthentication) -> bool {
    p.selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty())
}

/// The modes in force for `proxy`'s inbound ports.
pub fn effective_mtls(ctx: &MeshContext, proxy: &Proxy) -> MtlsSettings {
    resolve(&ctx.peer_authentications, proxy)
}

/// Resolves `policies` (in key order) for `proxy` by the documented precedence.
pub fn resolve(policies: &[NamedSpec<PeerAuthentication>], proxy: &Proxy) -> MtlsSettings {
    let first = |ns: &str, pred: &dyn Fn(&PeerAuthentication) -> bool| {
        policies
            .iter()
            .find(|p| p.namespace == ns && pred(&p.spec))
            .map(|p| &p.spec)
    };
    let mesh = first(ROOT_NAMESPACE, &|p| !has_selector(p));
    let namespace = first(&proxy.namespace, &|p| !has_selector(p));
    let workload = first(&proxy.namespace, &|p| {
        p.selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty() && proxy.matches(&s.match_labels))
    });
    let mut mode = Mode::Permissive;
    for level in [mesh, namespace, workload].into_iter().flatten() {
        mode = apply(mode, level.mtls.as_ref());
    }
    let ports = workload
        .map(|w| {
            w.port_level_mtls
                .iter()
                .map(|(port, m)| (*port, apply(mode, Some(m))))
                .collect()
        })
        .unwrap_or_default();
    MtlsSettings {
        workload: mode,
        ports,
    }
}

/// The TLS context terminating mesh mutual TLS: the workload certificate from SDS
/// `default`, client certificates required and checked against SDS `ROOTCA`.
pub fn istio_mutual_tls_context(alpn: &[&str]) -> DownstreamTlsContext {
    DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds_secret(SDS_DEFAULT)],
            validation_context_type: Some(ValidationContextType::ValidationContextSdsSecretConfig(
                sds_secret(SDS_ROOTCA),
            )),
            alpn_protocols: alpn.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }),
        require_client_certificate: bool_value(true),
        ..Default::default()
    }
}
