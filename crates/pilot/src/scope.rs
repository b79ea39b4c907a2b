//! What a proxy may see: services and rules exported to its namespace, narrowed by
//! the Sidecar resource that applies to it.
//!
//! Visibility follows Istio's rules:
//! - `exportTo` on a ServiceEntry, VirtualService or DestinationRule lists the
//!   namespaces that see it: `*` every namespace, `.` the resource's own, `~` none, or
//!   namespace names; an empty list means every namespace.
//! - The Sidecar applying to a proxy is the one in its namespace whose
//!   `workloadSelector` matches its labels (first by name), else the one in its
//!   namespace without a selector, else the one without a selector in the root
//!   namespace ([`ROOT_NAMESPACE`]). Gateways are not narrowed by Sidecars.
//! - A Sidecar's egress hosts (`<namespace>/<host>`, with `*`, `.` and `~` for the
//!   namespace and `*` or `*.suffix` wildcards for the host) list the services the
//!   proxy sees; a Sidecar without egress listeners narrows nothing. VirtualServices
//!   are kept when one of their hosts is visible.
//!
//! Proxies that share a [`ScopeKey`] see the same services and rules, so the
//! translation of that view is shared by all of them.

use std::sync::Arc;

use mesh_model::{
    Resource, Spec,
    host::{fqdn, host_covered_by},
    networking::Sidecar,
};

use crate::{
    model::Service,
    proxy::{Proxy, ProxyKind},
};

pub use crate::translate::ROOT_NAMESPACE;

/// What decides a proxy's view of the mesh; proxies with equal keys share one
/// translation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeKey {
    /// The kind of proxy (each kind gets different listeners and cluster shapes).
    pub kind: ProxyKind,
    /// The proxy's namespace.
    pub namespace: String,
    /// The Sidecar resource in force, as `(namespace, name)`.
    pub sidecar: Option<(String, String)>,
    /// The proxy's locality (endpoint priorities depend on it).
    pub locality: String,
}

/// The scope of `proxy` given every configuration resource.
pub fn scope_key(proxy: &Proxy, resources: &[Arc<Resource>]) -> ScopeKey {
    ScopeKey {
        kind: proxy.kind,
        namespace: proxy.namespace.clone(),
        sidecar: sidecar_for(proxy, resources)
            .map(|r| (r.meta.namespace.clone(), r.meta.name.clone())),
        locality: proxy.locality.clone(),
    }
}

/// The Sidecar resource that applies to `proxy`, if any.
pub fn sidecar_for<'a>(proxy: &Proxy, resources: &'a [Arc<Resource>]) -> Option<&'a Resource> {
    if proxy.kind == ProxyKind::Router {
        return None;
    }
    let mut selected: Option<&Resource> = None;
    let mut namespace_wide: Option<&Resource> = None;
    let mut root: Option<&Resource> = None;
    for r in resources {
        let Spec::Sidecar(sc) = &r.spec else { continue };
        let first = |slot: &mut Option<&'a Resource>| {
            if slot.is_none_or(|s| s.meta.name > r.meta.name) {
                *slot = Some(r);
            }
        };
        match &sc.workload_selector {
            Some(sel) if r.meta.namespace == proxy.namespace && proxy.matches(&sel.labels) => {
                first(&mut selected);
            }
            Some(_) => {}
            None if r.meta.namespace == proxy.namespace => first(&mut namespace_wide),
            None if r.meta.namespace == ROOT_NAMESPACE => first(&mut root),
            None => {}
        }
    }
    selected.or(namespace_wide).or(root)
}

/// Whether a resource of `owner` namespace with `export_to` is visible in `viewer`.
pub fn exported_to(export_to: &[String], owner: &str, viewer: &str) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|e| match e.as_str() {
            "*" => true,
            "." => owner == viewer,
            "~" => false,
            ns => ns == viewer,
        })
}

/// Whether the Sidecar's egress hosts (declared in `sidecar_ns`) admit `host`
/// declared in `host_ns`.
pub fn egress_admits(sidecar: &Sidecar, sidecar_ns: &str, host_ns: &str, host: &str) -> bool {
    if sidecar.egress.is_empty() {
        return true;
    }
    sidecar.egress.iter().flat_map(|e| &e.hosts).any(|entry| {
        let Some((ns, pattern)) = entry.split_once('/') else {
            return false;
        };
        let ns_ok = match ns {
            "*" => true,
            "." => host_ns == sidecar_ns,
            "~" => false,
            ns => ns == host_ns,
        };
        ns_ok && (pattern == "*" || host == pattern || host_covered_by(host, pattern))
    })
}

/// The services and resources `proxy` sees.
pub fn visible<'a>(
    proxy: &Proxy,
    services: &[Arc<Service>],
    resources: &'a [Arc<Resource>],
) -> (Vec<Arc<Service>>, Vec<&'a Arc<Resource>>) {
    let sidecar = sidecar_for(proxy, resources).and_then(|r| match &r.spec {
        Spec::Sidecar(sc) => Some((r.meta.namespace.as_str(), sc)),
        _ => None,
    });
    let admits = |host_ns: &str, host: &str| {
        sidecar.is_none_or(|(sc_ns, sc)| egress_admits(sc, sc_ns, host_ns, host))
    };
    let viewer = proxy.namespace.as_str();
    let services: Vec<Arc<Service>> = services
        .iter()
        .filter(|s| {
            exported_to(&s.export_to, &s.namespace, viewer) && admits(&s.namespace, &s.host)
        })
        .cloned()
        .collect();
    let resources = resources
        .iter()
        .filter(|r| {
            let ns = r.meta.namespace.as_str();
            match &r.spec {
                Spec::VirtualService(vs) => {
                    exported_to(&vs.export_to, ns, viewer)
                        && (proxy.kind == ProxyKind::Router
                            || vs.hosts.iter().any(|h| admits(ns, &fqdn(h, ns))))
                }
                Spec::DestinationRule(dr) => exported_to(&dr.export_to, ns, viewer),
                _ => true,
            }
        })
        .collect();
    (services, resources)
}

#[cfg(test)]
mod tests {
    use mesh_model::{ParseOptions, parse_document_set};

    use super::*;
    use crate::{ServiceEntryRegistry, ServiceRegistry};

    fn parse(yaml: &str) -> Vec<Arc<Resource>> {
        let set = parse_document_set("t.yaml", yaml, &ParseOptions::default());
        let errors: Vec<_> = set.errors().collect();
        assert!(errors.is_empty(), "{errors:?}");
        set.accepted.into_iter().map(Arc::new).collect()
    }

    fn services(resources: &[Arc<Resource>]) -> Vec<Arc<Service>> {
        let refs: Vec<&Resource> = resources.iter().map(|r| r.as_ref()).collect();
        ServiceEntryRegistry::from_resources(&refs)
            .services()
            .into_iter()
            .map(Arc::new)
            .collect()
    }

    fn se(name: &str, ns: &str, host: &str, export_to: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{host}]\n  exportTo: [{export_to}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 10.0.0.1}}]\n---\n"
        )
    }

    fn sidecar(name: &str, ns: &str, selector: Option<&str>, hosts: &str) -> String {
        let sel = selector
            .map(|s| format!("  workloadSelector: {{labels: {{{s}}}}}\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{sel}  egress: [{{hosts: [{hosts}]}}]\n---\n"
        )
    }

    fn hosts(proxy: &Proxy, resources: &[Arc<Resource>]) -> Vec<String> {
        let all = services(resources);
        let (seen, _) = visible(proxy, &all, resources);
        seen.into_iter().map(|s| s.host.clone()).collect()
    }

    fn sidecar_proxy(ns: &str, labels: &[(&str, &str)]) -> Proxy {
        Proxy::new(
            ProxyKind::Sidecar,
            ns,
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn export_to_limits_services_by_namespace() {
        let yaml = [
            se("pub", "a", "pub.example.com", "\"*\""),
            se("own", "a", "own.example.com", "\".\""),
            se("none", "a", "none.example.com", "\"~\""),
            se("to-b", "a", "tob.example.com", "b"),
        ]
        .concat();
        let rs = parse(&yaml);
        assert_eq!(
            hosts(&sidecar_proxy("a", &[]), &rs),
            ["own.example.com", "pub.example.com"]
        );
        assert_eq!(
            hosts(&sidecar_proxy("b", &[]), &rs),
            ["pub.example.com", "tob.example.com"]
        );
    }

    #[test]
    fn sidecar_precedence_and_egress_hosts() {
        let yaml = [
            se("a1", "a", "one.a.svc.cluster.local", "\"*\""),
            se("b1", "b", "two.b.svc.cluster.local", "\"*\""),
            se("c1", "c", "three.example.com", "\"*\""),
            sidecar("root", ROOT_NAMESPACE, None, "\"*/three.example.com\""),
            sidecar("ns-wide", "a", None, "\"./*\""),
            sidecar(
                "reviews",
                "a",
                Some("app: reviews"),
                "\"b/*\", \"./one.a.svc.cluster.local\"",
            ),
        ]
        .concat();
        let rs = parse(&yaml);
        let reviews = sidecar_proxy("a", &[("app", "reviews")]);
        assert_eq!(
            scope_key(&reviews, &rs).sidecar,
            Some(("a".to_string(), "reviews".to_string()))
        );
        assert_eq!(
            hosts(&reviews, &rs),
            ["one.a.svc.cluster.local", "two.b.svc.cluster.local"]
        );
        let other = sidecar_proxy("a", &[("app", "ratings")]);
        assert_eq!(hosts(&other, &rs), ["one.a.svc.cluster.local"]);
        let elsewhere = sidecar_proxy("z", &[]);
        assert_eq!(hosts(&elsewhere, &rs), ["three.example.com"]);
        let gateway = Proxy::new(ProxyKind::Router, "a", Default::default());
        assert_eq!(hosts(&gateway, &rs).len(), 3, "gateways ignore Sidecars");
    }

    #[test]
    fn wildcard_egress_hosts_and_rule_visibility() {
        let yaml = [
            se("x", "a", "api.example.com", "\"*\""),
            se("y", "a", "web.other.org", "\"*\""),
            sidecar("sc", "a", None, "\"*/*.example.com\""),
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs-api, namespace: a}\nspec:\n  hosts: [api.example.com]\n  http: [{route: [{destination: {host: api.example.com}}]}]\n---\n".to_string(),
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs-web, namespace: a}\nspec:\n  hosts: [web.other.org]\n  http: [{route: [{destination: {host: web.other.org}}]}]\n---\n".to_string(),
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dr-private, namespace: a}\nspec:\n  host: api.example.com\n  exportTo: [\".\"]\n".to_string(),
        ]
        .concat();
        let rs = parse(&yaml);
        let p = sidecar_proxy("a", &[]);
        assert_eq!(hosts(&p, &rs), ["api.example.com"]);
        let all = services(&rs);
        let (_, kept) = visible(&p, &all, &rs);
        let names: Vec<&str> = kept.iter().map(|r| r.meta.name.as_str()).collect();
        assert!(names.contains(&"vs-api") && !names.contains(&"vs-web"));
        assert!(names.contains(&"dr-private"));
        let (_, kept_b) = visible(&sidecar_proxy("b", &[]), &all, &rs);
        assert!(!kept_b.iter().any(|r| r.meta.name == "dr-private"));
    }
}
