//! Who is asking: the proxy behind an xDS stream, read from its `Node`.
//!
//! Node conventions (Istio's):
//! - `node.id` is `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>`, with
//!   type `sidecar` (a workload's Envoy) or `router` (an ingress gateway);
//! - `node.metadata` may carry `NAMESPACE` (string), `LABELS` (string map) and
//!   `GENERATOR` (`"grpc"` for a proxyless gRPC client);
//! - a node whose id does not follow the format is a proxyless gRPC client unless its
//!   `user_agent_name` is `envoy`; its namespace is `NAMESPACE` or `default`.
//!
//! Proxies with the same kind, namespace and labels see the same configuration, so
//! they form one node group ([`Proxy::group_key`]) whose snapshot is built once.

use std::fmt;

use mesh_api::envoy::{
    envoy::config::core::v3::Node,
    google::protobuf::{Struct, Value, value::Kind},
};
use mesh_model::networking::Labels;

/// What kind of client a proxy is, which decides the listeners it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProxyKind {
    /// A workload's Envoy: outbound listeners on 15001, inbound on 15006.
    Sidecar,
    /// An ingress gateway's Envoy: listeners from Gateway resources.
    Router,
    /// A proxyless gRPC client: one API listener per `host:port`.
    Proxyless,
}

impl ProxyKind {
    /// The kind's name as it appears in node ids and group keys.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Sidecar => "sidecar",
            ProxyKind::Router => "router",
            ProxyKind::Proxyless => "proxyless",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "sidecar" => Some(ProxyKind::Sidecar),
            "router" => Some(ProxyKind::Router),
            "proxyless" => Some(ProxyKind::Proxyless),
            _ => None,
        }
    }
}

impl fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The part of a proxy that decides its configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Proxy {
    /// Sidecar, gateway or proxyless client.
    pub kind: ProxyKind,
    /// The proxy's namespace.
    pub namespace: String,
    /// The workload's labels (selectors of Sidecar, PeerAuthentication,
    /// AuthorizationPolicy, Gateway and ServiceEntry workloadSelector match them).
    pub labels: Labels,
    /// The node's locality as `region/zone/subzone` (empty parts allowed; all empty
    /// when unknown), for locality-aware load balancing.
    pub locality: String,
}

/// Namespace of proxies that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

impl Proxy {
    /// A proxy of `kind` in `namespace` with `labels`.
    pub fn new(kind: ProxyKind, namespace: impl Into<String>, labels: Labels) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            labels,
            locality: String::new(),
        }
    }

    /// The same proxy at `locality` (`region/zone/subzone`).
    pub fn with_locality(mut self, locality: impl Into<String>) -> Self {
        self.locality = locality.into();
        self
    }

    /// Reads a proxy from the node it sent (no node: a proxyless client in `default`).
    pub fn from_node(node: Option<&Node>) -> Self {
        let Some(node) = node else {
            return Self::new(ProxyKind::Proxyless, DEFAULT_NAMESPACE, Labels::new());
        };
        let metadata = node.metadata.as_ref();
        let labels = metadata
            .and_then(|m| m.fields.get("LABELS"))
            .map(string_map)
            .unwrap_or_default();
        let meta_ns = metadata
            .and_then(|m| m.fields.get("NAMESPACE"))
            .and_then(string_value)
            .filter(|s| !s.is_empty());
        let grpc_generator = metadata
            .and_then(|m| m.fields.get("GENERATOR"))
            .and_then(string_value)
            .is_some_and(|g| g.eq_ignore_ascii_case("grpc"));
        let parts: Vec<&str> = node.id.split('~').collect();
        let (id_kind, id_ns) = if parts.len() == 4 {
            let kind = match parts[0] {
                "sidecar" => Some(ProxyKind::Sidecar),
                "router" => Some(ProxyKind::Router),
                _ => None,
            };
            let ns = parts[3].split('.').next().filter(|s| !s.is_empty());
            (kind, ns)
        } else {
            (None, None)
        };
        let kind = if grpc_generator {
            ProxyKind::Proxyless
        } else if let Some(kind) = id_kind {
            kind
        } else if node.user_agent_name.eq_ignore_ascii_case("envoy") {
            ProxyKind::Sidecar
        } else {
            ProxyKind::Proxyless
        };
        let namespace = meta_ns.or(id_ns).unwrap_or(DEFAULT_NAMESPACE).to_string();
        let locality = node
            .locality
            .as_ref()
            .map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone))
            .filter(|l| l != "//")
            .unwrap_or_default();
        Self::new(kind, namespace, labels).with_locality(locality)
    }

    /// The node group of this proxy: `<kind>|<namespace>|<locality>|<k>=<v>,...`
    /// (labels sorted).
    pub fn group_key(&self) -> String {
        let mut key = format!("{}|{}|{}|", self.kind, self.namespace, self.locality);
        for (i, (k, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(k);
            key.push('=');
            key.push_str(v);
        }
        key
    }

    /// Reads a group key back (`None` when it was not made by [`Proxy::group_key`]).
    pub fn from_group_key(key: &str) -> Option<Self> {
        let mut parts = key.splitn(4, '|');
        let kind = ProxyKind::parse(parts.next()?)?;
        let namespace = parts.next()?;
        let locality = parts.next()?;
        let labels_text = parts.next()?;
        let mut labels = Labels::new();
        for pair in labels_text.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=')?;
            labels.insert(k.to_string(), v.to_string());
        }
        Some(Self::new(kind, namespace, labels).with_locality(locality))
    }

    /// Whether the proxy carries every label of `selector` (an empty selector matches).
    pub fn matches(&self, selector: &Labels) -> bool {
        selector
            .iter()
            .all(|(k, v)| self.labels.get(k).is_some_and(|l| l == v))
    }
}

pub(crate) fn string_value(v: &Value) -> Option<&str> {
    match &v.kind {
        Some(Kind::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn string_map(v: &Value) -> Labels {
    match &v.kind {
        Some(Kind::StructValue(Struct { fields })) => fields
            .iter()
            .filter_map(|(k, v)| string_value(v).map(|s| (k.clone(), s.to_string())))
            .collect(),
        _ => Labels::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, agent: &str, fields: Vec<(&str, Value)>) -> Node {
        Node {
            id: id.into(),
            user_agent_name: agent.into(),
            metadata: Some(Struct {
                fields: fields
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            }),
            ..Default::default()
        }
    }

    fn s(text: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(text.into())),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Value {
        Value {
            kind: Some(Kind::StructValue(Struct {
                fields: pairs.iter().map(|(k, v)| (k.to_string(), s(v))).collect(),
            })),
        }
    }

    #[test]
    fn istio_node_ids_give_kind_and_namespace() {
        let n = node(
            "sidecar~10.0.0.1~reviews-v1-abc.shop~shop.svc.cluster.local",
            "envoy",
            vec![("LABELS", labels(&[("app", "reviews"), ("version", "v1")]))],
        );
        let p = Proxy::from_node(Some(&n));
        assert_eq!(p.kind, ProxyKind::Sidecar);
        assert_eq!(p.namespace, "shop");
        assert_eq!(p.labels.get("version").map(String::as_str), Some("v1"));
        assert_eq!(p.group_key(), "sidecar|shop||app=reviews,version=v1");

        let gw = node(
            "router~10.0.0.2~ingress-1.istio-system~istio-system.svc.cluster.local",
            "envoy",
            vec![],
        );
        let p = Proxy::from_node(Some(&gw));
        assert_eq!(
            (p.kind, p.namespace.as_str()),
            (ProxyKind::Router, "istio-system")
        );
    }

    #[test]
    fn metadata_overrides_and_proxyless_detection() {
        let n = node(
            "sidecar~10.0.0.1~a.x~x.svc.cluster.local",
            "gRPC Python",
            vec![("GENERATOR", s("grpc")), ("NAMESPACE", s("y"))],
        );
        let p = Proxy::from_node(Some(&n));
        assert_eq!((p.kind, p.namespace.as_str()), (ProxyKind::Proxyless, "y"));

        let free = node("grpc-e2e", "gRPC Python", vec![]);
        let p = Proxy::from_node(Some(&free));
        assert_eq!(
            (p.kind, p.namespace.as_str()),
            (ProxyKind::Proxyless, "default")
        );

        let envoy = node("my-envoy", "envoy", vec![("NAMESPACE", s("edge"))]);
        let p = Proxy::from_node(Some(&envoy));
        assert_eq!((p.kind, p.namespace.as_str()), (ProxyKind::Sidecar, "edge"));

        let none = Proxy::from_node(None);
        assert_eq!(none.kind, ProxyKind::Proxyless);
    }

    #[test]
    fn group_keys_round_trip() {
        for p in [
            Proxy::new(ProxyKind::Sidecar, "ns", Labels::new()),
            Proxy::new(ProxyKind::Sidecar, "ns", Labels::new()).with_locality("eu/eu-1a/"),
            Proxy::new(
                ProxyKind::Router,
                "istio-system",
                [("istio".to_string(), "ingressgateway".to_string())].into(),
            ),
            Proxy::new(
                ProxyKind::Proxyless,
                "a",
                [
                    ("app".to_string(), "x".to_string()),
                    ("v".to_string(), "1".to_string()),
                ]
                .into(),
            ),
        ] {
            assert_eq!(Proxy::from_group_key(&p.group_key()), Some(p));
        }
        assert_eq!(Proxy::from_group_key("nonsense"), None);
        assert_eq!(Proxy::from_group_key("sidecar|ns||novalue"), None);
    }
}
