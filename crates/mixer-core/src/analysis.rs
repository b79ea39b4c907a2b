//! Mixer configuration checked as it loads: every expression of the mixer
//! resources is parsed and type-checked against the attribute vocabulary (the
//! standard one extended by every `attributemanifest`), and each one that does
//! not compile is a `GAL0111` (MixerExpressionInvalid) analysis message naming
//! the field and the column.
//!
//! galley runs [`analyze`] beside `mesh_model::analyze`, so these messages reach
//! its `/debug/analyze` endpoint, its `analysis_messages` gauge and
//! `meshctl analyze`.
//!
//! What is checked (an instance's template is its `compiledTemplate`, or its
//! `template` when that is empty, as mixer-policy reads it):
//!
//! | resource | field | rule |
//! | --- | --- | --- |
//! | attributemanifest | `spec.attributes.<name>` | extends the vocabulary (no type change, a type, a valid name) |
//! | rule | `spec.match` | when not blank, a BOOL expression |
//! | listentry instance | `spec.params.value` | required, an expression |
//! | quota instance | `spec.params.dimensions.<k>` | each an expression |
//! | metric instance | `spec.params.value`, `spec.params.dimensions.<k>` | expressions |
//! | logentry instance | `spec.params.variables.<k>`, `spec.params.timestamp`, `spec.params.severity` | expressions; `timestamp` a TIMESTAMP, `severity` a STRING |
//! | tracespan instance | the template's fields ([`TRACESPAN_FIELDS`]) and `spec.params.spanTags.<k>` | expressions, when written as strings |
//!
//! A field written as something other than a string (a number, a mapping) is
//! reported too, except for tracespan, whose boolean fields are often written as
//! YAML booleans. Templates without expressions (`checknothing`,
//! `authorization`) and templates this mixer does not know are passed over.

use mesh_model::{
    Resource, Spec,
    analysis::{AnalysisMessage, MIXER_EXPRESSION_INVALID, sort_messages},
    policy::{Instance, Rule},
};
use serde_json::Value as Json;

use crate::{
    ValueType,
    expr::compile,
    manifest::{Manifest, ManifestError},
};

/// The tracespan template's single-expression fields, as written in `params`.
pub const TRACESPAN_FIELDS: &[&str] = &[
    "traceId",
    "spanId",
    "parentSpanId",
    "spanName",
    "startTime",
    "endTime",
    "httpStatusCode",
    "clientSpan",
    "rewriteClientSpanId",
    "sourceIp",
    "destinationIp",
    "sourceName",
    "destinationName",
    "requestSize",
    "requestTotalSize",
    "responseSize",
    "responseTotalSize",
    "apiProtocol",
];

/// Type-checks the mixer expressions among `resources` (other kinds are passed
/// over); messages come out sorted as `mesh_model::analyze` sorts them.
pub fn analyze(resources: &[&Resource]) -> Vec<AnalysisMessage> {
    let mut out = Vec::new();
    let mut manifest = Manifest::standard();
    for r in resources {
        if let Spec::AttributeManifest(m) = &r.spec
            && let Err(e) = manifest.extend(m)
        {
            out.push(AnalysisMessage::for_resource(
                MIXER_EXPRESSION_INVALID,
                r,
                Some(format!("spec.attributes.{}", attribute_of(&e))),
                e.to_string(),
            ));
        }
    }
    for r in resources {
        let mut check = Checker {
            manifest: &manifest,
            resource: r,
            out: &mut out,
        };
        match &r.spec {
            Spec::Rule(rule) => check.rule(rule),
            Spec::Instance(instance) => check.instance(instance),
            _ => {}
        }
    }
    sort_messages(&mut out);
    out
}

fn attribute_of(e: &ManifestError) -> &str {
    match e {
        ManifestError::Conflict { name, .. }
        | ManifestError::Untyped { name }
        | ManifestError::InvalidName { name } => name,
    }
}

/// Whether a field must be present.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Presence {
    Required,
    Optional,
}

/// How a field not written as a string is treated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NonString {
    Report,
    Skip,
}

/// Checks the expressions of one resource, pushing a message per problem.
struct Checker<'a> {
    manifest: &'a Manifest,
    resource: &'a Resource,
    out: &'a mut Vec<AnalysisMessage>,
}

impl Checker<'_> {
    fn report(&mut self, field: String, message: String) {
        self.out.push(AnalysisMessage::for_resource(
            MIXER_EXPRESSION_INVALID,
            self.resource,
            Some(field),
            message,
        ));
    }

    /// Compiles `text`; with `want`, its type must be that one.
    fn expression(&mut self, field: String, text: &str, want: Option<ValueType>) {
        match compile(text, self.manifest) {
            Ok(c) => {
                if let Some(want) = want
                    && c.result_type() != want
                {
                    self.report(
                        field,
                        format!("`{text}` is {}, not a {want} expression", c.result_type()),
                    );
                }
            }
            Err(e) => self.report(field, format!("invalid expression: {e}")),
        }
    }

    fn rule(&mut self, rule: &Rule) {
        if !rule.match_expr.trim().is_empty() {
            self.expression(
                "spec.match".to_string(),
                &rule.match_expr,
                Some(ValueType::Bool),
            );
        }
    }

    fn instance(&mut self, instance: &Instance) {
        let template = instance.template_name();
        let params = &instance.params;
        match template {
            "listentry" => {
                self.field(params, "value", None, Presence::Required, NonString::Report);
            }
            "quota" => self.map(params, "dimensions", NonString::Report),
            "metric" => {
                self.field(params, "value", None, Presence::Optional, NonString::Report);
                self.map(params, "dimensions", NonString::Report);
            }
            "logentry" => {
                self.map(params, "variables", NonString::Report);
                self.field(
                    params,
                    "timestamp",
                    Some(ValueType::Timestamp),
                    Presence::Optional,
                    NonString::Report,
                );
                self.field(
                    params,
                    "severity",
                    Some(ValueType::String),
                    Presence::Optional,
                    NonString::Report,
                );
            }
            "tracespan" => {
                for name in TRACESPAN_FIELDS {
                    self.field(params, name, None, Presence::Optional, NonString::Skip);
                }
                self.map(params, "spanTags", NonString::Skip);
            }
            _ => {}
        }
    }

    /// `params.<name>`: one expression.
    fn field(
        &mut self,
        params: &Json,
        name: &str,
        want: Option<ValueType>,
        presence: Presence,
        non_string: NonString,
    ) {
        let field = format!("spec.params.{name}");
        match params.get(name) {
            None | Some(Json::Null) => {
                if presence == Presence::Required {
                    self.report(field, "required: an expression".to_string());
                }
            }
            Some(value) => self.value(field, value, want, non_string),
        }
    }

    /// `params.<name>.<key>`: a mapping of expressions.
    fn map(&mut self, params: &Json, name: &str, non_string: NonString) {
        match params.get(name) {
            None | Some(Json::Null) => {}
            Some(Json::Object(entries)) => {
                for (key, value) in entries {
                    self.value(format!("spec.params.{name}.{key}"), value, None, non_string);
                }
            }
            Some(other) => {
                if non_string == NonString::Report {
                    self.report(
                        format!("spec.params.{name}"),
                        format!("must be a mapping of expressions, not {}", json_kind(other)),
                    );
                }
            }
        }
    }

    fn value(&mut self, field: String, value: &Json, want: Option<ValueType>, non: NonString) {
        match value {
            Json::String(text) => self.expression(field, text, want),
            other => {
                if non == NonString::Report {
                    self.report(
                        field,
                        format!("must be an expression (a string), not {}", json_kind(other)),
                    );
                }
            }
        }
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

#[cfg(test)]
#[path = "analysis_tests.rs"]
mod tests;
