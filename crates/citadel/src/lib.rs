//! citadel: the mesh's certificate authority.
//!
//! Issues X.509 certificates naming SPIFFE workload identities over gRPC
//! (`istio.v1.auth.IstioCertificateService` on 8060), records every issued
//! certificate in a ledger (SQLite or PostgreSQL), and delivers certificates to
//! workloads over SDS or as files. On Kubernetes, its controllers (one replica at a
//! time) keep `istio.<sa>` Secrets and webhook configurations' caBundle current.

pub mod agent;
pub mod args;
pub mod authn;
pub mod ca;
pub mod controllers;
pub mod crl;
pub mod ledger;
pub mod metrics;
pub mod server;
pub mod service;
