//! AuthorizationPolicy: Envoy RBAC filters for a sidecar's inbound chains.
//!
//! Policies apply to a workload when they sit in its namespace with no selector or a
//! selector matching its labels, or in the root namespace (`istio-system`) likewise.
//! Istio's semantics are kept by filter order: an AUDIT filter (RBAC action LOG, it
//! never refuses anything), then a DENY filter, then an ALLOW filter. Once any ALLOW
//! policy applies, requests it does not match are refused; an ALLOW policy without
//! rules therefore refuses everything, and a rule `{}` matches every request. CUSTOM
//! needs an external authorizer pilot does not configure: such policies are skipped
//! with a warning.
//!
//! Each Istio rule becomes one RBAC policy named `ns[<ns>]-policy[<name>]-rule[<i>]`:
//! its permissions are the AND of the `to` operations (OR-ed) and the request-side
//! `when` conditions; its principals the AND of the `from` sources (OR-ed) and the
//! peer-side conditions.
//!
//! Some fields cannot be enforced where the filter runs: HTTP-only fields (hosts,
//! methods, paths, request headers) on a TCP chain, request principals (no JWT
//! filter is configured), unknown condition keys, malformed IPs or ports. Like
//! Istio, pilot errs on the side of refusing: in an ALLOW (or AUDIT) policy the
//! smallest enclosing part holding such a field never matches (a `to` or `from`
//! entry, or the whole rule for a condition); in a DENY policy the field is dropped,
//! so the rule matches more requests, never fewer.
//!
//! Envoy's RBAC `policies` is a protobuf map, which prost keeps in a `HashMap` whose
//! encoding order changes from run to run; the filters are therefore encoded through
//! wire-compatible mirrors holding a `BTreeMap`, so equal input gives equal bytes.

use std::collections::BTreeMap;

use mesh_api::envoy::envoy::{
    config::{
        listener::v3::{Filter, filter},
        rbac::v3::{
            Permission, Policy, Principal, Rbac, permission::Rule as PermRule,
            principal::Identifier, rbac::Action as RbacAction,
        },
    },
    extensions::filters::{
        http::rbac::v3::Rbac as HttpRbac,
        network::{http_connection_manager::v3::HttpFilter, rbac::v3::Rbac as NetworkRbac},
    },
};
use mesh_model::security::{Action, AuthorizationPolicy, Condition, Operation, Rule, Source};
use prost::Name;

use super::{
    MeshContext, NamedSpec, ROOT_NAMESPACE,
    chains::{HTTP_RBAC_FILTER, NETWORK_RBAC_FILTER, http_filter},
    pack,
    rbac_matchers::{
        Field, cidr, cidr_ids, header_permission, host_permission, id_and, id_not, id_or, ids,
        method_permission, namespace_id, path_permission, perm_and, perm_not, perm_or, permission,
        port, ports, principal, principal_id, request_principals, service_account_id,
        trust_domain_id, wildcard,
    },
};
use crate::proxy::Proxy;

/// Where an RBAC filter runs, which decides the fields it can enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// An HTTP connection manager's filter chain.
    Http,
    /// A plain TCP chain (network filter).
    Tcp,
}

/// The RBAC filters of one workload, for its HTTP and its TCP chains; both empty
/// when no policy applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthzFilters {
    /// HTTP filters, to run before the router.
    pub http: Vec<HttpFilter>,
    /// Network filters, to run before the TCP proxy.
    pub network: Vec<Filter>,
}

/// The policies applying to `proxy`, in key order (root namespace first when it
/// sorts first), CUSTOM and targetRef policies skipped with a warning.
pub fn applicable_policies<'a>(
    ctx: &'a MeshContext,
    proxy: &Proxy,
) -> Vec<&'a NamedSpec<AuthorizationPolicy>> {
    ctx.authorization_policies
        .iter()
        .filter(|p| p.namespace == proxy.namespace || p.namespace == ROOT_NAMESPACE)
        .filter(|p| {
            p.spec
                .selector
                .as_ref()
                .is_none_or(|s| proxy.matches(&s.match_labels))
        })
        .filter(|p| {
            if p.spec.target_ref.is_some() || !p.spec.target_refs.is_empty() {
                tracing::warn!(
                    namespace = %p.namespace,
                    name = %p.name,
                    "AuthorizationPolicy with targetRef does not apply to sidecars; skipped"
                );
                return false;
            }
            if p.spec.effective_action() == Action::Custom {
                tracing::warn!(
                    namespace = %p.namespace,
                    name = %p.name,
                    "CUSTOM AuthorizationPolicy is not supported; skipped"
                );
                return false;
            }
            true
        })
        .collect()
}

/// The RBAC filters for `proxy`'s inbound chains.
pub fn authz_filters(ctx: &MeshContext, proxy: &Proxy) -> AuthzFilters {
    let policies = applicable_policies(ctx, proxy);
    let mut out = AuthzFilters::default();
    for action in [Action::Audit, Action::Deny, Action::Allow] {
        if let Some(rules) = ordered_rbac(&policies, action, Layer::Http) {
            let message = OrderedHttpRbac { rules: Some(rules) };
            out.http.push(http_filter(
                HTTP_RBAC_FILTER,
                pack(&HttpRbac::type_url(), &message),
            ));
        }
        if let Some(rules) = ordered_rbac(&policies, action, Layer::Tcp) {
            let message = OrderedNetworkRbac {
                rules: Some(rules),
                stat_prefix: "tcp.".to_string(),
            };
            out.network.push(Filter {
                name: NETWORK_RBAC_FILTER.to_string(),
                config_type: Some(filter::ConfigType::TypedConfig(pack(
                    &NetworkRbac::type_url(),
                    &message,
                ))),
            });
        }
    }
    out
}

/// The RBAC rules for the `action` policies among `policies` on `layer`; `None` when
/// no policy has that action (or, for AUDIT and DENY, none has a rule left).
pub fn rbac_rules(
    policies: &[&NamedSpec<AuthorizationPolicy>],
    action: Action,
    layer: Layer,
) -> Option<Rbac> {
    ordered_rbac(policies, action, layer).map(|o| Rbac {
        action: o.action,
        policies: o.policies.into_iter().collect(),
        ..Default::default()
    })
}

fn ordered_rbac(
    policies: &[&NamedSpec<AuthorizationPolicy>],
    action: Action,
    layer: Layer,
) -> Option<OrderedRbac> {
    let envoy_action = match action {
        Action::Allow => RbacAction::Allow,
        Action::Deny => RbacAction::Deny,
        Action::Audit => RbacAction::Log,
        Action::Custom => return None,
    };
    let mut any = false;
    let mut out = BTreeMap::new();
    for p in policies
        .iter()
        .filter(|p| p.spec.effective_action() == action)
    {
        any = true;
        for (i, rule) in p.spec.rules.iter().enumerate() {
            let tr = RuleTranslator {
                namespace: &p.namespace,
                name: &p.name,
                deny: action == Action::Deny,
                layer,
            };
            if let Some(policy) = tr.rule(rule) {
                out.insert(
                    format!("ns[{}]-policy[{}]-rule[{i}]", p.namespace, p.name),
                    policy,
                );
            }
        }
    }
    // ALLOW with nothing to allow still refuses everything; AUDIT and DENY without a
    // policy left are no-ops.
    (any && (action == Action::Allow || !out.is_empty())).then_some(OrderedRbac {
        action: envoy_action as i32,
        policies: out,
    })
}

/// `config.rbac.v3.RBAC` with its policies ordered (same wire format).
#[derive(Clone, PartialEq, prost::Message)]
struct OrderedRbac {
    #[prost(int32, tag = "1")]
    action: i32,
    #[prost(btree_map = "string, message", tag = "2")]
    policies: BTreeMap<String, Policy>,
}

/// `extensions.filters.http.rbac.v3.RBAC`, fields pilot sets.
#[derive(Clone, PartialEq, prost::Message)]
struct OrderedHttpRbac {
    #[prost(message, optional, tag = "1")]
    rules: Option<OrderedRbac>,
}

/// `extensions.filters.network.rbac.v3.RBAC`, fields pilot sets.
#[derive(Clone, PartialEq, prost::Message)]
struct OrderedNetworkRbac {
    #[prost(message, optional, tag = "1")]
    rules: Option<OrderedRbac>,
    #[prost(string, tag = "3")]
    stat_prefix: String,
}

struct RuleTranslator<'a> {
    namespace: &'a str,
    name: &'a str,
    deny: bool,
    layer: Layer,
}

impl RuleTranslator<'_> {
    /// Adds a field's constraint to an AND list; `false` when the AND can never match
    /// (an unenforceable field outside DENY).
    fn keep<T>(&self, field: Field<T>, and: &mut Vec<T>) -> bool {
        match field {
            Ok(Some(t)) => {
                and.push(t);
                true
            }
            Ok(None) => true,
            Err(why) => {
                tracing::warn!(
                    namespace = %self.namespace,
                    name = %self.name,
                    reason = %why,
                    effect = if self.deny { "field ignored" } else { "never matches" },
                    "AuthorizationPolicy field cannot be enforced"
                );
                self.deny
            }
        }
    }

    fn rule(&self, rule: &Rule) -> Option<Policy> {
        let mut permissions = Vec::new();
        let mut principals = Vec::new();
        if !rule.to.is_empty() {
            let ops: Vec<Permission> = rule
                .to
                .iter()
                .filter_map(|to| self.operation(&to.operation.clone().unwrap_or_default()))
                .collect();
            if ops.is_empty() {
                return None;
            }
            permissions.push(perm_or(ops));
        }
        if !rule.from.is_empty() {
            let sources: Vec<Principal> = rule
                .from
                .iter()
                .filter_map(|f| self.source(&f.source.clone().unwrap_or_default()))
                .collect();
            if sources.is_empty() {
                return None;
            }
            principals.push(id_or(sources));
        }
        for c in &rule.when {
            let (perms, ids) = self.condition(c);
            if !self.keep(perms, &mut permissions) || !self.keep(ids, &mut principals) {
                return None;
            }
        }
        Some(Policy {
            permissions: vec![perm_and(permissions)],
            principals: vec![id_and(principals)],
            ..Default::default()
        })
    }

    fn http_only<T>(&self, what: &str, f: impl FnOnce() -> T) -> Field<T> {
        match self.layer {
            Layer::Http => Ok(Some(f())),
            Layer::Tcp => Err(format!("{what} needs HTTP, the port is TCP")),
        }
    }

    fn operation(&self, op: &Operation) -> Option<Permission> {
        let mut and = Vec::new();
        let fields: [(Field<Permission>, bool); 8] = [
            (self.list(&op.hosts, "hosts", host_permission), false),
            (self.list(&op.not_hosts, "notHosts", host_permission), true),
            (self.list(&op.methods, "methods", method_permission), false),
            (
                self.list(&op.not_methods, "notMethods", method_permission),
                true,
            ),
            (self.list(&op.paths, "paths", path_permission), false),
            (self.list(&op.not_paths, "notPaths", path_permission), true),
            (ports(&op.ports), false),
            (ports(&op.not_ports), true),
        ];
        for (field, negate) in fields {
            let field = field.map(|p| p.map(|p| if negate { perm_not(p) } else { p }));
            if !self.keep(field, &mut and) {
                return None;
            }
        }
        Some(perm_and(and))
    }

    /// An OR over an HTTP-only list field (nothing when empty).
    fn list(&self, values: &[String], what: &str, f: fn(&str) -> Permission) -> Field<Permission> {
        if values.is_empty() {
            return Ok(None);
        }
        self.http_only(what, || perm_or(values.iter().map(|v| f(v)).collect()))
    }

    fn source(&self, s: &Source) -> Option<Principal> {
        let mut and = Vec::new();
        let sa_ns = self.namespace;
        let fields: [(Field<Principal>, bool); 14] = [
            (ids(&s.principals, principal_id), false),
            (ids(&s.not_principals, principal_id), true),
            (request_principals(&s.request_principals), false),
            (request_principals(&s.not_request_principals), true),
            (ids(&s.namespaces, namespace_id), false),
            (ids(&s.not_namespaces, namespace_id), true),
            (
                ids(&s.service_accounts, |v| service_account_id(v, sa_ns)),
                false,
            ),
            (
                ids(&s.not_service_accounts, |v| service_account_id(v, sa_ns)),
                true,
            ),
            (ids(&s.trust_domains, trust_domain_id), false),
            (ids(&s.not_trust_domains, trust_domain_id), true),
            (cidr_ids(&s.ip_blocks, Identifier::DirectRemoteIp), false),
            (cidr_ids(&s.not_ip_blocks, Identifier::DirectRemoteIp), true),
            (cidr_ids(&s.remote_ip_blocks, Identifier::RemoteIp), false),
            (
                cidr_ids(&s.not_remote_ip_blocks, Identifier::RemoteIp),
                true,
            ),
        ];
        for (field, negate) in fields {
            let field = field.map(|p| p.map(|p| if negate { id_not(p) } else { p }));
            if !self.keep(field, &mut and) {
                return None;
            }
        }
        Some(id_and(and))
    }

    /// A `when` condition: its permission-side and principal-side constraints.
    fn condition(&self, c: &Condition) -> (Field<Permission>, Field<Principal>) {
        let key = c.key.as_str();
        let with_not_p = |f: &dyn Fn(&str) -> Field<Permission>| {
            values_with_not(c, f, perm_or, perm_not, perm_and)
        };
        let with_not_i =
            |f: &dyn Fn(&str) -> Field<Principal>| values_with_not(c, f, id_or, id_not, id_and);
        if let Some(header) = key
            .strip_prefix("request.headers[")
            .and_then(|k| k.strip_suffix(']'))
            .filter(|h| !h.is_empty())
        {
            let header = header.to_ascii_lowercase();
            // Envoy refuses header names that are not HTTP tokens.
            let token = header
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
            let perms = match self.layer {
                Layer::Http if token => with_not_p(&|v| Ok(Some(header_permission(&header, v)))),
                Layer::Http => Err(format!("{key}: not a valid header name")),
                Layer::Tcp => Err(format!("{key} needs HTTP, the port is TCP")),
            };
            return (perms, Ok(None));
        }
        match key {
            "source.ip" => (
                Ok(None),
                with_not_i(&|v| cidr(v).map(|c| Some(principal(Identifier::DirectRemoteIp(c))))),
            ),
            "remote.ip" => (
                Ok(None),
                with_not_i(&|v| cidr(v).map(|c| Some(principal(Identifier::RemoteIp(c))))),
            ),
            "source.namespace" => (Ok(None), with_not_i(&|v| Ok(Some(namespace_id(v))))),
            "source.principal" => (Ok(None), with_not_i(&|v| Ok(Some(principal_id(v))))),
            "destination.ip" => (
                with_not_p(&|v| cidr(v).map(|c| Some(permission(PermRule::DestinationIp(c))))),
                Ok(None),
            ),
            "destination.port" => (
                with_not_p(&|v| port(v).map(|p| Some(permission(PermRule::DestinationPort(p))))),
                Ok(None),
            ),
            "connection.sni" => (
                with_not_p(&|v| {
                    Ok(Some(permission(PermRule::RequestedServerName(wildcard(
                        v, false,
                    )))))
                }),
                Ok(None),
            ),
            _ => (
                Err(format!("condition key {key:?} is not supported")),
                Ok(None),
            ),
        }
    }
}

/// A condition's `values` (any of them) and `notValues` (none of them), each value
/// mapped by `f`, combined with the matcher type's `or`, `not` and `and`.
fn values_with_not<T>(
    c: &Condition,
    f: &dyn Fn(&str) -> Field<T>,
    or: fn(Vec<T>) -> T,
    not: fn(T) -> T,
    and: fn(Vec<T>) -> T,
) -> Field<T> {
    let mut all = Vec::new();
    for (values, negate) in [(&c.values, false), (&c.not_values, true)] {
        if values.is_empty() {
            continue;
        }
        let mut any = Vec::new();
        for v in values {
            if let Some(p) = f(v)? {
                any.push(p);
            }
        }
        let p = or(any);
        all.push(if negate { not(p) } else { p });
    }
    Ok((!all.is_empty()).then(|| and(all)))
}
