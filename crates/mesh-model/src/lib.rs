//! Dromon's configuration model.
//!
//! Typed Istio resources (networking, security and the mixers' `config.istio.io`
//! kinds), the parser that turns multi-document YAML or JSON into them, per-kind
//! validation with Istio's rules, and cross-resource analysis. This crate performs
//! no I/O and depends on no transport: galley, pilot, the mixers and `meshctl` all
//! build on it.
//!
//! - [`networking`], [`security`], [`policy`], [`selector`]: the typed specs, field
//!   for field as Istio's YAML writes them.
//! - [`parse`]: multi-document YAML to accepted and rejected resources.
//! - [`validation`]: Istio's per-kind rules, each error with its field path.
//! - [`analysis`]: findings across resources, with stable `GAL01xx` codes.
//! - [`host`], [`duration`], [`protocol`]: host names, durations and port protocols as
//!   Istio reads them, shared with pilot.

#![warn(missing_docs)]

pub mod analysis;
pub mod duration;
pub mod error;
pub mod hash;
pub mod host;
pub mod kind;
pub mod meta;
pub mod networking;
pub mod parse;
pub mod policy;
pub mod protocol;
pub mod resource;
pub mod security;
pub mod selector;
pub mod validation;

pub use analysis::{AnalysisMessage, Level, analyze};
pub use duration::parse_duration;
pub use error::{ConfigError, FieldError};
pub use kind::Kind;
pub use meta::{ObjectMeta, SourceLocation};
pub use parse::{ParseOptions, parse_document_set};
pub use resource::{Resource, ResourceKey, Spec};
