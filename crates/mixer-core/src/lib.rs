//! mixer-core: what mixer-policy and mixer-telemetry share.
//!
//! - [`ValueType`] and [`Value`]: the typed values attributes carry (Istio's
//!   attribute value types: string, int64, double, bool, timestamp, duration,
//!   bytes, IP address, email address, DNS name, URI, string map);
//! - [`AttributeTypes`]: what the type checker needs to know of a vocabulary
//!   (the attribute manifest): the type of each attribute name;
//! - [`Bag`]: a set of attributes one request carries, read by name;
//! - [`expr`]: the expression language, type-checked against a vocabulary
//!   and compiled once to an evaluator over bags.

pub mod expr;
pub mod value;

pub use value::{AttributeTypes, Bag, Value, ValueType};
