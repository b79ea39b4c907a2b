//! mTLS for Dromon's control-plane gRPC ports, with certificates citadel issues.
//!
//! Every component proves who it is with a SPIFFE identity
//! (`spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, the only URI SAN
//! of its certificate). Certificates reach a component as a directory of three PEM
//! files, Istio's names, renewed in place by an agent: `cert-chain.pem`, `key.pem`
//! and `root-cert.pem` (one or more roots; several during a root rotation, all
//! trusted). Users of this crate: pilot's secure xDS port (15011), galley's mTLS
//! MCP port (9902), and citadel (its CA port, 8060, takes anonymous clients too).
//!
//! - [`TlsIdentity`]: chain, key and roots, checked to belong together;
//! - [`IdentitySource`]: where the current identity comes from —
//!   [`FileIdentity`] (a watched directory; a bad or half-written renewal keeps the
//!   last good identity) or [`SharedIdentity`] (set from code);
//! - server: [`MtlsAcceptor`] and [`incoming`] feed tonic's
//!   `serve_with_incoming_shutdown` with [`TlsConnection`]s whose [`PeerInfo`]
//!   (address, chain, SPIFFE identity) every request carries;
//! - client: [`channel`] dials `https://host:port` presenting the current identity
//!   and checks the server's SPIFFE ID ([`ServerIdentity`]), since mesh
//!   certificates name no DNS host.
//!
//! Configurations are rebuilt when the identity changes, so new connections use a
//! renewed certificate without a restart; established ones keep theirs.

pub mod cert;
pub mod client;
pub mod error;
pub mod identity;
pub mod material;
pub mod metrics;
pub mod peer;
pub mod server;
pub mod source;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;

pub use cert::{CertIdentityError, spiffe_id_of};
pub use client::{
    ClientCredentials, MtlsConnector, ServerIdentity, ServingTls, SpiffeServerVerifier, channel,
    channel_with, follower_channel,
};
pub use error::TlsError;
pub use identity::{IdentityPattern, SpiffeId, SpiffeIdError};
pub use material::{CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE, TlsIdentity};
pub use metrics::TlsMetrics;
pub use peer::{PeerInfo, peer_identity, peer_info, peer_info_from_extensions, remote_addr};
pub use server::{ClientAuth, HandshakeError, MtlsAcceptor, TlsConnection, incoming};
pub use source::{FileIdentity, IdentitySource, SharedIdentity};

#[cfg(test)]
mod tests;
