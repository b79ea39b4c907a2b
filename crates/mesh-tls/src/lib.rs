//! mTLS for Dromon's gRPC ports, with certificates citadel issues.
//!
//! SPIFFE identities (`spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`)
//! and, around rustls, what a component needs to serve and dial mTLS.

pub mod identity;

pub use identity::{SpiffeId, SpiffeIdError};
