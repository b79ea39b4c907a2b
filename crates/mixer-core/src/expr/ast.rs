//! The syntax tree of an expression, and its canonical text form.

use std::fmt;

/// Where a sub-expression sits in the text: byte offsets `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset just past the last character.
    pub end: usize,
}

/// One parsed expression (a node of the tree).
///
/// Equality compares the shape only, not where the nodes sat in the text.
#[derive(Debug, Clone)]
pub struct Expr {
    /// What the node is.
    pub kind: ExprKind,
    /// Where it sat in the text.
    pub span: Span,
    /// Height of the tree below (a leaf is 1).
    pub(crate) depth: usize,
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

/// The kinds of expression nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// An attribute, by its dotted name (`request.headers`).
    Attribute(String),
    /// A string literal.
    Str(String),
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Double(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `map[key]`.
    Index {
        /// The map.
        map: Box<Expr>,
        /// The key.
        key: Box<Expr>,
    },
    /// `!operand`.
    Not(Box<Expr>),
    /// `lhs op rhs`.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `func(args)`, or `args[0].func(rest)` for method syntax.
    Call {
        /// The function.
        func: Func,
        /// The arguments (a method's receiver first).
        args: Vec<Expr>,
    },
}

/// Binary operators, lowest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `||`
    Or,
    /// `&&`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `|`: the left side if it is present, else the right side.
    OrElse,
}

impl BinaryOp {
    /// Binding strength: `||` 0, `&&` 1, `==` and `!=` 2, `|` 3.
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 0,
            BinaryOp::And => 1,
            BinaryOp::Eq | BinaryOp::Ne => 2,
            BinaryOp::OrElse => 3,
        }
    }

    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "||",
            BinaryOp::And => "&&",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::OrElse => "|",
        }
    }
}

/// The functions of the language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// `match(text, glob)`: `"abc*"` prefix, `"*abc"` suffix, else exact.
    Match,
    /// `text.startsWith(prefix)`.
    StartsWith,
    /// `text.endsWith(suffix)`.
    EndsWith,
    /// `ip(text)`: an IP address.
    Ip,
    /// `timestamp(text)`: an RFC 3339 time.
    Timestamp,
    /// `email(text)`: an email address.
    Email,
    /// `dnsName(text)`: a DNS name.
    DnsName,
    /// `uri(text)`: a URI.
    Uri,
    /// `conditional(cond, then, else)`.
    Conditional,
    /// `size(text or map or bytes)`: length in bytes, or number of entries.
    Size,
}

impl Func {
    /// Every function.
    pub const ALL: [Func; 10] = [
        Func::Match,
        Func::StartsWith,
        Func::EndsWith,
        Func::Ip,
        Func::Timestamp,
        Func::Email,
        Func::DnsName,
        Func::Uri,
        Func::Conditional,
        Func::Size,
    ];

    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            Func::Match => "match",
            Func::StartsWith => "startsWith",
            Func::EndsWith => "endsWith",
            Func::Ip => "ip",
            Func::Timestamp => "timestamp",
            Func::Email => "email",
            Func::DnsName => "dnsName",
            Func::Uri => "uri",
            Func::Conditional => "conditional",
            Func::Size => "size",
        }
    }

    /// The function called `name`.
    pub fn from_name(name: &str) -> Option<Func> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether the canonical form is method syntax (`recv.f(arg)`).
    fn is_method(self) -> bool {
        matches!(self, Func::StartsWith | Func::EndsWith)
    }
}

impl Expr {
    pub(crate) fn new(kind: ExprKind, span: Span) -> Expr {
        let depth = 1 + match &kind {
            ExprKind::Attribute(_)
            | ExprKind::Str(_)
            | ExprKind::Int(_)
            | ExprKind::Double(_)
            | ExprKind::Bool(_) => 0,
            ExprKind::Index { map, key } => map.depth.max(key.depth),
            ExprKind::Not(e) => e.depth,
            ExprKind::Binary { lhs, rhs, .. } => lhs.depth.max(rhs.depth),
            ExprKind::Call { args, .. } => args.iter().map(|a| a.depth).max().unwrap_or(0),
        };
        Expr { kind, span, depth }
    }

    /// Height of the tree (a leaf is 1).
    pub fn depth(&self) -> usize {
        self.depth
    }
}

/// Writes `s` as a double-quoted literal.
pub(crate) fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// The canonical text: parentheses only where precedence needs them, strings
/// double-quoted; it parses back to an equal tree.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Attribute(name) => f.write_str(name),
            ExprKind::Str(s) => write_quoted(f, s),
            ExprKind::Int(v) => write!(f, "{v}"),
            ExprKind::Double(v) => write!(f, "{v:?}"),
            ExprKind::Bool(v) => write!(f, "{v}"),
            ExprKind::Index { map, key } => {
                write_receiver(f, map)?;
                write!(f, "[{key}]")
            }
            ExprKind::Not(e) => {
                f.write_str("!")?;
                write_operand(f, e, |_| true)
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let p = op.precedence();
                write_operand(f, lhs, |q| q < p)?;
                write!(f, " {} ", op.symbol())?;
                write_operand(f, rhs, |q| q <= p)
            }
            ExprKind::Call { func, args } => {
                let rest = match (func.is_method(), args.split_first()) {
                    (true, Some((recv, rest))) => {
                        write_receiver(f, recv)?;
                        write!(f, ".{}(", func.name())?;
                        rest
                    }
                    _ => {
                        write!(f, "{}(", func.name())?;
                        args.as_slice()
                    }
                };
                for (i, a) in rest.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// An operand of a binary operator, parenthesized when `needs_parens` says
/// its own operator binds too loosely.
fn write_operand(
    f: &mut fmt::Formatter<'_>,
    e: &Expr,
    needs_parens: impl Fn(u8) -> bool,
) -> fmt::Result {
    match &e.kind {
        ExprKind::Binary { op, .. } if needs_parens(op.precedence()) => write!(f, "({e})"),
        _ => write!(f, "{e}"),
    }
}

/// The operand of `!`, `.method()` or `[key]`: parenthesized when it is an
/// operation itself.
fn write_receiver(f: &mut fmt::Formatter<'_>, e: &Expr) -> fmt::Result {
    match &e.kind {
        ExprKind::Binary { .. } | ExprKind::Not(_) => write!(f, "({e})"),
        _ => write!(f, "{e}"),
    }
}
