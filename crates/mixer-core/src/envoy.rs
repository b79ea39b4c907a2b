//! Small readings of Envoy's messages shared by the mixers' Envoy APIs.

use std::net::IpAddr;

use mesh_api::envoy::envoy::config::core::v3::{Address, address, socket_address::PortSpecifier};

/// The IP and port of a socket address (none for pipes and names).
pub fn socket_address(a: &Address) -> Option<(IpAddr, Option<u32>)> {
    let Some(address::Address::SocketAddress(s)) = &a.address else {
        return None;
    };
    let ip = s.address.parse().ok()?;
    let port = match s.port_specifier {
        Some(PortSpecifier::PortValue(p)) => Some(p),
        _ => None,
    };
    Some((ip, port))
}

/// The service host of an Istio-style cluster name (`outbound|80||host`,
/// `inbound|80||host`), or the name itself.
pub fn cluster_host(cluster: &str) -> &str {
    let mut parts = cluster.split('|');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("outbound" | "inbound"), Some(_), Some(_), Some(host)) if !host.is_empty() => host,
        _ => cluster,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_give_their_host() {
        assert_eq!(
            cluster_host("outbound|9080|v1|reviews.bookinfo.svc"),
            "reviews.bookinfo.svc"
        );
        assert_eq!(cluster_host("inbound|80||"), "inbound|80||");
        assert_eq!(cluster_host("ratings"), "ratings");
    }
}
