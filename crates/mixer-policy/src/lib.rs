//! mixer-policy: attribute-based policy checks and quotas.
//!
//! Rules from galley (`config.istio.io/v1alpha2` handler, instance and rule)
//! send template instances built from a request's attributes to adapters, whose
//! answers decide a Check. This crate holds the adapters ([`adapter`]): denier,
//! listchecker and memquota.

pub mod adapter;
pub mod args;
pub mod envoy;
pub mod policy;
pub mod server;
