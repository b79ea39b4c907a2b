//! The local port plan of `meshctl up`: every component on one host, distinct ports.

/// galley MCP (xDS gRPC).
pub const GALLEY_MCP: u16 = 9901;
/// galley monitoring.
pub const GALLEY_MONITORING: u16 = 15014;
