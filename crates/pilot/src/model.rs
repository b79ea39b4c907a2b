//! The service model: services, their ports and endpoints, merged from registries.
//!
//! Every registry (ServiceEntry resources, Kubernetes Services and EndpointSlices
//! in [`crate::kube`]) implements [`ServiceRegistry`]; translation reads only
//! [`Service`] values, never the registry's own resources.

use std::collections::{BTreeMap, BTreeSet};

use mesh_model::{
    Resource, Spec,
    host::fqdn,
    networking::{Labels, Location, Resolution, ServiceEntry},
    protocol::Protocol,
};

/// A service known to the mesh: one host with its ports and endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Fully qualified host name (or a wildcard host).
    pub host: String,
    /// Namespace the service was declared in.
    pub namespace: String,
    /// Ports, sorted by number.
    pub ports: Vec<ServicePort>,
    /// How endpoints are found.
    pub resolution: Resolution,
    /// Inside or outside the mesh.
    pub location: Location,
    /// Endpoints, in declaration order.
    pub endpoints: Vec<Endpoint>,
    /// Namespaces the service is visible to (`*` all, `.` its own, `~` none); empty
    /// means all.
    pub export_to: Vec<String>,
    /// Virtual IPs or CIDR blocks clients reach the service at (ServiceEntry
    /// `addresses`); outbound TCP listeners tell services on one port apart by them.
    pub addresses: Vec<String>,
    /// Labels of the workloads that serve the service (ServiceEntry
    /// `workloadSelector`); a sidecar carrying them gets the service's inbound ports.
    pub workload_selector: Option<Labels>,
    /// Server identities the service declares beyond its endpoints' service
    /// accounts (ServiceEntry `subjectAltNames`).
    pub subject_alt_names: Vec<String>,
    /// The registry that declared the service.
    pub registry: RegistryKind,
}

/// Which registry a service comes from; a few rules differ between them (a
/// Kubernetes headless service's outbound traffic is matched by endpoint address).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RegistryKind {
    /// A ServiceEntry resource.
    #[default]
    ServiceEntry,
    /// A Kubernetes Service.
    Kubernetes,
}

impl RegistryKind {
    /// The registry's name, as `--registries` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryKind::ServiceEntry => "serviceentry",
            RegistryKind::Kubernetes => "kubernetes",
        }
    }
}

/// The trust domain of workload identities when none is configured.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// The SPIFFE identity of service account `account` in `namespace`:
/// `spiffe://<trust domain>/ns/<namespace>/sa/<account>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{account}")
}

impl Service {
    /// The port with this number, if the service has one.
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }

    /// The identities a client accepts from the service's servers, sorted, each
    /// once: the SPIFFE id of every endpoint's service account (in the service's
    /// namespace, under `trust_domain`) and the declared `subject_alt_names`.
    pub fn identities(&self, trust_domain: &str) -> Vec<String> {
        let accounts = self
            .endpoints
            .iter()
            .filter(|e| !e.service_account.is_empty())
            .map(|e| spiffe_id(trust_domain, &self.namespace, &e.service_account));
        let declared = self
            .subject_alt_names
            .iter()
            .filter(|s| !s.is_empty())
            .cloned();
        accounts
            .chain(declared)
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect()
    }

    /// The service accounts of the endpoints, sorted, each once.
    pub fn service_accounts(&self) -> BTreeSet<&str> {
        self.endpoints
            .iter()
            .map(|e| e.service_account.as_str())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Port number clients use.
    pub number: u32,
    /// Port name, the key of endpoint port overrides.
    pub name: String,
    /// Protocol; `None` when unknown or unset (treated as TCP).
    pub protocol: Option<Protocol>,
    /// Port on the endpoints when no per-endpoint override is given.
    pub target_port: Option<u32>,
}

/// One endpoint (instance) of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// IP address, host name (DNS resolution) or `unix://` path.
    pub address: String,
    /// Port overrides by service port name.
    pub ports: BTreeMap<String, u32>,
    /// Labels, used by DestinationRule subsets.
    pub labels: Labels,
    /// Locality as `region/zone/subzone` (any part may be empty).
    pub locality: String,
    /// Load balancing weight; `None` means 1.
    pub weight: Option<u32>,
    /// Service account the workload runs as (a Pod's `serviceAccountName`, a
    /// WorkloadEntry's `serviceAccount`); empty when unknown.
    pub service_account: String,
}

impl Endpoint {
    /// The port this endpoint serves `port` on.
    pub fn port_for(&self, port: &ServicePort) -> u32 {
        self.ports
            .get(&port.name)
            .copied()
            .or(port.target_port)
            .unwrap_or(port.number)
    }

    /// Whether the endpoint carries every label in `selector`.
    pub fn matches(&self, selector: &Labels) -> bool {
        selector
            .iter()
            .all(|(k, v)| self.labels.get(k).is_some_and(|l| l == v))
    }
}

/// A source of services (ServiceEntry resources, Kubernetes, ...).
pub trait ServiceRegistry {
    /// Every service the registry knows, sorted by host, one per host.
    fn services(&self) -> Vec<Service>;
}

/// The registry of services declared by ServiceEntry resources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceEntryRegistry {
    by_host: BTreeMap<String, Service>,
}

impl ServiceEntryRegistry {
    /// Builds the registry from the ServiceEntries among `resources`.
    ///
    /// Resources are read in key order (namespace, name); when two entries declare
    /// the same host, the first one wins, so the result never depends on input order.
    pub fn from_resources(resources: &[&Resource]) -> Self {
        let mut entries: Vec<(&Resource, &ServiceEntry)> = resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::ServiceEntry(se) => Some((*r, se)),
                _ => None,
            })
            .collect();
        entries.sort_by(|a, b| {
            (&a.0.meta.namespace, &a.0.meta.name).cmp(&(&b.0.meta.namespace, &b.0.meta.name))
        });
        let mut by_host = BTreeMap::new();
        for (resource, se) in entries {
            for host in &se.hosts {
                let host = fqdn(host, &resource.meta.namespace).into_owned();
                by_host
                    .entry(host.clone())
                    .or_insert_with(|| service_from_entry(host, &resource.meta.namespace, se));
            }
        }
        Self { by_host }
    }

    /// The service for `host`, if declared.
    pub fn get(&self, host: &str) -> Option<&Service> {
        self.by_host.get(host)
    }
}

impl ServiceRegistry for ServiceEntryRegistry {
    fn services(&self) -> Vec<Service> {
        self.by_host.values().cloned().collect()
    }
}

fn service_from_entry(host: String, namespace: &str, se: &ServiceEntry) -> Service {
    let mut ports: Vec<ServicePort> = Vec::new();
    for p in &se.ports {
        if p.number == 0 || p.number > 65535 || ports.iter().any(|q| q.number == p.number) {
            continue;
        }
        ports.push(ServicePort {
            number: p.number,
            name: p.name.clone(),
            protocol: Protocol::parse(&p.protocol),
            target_port: p.target_port.filter(|t| (1..=65535).contains(t)),
        });
    }
    ports.sort_by_key(|p| p.number);
    Service {
        host,
        namespace: namespace.to_string(),
        ports,
        resolution: se.effective_resolution(),
        location: se.location.unwrap_or(Location::MeshExternal),
        endpoints: se
            .endpoints
            .iter()
            .map(|e| Endpoint {
                address: e.address.clone(),
                ports: e.ports.clone(),
                labels: e.labels.clone(),
                locality: e.locality.clone(),
                weight: e.weight,
                service_account: e.service_account.clone(),
            })
            .collect(),
        export_to: se.export_to.clone(),
        addresses: se.addresses.clone(),
        workload_selector: se.workload_selector.as_ref().map(|w| w.labels.clone()),
        subject_alt_names: se.subject_alt_names.clone(),
        registry: RegistryKind::ServiceEntry,
    }
}

/// Merges several registries into one list sorted by host; for a host declared by
/// more than one registry, the earlier registry wins.
pub fn merge_registries(registries: &[&dyn ServiceRegistry]) -> Vec<Service> {
    let mut by_host: BTreeMap<String, Service> = BTreeMap::new();
    for registry in registries {
        for service in registry.services() {
            by_host.entry(service.host.clone()).or_insert(service);
        }
    }
    by_host.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_model::{ParseOptions, parse_document_set};

    fn mk_registry(yaml: &str) -> ServiceEntryRegistry {
        let set = parse_document_set("t.yaml", yaml, &ParseOptions::default());
        let refs: Vec<&Resource> = set.accepted.iter().collect();
        ServiceEntryRegistry::from_resources(&refs)
    }

    #[test]
    fn service_entry_becomes_service_with_qualified_host() {
        let reg = mk_registry(
            "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: a\n  namespace: ns\nspec:\n  hosts: [svc]\n  resolution: STATIC\n  location: MESH_INTERNAL\n  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n  endpoints:\n  - address: 10.0.0.1\n    ports:\n      http: 8080\n    locality: r/z\n    weight: 3\n",
        );
        let services = reg.services();
        assert_eq!(services.len(), 1);
        let s = &services[0];
        assert_eq!(s.host, "svc.ns.svc.cluster.local");
        assert_eq!(s.resolution, Resolution::Static);
        assert_eq!(s.ports[0].protocol, Some(Protocol::Http));
        assert_eq!(s.endpoints[0].port_for(&s.ports[0]), 8080);
        assert_eq!(s.endpoints[0].weight, Some(3));
    }

    #[test]
    fn service_entry_identities_are_endpoint_accounts_and_declared_names() {
        let reg = mk_registry(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a, namespace: ns}\nspec:\n  hosts: [svc]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  subjectAltNames: [spiffe://cluster.local/ns/ns/sa/b, x.example.com]\n  endpoints:\n  - {address: 10.0.0.1, serviceAccount: b}\n  - {address: 10.0.0.2, serviceAccount: a}\n  - {address: 10.0.0.3}\n",
        );
        let s = &reg.services()[0];
        assert_eq!(s.registry, RegistryKind::ServiceEntry);
        assert_eq!(s.endpoints[0].service_account, "b");
        assert_eq!(
            s.service_accounts().into_iter().collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(
            s.identities("td"),
            [
                "spiffe://cluster.local/ns/ns/sa/b",
                "spiffe://td/ns/ns/sa/a",
                "spiffe://td/ns/ns/sa/b",
                "x.example.com"
            ]
        );
    }

    #[test]
    fn first_registry_wins_on_merge() {
        struct Fixed(Vec<Service>);
        impl ServiceRegistry for Fixed {
            fn services(&self) -> Vec<Service> {
                self.0.clone()
            }
        }
        let mk = |ns: &str| Service {
            host: "h.example.com".into(),
            namespace: ns.into(),
            ports: vec![],
            resolution: Resolution::Dns,
            location: Location::MeshExternal,
            endpoints: vec![],
            export_to: vec![],
            addresses: vec![],
            workload_selector: None,
            subject_alt_names: vec![],
            registry: RegistryKind::ServiceEntry,
        };
        let a = Fixed(vec![mk("a")]);
        let b = Fixed(vec![mk("b")]);
        let merged = merge_registries(&[&a, &b]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].namespace, "a");
    }
}
