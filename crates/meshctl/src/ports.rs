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
