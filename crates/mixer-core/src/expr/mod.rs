//! Mixer's expression language: attribute conditions and values such as
//! `destination.service.host == "reviews.default.svc.cluster.local" &&
//! request.headers["x-user"] | "" == "jason"`.
//!
//! - [`parse`]: text to an [`Expr`] (a Go-expression subset: `||`, `&&`,
//!   `==`, `!=`, the default operator `|`, `!`, map index `m["k"]`, string,
//!   integer, float and boolean literals, and the functions of [`Func`]);
//! - [`check`]: the type of an [`Expr`] under a vocabulary, or a [`CheckError`]
//!   naming the sub-expression and its position;
//! - [`compile`]: both, then lowering to a [`Compiled`] evaluator, once per
//!   config version; [`Compiled::evaluate`] and [`Compiled::evaluate_bool`]
//!   read a [`Bag`](crate::Bag) per request.
//!
//! An attribute missing from the bag, or a key missing from a map, fails the
//! evaluation ([`EvalError::AttributeNotFound`], [`EvalError::KeyNotFound`])
//! unless it sits on the left of `|`, which then yields its right side.

mod ast;
mod check;
mod eval;
mod parse;
mod text;

#[cfg(test)]
mod tests;

pub use ast::{BinaryOp, Expr, ExprKind, Func, Span};
pub use check::{CheckError, check};
pub use eval::{AttributeRef, Compiled, EvalError};
pub use parse::{MAX_DEPTH, MAX_LEN, MAX_NESTING, ParseError, parse};

/// A duration as the expression language writes them (`10ms`, `1.5s`, `2h45m`).
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    text::parse_duration(text)
}

use crate::value::{AttributeTypes, ValueType};

/// Why an expression does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// The text is not an expression.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The expression does not type-check against the vocabulary.
    #[error("column {column}: {error}")]
    Check {
        /// 1-based column (in characters) of the offending sub-expression.
        column: usize,
        /// What is wrong.
        #[source]
        error: CheckError,
    },
}

impl ExprError {
    /// Byte offset of the problem in the text.
    pub fn offset(&self) -> usize {
        match self {
            ExprError::Parse(e) => e.offset,
            ExprError::Check { error, .. } => error.offset(),
        }
    }
}

/// Parses `text`, type-checks it against `types` and lowers it to an evaluator.
/// A rule's `match`: none when blank, else an expression that must be BOOL. The
/// error says which, for the rule's issue.
pub fn compile_match(text: &str, types: &dyn AttributeTypes) -> Result<Option<Compiled>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    match compile(text, types) {
        Ok(c) if c.result_type() == ValueType::Bool => Ok(Some(c)),
        Ok(c) => Err(format!(
            "match must be a BOOL expression, not {}",
            c.result_type()
        )),
        Err(e) => Err(format!("match: {e}")),
    }
}

pub fn compile(text: &str, types: &dyn AttributeTypes) -> Result<Compiled, ExprError> {
    let expr = parse(text)?;
    let result_type = check(&expr, types).map_err(|error| ExprError::Check {
        column: parse::column_of(text, error.offset()),
        error,
    })?;
    Ok(Compiled::lower(&expr, result_type, types, text))
}
