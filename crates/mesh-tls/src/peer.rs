//! Who is on the other end of a connection: what a gRPC handler reads from a
//! request's extensions.

use std::{net::SocketAddr, sync::Arc};

use rustls_pki_types::CertificateDer;
use tonic::{codegen::http, transport::server::TcpConnectInfo};

use crate::SpiffeId;

/// What an mTLS connection tells about its peer; tonic puts it in the extensions
/// of every request received on a [`crate::TlsConnection`].
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// The verified chain the client presented, leaf first (`None`: anonymous).
    pub certificates: Option<Arc<[CertificateDer<'static>]>>,
    /// The SPIFFE identity of the leaf (`None`: anonymous, or a certificate that
    /// does not name exactly one valid SPIFFE ID).
    pub identity: Option<SpiffeId>,
}

/// The peer of a request served on an mTLS port.
pub fn peer_info<T>(req: &tonic::Request<T>) -> Option<&PeerInfo> {
    req.extensions().get::<PeerInfo>()
}

/// The authenticated SPIFFE identity of a request's peer.
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Option<&SpiffeId> {
    peer_info(req).and_then(|p| p.identity.as_ref())
}

/// The peer recorded in an `http::Request`'s extensions (for services written at
/// the HTTP level).
pub fn peer_info_from_extensions(extensions: &http::Extensions) -> Option<&PeerInfo> {
    extensions.get::<PeerInfo>()
}

/// The remote address recorded in an `http::Request`'s extensions, on a
/// plaintext port (`TcpConnectInfo`) or an mTLS one ([`PeerInfo`]).
pub fn remote_addr(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
        .or_else(|| peer_info_from_extensions(extensions).and_then(|p| p.remote_addr))
}
