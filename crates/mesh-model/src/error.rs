//! Errors that name what is wrong with configuration and where.

use std::fmt;

use serde::Serialize;

use crate::meta::SourceLocation;

/// One problem with one field of a resource's spec, found by validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Field path, e.g. `spec.http[0].route[1].weight`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// Builds a field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A refused document or resource: where it is, which resource, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// Where the document is.
    pub source: SourceLocation,
    /// The kind as written, when it could be read.
    pub kind: Option<String>,
    /// The namespace, when it could be read.
    pub namespace: Option<String>,
    /// The name, when it could be read.
    pub name: Option<String>,
    /// The field path, when the problem is in one field.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.without_source())
    }
}

impl ConfigError {
    /// The message without its file and line: `Kind ns/name: field: message`,
    /// for errors about a resource that came from no file (an admission review).
    pub fn without_source(&self) -> String {
        let mut out = String::new();
        match (&self.kind, &self.name) {
            (Some(kind), Some(name)) => {
                let ns = self.namespace.as_deref().unwrap_or("");
                if ns.is_empty() {
                    out.push_str(&format!("{kind} {name}: "));
                } else {
                    out.push_str(&format!("{kind} {ns}/{name}: "));
                }
            }
            (Some(kind), None) => out.push_str(&format!("{kind}: ")),
            _ => {}
        }
        if let Some(field) = &self.field {
            out.push_str(&format!("{field}: "));
        }
        out.push_str(&self.message);
        out
    }
}

impl std::error::Error for ConfigError {}
