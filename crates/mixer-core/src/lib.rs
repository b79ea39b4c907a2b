//! mixer-core: what mixer-policy and mixer-telemetry share.
//!
//! - [`ValueType`] and [`Value`]: the typed values attributes carry (Istio's
//!   attribute value types: string, int64, double, bool, timestamp, duration,
//!   bytes, IP address, email address, DNS name, URI, string map);
//! - [`manifest::Manifest`]: the attribute vocabulary (the standard one, extended
//!   by `attributemanifest` resources), which the type checker reads through
//!   [`AttributeTypes`];
//! - [`Bag`]: the attributes one request carries, read by name;
//!   [`wire`] decodes and encodes them in the Mixer API's compressed form, with the
//!   shared [`dictionary::GLOBAL_WORDS`];
//! - [`expr`]: the expression language, type-checked against a vocabulary and
//!   compiled once to an evaluator over bags;
//! - [`analysis`]: the mixer resources' expressions type-checked as config loads
//!   (analysis message `GAL0111`, reported by galley and `meshctl analyze`);
//! - [`envoy`]: readings of Envoy's addresses and cluster names for the mixers'
//!   Envoy APIs.

pub mod analysis;
pub mod dictionary;
pub mod envoy;
pub mod expr;
pub mod manifest;
pub mod value;
pub mod wire;

pub use value::{AttrName, AttributeTypes, Bag, Value, ValueType};
