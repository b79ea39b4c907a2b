//! Envoy's policy APIs mapped onto the attribute vocabulary, so stock Envoy can
//! use mixer-policy's rules: an ext_authz `CheckRequest` becomes the attribute
//! bag the Mixer Check API would carry for the same request, and each
//! descriptor of a rate limit request a bag and a quota allocation.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use mesh_api::envoy::envoy::{
    extensions::common::ratelimit::v3::rate_limit_descriptor::Entry,
    service::auth::v3::{CheckRequest, attribute_context::Peer},
};
use mixer_core::{
    Value, ValueType,
    envoy::{cluster_host, socket_address},
    manifest::Manifest,
    wire::AttributeBag,
};

/// Descriptor entry keys of Envoy's built-in rate limit actions that stand for
/// an attribute.
const DESCRIPTOR_KEYS: &[(&str, &str)] = &[
    ("remote_address", "source.ip"),
    ("destination_cluster", "destination.service.host"),
];

/// The attributes of one rate limit descriptor of `domain`: `ratelimit.domain`,
/// `ratelimit.descriptor` (every entry, key to value), and each entry whose key
/// names an attribute of `manifest` (or is `remote_address`, read as
/// `source.ip`, or `destination_cluster`, whose Istio-style name
/// `outbound|port|subset|host` gives `destination.service.host`) as that
/// attribute, in its type. A value that does not parse in its attribute's type
/// is refused, naming the entry.
pub fn ratelimit_attributes(
    domain: &str,
    entries: &[Entry],
    manifest: &Manifest,
) -> Result<AttributeBag, String> {
    use mixer_core::AttributeTypes;
    let mut bag = AttributeBag::new();
    bag.insert("ratelimit.domain", Value::from(domain));
    let mut all = BTreeMap::new();
    for e in entries {
        all.insert(e.key.clone(), e.value.clone());
        let (name, value) = match DESCRIPTOR_KEYS.iter().find(|(k, _)| *k == e.key) {
            Some((_, name)) if *name == "destination.service.host" => {
                (*name, cluster_host(&e.value))
            }
            Some((_, name)) => (*name, e.value.as_str()),
            None => (e.key.as_str(), e.value.as_str()),
        };
        let Some(t) = manifest.type_of(name) else {
            continue;
        };
        let bad = || format!("descriptor entry {}={:?} is not a {t}", e.key, e.value);
        let v = match t {
            ValueType::String | ValueType::DnsName | ValueType::EmailAddress | ValueType::Uri => {
                Value::from(value)
            }
            ValueType::Int64 => Value::Int64(value.parse().map_err(|_| bad())?),
            ValueType::Double => Value::Double(value.parse().map_err(|_| bad())?),
            ValueType::Bool => Value::Bool(value.parse().map_err(|_| bad())?),
            ValueType::IpAddress => Value::Ip(value.parse().map_err(|_| bad())?),
            ValueType::Bytes => Value::Bytes(Arc::from(value.as_bytes())),
            // Times and maps have no text form in a descriptor.
            ValueType::Timestamp | ValueType::Duration | ValueType::StringMap => {
                return Err(bad());
            }
        };
        bag.insert(name, v);
    }
    bag.insert("ratelimit.descriptor", Value::StringMap(Arc::new(all)));
    Ok(bag)
}

/// The attributes of an ext_authz request.
pub fn ext_authz_attributes(req: &CheckRequest) -> AttributeBag {
    let mut bag = AttributeBag::new();
    let Some(ctx) = req.attributes.as_ref() else {
        return bag;
    };
    if let Some(peer) = &ctx.source {
        peer_attributes(&mut bag, "source", peer);
        if !peer.principal.is_empty() {
            bag.insert("connection.mtls", Value::Bool(true));
        }
    }
    if let Some(peer) = &ctx.destination {
        peer_attributes(&mut bag, "destination", peer);
        if !peer.service.is_empty() {
            bag.insert(
                "destination.service.host",
                Value::from(peer.service.as_str()),
            );
        }
    }
    if let Some(tls) = &ctx.tls_session
        && !tls.sni.is_empty()
    {
        bag.insert(
            "connection.requested_server_name",
            Value::from(tls.sni.as_str()),
        );
    }
    let Some(request) = &ctx.request else {
        return bag;
    };
    if let Some(t) = &request.time
        && let (Ok(secs), Ok(nanos)) = (u64::try_from(t.seconds), u32::try_from(t.nanos))
        && nanos < 1_000_000_000
    {
        bag.insert(
            "request.time",
            Value::Timestamp(UNIX_EPOCH + Duration::new(secs, nanos)),
        );
    }
    let Some(http) = &request.http else {
        bag.insert("context.protocol", Value::from("tcp"));
        return bag;
    };
    let text = |bag: &mut AttributeBag, name: &str, v: &str| {
        if !v.is_empty() {
            bag.insert(name, Value::from(v));
        }
    };
    text(&mut bag, "request.id", &http.id);
    text(&mut bag, "request.method", &http.method);
    text(&mut bag, "request.path", &http.path);
    text(&mut bag, "request.host", &http.host);
    text(&mut bag, "request.scheme", &http.scheme);
    let (url_path, query) = match http.path.split_once('?') {
        Some((p, q)) => (p, q),
        None => (http.path.as_str(), http.query.as_str()),
    };
    text(&mut bag, "request.url_path", url_path);
    if !query.is_empty() {
        let params: BTreeMap<String, String> = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.to_string(), String::new()),
            })
            .collect();
        bag.insert("request.query_params", Value::StringMap(Arc::new(params)));
    }
    if http.size > 0 {
        bag.insert("request.size", Value::Int64(http.size));
    }
    let headers: BTreeMap<String, String> = http
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    if let Some(ua) = headers.get("user-agent") {
        bag.insert("request.useragent", Value::from(ua.as_str()));
    }
    if let Some(referer) = headers.get("referer") {
        bag.insert("request.referer", Value::from(referer.as_str()));
    }
    let grpc = headers
        .get("content-type")
        .is_some_and(|c| c.starts_with("application/grpc"));
    bag.insert(
        "context.protocol",
        Value::from(if grpc { "grpc" } else { "http" }),
    );
    bag.insert("request.headers", Value::StringMap(Arc::new(headers)));
    bag
}

fn peer_attributes(bag: &mut AttributeBag, side: &str, peer: &Peer) {
    if let Some((ip, port)) = peer.address.as_ref().and_then(socket_address) {
        bag.insert(&format!("{side}.ip"), Value::Ip(ip));
        if let Some(port) = port {
            bag.insert(&format!("{side}.port"), Value::Int64(i64::from(port)));
        }
    }
    if !peer.principal.is_empty() {
        // Istio's principals leave out the URI scheme.
        let principal = peer
            .principal
            .strip_prefix("spiffe://")
            .unwrap_or(&peer.principal);
        bag.insert(&format!("{side}.principal"), Value::from(principal));
        if let Some(ns) = principal
            .split_once("/ns/")
            .and_then(|(_, rest)| rest.split('/').next())
        {
            bag.insert(&format!("{side}.namespace"), Value::from(ns));
        }
    }
    if !peer.labels.is_empty() {
        let labels: BTreeMap<String, String> = peer
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        bag.insert(
            &format!("{side}.labels"),
            Value::StringMap(Arc::new(labels)),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use mesh_api::envoy::envoy::{
        config::core::v3::{Address, SocketAddress, address, socket_address::PortSpecifier},
        service::auth::v3::{
            AttributeContext,
            attribute_context::{HttpRequest, Request, TlsSession},
        },
    };
    use mixer_core::{AttributeTypes, Bag};

    use super::*;

    fn entry(key: &str, value: &str) -> Entry {
        Entry {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn rate_limit_descriptors_become_typed_attributes() {
        let m = Manifest::standard();
        let bag = ratelimit_attributes(
            "requestcount",
            &[
                entry("remote_address", "10.1.2.3"),
                entry(
                    "destination_cluster",
                    "outbound|9080|v1|ratings.bookinfo.svc.cluster.local",
                ),
                entry("request.size", "42"),
                entry("generic_key", "slow-path"),
            ],
            &m,
        )
        .unwrap();
        assert_eq!(
            bag.get("source.ip"),
            Some(Value::Ip("10.1.2.3".parse().unwrap()))
        );
        assert_eq!(
            bag.get("destination.service.host"),
            Some(Value::from("ratings.bookinfo.svc.cluster.local"))
        );
        assert_eq!(bag.get("request.size"), Some(Value::Int64(42)));
        assert_eq!(
            bag.get("ratelimit.domain"),
            Some(Value::from("requestcount"))
        );
        let Some(Value::StringMap(all)) = bag.get("ratelimit.descriptor") else {
            panic!("no descriptor map");
        };
        assert_eq!(
            all.get("generic_key").map(String::as_str),
            Some("slow-path")
        );
        assert_eq!(all.len(), 4);
        // Every attribute is of its declared type.
        for (name, v) in bag.iter() {
            assert_eq!(
                m.type_of(name)
                    .map(|t| t == v.value_type() || t == ValueType::DnsName),
                Some(true),
                "{name}"
            );
        }
        // A plain cluster name is taken as it is.
        let bag =
            ratelimit_attributes("d", &[entry("destination_cluster", "ratings")], &m).unwrap();
        assert_eq!(
            bag.get("destination.service.host"),
            Some(Value::from("ratings"))
        );
        // A value that does not parse in its attribute's type is refused.
        let e = ratelimit_attributes("d", &[entry("remote_address", "nope")], &m).unwrap_err();
        assert!(e.contains("remote_address"), "{e}");
        let e = ratelimit_attributes("d", &[entry("request.headers", "x")], &m).unwrap_err();
        assert!(e.contains("STRING_MAP"), "{e}");
    }

    fn addr(ip: &str, port: u32) -> Address {
        Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..SocketAddress::default()
            })),
        }
    }

    #[test]
    fn an_ext_authz_request_becomes_typed_mesh_attributes() {
        let req = CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(addr("10.1.0.7", 43210)),
                    principal: "spiffe://cluster.local/ns/bookinfo/sa/productpage".into(),
                    ..Peer::default()
                }),
                destination: Some(Peer {
                    address: Some(addr("10.1.0.9", 9080)),
                    service: "reviews.bookinfo.svc.cluster.local".into(),
                    labels: [("app".to_string(), "reviews".to_string())].into(),
                    ..Peer::default()
                }),
                request: Some(Request {
                    http: Some(HttpRequest {
                        id: "abc".into(),
                        method: "GET".into(),
                        path: "/reviews/1?verbose=1&x".into(),
                        host: "reviews:9080".into(),
                        headers: [
                            ("User-Agent".to_string(), "curl/8".to_string()),
                            ("x-user".to_string(), "jason".to_string()),
                        ]
                        .into(),
                        size: 12,
                        ..HttpRequest::default()
                    }),
                    ..Request::default()
                }),
                tls_session: Some(TlsSession {
                    sni: "outbound_.9080_._.reviews".into(),
                }),
                ..AttributeContext::default()
            }),
        };
        let bag = ext_authz_attributes(&req);
        let get = |n: &str| bag.get(n);
        assert_eq!(
            get("source.ip"),
            Some(Value::Ip("10.1.0.7".parse().unwrap()))
        );
        assert_eq!(get("destination.port"), Some(Value::Int64(9080)));
        assert_eq!(
            get("source.principal"),
            Some(Value::from("cluster.local/ns/bookinfo/sa/productpage"))
        );
        assert_eq!(get("source.namespace"), Some(Value::from("bookinfo")));
        assert_eq!(
            get("destination.service.host"),
            Some(Value::from("reviews.bookinfo.svc.cluster.local"))
        );
        assert_eq!(get("request.url_path"), Some(Value::from("/reviews/1")));
        assert_eq!(get("request.useragent"), Some(Value::from("curl/8")));
        assert_eq!(get("context.protocol"), Some(Value::from("http")));
        assert_eq!(get("connection.mtls"), Some(Value::Bool(true)));
        let Some(Value::StringMap(q)) = get("request.query_params") else {
            panic!()
        };
        assert_eq!(q.get("verbose").map(String::as_str), Some("1"));
        assert_eq!(q.get("x").map(String::as_str), Some(""));
        let Some(Value::StringMap(h)) = get("request.headers") else {
            panic!()
        };
        assert_eq!(h.get("user-agent").map(String::as_str), Some("curl/8"));
        // Every attribute is in the vocabulary with the type it was given.
        let vocabulary = Manifest::standard();
        for (name, value) in bag.iter() {
            let declared = vocabulary.type_of(name);
            assert!(declared.is_some(), "{name} is not in the vocabulary");
            let t = value.value_type();
            assert!(
                declared == Some(t)
                    || (t == mixer_core::ValueType::String
                        && declared.is_some_and(|d| d.is_text())),
                "{name}: {t} vs {declared:?}"
            );
        }
    }

    #[test]
    fn an_empty_request_gives_an_empty_bag() {
        assert!(ext_authz_attributes(&CheckRequest::default()).is_empty());
    }
}
