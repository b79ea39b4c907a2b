//! Kubernetes objects to the service model: pure functions over Services,
//! EndpointSlices, Pods and Nodes, no I/O.
//!
//! - A Service `<name>` in `<ns>` becomes the host `<name>.<ns>.svc.<cluster domain>`,
//!   inside the mesh. A ClusterIP service resolves `STATIC` (EDS) with its cluster IPs
//!   as addresses; a headless one (`clusterIP: None`) resolves `NONE`, without
//!   addresses, its endpoints being the pods (sidecars reach them through an original
//!   destination cluster, see [`crate::translate::clusters`]); an ExternalName
//!   service resolves by DNS to its external name.
//! - Port protocols: `appProtocol` first, then the port name (`http`, `http-web`,
//!   `grpc-web-x`, ...), then UDP from the port's transport; anything else is unknown
//!   (TCP).
//! - `networking.istio.io/exportTo` (comma-separated: `.`, `*`, `~`, namespaces) is
//!   the service's exportTo.
//! - Endpoints come from the EndpointSlices labelled `kubernetes.io/service-name` with
//!   the service's name (IPv4 and IPv6 slices). Only endpoints whose `ready` condition
//!   is true (or unset, as the API defines) serve; terminating endpoints are never
//!   ready and are dropped at once, so a draining pod gets no new connections.
//!   The first address of an endpoint is used; an address listed by two slices
//!   counts once.
//! - An endpoint pointing at a Pod carries the pod's labels (DestinationRule
//!   subsets) and service account (`spec.serviceAccountName`, `default` when unset),
//!   whose SPIFFE identity clients verify under `ISTIO_MUTUAL`; an endpoint without
//!   a known pod has no service account. Its locality is `region/zone/subzone`: the pod label `istio-locality`
//!   (`region.zone.subzone`) when present, else the node's
//!   `topology.kubernetes.io/region`, the slice's zone (or the node's
//!   `topology.kubernetes.io/zone`) and the node's `topology.istio.io/subzone`, the
//!   node being the endpoint's `nodeName`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use k8s_openapi::{
    api::{
        core::v1::{Node, Pod, PodSpec, Service as KubeService, ServicePort as KubeServicePort},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use kube::core::PartialObjectMeta;
use mesh_model::{
    networking::{Labels, Location, Resolution},
    protocol::Protocol,
};

use crate::model::{Endpoint, RegistryKind, Service, ServicePort};

/// The annotation holding a Service's exportTo.
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";
/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Node label of the region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Node label of the zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Node label of the subzone.
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";
/// Pod label overriding the locality, as `region.zone.subzone`.
pub const LOCALITY_LABEL: &str = "istio-locality";

/// The Kubernetes objects the registry reads, as the reflectors hold them.
#[derive(Debug, Default, Clone)]
pub struct ClusterObjects {
    /// Services.
    pub services: Vec<Arc<KubeService>>,
    /// EndpointSlices.
    pub slices: Vec<Arc<EndpointSlice>>,
    /// Pods: name, namespace, labels and service account only (see
    /// [`strip_pod`]).
    pub pods: Vec<Arc<Pod>>,
    /// Nodes, metadata only.
    pub nodes: Vec<Arc<PartialObjectMeta<Node>>>,
}

/// Every service of `objects`, sorted by host.
pub fn services(objects: &ClusterObjects, cluster_domain: &str) -> Vec<Service> {
    let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in &objects.slices {
        let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
        if let Some(svc) = label(&slice.metadata.labels, SERVICE_NAME_LABEL) {
            slices.entry((ns, svc)).or_default().push(slice);
        }
    }
    let pods: HashMap<(&str, &str), &Pod> = objects
        .pods
        .iter()
        .map(|p| {
            let meta = &p.metadata;
            let key = (
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default(),
            );
            (key, p.as_ref())
        })
        .collect();
    let nodes: HashMap<&str, &PartialObjectMeta<Node>> = objects
        .nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n.as_ref())))
        .collect();
    let lookup = Lookup { pods, nodes };
    let mut out: Vec<Service> = objects
        .services
        .iter()
        .filter_map(|svc| {
            let name = svc.metadata.name.as_deref()?;
            let ns = svc.metadata.namespace.as_deref()?;
            let mut own = slices.get(&(ns, name)).cloned().unwrap_or_default();
            own.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            Some(service(svc, &own, &lookup, cluster_domain))
        })
        .collect();
    out.sort_by(|a, b| a.host.cmp(&b.host));
    out
}

/// The service account of pods that name none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// Reduces a Pod to what the registry reads (name, namespace, labels, service
/// account), so the cache does not hold every pod's full spec and status.
pub fn strip_pod(pod: &mut Pod) {
    let meta = std::mem::take(&mut pod.metadata);
    pod.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        labels: meta.labels,
        resource_version: meta.resource_version,
        uid: meta.uid,
        ..ObjectMeta::default()
    };
    let account = pod
        .spec
        .take()
        .and_then(|s| s.service_account_name)
        .filter(|s| !s.is_empty());
    pod.spec = Some(PodSpec {
        service_account_name: account,
        ..PodSpec::default()
    });
    pod.status = None;
}

/// A pod's service account: `spec.serviceAccountName`, else `default`.
fn service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_SERVICE_ACCOUNT)
        .to_string()
}

/// Pods and nodes by key, for endpoint labels and localities.
struct Lookup<'a> {
    pods: HashMap<(&'a str, &'a str), &'a Pod>,
    nodes: HashMap<&'a str, &'a PartialObjectMeta<Node>>,
}

fn label<'a>(labels: &'a Option<BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    labels.as_ref()?.get(key).map(String::as_str)
}

/// One Service with the endpoints of its slices.
fn service(
    svc: &KubeService,
    slices: &[&EndpointSlice],
    lookup: &Lookup<'_>,
    cluster_domain: &str,
) -> Service {
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let namespace = svc.metadata.namespace.as_deref().unwrap_or_default();
    let spec = svc.spec.clone().unwrap_or_default();
    let mut ports: Vec<ServicePort> = Vec::new();
    for p in spec.ports.iter().flatten() {
        let Ok(number) = u32::try_from(p.port) else {
            continue;
        };
        if number == 0 || number > 65535 || ports.iter().any(|q| q.number == number) {
            continue;
        }
        ports.push(ServicePort {
            number,
            name: p.name.clone().unwrap_or_default(),
            protocol: port_protocol(p),
            target_port: match &p.target_port {
                Some(IntOrString::Int(t)) => u32::try_from(*t).ok().filter(|t| *t > 0),
                _ => None,
            },
        });
    }
    ports.sort_by_key(|p| p.number);
    let export_to = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPORT_TO_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let workload_selector = spec
        .selector
        .clone()
        .filter(|s| !s.is_empty())
        .map(|s| s.into_iter().collect::<Labels>());
    let host = format!("{name}.{namespace}.svc.{cluster_domain}");
    let external_name = spec
        .external_name
        .as_deref()
        .filter(|_| spec.type_.as_deref() == Some("ExternalName"));
    let (resolution, addresses, endpoints) = match external_name {
        Some(external) => (
            Resolution::Dns,
            Vec::new(),
            vec![Endpoint {
                address: external.to_string(),
                ports: BTreeMap::new(),
                labels: Labels::new(),
                locality: String::new(),
                weight: None,
                service_account: String::new(),
            }],
        ),
        None if spec.cluster_ip.as_deref() == Some("None") => (
            Resolution::None,
            Vec::new(),
            endpoints(namespace, slices, lookup),
        ),
        None => {
            let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
            if ips.is_empty() {
                ips.extend(spec.cluster_ip.clone().filter(|ip| !ip.is_empty()));
            }
            (
                Resolution::Static,
                ips,
                endpoints(namespace, slices, lookup),
            )
        }
    };
    Service {
        host,
        namespace: namespace.to_string(),
        ports,
        resolution,
        location: Location::MeshInternal,
        endpoints,
        export_to,
        addresses,
        workload_selector,
        subject_alt_names: Vec::new(),
        registry: RegistryKind::Kubernetes,
    }
}

/// The ready endpoints of a service's slices, first address of each, each address
/// once.
fn endpoints(namespace: &str, slices: &[&EndpointSlice], lookup: &Lookup<'_>) -> Vec<Endpoint> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let ports: BTreeMap<String, u32> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let port = u32::try_from(p.port?).ok()?;
                Some((p.name.clone().unwrap_or_default(), port))
            })
            .collect();
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let Some(address) = ep.addresses.first() else {
                continue;
            };
            if !ready || !seen.insert(address.clone()) {
                continue;
            }
            let pod = ep
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    let ns = r.namespace.as_deref().unwrap_or(namespace);
                    lookup.pods.get(&(ns, r.name.as_deref()?)).copied()
                });
            let node = ep
                .node_name
                .as_deref()
                .and_then(|n| lookup.nodes.get(n).copied());
            out.push(Endpoint {
                address: address.clone(),
                ports: ports.clone(),
                labels: pod
                    .and_then(|p| p.metadata.labels.clone())
                    .unwrap_or_default(),
                locality: locality(pod, node, ep.zone.as_deref()),
                weight: None,
                service_account: pod.map(service_account).unwrap_or_default(),
            });
        }
    }
    out
}

/// `region/zone/subzone` of an endpoint; empty when nothing is known.
fn locality(
    pod: Option<&Pod>,
    node: Option<&PartialObjectMeta<Node>>,
    zone: Option<&str>,
) -> String {
    if let Some(l) = pod.and_then(|p| label(&p.metadata.labels, LOCALITY_LABEL)) {
        return l.replace('.', "/");
    }
    let node_label = |key| node.and_then(|n| label(&n.metadata.labels, key));
    let region = node_label(REGION_LABEL).unwrap_or_default();
    let zone = zone.or_else(|| node_label(ZONE_LABEL)).unwrap_or_default();
    let subzone = node_label(SUBZONE_LABEL).unwrap_or_default();
    match (region, zone, subzone) {
        ("", "", "") => String::new(),
        (r, z, "") => format!("{r}/{z}"),
        (r, z, s) => format!("{r}/{z}/{s}"),
    }
}

/// The protocol of a Service port as the mesh infers it: `appProtocol`, then the
/// name's prefix before the first `-` (or `grpc-web`), then UDP from the transport.
pub fn port_protocol(port: &KubeServicePort) -> Option<Protocol> {
    if port.protocol.as_deref() == Some("UDP") {
        return Some(Protocol::Udp);
    }
    if let Some(app) = port.app_protocol.as_deref() {
        let from_app = match app.to_ascii_lowercase().as_str() {
            "kubernetes.io/h2c" => Some(Protocol::Http2),
            "kubernetes.io/ws" => Some(Protocol::Http),
            "kubernetes.io/wss" => Some(Protocol::Https),
            other => Protocol::parse(other).filter(|p| named_protocol(*p)),
        };
        if from_app.is_some() {
            return from_app;
        }
    }
    let name = port.name.as_deref()?.to_ascii_lowercase();
    if name == "grpc-web" || name.starts_with("grpc-web-") {
        return Some(Protocol::GrpcWeb);
    }
    let prefix = name.split('-').next().unwrap_or_default();
    Protocol::parse(prefix).filter(|p| named_protocol(*p))
}

/// Protocols a port name or `appProtocol` can declare (UDP comes from the
/// transport, the HTTP proxy protocol from Sidecar egress only).
fn named_protocol(p: Protocol) -> bool {
    !matches!(p, Protocol::Udp | Protocol::HttpProxy)
}

#[cfg(test)]
mod tests;
