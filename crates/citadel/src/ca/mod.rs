//! The certificate authority: CSR checks, the signing material, and issuing.
//!
//! No transport here: the gRPC service, the ledger and the authenticators sit on
//! top of [`Authority::issue`].

pub mod authority;
pub mod csr;
pub mod material;

pub use authority::{Authority, CaPolicy, CaSource, IssueError, IssuedCert};
pub use csr::{CsrError, CsrValidator, ValidCsr};
pub use material::{CaMaterial, CertInfo, MaterialError};
