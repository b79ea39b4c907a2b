//! Gateway: a load balancer at the edge of the mesh and the ports, hosts and TLS
//! settings it serves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Labels, is_false};

/// Gateway spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// Servers (listeners); at least one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    /// Labels of the gateway workloads the configuration applies to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: Labels,
}

/// One listener of a gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// Port, protocol and port name; required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// Address to bind to (IP or `unix://` path).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    /// Hosts served, as `host` or `<namespace>/<host>`; at least one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Where to forward traffic (`127.0.0.1:<port>` or `unix://`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    /// Name, for stats.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// A port with its protocol and name (Gateway servers, ServiceEntry ports and Sidecar
/// listeners share this shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// Port number.
    #[serde(default)]
    pub number: u32,
    /// Protocol: HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, REDIS, MYSQL, TCP, TLS, UDP or HTTP_PROXY.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Port name (a DNS-1123 label).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Port on the endpoint, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// TLS modes of a gateway server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Forward TLS untouched, routed by SNI.
    Passthrough,
    /// Terminate TLS.
    Simple,
    /// Terminate TLS and require client certificates.
    Mutual,
    /// Forward by SNI without a VirtualService (multi-cluster).
    AutoPassthrough,
    /// Terminate mesh mutual TLS.
    IstioMutual,
    /// Terminate TLS, client certificates optional.
    OptionalMutual,
}

/// TLS protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsProtocol {
    /// The proxy's default.
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    /// TLS 1.0.
    #[serde(rename = "TLSV1_0")]
    TlsV1_0,
    /// TLS 1.1.
    #[serde(rename = "TLSV1_1")]
    TlsV1_1,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}

/// TLS settings of a gateway server or sidecar ingress listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// Redirect plain HTTP to HTTPS.
    #[serde(default, skip_serializing_if = "is_false")]
    pub https_redirect: bool,
    /// Mode; PASSTHROUGH when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    /// Server certificate file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_certificate: String,
    /// Private key file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    /// CA bundle for client certificates.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
    /// Certificate revocation list file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_crl: String,
    /// Secret holding the certificates, instead of files.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential_name: String,
    /// Accepted client identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Accepted client certificate SPKI hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    /// Accepted client certificate hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    /// Minimum TLS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocol>,
    /// Maximum TLS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocol>,
    /// Cipher suites.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

impl ServerTlsSettings {
    /// The mode in force: the one given, or PASSTHROUGH.
    pub fn effective_mode(&self) -> ServerTlsMode {
        self.mode.unwrap_or(ServerTlsMode::Passthrough)
    }
}
