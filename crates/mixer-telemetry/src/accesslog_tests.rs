#![allow(clippy::unwrap_used)]

use mesh_api::envoy::{
    envoy::{
        config::core::v3::{SocketAddress, address, socket_address::PortSpecifier},
        data::accesslog::v3::{
            ConnectionProperties, HttpRequestProperties, HttpResponseProperties, TlsProperties,
            tls_properties::{
                CertificateProperties,
                certificate_properties::{SubjectAltName, subject_alt_name::San},
            },
        },
    },
    google::protobuf::{self, Struct, UInt32Value},
};
use mixer_core::{AttributeTypes, Bag, manifest::Manifest};

use super::*;

fn addr(ip: &str, port: u32) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..SocketAddress::default()
        })),
    })
}

fn s(v: &str) -> protobuf::Value {
    protobuf::Value {
        kind: Some(prost_kind::StringValue(v.into())),
    }
}

pub(crate) fn node(workload: &str, namespace: &str, app: &str) -> Node {
    let labels = Struct {
        fields: [("app".to_string(), s(app))].into(),
    };
    Node {
        id: format!("sidecar~10.0.0.1~{workload}.{namespace}~{namespace}.svc.cluster.local"),
        metadata: Some(Struct {
            fields: [
                ("WORKLOAD_NAME".to_string(), s(workload)),
                ("NAMESPACE".to_string(), s(namespace)),
                (
                    "LABELS".to_string(),
                    protobuf::Value {
                        kind: Some(prost_kind::StructValue(labels)),
                    },
                ),
            ]
            .into(),
        }),
        ..Node::default()
    }
}

pub(crate) fn http_entry(cluster: &str, code: u32) -> HttpAccessLogEntry {
    HttpAccessLogEntry {
        common_properties: Some(AccessLogCommon {
            downstream_remote_address: addr("10.1.0.7", 43210),
            downstream_local_address: addr("10.1.0.9", 9080),
            upstream_cluster: cluster.into(),
            time_to_last_downstream_tx_byte: Some(protobuf::Duration {
                seconds: 0,
                nanos: 25_000_000,
            }),
            tls_properties: Some(TlsProperties {
                peer_certificate_properties: Some(CertificateProperties {
                    subject_alt_name: vec![SubjectAltName {
                        san: Some(San::Uri(
                            "spiffe://cluster.local/ns/bookinfo/sa/productpage".into(),
                        )),
                    }],
                    ..CertificateProperties::default()
                }),
                ..TlsProperties::default()
            }),
            ..AccessLogCommon::default()
        }),
        request: Some(HttpRequestProperties {
            request_method: RequestMethod::Get as i32,
            path: "/reviews/1?x=1".into(),
            authority: "reviews:9080".into(),
            request_headers_bytes: 100,
            request_body_bytes: 20,
            ..HttpRequestProperties::default()
        }),
        response: Some(HttpResponseProperties {
            response_code: Some(UInt32Value { value: code }),
            response_body_bytes: 300,
            ..HttpResponseProperties::default()
        }),
        ..HttpAccessLogEntry::default()
    }
}

#[test]
fn http_entries_become_typed_attributes() {
    let reporter = Reporter::from_node(&node("reviews-v2", "bookinfo", "reviews"));
    let bag = http_attributes(
        &http_entry("inbound|9080||reviews.bookinfo.svc.cluster.local", 503),
        &reporter,
    );
    let m = Manifest::standard();
    for (name, v) in bag.iter() {
        let t = m
            .type_of(name)
            .unwrap_or_else(|| panic!("{name} is in the vocabulary"));
        assert!(
            t == v.value_type() || (t.is_text() && v.value_type().is_text()),
            "{name}: {t} vs {:?}",
            v
        );
    }
    let get = |n: &str| bag.get(n).unwrap_or_else(|| panic!("{n}"));
    assert_eq!(get("context.reporter.kind"), Value::from("inbound"));
    assert_eq!(get("destination.workload.name"), Value::from("reviews-v2"));
    assert_eq!(
        get("destination.labels"),
        Value::string_map([("app", "reviews")])
    );
    assert_eq!(
        get("source.principal"),
        Value::from("cluster.local/ns/bookinfo/sa/productpage")
    );
    assert_eq!(get("connection.mtls"), Value::Bool(true));
    assert_eq!(get("response.code"), Value::Int64(503));
    assert_eq!(
        get("response.duration"),
        Value::Duration(Duration::from_millis(25))
    );
    assert_eq!(get("request.method"), Value::from("GET"));
    assert_eq!(get("request.url_path"), Value::from("/reviews/1"));
    assert_eq!(get("request.total_size"), Value::Int64(120));
    assert_eq!(get("destination.service.name"), Value::from("reviews"));
    assert_eq!(get("destination.port"), Value::Int64(9080));
    assert_eq!(get("context.protocol"), Value::from("http"));

    // Reported by the client's proxy: the node is the source.
    let reporter = Reporter::from_node(&node("productpage-v1", "bookinfo", "productpage"));
    let bag = http_attributes(
        &http_entry("outbound|9080||reviews.bookinfo.svc.cluster.local", 200),
        &reporter,
    );
    assert_eq!(
        bag.get("context.reporter.kind"),
        Some(Value::from("outbound"))
    );
    assert_eq!(
        bag.get("source.workload.name"),
        Some(Value::from("productpage-v1"))
    );
    assert_eq!(bag.get("destination.workload.name"), None);
}

#[test]
fn tcp_entries_carry_bytes() {
    let e = TcpAccessLogEntry {
        common_properties: Some(AccessLogCommon {
            upstream_cluster: "outbound|3306||mysql.db.svc.cluster.local".into(),
            ..AccessLogCommon::default()
        }),
        connection_properties: Some(ConnectionProperties {
            received_bytes: 10,
            sent_bytes: 2048,
        }),
    };
    let bag = tcp_attributes(&e, &Reporter::default());
    assert_eq!(bag.get("context.protocol"), Some(Value::from("tcp")));
    assert_eq!(bag.get("connection.sent.bytes"), Some(Value::Int64(2048)));
    assert_eq!(
        bag.get("destination.service.host"),
        Some(Value::from("mysql.db.svc.cluster.local"))
    );
}
