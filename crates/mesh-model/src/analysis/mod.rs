//! Analysis across resources: problems no single resource shows on its own.
//!
//! [`analyze`] indexes the resources once (by host, by gateway name, by namespace), so
//! a set of tens of thousands of resources is analysed in time linear in its size.
//! Messages come out sorted by resource key, then code, then field.
//!
//! | code | name | level | finding |
//! | --- | --- | --- | --- |
//! | GAL0101 | ReferencedResourceNotFound | Warning | a VirtualService destination (route, mirror) names a host no ServiceEntry declares and that is not otherwise known; short names are read as `<name>.<namespace>.svc.cluster.local` |
//! | GAL0102 | SubsetNotFound | Error | a destination names a subset that no DestinationRule for its host defines |
//! | GAL0103 | GatewayNotFound | Error | a VirtualService (or one of its matches) names a Gateway that does not exist |
//! | GAL0104 | ConflictingDestinationRules | Warning | several DestinationRules without workloadSelector apply to the same host in the same namespace |
//! | GAL0105 | VirtualServiceUnbound | Warning | `gateways` is present but empty (Istio then binds to the mesh only), or every gateway it names is missing, so it binds to nothing |
//! | GAL0106 | ConflictingVirtualServiceHosts | Warning | several VirtualServices define the same host for the same gateway (or the mesh) |
//! | GAL0107 | MultipleSidecarsWithoutSelector | Error | a namespace has more than one Sidecar without workloadSelector |
//! | GAL0108 | RuleReferenceNotFound | Error | a mixer rule action names a handler or instance that does not exist |
//! | GAL0109 | GatewayHostNotInGateway | Warning | a VirtualService is bound to a Gateway none of whose servers serves any of its hosts |
//! | GAL0110 | DestinationRuleSubsetSelectsNothing | Info | a subset's labels match no endpoint of the ServiceEntries declaring its host (only checked when those entries list endpoints) |
//! | GAL0111 | MixerExpressionInvalid | Error | a mixer expression (a rule's `match`, an instance's params) does not parse or type-check against the attribute vocabulary, or an attributemanifest cannot extend it; found by `mixer_core::analysis`, not by [`analyze`] |

mod index;

use std::collections::HashMap;

use serde::Serialize;

use crate::{
    host::{self, GatewayRef},
    kind::Kind,
    meta::SourceLocation,
    networking::{Destination, DestinationRule, VirtualService},
    policy,
    resource::{Resource, ResourceKey, Spec},
};
use index::Index;

/// How serious an analysis message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Level {
    /// Worth knowing.
    Info,
    /// Probably a mistake.
    Warning,
    /// Certainly broken.
    Error,
}

/// One finding of analysis, with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnalysisMessage {
    /// Stable code, e.g. `GAL0101`.
    pub code: &'static str,
    /// Stable name of the message type.
    pub name: &'static str,
    /// Severity.
    pub level: Level,
    /// The resource the message is about.
    pub resource: ResourceKey,
    /// Where that resource was read from.
    pub source: Option<SourceLocation>,
    /// The field concerned, when one is.
    pub field: Option<String>,
    /// What was found.
    pub message: String,
}

/// A kind of analysis message: its stable code, name and level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageType {
    /// Stable code.
    pub code: &'static str,
    /// Stable name.
    pub name: &'static str,
    /// Severity.
    pub level: Level,
}

macro_rules! message_types {
    ($($konst:ident = $code:literal, $name:literal, $level:ident;)*) => {
        $(
            #[doc = concat!("`", $code, "` ", $name, ".")]
            pub const $konst: MessageType = MessageType { code: $code, name: $name, level: Level::$level };
        )*
        /// Every message type, in code order.
        pub const MESSAGE_TYPES: &[MessageType] = &[$($konst),*];
    };
}

message_types! {
    REFERENCED_RESOURCE_NOT_FOUND = "GAL0101", "ReferencedResourceNotFound", Warning;
    SUBSET_NOT_FOUND = "GAL0102", "SubsetNotFound", Error;
    GATEWAY_NOT_FOUND = "GAL0103", "GatewayNotFound", Error;
    CONFLICTING_DESTINATION_RULES = "GAL0104", "ConflictingDestinationRules", Warning;
    VIRTUAL_SERVICE_UNBOUND = "GAL0105", "VirtualServiceUnbound", Warning;
    CONFLICTING_VIRTUAL_SERVICE_HOSTS = "GAL0106", "ConflictingVirtualServiceHosts", Warning;
    MULTIPLE_SIDECARS_WITHOUT_SELECTOR = "GAL0107", "MultipleSidecarsWithoutSelector", Error;
    RULE_REFERENCE_NOT_FOUND = "GAL0108", "RuleReferenceNotFound", Error;
    GATEWAY_HOST_NOT_IN_GATEWAY = "GAL0109", "GatewayHostNotInGateway", Warning;
    DESTINATION_RULE_SUBSET_SELECTS_NOTHING = "GAL0110", "DestinationRuleSubsetSelectsNothing", Info;
    MIXER_EXPRESSION_INVALID = "GAL0111", "MixerExpressionInvalid", Error;
}

/// What analysis may assume beyond the resources it is given.
#[derive(Debug, Clone, Default)]
pub struct AnalysisOptions {
    /// Hosts known to exist without a ServiceEntry (e.g. Kubernetes services), fully
    /// qualified.
    pub known_hosts: Vec<String>,
}

/// Analyses a whole set of resources.
pub fn analyze(resources: &[&Resource]) -> Vec<AnalysisMessage> {
    analyze_with(resources, &AnalysisOptions::default())
}

/// Analyses a whole set of resources, with extra knowledge of the environment.
pub fn analyze_with(resources: &[&Resource], opts: &AnalysisOptions) -> Vec<AnalysisMessage> {
    let index = Index::build(resources, opts);
    let mut out = Report {
        messages: Vec::new(),
    };
    for r in resources {
        match &r.spec {
            Spec::VirtualService(vs) => virtual_service(&mut out, &index, r, vs),
            Spec::DestinationRule(dr) => destination_rule(&mut out, &index, r, dr),
            Spec::Rule(rule) => mixer_rule(&mut out, &index, r, rule),
            _ => {}
        }
    }
    conflicting_destination_rules(&mut out, &index);
    multiple_sidecars(&mut out, &index);
    conflicting_virtual_service_hosts(&mut out, resources);
    let mut messages = out.messages;
    sort_messages(&mut messages);
    messages
}

/// Sorts messages the way [`analyze`] returns them: by resource key, then code,
/// then field, then text. Analyzers in other crates use it to merge their findings.
pub fn sort_messages(messages: &mut [AnalysisMessage]) {
    messages.sort_by(|a, b| {
        (&a.resource, a.code, &a.field, &a.message).cmp(&(
            &b.resource,
            b.code,
            &b.field,
            &b.message,
        ))
    });
}

impl AnalysisMessage {
    /// A message of type `ty` about resource `r` (its key and source location),
    /// at `field` when one is concerned.
    pub fn for_resource(
        ty: MessageType,
        r: &Resource,
        field: Option<String>,
        message: String,
    ) -> Self {
        Self {
            code: ty.code,
            name: ty.name,
            level: ty.level,
            resource: r.key(),
            source: Some(r.source.clone()),
            field,
            message,
        }
    }
}

struct Report {
    messages: Vec<AnalysisMessage>,
}

impl Report {
    fn push(&mut self, ty: MessageType, r: &Resource, field: Option<String>, message: String) {
        self.messages
            .push(AnalysisMessage::for_resource(ty, r, field, message));
    }
}

/// Every destination of a VirtualService with its field path.
fn destinations(vs: &VirtualService) -> Vec<(String, &Destination)> {
    let mut out = Vec::new();
    for (i, h) in vs.http.iter().enumerate() {
        for (j, d) in h.route.iter().enumerate() {
            out.push((
                format!("spec.http[{i}].route[{j}].destination"),
                &d.destination,
            ));
        }
        if let Some(m) = &h.mirror {
            out.push((format!("spec.http[{i}].mirror"), m));
        }
        for (j, m) in h.mirrors.iter().enumerate() {
            out.push((
                format!("spec.http[{i}].mirrors[{j}].destination"),
                &m.destination,
            ));
        }
    }
    for (i, t) in vs.tls.iter().enumerate() {
        for (j, d) in t.route.iter().enumerate() {
            out.push((
                format!("spec.tls[{i}].route[{j}].destination"),
                &d.destination,
            ));
        }
    }
    for (i, t) in vs.tcp.iter().enumerate() {
        for (j, d) in t.route.iter().enumerate() {
            out.push((
                format!("spec.tcp[{i}].route[{j}].destination"),
                &d.destination,
            ));
        }
    }
    out
}

/// Every gateway reference of a VirtualService (top level and in matches) with its path.
fn gateway_refs(vs: &VirtualService) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    for (i, g) in vs.gateways.iter().flatten().enumerate() {
        out.push((format!("spec.gateways[{i}]"), g.as_str()));
    }
    for (i, h) in vs.http.iter().enumerate() {
        for (j, m) in h.matches.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                out.push((
                    format!("spec.http[{i}].match[{j}].gateways[{k}]"),
                    g.as_str(),
                ));
            }
        }
    }
    for (i, t) in vs.tls.iter().enumerate() {
        for (j, m) in t.matches.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                out.push((
                    format!("spec.tls[{i}].match[{j}].gateways[{k}]"),
                    g.as_str(),
                ));
            }
        }
    }
    for (i, t) in vs.tcp.iter().enumerate() {
        for (j, m) in t.matches.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                out.push((
                    format!("spec.tcp[{i}].match[{j}].gateways[{k}]"),
                    g.as_str(),
                ));
            }
        }
    }
    out
}

fn virtual_service(out: &mut Report, index: &Index<'_>, r: &Resource, vs: &VirtualService) {
    let ns = r.meta.namespace.as_str();
    for (path, d) in destinations(vs) {
        if d.host.is_empty() {
            continue;
        }
        let fq = host::fqdn(&d.host, ns);
        if !index.host_known(&fq) {
            out.push(
                REFERENCED_RESOURCE_NOT_FOUND,
                r,
                Some(format!("{path}.host")),
                format!(
                    "destination host {fq:?} is not declared by any ServiceEntry or known service"
                ),
            );
        }
        if !d.subset.is_empty() && !index.subset_defined(&fq, &d.subset) {
            out.push(
                SUBSET_NOT_FOUND,
                r,
                Some(format!("{path}.subset")),
                format!(
                    "no DestinationRule for host {fq:?} defines subset {:?}",
                    d.subset
                ),
            );
        }
    }

    for (path, g) in gateway_refs(vs) {
        if let GatewayRef::Gateway { namespace, name } = host::resolve_gateway(g, ns)
            && index.gateway(namespace, name).is_none()
        {
            out.push(
                GATEWAY_NOT_FOUND,
                r,
                Some(path),
                format!("gateway {namespace}/{name} does not exist"),
            );
        }
    }

    if let Some(listed) = &vs.gateways {
        if listed.is_empty() {
            out.push(
                VIRTUAL_SERVICE_UNBOUND,
                r,
                Some("spec.gateways".to_string()),
                "gateways is present but empty: Istio binds the VirtualService to the mesh only; \
                 remove the field or list the gateways (and `mesh`) explicitly"
                    .to_string(),
            );
        } else if listed.iter().all(|g| match host::resolve_gateway(g, ns) {
            GatewayRef::Mesh => false,
            GatewayRef::Gateway { namespace, name } => index.gateway(namespace, name).is_none(),
        }) {
            out.push(
                VIRTUAL_SERVICE_UNBOUND,
                r,
                Some("spec.gateways".to_string()),
                "none of the gateways the VirtualService names exists, so it applies nowhere"
                    .to_string(),
            );
        }
    }

    if !vs.hosts.is_empty() {
        for (i, g) in vs.gateways.iter().flatten().enumerate() {
            let GatewayRef::Gateway { namespace, name } = host::resolve_gateway(g, ns) else {
                continue;
            };
            let Some(gw) = index.gateway(namespace, name) else {
                continue;
            };
            let served = gateway_hosts(gw, namespace, ns)
                .any(|gh| vs.hosts.iter().any(|vh| host::hosts_match(gh, vh)));
            if !served {
                out.push(
                    GATEWAY_HOST_NOT_IN_GATEWAY,
                    r,
                    Some(format!("spec.gateways[{i}]")),
                    format!(
                        "none of the hosts [{}] is served by gateway {namespace}/{name}",
                        vs.hosts.join(", ")
                    ),
                );
            }
        }
    }
}

/// The hosts of a gateway's servers that VirtualServices in `vs_namespace` may bind:
/// plain hosts, `*/host`, `<vs_namespace>/host`, and `./host` when the gateway is in
/// that namespace.
fn gateway_hosts<'a>(
    gw: &'a crate::networking::Gateway,
    gw_namespace: &'a str,
    vs_namespace: &'a str,
) -> impl Iterator<Item = &'a str> {
    gw.servers
        .iter()
        .flat_map(|s| s.hosts.iter())
        .filter_map(move |h| match h.split_once('/') {
            None => Some(h.as_str()),
            Some(("*", host)) => Some(host),
            Some((".", host)) if gw_namespace == vs_namespace => Some(host),
            Some((ns, host)) if ns == vs_namespace => Some(host),
            Some(_) => None,
        })
}

fn destination_rule(out: &mut Report, index: &Index<'_>, r: &Resource, dr: &DestinationRule) {
    let fq = host::fqdn(&dr.host, &r.meta.namespace);
    for (i, subset) in dr.subsets.iter().enumerate() {
        if subset.labels.is_empty() {
            continue;
        }
        if index.subset_selects_nothing(&fq, &subset.labels) {
            out.push(
                DESTINATION_RULE_SUBSET_SELECTS_NOTHING,
                r,
                Some(format!("spec.subsets[{i}].labels")),
                format!(
                    "subset {:?} selects no endpoint of the ServiceEntries declaring {fq:?}",
                    subset.name
                ),
            );
        }
    }
}

/// Resolves a mixer reference (`name`, `name.namespace`, `name.kind.namespace`).
fn mixer_target<'a>(reference: &'a str, namespace: &'a str) -> (&'a str, &'a str) {
    let mut parts = reference.split('.');
    let name = parts.next().unwrap_or(reference);
    match (parts.next(), parts.next()) {
        (Some(ns), None) => (name, ns),
        (Some(_kind), Some(ns)) => (name, ns),
        _ => (name, namespace),
    }
}

fn mixer_rule(out: &mut Report, index: &Index<'_>, r: &Resource, rule: &policy::Rule) {
    let ns = r.meta.namespace.as_str();
    for (i, a) in rule.actions.iter().enumerate() {
        if !a.handler.is_empty() {
            let (name, hns) = mixer_target(&a.handler, ns);
            if !index.exists(Kind::Handler, hns, name) {
                out.push(
                    RULE_REFERENCE_NOT_FOUND,
                    r,
                    Some(format!("spec.actions[{i}].handler")),
                    format!("handler {hns}/{name} does not exist"),
                );
            }
        }
        for (j, inst) in a.instances.iter().enumerate() {
            let (name, ins) = mixer_target(inst, ns);
            if !index.exists(Kind::Instance, ins, name) {
                out.push(
                    RULE_REFERENCE_NOT_FOUND,
                    r,
                    Some(format!("spec.actions[{i}].instances[{j}]")),
                    format!("instance {ins}/{name} does not exist"),
                );
            }
        }
    }
}

/// Names for a message: the first few, then how many more.
fn name_list(names: impl Iterator<Item = String>, total: usize) -> String {
    const SHOWN: usize = 5;
    let mut list: Vec<String> = names.take(SHOWN).collect();
    list.sort();
    let mut text = list.join(", ");
    if total > SHOWN {
        text.push_str(&format!(" and {} more", total - SHOWN));
    }
    text
}

fn conflicting_destination_rules(out: &mut Report, index: &Index<'_>) {
    for ((ns, fq), rules) in &index.unselected_drs {
        if rules.len() < 2 {
            continue;
        }
        for r in rules {
            let others = name_list(
                rules
                    .iter()
                    .filter(|o| !std::ptr::eq(**o, *r))
                    .map(|o| o.meta.name.clone()),
                rules.len() - 1,
            );
            out.push(
                CONFLICTING_DESTINATION_RULES,
                r,
                Some("spec.host".to_string()),
                format!(
                    "DestinationRules {others} in namespace {ns} also apply to host {fq:?} without a workloadSelector; only one takes effect"
                ),
            );
        }
    }
}

fn multiple_sidecars(out: &mut Report, index: &Index<'_>) {
    for (ns, sidecars) in &index.unselected_sidecars {
        if sidecars.len() < 2 {
            continue;
        }
        for r in sidecars {
            out.push(
                MULTIPLE_SIDECARS_WITHOUT_SELECTOR,
                r,
                None,
                format!(
                    "namespace {ns} has {} Sidecars without workloadSelector; at most one is allowed",
                    sidecars.len()
                ),
            );
        }
    }
}

fn conflicting_virtual_service_hosts(out: &mut Report, resources: &[&Resource]) {
    // (binding, host) -> VirtualServices (index into resources) and the host's position.
    let mut bound: HashMap<(String, String), Vec<(usize, usize)>> = HashMap::new();
    for (ri, r) in resources.iter().enumerate() {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        let ns = r.meta.namespace.as_str();
        for g in vs.bound_gateways() {
            let binding = match host::resolve_gateway(g, ns) {
                GatewayRef::Mesh => "mesh".to_string(),
                GatewayRef::Gateway { namespace, name } => format!("{namespace}/{name}"),
            };
            for (hi, h) in vs.hosts.iter().enumerate() {
                let entry = bound
                    .entry((binding.clone(), host::fqdn(h, ns).into_owned()))
                    .or_default();
                if !entry.iter().any(|(o, _)| *o == ri) {
                    entry.push((ri, hi));
                }
            }
        }
    }
    for ((binding, h), users) in &bound {
        if users.len() < 2 {
            continue;
        }
        for (ri, hi) in users {
            let r = resources[*ri];
            let others = name_list(
                users.iter().filter(|(o, _)| o != ri).map(|(o, _)| {
                    format!(
                        "{}/{}",
                        resources[*o].meta.namespace, resources[*o].meta.name
                    )
                }),
                users.len() - 1,
            );
            out.push(
                CONFLICTING_VIRTUAL_SERVICE_HOSTS,
                r,
                Some(format!("spec.hosts[{hi}]")),
                format!("host {h:?} on {binding} is also defined by VirtualService {others}"),
            );
        }
    }
}

#[cfg(test)]
mod tests;
