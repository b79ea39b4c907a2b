//! Port protocols as Istio names them (`HTTP`, `GRPC-WEB`, `TLS`, ...).

use std::fmt;

/// A port protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1.
    Http,
    /// HTTP/2.
    Http2,
    /// HTTPS (TLS carrying HTTP).
    Https,
    /// gRPC.
    Grpc,
    /// gRPC-Web.
    GrpcWeb,
    /// A generic outbound HTTP proxy port (sidecar egress only).
    HttpProxy,
    /// Opaque TCP.
    Tcp,
    /// TLS with SNI.
    Tls,
    /// UDP (not proxied).
    Udp,
    /// MongoDB.
    Mongo,
    /// Redis.
    Redis,
    /// MySQL.
    Mysql,
}

/// The protocol names accepted, for error messages.
pub const PROTOCOL_NAMES: &str =
    "HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, HTTP_PROXY, MONGO, REDIS, MYSQL, TCP, TLS, UDP";

impl Protocol {
    /// Parses a protocol name, ignoring case as Istio does.
    pub fn parse(name: &str) -> Option<Protocol> {
        const TABLE: [(&str, Protocol); 12] = [
            ("HTTP", Protocol::Http),
            ("HTTP2", Protocol::Http2),
            ("HTTPS", Protocol::Https),
            ("GRPC", Protocol::Grpc),
            ("GRPC-WEB", Protocol::GrpcWeb),
            ("HTTP_PROXY", Protocol::HttpProxy),
            ("TCP", Protocol::Tcp),
            ("TLS", Protocol::Tls),
            ("UDP", Protocol::Udp),
            ("MONGO", Protocol::Mongo),
            ("REDIS", Protocol::Redis),
            ("MYSQL", Protocol::Mysql),
        ];
        TABLE
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, p)| *p)
    }

    /// Whether the protocol is HTTP-based (routed by HTTP routes).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::Grpc
                | Protocol::GrpcWeb
                | Protocol::HttpProxy
        )
    }

    /// Whether the protocol runs over TLS (HTTPS, TLS).
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Https => "HTTPS",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-WEB",
            Protocol::HttpProxy => "HTTP_PROXY",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Udp => "UDP",
            Protocol::Mongo => "MONGO",
            Protocol::Redis => "REDIS",
            Protocol::Mysql => "MYSQL",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// gRPC status code names, indexed by code (`OK` is 0, `UNAUTHENTICATED` 16).
pub const GRPC_STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_insensitively() {
        assert_eq!(Protocol::parse("grpc-web"), Some(Protocol::GrpcWeb));
        assert_eq!(Protocol::parse("Mongo"), Some(Protocol::Mongo));
        assert_eq!(Protocol::parse("HTTP3"), None);
        assert!(Protocol::Grpc.is_http());
        assert!(Protocol::Https.is_tls());
        assert!(!Protocol::Tcp.is_http());
    }
}
