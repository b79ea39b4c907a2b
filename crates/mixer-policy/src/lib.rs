//! mixer-policy: attribute-based policy checks and quotas.
//!
//! Rules from galley (`config.istio.io/v1alpha2` handler, instance and rule)
//! send template instances built from a request's attributes to adapters, whose
//! answers decide a Check. This crate holds the adapters ([`adapter`]: denier,
//! listchecker, memquota, sqlquota, rbac), the compiled policy ([`policy`]) with
//! its check cache, and the server.

pub mod adapter;
pub mod args;
mod cache;
pub mod envoy;
pub mod policy;
pub mod server;
