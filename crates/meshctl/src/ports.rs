//! The local port plan of `meshctl up`: every component on one host, distinct ports.

/// galley MCP (xDS gRPC).
pub const GALLEY_MCP: u16 = 9901;
/// galley monitoring.
pub const GALLEY_MONITORING: u16 = 15014;
/// pilot xDS (plaintext ADS).
pub const PILOT_XDS: u16 = 15010;
/// pilot monitoring.
pub const PILOT_MONITORING: u16 = 15015;
/// galley MCP with mutual TLS.
pub const GALLEY_MCP_MTLS: u16 = 9902;
/// pilot xDS with mutual TLS.
pub const PILOT_XDS_MTLS: u16 = 15011;
/// citadel CA gRPC (TLS).
pub const CITADEL_GRPC: u16 = 8060;
/// citadel monitoring.
pub const CITADEL_MONITORING: u16 = 15016;
/// mixer-policy Check API (Mixer Check and Envoy ext_authz).
pub const MIXER_POLICY_GRPC: u16 = 9091;
/// mixer-policy monitoring.
pub const MIXER_POLICY_MONITORING: u16 = 15017;
/// mixer-policy Check API with mutual TLS.
pub const MIXER_POLICY_MTLS: u16 = 15004;
/// mixer-telemetry Report API (Mixer Report and Envoy's access log service).
pub const MIXER_TELEMETRY_GRPC: u16 = 9092;
/// mixer-telemetry's prometheus handler metrics.
pub const MIXER_TELEMETRY_PROMETHEUS: u16 = 42422;
/// mixer-telemetry monitoring.
pub const MIXER_TELEMETRY_MONITORING: u16 = 15018;
/// mixer-telemetry Report API with mutual TLS (15004 in a container; mixer-policy
/// holds 15004 on one host).
pub const MIXER_TELEMETRY_MTLS: u16 = 15005;
/// sidecar-injector's HTTPS webhook (9443 off-cluster; 443 behind a Service).
pub const SIDECAR_INJECTOR_WEBHOOK: u16 = 9443;
/// sidecar-injector monitoring.
pub const SIDECAR_INJECTOR_MONITORING: u16 = 15019;
/// galley's validating webhook (HTTPS; 9443 in its container).
pub const GALLEY_WEBHOOK: u16 = 9444;

/// Every port of the plan, with what listens on it.
pub const ALL: [(u16, &str); 18] = [
    (CITADEL_GRPC, "citadel CA"),
    (CITADEL_MONITORING, "citadel monitoring"),
    (GALLEY_MCP, "galley MCP"),
    (GALLEY_MCP_MTLS, "galley MCP (mTLS)"),
    (GALLEY_MONITORING, "galley monitoring"),
    (GALLEY_WEBHOOK, "galley validating webhook"),
    (PILOT_XDS, "pilot xDS"),
    (PILOT_XDS_MTLS, "pilot xDS (mTLS)"),
    (PILOT_MONITORING, "pilot monitoring"),
    (MIXER_POLICY_GRPC, "mixer-policy Check API"),
    (MIXER_POLICY_MTLS, "mixer-policy Check API (mTLS)"),
    (MIXER_POLICY_MONITORING, "mixer-policy monitoring"),
    (MIXER_TELEMETRY_GRPC, "mixer-telemetry Report API"),
    (MIXER_TELEMETRY_MTLS, "mixer-telemetry Report API (mTLS)"),
    (MIXER_TELEMETRY_PROMETHEUS, "mixer-telemetry prometheus"),
    (MIXER_TELEMETRY_MONITORING, "mixer-telemetry monitoring"),
    (SIDECAR_INJECTOR_WEBHOOK, "sidecar-injector webhook"),
    (SIDECAR_INJECTOR_MONITORING, "sidecar-injector monitoring"),
];

/// The ports of the plan that cannot be bound on `ip` now, with what would listen
/// on them. Checked before anything starts, so that `meshctl up` names every
/// conflict at once instead of stopping halfway at the first.
pub fn taken(ip: std::net::IpAddr) -> Vec<(u16, &'static str)> {
    ALL.iter()
        .filter(|(port, _)| std::net::TcpListener::bind((ip, *port)).is_err())
        .copied()
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_has_distinct_ports() {
        let mut ports: Vec<u16> = ALL.iter().map(|(p, _)| *p).collect();
        let n = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), n);
    }

    #[test]
    fn a_port_held_by_another_listener_is_named() {
        // An address of its own on loopback, so that nothing else holds these ports.
        let ip = std::net::IpAddr::from([127, 0, 0, 2 + (std::process::id() % 250) as u8]);
        let held = std::net::TcpListener::bind((ip, MIXER_TELEMETRY_PROMETHEUS)).unwrap();
        assert_eq!(
            taken(ip),
            [(MIXER_TELEMETRY_PROMETHEUS, "mixer-telemetry prometheus")]
        );
        drop(held);
        assert_eq!(taken(ip), []);
    }
}
