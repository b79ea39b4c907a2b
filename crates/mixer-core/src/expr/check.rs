//! The type checker: an [`Expr`] against a vocabulary's attribute types.

use super::{
    ast::{BinaryOp, Expr, ExprKind, Func},
    text,
};
use crate::value::{AttributeTypes, ValueType};

/// Why an expression does not type-check; each names the offending
/// sub-expression and its byte offset in the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The vocabulary has no such attribute.
    #[error("unknown attribute `{name}`")]
    UnknownAttribute {
        /// The attribute name.
        name: String,
        /// Byte offset.
        offset: usize,
    },
    /// An operand or argument of the wrong type.
    #[error("`{expr}` is {found}, {expected}")]
    WrongType {
        /// The sub-expression.
        expr: String,
        /// Byte offset.
        offset: usize,
        /// What was wanted (`expected BOOL`, ...).
        expected: String,
        /// What it is.
        found: ValueType,
    },
    /// The two sides of `==`, `!=`, `|` or the branches of `conditional` differ.
    #[error("`{expr}`: {lhs_type} and {rhs_type} do not match")]
    Mismatch {
        /// The sub-expression.
        expr: String,
        /// Byte offset.
        offset: usize,
        /// Type of the left side (first branch).
        lhs_type: ValueType,
        /// Type of the right side (second branch).
        rhs_type: ValueType,
    },
    /// A function called with the wrong number of arguments.
    #[error("`{expr}`: {func} takes {expected} argument(s), got {found}")]
    Arity {
        /// The sub-expression.
        expr: String,
        /// Byte offset.
        offset: usize,
        /// The function name.
        func: &'static str,
        /// How many it takes.
        expected: usize,
        /// How many it got.
        found: usize,
    },
    /// A literal argument a conversion function rejects (`ip("x")`).
    #[error("`{expr}`: {reason}")]
    InvalidLiteral {
        /// The sub-expression.
        expr: String,
        /// Byte offset.
        offset: usize,
        /// Why.
        reason: String,
    },
}

impl CheckError {
    /// Byte offset of the offending sub-expression.
    pub fn offset(&self) -> usize {
        match self {
            CheckError::UnknownAttribute { offset, .. }
            | CheckError::WrongType { offset, .. }
            | CheckError::Mismatch { offset, .. }
            | CheckError::Arity { offset, .. }
            | CheckError::InvalidLiteral { offset, .. } => *offset,
        }
    }
}

/// The type of `expr` under `types`, or the first error found.
pub fn check(expr: &Expr, types: &dyn AttributeTypes) -> Result<ValueType, CheckError> {
    Checker { types }.check(expr)
}

/// Checks a conversion function's literal argument.
type Validator = fn(&str) -> Result<(), String>;

struct Checker<'t> {
    types: &'t dyn AttributeTypes,
}

fn wrong(e: &Expr, expected: &str, found: ValueType) -> CheckError {
    CheckError::WrongType {
        expr: e.to_string(),
        offset: e.span.start,
        expected: expected.to_string(),
        found,
    }
}

/// A text literal written as a duration (`"10ms"`), which stands for a
/// DURATION beside one (`response.duration | "0ms"`).
pub(crate) fn duration_literal(e: &Expr) -> bool {
    matches!(&e.kind, ExprKind::Str(s) if text::parse_duration(s).is_some())
}

fn mismatch(e: &Expr, lhs_type: ValueType, rhs_type: ValueType) -> CheckError {
    CheckError::Mismatch {
        expr: e.to_string(),
        offset: e.span.start,
        lhs_type,
        rhs_type,
    }
}

impl Checker<'_> {
    fn check(&self, e: &Expr) -> Result<ValueType, CheckError> {
        match &e.kind {
            ExprKind::Attribute(name) => {
                self.types
                    .type_of(name)
                    .ok_or_else(|| CheckError::UnknownAttribute {
                        name: name.clone(),
                        offset: e.span.start,
                    })
            }
            ExprKind::Str(_) => Ok(ValueType::String),
            ExprKind::Int(_) => Ok(ValueType::Int64),
            ExprKind::Double(_) => Ok(ValueType::Double),
            ExprKind::Bool(_) => Ok(ValueType::Bool),
            ExprKind::Index { map, key } => {
                self.want(map, ValueType::StringMap)?;
                self.want(key, ValueType::String)?;
                Ok(ValueType::String)
            }
            ExprKind::Not(operand) => {
                self.want(operand, ValueType::Bool)?;
                Ok(ValueType::Bool)
            }
            ExprKind::Binary { op, lhs, rhs } => match op {
                BinaryOp::And | BinaryOp::Or => {
                    self.want(lhs, ValueType::Bool)?;
                    self.want(rhs, ValueType::Bool)?;
                    Ok(ValueType::Bool)
                }
                BinaryOp::Eq | BinaryOp::Ne => {
                    self.same(e, lhs, rhs)?;
                    Ok(ValueType::Bool)
                }
                BinaryOp::OrElse => self.same(e, lhs, rhs),
            },
            ExprKind::Call { func, args } => self.call(e, *func, args),
        }
    }

    fn want(&self, e: &Expr, t: ValueType) -> Result<(), CheckError> {
        let found = self.check(e)?;
        if found == t {
            Ok(())
        } else {
            Err(wrong(e, &format!("expected {t}"), found))
        }
    }

    fn want_text(&self, e: &Expr) -> Result<(), CheckError> {
        let found = self.check(e)?;
        if found.is_text() {
            Ok(())
        } else {
            Err(wrong(
                e,
                "expected text (STRING, EMAIL_ADDRESS, DNS_NAME, URI)",
                found,
            ))
        }
    }

    fn same(&self, whole: &Expr, lhs: &Expr, rhs: &Expr) -> Result<ValueType, CheckError> {
        let (l, r) = (self.check(lhs)?, self.check(rhs)?);
        if l == r || (l == ValueType::Duration && duration_literal(rhs)) {
            Ok(l)
        } else if r == ValueType::Duration && duration_literal(lhs) {
            Ok(r)
        } else {
            Err(mismatch(whole, l, r))
        }
    }

    fn call(&self, e: &Expr, func: Func, args: &[Expr]) -> Result<ValueType, CheckError> {
        let arity = match func {
            Func::Match | Func::StartsWith | Func::EndsWith => 2,
            Func::Conditional => 3,
            Func::Ip | Func::Timestamp | Func::Email | Func::DnsName | Func::Uri | Func::Size => 1,
        };
        if args.len() != arity {
            return Err(CheckError::Arity {
                expr: e.to_string(),
                offset: e.span.start,
                func: func.name(),
                expected: arity,
                found: args.len(),
            });
        }
        match (func, args) {
            (Func::Match | Func::StartsWith | Func::EndsWith, [s, p]) => {
                self.want_text(s)?;
                self.want_text(p)?;
                Ok(ValueType::Bool)
            }
            (Func::Conditional, [c, a, b]) => {
                self.want(c, ValueType::Bool)?;
                self.same(e, a, b)
            }
            (Func::Size, [a]) => match self.check(a)? {
                ValueType::StringMap | ValueType::Bytes => Ok(ValueType::Int64),
                t if t.is_text() => Ok(ValueType::Int64),
                t => Err(wrong(a, "expected text, STRING_MAP or BYTES", t)),
            },
            (_, [a]) => {
                self.want(a, ValueType::String)?;
                let (result, validate): (ValueType, Validator) = match func {
                    Func::Ip => (ValueType::IpAddress, |s| text::parse_ip(s).map(|_| ())),
                    Func::Timestamp => (ValueType::Timestamp, |s| {
                        text::parse_timestamp(s).map(|_| ())
                    }),
                    Func::Email => (ValueType::EmailAddress, text::check_email),
                    Func::DnsName => (ValueType::DnsName, text::check_dns_name),
                    _ => (ValueType::Uri, text::check_uri),
                };
                if let ExprKind::Str(s) = &a.kind {
                    validate(s).map_err(|reason| CheckError::InvalidLiteral {
                        expr: e.to_string(),
                        offset: e.span.start,
                        reason,
                    })?;
                }
                Ok(result)
            }
            _ => Err(CheckError::Arity {
                expr: e.to_string(),
                offset: e.span.start,
                func: func.name(),
                expected: arity,
                found: args.len(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::expr::parse;
    use std::collections::BTreeMap;

    fn vocab() -> BTreeMap<String, ValueType> {
        [
            ("a", ValueType::Bool),
            ("b", ValueType::Bool),
            ("s", ValueType::String),
            ("n", ValueType::Int64),
            ("d", ValueType::Double),
            ("m", ValueType::StringMap),
            ("ipa", ValueType::IpAddress),
            ("mail", ValueType::EmailAddress),
            ("t", ValueType::Timestamp),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn ty(text: &str) -> Result<ValueType, CheckError> {
        check(&parse(text).unwrap(), &vocab())
    }

    #[test]
    fn well_typed() {
        assert_eq!(ty("a && !b || s == \"x\"").unwrap(), ValueType::Bool);
        assert_eq!(ty("m[\"k\"] | s").unwrap(), ValueType::String);
        assert_eq!(ty("ipa == ip(\"10.0.0.1\")").unwrap(), ValueType::Bool);
        assert_eq!(ty("conditional(a, n, 3)").unwrap(), ValueType::Int64);
        assert_eq!(
            ty("match(s, \"x*\") && s.startsWith(\"a\")").unwrap(),
            ValueType::Bool
        );
        assert_eq!(ty("mail == email(\"a@b.c\")").unwrap(), ValueType::Bool);
        assert_eq!(
            ty("t != timestamp(\"2015-01-02T15:04:05Z\")").unwrap(),
            ValueType::Bool
        );
        assert_eq!(ty("size(m) == size(s)").unwrap(), ValueType::Bool);
        assert_eq!(ty("uri(s)").unwrap(), ValueType::Uri);
        assert_eq!(ty("dnsName(\"x.y\")").unwrap(), ValueType::DnsName);
    }

    #[test]
    fn each_error_kind() {
        let e = ty("a && nosuch.attr").unwrap_err();
        assert_eq!(
            e,
            CheckError::UnknownAttribute {
                name: "nosuch.attr".into(),
                offset: 5
            }
        );
        let e = ty("a && s").unwrap_err();
        assert!(
            matches!(&e, CheckError::WrongType { expr, offset: 5, found: ValueType::String, .. } if expr == "s"),
            "{e}"
        );
        assert!(e.to_string().contains("expected BOOL"), "{e}");
        let e = ty("n == \"1\"").unwrap_err();
        assert!(
            matches!(
                e,
                CheckError::Mismatch {
                    offset: 0,
                    lhs_type: ValueType::Int64,
                    rhs_type: ValueType::String,
                    ..
                }
            ),
            "{e}"
        );
        let e = ty("a | 1").unwrap_err();
        assert!(matches!(e, CheckError::Mismatch { .. }));
        let e = ty("s[\"k\"]").unwrap_err();
        assert!(e.to_string().contains("expected STRING_MAP"), "{e}");
        let e = ty("m[1]").unwrap_err();
        assert_eq!(e.offset(), 2);
        let e = ty("x == match(s)").unwrap_err();
        assert!(matches!(e, CheckError::UnknownAttribute { .. }));
        let e = ty("a == match(s)").unwrap_err();
        assert!(
            matches!(
                e,
                CheckError::Arity {
                    expected: 2,
                    found: 1,
                    offset: 5,
                    ..
                }
            ),
            "{e}"
        );
        let e = ty("conditional(s, 1, 2)").unwrap_err();
        assert!(matches!(e, CheckError::WrongType { .. }));
        let e = ty("conditional(a, 1, \"2\")").unwrap_err();
        assert!(matches!(e, CheckError::Mismatch { .. }));
        let e = ty("ip(\"10.0.0.300\")").unwrap_err();
        assert!(
            matches!(e, CheckError::InvalidLiteral { offset: 0, .. }),
            "{e}"
        );
        for bad in [
            "timestamp(\"yesterday\")",
            "email(\"x\")",
            "dnsName(\"a..b\")",
            "uri(\"nope\")",
        ] {
            assert!(
                matches!(ty(bad).unwrap_err(), CheckError::InvalidLiteral { .. }),
                "{bad}"
            );
        }
        assert!(matches!(
            ty("ip(n)").unwrap_err(),
            CheckError::WrongType { .. }
        ));
        assert!(matches!(
            ty("size(n)").unwrap_err(),
            CheckError::WrongType { .. }
        ));
        assert!(matches!(
            ty("n.startsWith(\"1\")").unwrap_err(),
            CheckError::WrongType { .. }
        ));
        assert!(matches!(
            ty("d == 1").unwrap_err(),
            CheckError::Mismatch { .. }
        ));
    }
}
