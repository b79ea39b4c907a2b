//! The evaluator: a checked [`Expr`] lowered once to a tree of nodes with
//! literals resolved (IP addresses and times parsed, glob patterns split),
//! text compared in place without copying it out of the bag.

use std::{borrow::Cow, collections::BTreeMap, net::IpAddr, sync::Arc};

use super::{
    ast::{BinaryOp, Expr, ExprKind, Func},
    text::{self, Glob},
};
use crate::value::{AttrName, AttributeTypes, Bag, Value, ValueType};

/// Why an evaluation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// An attribute the expression reads is not in the bag (and no `|` gave a default).
    #[error("attribute `{name}` not found")]
    AttributeNotFound {
        /// The attribute name.
        name: String,
    },
    /// A map has no entry for the key (and no `|` gave a default).
    #[error("key `{key}` not found{}", map.as_ref().map(|m| format!(" in `{m}`")).unwrap_or_default())]
    KeyNotFound {
        /// The map attribute, when the map is one.
        map: Option<String>,
        /// The key.
        key: String,
    },
    /// The bag holds a value of another type than the vocabulary declared.
    #[error("expected a {expected} value, found {found}")]
    WrongType {
        /// The type wanted.
        expected: ValueType,
        /// The type found.
        found: ValueType,
    },
    /// A conversion function got text it cannot convert.
    #[error("{func}(): {reason}")]
    Conversion {
        /// The function.
        func: &'static str,
        /// Why.
        reason: String,
    },
}

impl EvalError {
    /// Whether the failure is a missing attribute or map key.
    pub fn is_absence(&self) -> bool {
        matches!(
            self,
            EvalError::AttributeNotFound { .. } | EvalError::KeyNotFound { .. }
        )
    }
}

/// An attribute an expression reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttributeRef {
    /// The attribute name.
    pub name: String,
    /// For `map["key"]` with a literal key: the key (only that entry is read).
    pub key: Option<String>,
    /// Every read sits on the left of `|`: its absence selects the default
    /// rather than failing the evaluation.
    pub rescued: bool,
}

/// An expression compiled against a vocabulary, ready to evaluate many times.
#[derive(Debug, Clone)]
pub struct Compiled {
    root: Node,
    result_type: ValueType,
    references: Vec<AttributeRef>,
    source: Box<str>,
}

impl Compiled {
    pub(crate) fn lower(
        expr: &Expr,
        result_type: ValueType,
        types: &dyn AttributeTypes,
        source: &str,
    ) -> Compiled {
        let mut lowering = Lowering {
            types,
            refs: BTreeMap::new(),
            rescued_depth: 0,
        };
        let (root, _) = lowering.lower(expr);
        let references = lowering
            .refs
            .into_iter()
            .map(|((name, key), rescued)| AttributeRef { name, key, rescued })
            .collect();
        Compiled {
            root,
            result_type,
            references,
            source: source.into(),
        }
    }

    /// The type of the expression's value.
    pub fn result_type(&self) -> ValueType {
        self.result_type
    }

    /// The text it was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The attributes (and map keys) the expression may read, sorted, each once.
    pub fn referenced_attributes(&self) -> &[AttributeRef] {
        &self.references
    }

    /// Each referenced attribute (or map entry) with whether `bag` holds it:
    /// the key a result cache needs for this bag.
    pub fn probe_references<'s>(&'s self, bag: &dyn Bag) -> Vec<(&'s AttributeRef, bool)> {
        self.references
            .iter()
            .map(|r| {
                let present = match (bag.get(&r.name), &r.key) {
                    (None, _) => false,
                    (Some(Value::StringMap(m)), Some(k)) => m.contains_key(k.as_str()),
                    (Some(_), _) => true,
                };
                (r, present)
            })
            .collect()
    }

    /// The value of the expression for `bag`.
    pub fn evaluate(&self, bag: &dyn Bag) -> Result<Value, EvalError> {
        eval(&self.root, bag).map_err(Fail::into_error)
    }

    /// The value of a BOOL expression (a condition) for `bag`, without
    /// building a [`Value`].
    pub fn evaluate_bool(&self, bag: &dyn Bag) -> Result<bool, EvalError> {
        if self.result_type != ValueType::Bool {
            return Err(EvalError::WrongType {
                expected: ValueType::Bool,
                found: self.result_type,
            });
        }
        eval_bool(&self.root, bag).map_err(Fail::into_error)
    }
}

/// A lowered expression.
#[derive(Debug, Clone)]
enum Node {
    Const(Value),
    Attr(AttrName),
    /// `attr["key"]`, both known when compiling.
    AttrEntry {
        attr: AttrName,
        key: Arc<str>,
    },
    Index {
        map: Box<Node>,
        map_name: Option<Arc<str>>,
        key: Box<Node>,
    },
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    /// `==` (or `!=` when `negate`) of text, compared in place.
    TextEq {
        lhs: Box<Node>,
        rhs: Box<Node>,
        negate: bool,
    },
    /// `==` (or `!=` when `negate`) of other types.
    ValueEq {
        lhs: Box<Node>,
        rhs: Box<Node>,
        negate: bool,
    },
    OrElse(Box<Node>, Box<Node>),
    /// `match`, `startsWith` or `endsWith` with a literal pattern.
    Glob(Box<Node>, Glob),
    /// `match`, `startsWith` or `endsWith` with a computed pattern.
    TextTest(Func, Box<Node>, Box<Node>),
    Conditional(Box<Node>, Box<Node>, Box<Node>),
    /// `ip()`, `timestamp()`, `email()`, `dnsName()` or `uri()` of computed text.
    Convert(Func, Box<Node>),
    Size {
        arg: Box<Node>,
        text: bool,
    },
}

/// An evaluation failure, cheap to make and drop when a `|` rescues it.
enum Fail<'a> {
    AbsentAttr(&'a str),
    AbsentKey(Option<&'a str>, Cow<'a, str>),
    Error(EvalError),
}

impl Fail<'_> {
    fn is_absence(&self) -> bool {
        !matches!(self, Fail::Error(_))
    }

    fn into_error(self) -> EvalError {
        match self {
            Fail::AbsentAttr(name) => EvalError::AttributeNotFound {
                name: name.to_string(),
            },
            Fail::AbsentKey(map, key) => EvalError::KeyNotFound {
                map: map.map(|m| m.to_string()),
                key: key.into_owned(),
            },
            Fail::Error(e) => e,
        }
    }
}

fn wrong_type<'a>(expected: ValueType, found: &Value) -> Fail<'a> {
    Fail::Error(EvalError::WrongType {
        expected,
        found: found.value_type(),
    })
}

fn eval<'a>(node: &'a Node, bag: &dyn Bag) -> Result<Value, Fail<'a>> {
    match node {
        Node::Const(v) => Ok(v.clone()),
        Node::Attr(name) => bag
            .get_attr(name)
            .ok_or_else(|| Fail::AbsentAttr(name.as_str())),
        Node::AttrEntry { .. } | Node::Index { .. } => {
            with_text(node, bag, |s| Value::String(Arc::from(s)))
        }
        Node::Not(_)
        | Node::And(..)
        | Node::Or(..)
        | Node::TextEq { .. }
        | Node::ValueEq { .. }
        | Node::Glob(..)
        | Node::TextTest(..) => eval_bool(node, bag).map(Value::Bool),
        Node::OrElse(a, b) => match eval(a, bag) {
            Err(f) if f.is_absence() => eval(b, bag),
            r => r,
        },
        Node::Conditional(c, a, b) => {
            if eval_bool(c, bag)? {
                eval(a, bag)
            } else {
                eval(b, bag)
            }
        }
        Node::Convert(func, arg) => {
            with_text(arg, bag, |s| convert(*func, s))?.map_err(Fail::Error)
        }
        Node::Size { arg, text: true } => with_text(arg, bag, |s| Value::Int64(len_i64(s.len()))),
        Node::Size { arg, text: false } => match eval(arg, bag)? {
            Value::StringMap(m) => Ok(Value::Int64(len_i64(m.len()))),
            Value::Bytes(b) => Ok(Value::Int64(len_i64(b.len()))),
            Value::String(s) => Ok(Value::Int64(len_i64(s.len()))),
            other => Err(wrong_type(ValueType::StringMap, &other)),
        },
    }
}

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn convert(func: Func, s: &str) -> Result<Value, EvalError> {
    let checked = |r: Result<(), String>| {
        r.map(|()| Value::from(s))
            .map_err(|reason| EvalError::Conversion {
                func: func.name(),
                reason,
            })
    };
    match func {
        Func::Ip => text::parse_ip(s)
            .map(Value::Ip)
            .map_err(|reason| EvalError::Conversion {
                func: func.name(),
                reason,
            }),
        Func::Timestamp => text::parse_timestamp(s)
            .map(Value::Timestamp)
            .map_err(|reason| EvalError::Conversion {
                func: func.name(),
                reason,
            }),
        Func::Email => checked(text::check_email(s)),
        Func::DnsName => checked(text::check_dns_name(s)),
        _ => checked(text::check_uri(s)),
    }
}

/// Calls `f` with the text `node` evaluates to, borrowed from the bag or the
/// literal where possible.
fn with_text<'a, R>(
    node: &'a Node,
    bag: &dyn Bag,
    f: impl FnOnce(&str) -> R,
) -> Result<R, Fail<'a>> {
    let mut f = Some(f);
    let mut out = None;
    text_of(node, bag, &mut |s| {
        if let Some(f) = f.take() {
            out = Some(f(s));
        }
    })?;
    // `text_of` calls back exactly once when it succeeds.
    out.ok_or(Fail::Error(EvalError::WrongType {
        expected: ValueType::String,
        found: ValueType::String,
    }))
}

/// Calls `f` once with the text `node` evaluates to, unless it fails.
fn text_of<'a>(node: &'a Node, bag: &dyn Bag, f: &mut dyn FnMut(&str)) -> Result<(), Fail<'a>> {
    match node {
        Node::Const(Value::String(s)) => {
            f(s);
            Ok(())
        }
        Node::Attr(name) => match bag.get_attr(name) {
            Some(Value::String(s)) => {
                f(&s);
                Ok(())
            }
            Some(other) => Err(wrong_type(ValueType::String, &other)),
            None => Err(Fail::AbsentAttr(name.as_str())),
        },
        Node::AttrEntry { attr, key } => match bag.get_attr(attr) {
            Some(Value::StringMap(m)) => match m.get(&**key) {
                Some(v) => {
                    f(v);
                    Ok(())
                }
                None => Err(Fail::AbsentKey(Some(attr.as_str()), Cow::Borrowed(key))),
            },
            Some(other) => Err(wrong_type(ValueType::StringMap, &other)),
            None => Err(Fail::AbsentAttr(attr.as_str())),
        },
        Node::Index { map, map_name, key } => {
            let m = match eval(map, bag)? {
                Value::StringMap(m) => m,
                other => return Err(wrong_type(ValueType::StringMap, &other)),
            };
            let mut missing = None;
            text_of(key, bag, &mut |k| match m.get(k) {
                Some(v) => f(v),
                None => missing = Some(k.to_string()),
            })?;
            match missing {
                Some(k) => Err(Fail::AbsentKey(map_name.as_deref(), Cow::Owned(k))),
                None => Ok(()),
            }
        }
        Node::OrElse(a, b) => match text_of(a, bag, f) {
            Err(fail) if fail.is_absence() => text_of(b, bag, f),
            r => r,
        },
        Node::Conditional(c, a, b) => {
            if eval_bool(c, bag)? {
                text_of(a, bag, f)
            } else {
                text_of(b, bag, f)
            }
        }
        other => match eval(other, bag)? {
            Value::String(s) => {
                f(&s);
                Ok(())
            }
            v => Err(wrong_type(ValueType::String, &v)),
        },
    }
}

fn eval_bool<'a>(node: &'a Node, bag: &dyn Bag) -> Result<bool, Fail<'a>> {
    match node {
        Node::Const(Value::Bool(b)) => Ok(*b),
        Node::Not(a) => Ok(!eval_bool(a, bag)?),
        Node::And(a, b) => Ok(eval_bool(a, bag)? && eval_bool(b, bag)?),
        Node::Or(a, b) => Ok(eval_bool(a, bag)? || eval_bool(b, bag)?),
        Node::TextEq { lhs, rhs, negate } => {
            let eq = match &**rhs {
                Node::Const(Value::String(c)) => with_text(lhs, bag, |s| s == &**c)?,
                _ => with_text(lhs, bag, |a| with_text(rhs, bag, |b| a == b))??,
            };
            Ok(eq != *negate)
        }
        Node::ValueEq { lhs, rhs, negate } => {
            let eq = match (&**lhs, &**rhs) {
                (l, Node::Const(c)) => values_equal(&eval(l, bag)?, c),
                (Node::Const(c), r) => values_equal(c, &eval(r, bag)?),
                (l, r) => values_equal(&eval(l, bag)?, &eval(r, bag)?),
            };
            Ok(eq != *negate)
        }
        Node::Glob(subject, glob) => with_text(subject, bag, |s| glob.matches(s)),
        Node::TextTest(func, subject, pattern) => {
            let func = *func;
            with_text(subject, bag, |s| {
                with_text(pattern, bag, |p| match func {
                    Func::StartsWith => s.starts_with(p),
                    Func::EndsWith => s.ends_with(p),
                    _ => text::glob_match(s, p),
                })
            })?
        }
        Node::OrElse(a, b) => match eval_bool(a, bag) {
            Err(f) if f.is_absence() => eval_bool(b, bag),
            r => r,
        },
        Node::Conditional(c, a, b) => {
            if eval_bool(c, bag)? {
                eval_bool(a, bag)
            } else {
                eval_bool(b, bag)
            }
        }
        other => match eval(other, bag)? {
            Value::Bool(b) => Ok(b),
            v => Err(wrong_type(ValueType::Bool, &v)),
        },
    }
}

/// Equality as the language sees it: IPv4 equals its IPv6-mapped form.
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Ip(x), Value::Ip(y)) => canonical(*x) == canonical(*y),
        _ => a == b,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

struct Lowering<'t> {
    types: &'t dyn AttributeTypes,
    /// (name, key) to "every read is rescued by `|`".
    refs: BTreeMap<(String, Option<String>), bool>,
    rescued_depth: usize,
}

impl Lowering<'_> {
    fn reference(&mut self, name: &str, key: Option<&str>) {
        let rescued = self.rescued_depth > 0;
        let entry = self
            .refs
            .entry((name.to_string(), key.map(str::to_string)))
            .or_insert(rescued);
        *entry &= rescued;
    }

    fn boxed(&mut self, e: &Expr) -> (Box<Node>, ValueType) {
        let (n, t) = self.lower(e);
        (Box::new(n), t)
    }

    /// As [`Self::boxed`], reading a duration literal as a DURATION where
    /// `beside` is one (the checker allowed it).
    fn boxed_as(&mut self, e: &Expr, beside: ValueType) -> (Box<Node>, ValueType) {
        if beside == ValueType::Duration
            && let ExprKind::Str(s) = &e.kind
            && let Some(d) = super::text::parse_duration(s)
        {
            return (
                Box::new(Node::Const(Value::Duration(d))),
                ValueType::Duration,
            );
        }
        self.boxed(e)
    }

    /// The node for `e` and its type (`e` has passed the checker).
    fn lower(&mut self, e: &Expr) -> (Node, ValueType) {
        match &e.kind {
            ExprKind::Attribute(name) => {
                self.reference(name, None);
                let t = self.types.type_of(name).unwrap_or(ValueType::String);
                (Node::Attr(AttrName::new(name)), t)
            }
            ExprKind::Str(s) => (Node::Const(Value::from(s.as_str())), ValueType::String),
            ExprKind::Int(v) => (Node::Const(Value::Int64(*v)), ValueType::Int64),
            ExprKind::Double(v) => (Node::Const(Value::Double(*v)), ValueType::Double),
            ExprKind::Bool(v) => (Node::Const(Value::Bool(*v)), ValueType::Bool),
            ExprKind::Index { map, key } => {
                if let (ExprKind::Attribute(name), ExprKind::Str(k)) = (&map.kind, &key.kind) {
                    self.reference(name, Some(k));
                    let node = Node::AttrEntry {
                        attr: AttrName::new(name),
                        key: k.as_str().into(),
                    };
                    return (node, ValueType::String);
                }
                let map_name = match &map.kind {
                    ExprKind::Attribute(name) => Some(Arc::from(name.as_str())),
                    _ => None,
                };
                let (map, _) = self.boxed(map);
                let (key, _) = self.boxed(key);
                let node = Node::Index { map, map_name, key };
                (node, ValueType::String)
            }
            ExprKind::Not(a) => (Node::Not(self.boxed(a).0), ValueType::Bool),
            ExprKind::Binary { op, lhs, rhs } => {
                if *op == BinaryOp::OrElse {
                    self.rescued_depth += 1;
                    let (l, t) = self.boxed(lhs);
                    self.rescued_depth -= 1;
                    let (r, _) = self.boxed_as(rhs, t);
                    return (Node::OrElse(l, r), t);
                }
                let (l, t) = self.boxed(lhs);
                let (r, rt) = self.boxed_as(rhs, t);
                // A duration literal on the left of a duration.
                let (l, t) = match (t, rt) {
                    (ValueType::String, ValueType::Duration) => (self.boxed_as(lhs, rt).0, rt),
                    _ => (l, t),
                };
                let negate = *op == BinaryOp::Ne;
                let node = match op {
                    BinaryOp::And => Node::And(l, r),
                    BinaryOp::Or => Node::Or(l, r),
                    _ if t.is_text() => Node::TextEq {
                        lhs: l,
                        rhs: r,
                        negate,
                    },
                    _ => Node::ValueEq {
                        lhs: l,
                        rhs: r,
                        negate,
                    },
                };
                (node, ValueType::Bool)
            }
            ExprKind::Call { func, args } => self.call(*func, args),
        }
    }

    fn call(&mut self, func: Func, args: &[Expr]) -> (Node, ValueType) {
        match (func, args) {
            (Func::Match | Func::StartsWith | Func::EndsWith, [s, p]) => {
                let (s, _) = self.boxed(s);
                let node = match (&p.kind, func) {
                    (ExprKind::Str(p), Func::StartsWith) => {
                        Node::Glob(s, Glob::Prefix(p.as_str().into()))
                    }
                    (ExprKind::Str(p), Func::EndsWith) => {
                        Node::Glob(s, Glob::Suffix(p.as_str().into()))
                    }
                    (ExprKind::Str(p), _) => Node::Glob(s, Glob::new(p)),
                    _ => Node::TextTest(func, s, self.boxed(p).0),
                };
                (node, ValueType::Bool)
            }
            (Func::Conditional, [c, a, b]) => {
                let (c, _) = self.boxed(c);
                let (a, t) = self.boxed(a);
                let (b, bt) = self.boxed_as(b, t);
                let (a, t) = match (t, bt) {
                    (ValueType::String, ValueType::Duration) => (self.boxed_as(&args[1], bt).0, bt),
                    _ => (a, t),
                };
                (Node::Conditional(c, a, b), t)
            }
            (Func::Size, [a]) => {
                let (arg, t) = self.boxed(a);
                let node = Node::Size {
                    arg,
                    text: t.is_text(),
                };
                (node, ValueType::Int64)
            }
            (_, [a]) => {
                let t = match func {
                    Func::Ip => ValueType::IpAddress,
                    Func::Timestamp => ValueType::Timestamp,
                    Func::Email => ValueType::EmailAddress,
                    Func::DnsName => ValueType::DnsName,
                    _ => ValueType::Uri,
                };
                if let ExprKind::Str(s) = &a.kind
                    && let Ok(v) = convert(func, s)
                {
                    return (Node::Const(v), t);
                }
                (Node::Convert(func, self.boxed(a).0), t)
            }
            // Unreachable after checking; keep a harmless constant.
            _ => (Node::Const(Value::Bool(false)), ValueType::Bool),
        }
    }
}
