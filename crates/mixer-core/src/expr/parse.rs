//! The parser: text to [`Expr`], never panicking, with bounded recursion.

use super::ast::{BinaryOp, Expr, ExprKind, Func, Span};

/// The longest expression text accepted, in bytes.
pub const MAX_LEN: usize = 16 * 1024;
/// The deepest nesting of parentheses, calls, indexes and `!` accepted.
pub const MAX_NESTING: usize = 64;
/// The tallest syntax tree accepted (long `&&` chains count too).
pub const MAX_DEPTH: usize = 256;

/// Why a text is not an expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ParseError {
    /// Byte offset of the problem.
    pub offset: usize,
    /// 1-based column (in characters) of the problem.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// 1-based column, in characters, of byte `offset` on its line of `text`.
pub(crate) fn column_of(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    text[line_start..offset].chars().count() + 1
}

/// Parses one expression.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let err = |offset: usize, message: String| ParseError {
        offset,
        column: column_of(text, offset),
        message,
    };
    if text.len() > MAX_LEN {
        return Err(err(
            MAX_LEN,
            format!("expression longer than {MAX_LEN} bytes"),
        ));
    }
    let tokens = lex(text).map_err(|(offset, message)| err(offset, message))?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        nesting: 0,
    };
    let result = parser.expr().and_then(|e| {
        let t = parser.peek();
        if t.tok == Tok::Eof {
            Ok(e)
        } else {
            Err((
                t.start,
                format!("unexpected {} after the expression", t.tok),
            ))
        }
    });
    result.map_err(|(offset, message)| err(offset, message))
}

#[derive(Debug, Clone, PartialEq)]
enum Tok<'a> {
    Ident(&'a str),
    Str(String),
    Int(&'a str),
    Float(&'a str),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Bang,
    Minus,
    EqEq,
    NotEq,
    AndAnd,
    OrOr,
    Pipe,
    Eof,
}

impl std::fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Tok::Ident(s) => return write!(f, "`{s}`"),
            Tok::Str(_) => "string literal",
            Tok::Int(s) | Tok::Float(s) => return write!(f, "`{s}`"),
            Tok::LParen => "`(`",
            Tok::RParen => "`)`",
            Tok::LBracket => "`[`",
            Tok::RBracket => "`]`",
            Tok::Comma => "`,`",
            Tok::Dot => "`.`",
            Tok::Bang => "`!`",
            Tok::Minus => "`-`",
            Tok::EqEq => "`==`",
            Tok::NotEq => "`!=`",
            Tok::AndAnd => "`&&`",
            Tok::OrOr => "`||`",
            Tok::Pipe => "`|`",
            Tok::Eof => "end of input",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Clone)]
struct Token<'a> {
    tok: Tok<'a>,
    start: usize,
    end: usize,
}

type Fail = (usize, String);

fn lex(text: &str) -> Result<Vec<Token<'_>>, Fail> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let two = |a: u8, b: u8| c == a && bytes.get(i + 1) == Some(&b);
        let tok = if c.is_ascii_whitespace() {
            i += 1;
            continue;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            Tok::Ident(&text[start..i])
        } else if c.is_ascii_digit() {
            let digits = |i: &mut usize| {
                while *i < bytes.len() && bytes[*i].is_ascii_digit() {
                    *i += 1;
                }
            };
            digits(&mut i);
            let mut float = false;
            if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                float = true;
                i += 1;
                digits(&mut i);
            }
            if matches!(bytes.get(i), Some(b'e' | b'E')) {
                let mut j = i + 1;
                if matches!(bytes.get(j), Some(b'+' | b'-')) {
                    j += 1;
                }
                if bytes.get(j).is_some_and(u8::is_ascii_digit) {
                    float = true;
                    i = j;
                    digits(&mut i);
                }
            }
            if bytes
                .get(i)
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
            {
                return Err((i, "malformed number".to_string()));
            }
            if float {
                Tok::Float(&text[start..i])
            } else {
                Tok::Int(&text[start..i])
            }
        } else if c == b'"' {
            let (s, next) = lex_quoted(text, i)?;
            i = next;
            Tok::Str(s)
        } else if c == b'`' {
            let Some(len) = text[i + 1..].find('`') else {
                return Err((start, "unterminated raw string".to_string()));
            };
            i += len + 2;
            Tok::Str(text[start + 1..i - 1].to_string())
        } else if two(b'=', b'=') {
            i += 2;
            Tok::EqEq
        } else if two(b'!', b'=') {
            i += 2;
            Tok::NotEq
        } else if two(b'&', b'&') {
            i += 2;
            Tok::AndAnd
        } else if two(b'|', b'|') {
            i += 2;
            Tok::OrOr
        } else {
            let tok = match c {
                b'(' => Tok::LParen,
                b')' => Tok::RParen,
                b'[' => Tok::LBracket,
                b']' => Tok::RBracket,
                b',' => Tok::Comma,
                b'.' => Tok::Dot,
                b'!' => Tok::Bang,
                b'-' => Tok::Minus,
                b'|' => Tok::Pipe,
                _ => {
                    let ch = text[i..].chars().next().unwrap_or('?');
                    return Err((start, format!("unexpected character {ch:?}")));
                }
            };
            i += 1;
            tok
        };
        out.push(Token { tok, start, end: i });
    }
    out.push(Token {
        tok: Tok::Eof,
        start: text.len(),
        end: text.len(),
    });
    Ok(out)
}

/// A double-quoted string starting at `start`: its value and the offset past it.
fn lex_quoted(text: &str, start: usize) -> Result<(String, usize), Fail> {
    let mut out = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((j, c)) = chars.next() {
        match c {
            '"' => return Ok((out, start + 1 + j + 1)),
            '\\' => {
                let Some((k, e)) = chars.next() else { break };
                match e {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    '\'' => out.push('\''),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    _ => {
                        return Err((start + 1 + k, format!("unknown escape `\\{e}`")));
                    }
                }
            }
            c => out.push(c),
        }
    }
    Err((start, "unterminated string".to_string()))
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
    nesting: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Token<'a> {
        self.peek_at(0)
    }

    fn peek_at(&self, ahead: usize) -> &Token<'a> {
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[(self.pos + ahead).min(last)]
    }

    fn bump(&mut self) -> Token<'a> {
        let t = self.peek().clone();
        if t.tok != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    fn eat(&mut self, tok: &Tok<'_>) -> Option<Token<'a>> {
        (&self.peek().tok == tok).then(|| self.bump())
    }

    fn expect(&mut self, tok: &Tok<'_>, what: &str) -> Result<Token<'a>, Fail> {
        match self.eat(tok) {
            Some(t) => Ok(t),
            None => {
                let t = self.peek();
                Err((t.start, format!("expected {what}, found {}", t.tok)))
            }
        }
    }

    fn enter(&mut self) -> Result<(), Fail> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            Err((
                self.peek().start,
                format!("expression nested deeper than {MAX_NESTING}"),
            ))
        } else {
            Ok(())
        }
    }

    fn node(&self, kind: ExprKind, span: Span) -> Result<Expr, Fail> {
        let e = Expr::new(kind, span);
        if e.depth > MAX_DEPTH {
            Err((span.start, format!("expression taller than {MAX_DEPTH}")))
        } else {
            Ok(e)
        }
    }

    fn expr(&mut self) -> Result<Expr, Fail> {
        self.enter()?;
        let e = self.binary(0);
        self.nesting -= 1;
        e
    }

    /// Binary levels, lowest first: `||`, `&&`, `==`/`!=`, `|`.
    fn binary(&mut self, level: usize) -> Result<Expr, Fail> {
        if level == 4 {
            return self.unary();
        }
        let mut lhs = self.binary(level + 1)?;
        loop {
            let op = match (level, &self.peek().tok) {
                (0, Tok::OrOr) => BinaryOp::Or,
                (1, Tok::AndAnd) => BinaryOp::And,
                (2, Tok::EqEq) => BinaryOp::Eq,
                (2, Tok::NotEq) => BinaryOp::Ne,
                (3, Tok::Pipe) => BinaryOp::OrElse,
                _ => return Ok(lhs),
            };
            self.bump();
            let rhs = self.binary(level + 1)?;
            let span = Span {
                start: lhs.span.start,
                end: rhs.span.end,
            };
            lhs = self.node(
                ExprKind::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
                span,
            )?;
        }
    }

    fn unary(&mut self) -> Result<Expr, Fail> {
        if let Some(bang) = self.eat(&Tok::Bang) {
            self.enter()?;
            let operand = self.unary();
            self.nesting -= 1;
            let operand = operand?;
            let span = Span {
                start: bang.start,
                end: operand.span.end,
            };
            return self.node(ExprKind::Not(Box::new(operand)), span);
        }
        if let Some(minus) = self.eat(&Tok::Minus) {
            let t = self.bump();
            let span = Span {
                start: minus.start,
                end: t.end,
            };
            let lit = match t.tok {
                Tok::Int(s) => int_literal(&format!("-{s}"), minus.start)?,
                Tok::Float(s) => float_literal(&format!("-{s}"), minus.start)?,
                other => {
                    return Err((
                        t.start,
                        format!("expected a number after `-`, found {other}"),
                    ));
                }
            };
            let lit = self.node(lit, span)?;
            return self.postfix(lit);
        }
        let primary = self.primary()?;
        self.postfix(primary)
    }

    fn postfix(&mut self, mut e: Expr) -> Result<Expr, Fail> {
        loop {
            if self.eat(&Tok::LBracket).is_some() {
                let key = self.expr()?;
                let close = self.expect(&Tok::RBracket, "`]`")?;
                let span = Span {
                    start: e.span.start,
                    end: close.end,
                };
                e = self.node(
                    ExprKind::Index {
                        map: Box::new(e),
                        key: Box::new(key),
                    },
                    span,
                )?;
            } else if self.peek().tok == Tok::Dot {
                self.bump();
                let t = self.bump();
                let Tok::Ident(name) = t.tok else {
                    return Err((t.start, format!("expected a method name, found {}", t.tok)));
                };
                let Some(func) = Func::from_name(name) else {
                    return Err((t.start, format!("unknown method `{name}`")));
                };
                let start = e.span.start;
                e = self.call(func, vec![e], start)?;
            } else {
                return Ok(e);
            }
        }
    }

    /// The arguments of a call, from its `(`; `args` holds a method's receiver.
    fn call(&mut self, func: Func, mut args: Vec<Expr>, start: usize) -> Result<Expr, Fail> {
        self.expect(&Tok::LParen, "`(`")?;
        if self.peek().tok != Tok::RParen {
            loop {
                args.push(self.expr()?);
                if self.eat(&Tok::Comma).is_none() {
                    break;
                }
            }
        }
        let close = self.expect(&Tok::RParen, "`)` or `,`")?;
        self.node(
            ExprKind::Call { func, args },
            Span {
                start,
                end: close.end,
            },
        )
    }

    fn primary(&mut self) -> Result<Expr, Fail> {
        let t = self.bump();
        let span = Span {
            start: t.start,
            end: t.end,
        };
        let kind = match t.tok {
            Tok::Str(s) => ExprKind::Str(s),
            Tok::Int(s) => int_literal(s, t.start)?,
            Tok::Float(s) => float_literal(s, t.start)?,
            Tok::LParen => {
                let e = self.expr()?;
                self.expect(&Tok::RParen, "`)`")?;
                return Ok(e);
            }
            Tok::Ident("true") => ExprKind::Bool(true),
            Tok::Ident("false") => ExprKind::Bool(false),
            Tok::Ident(first) => {
                if self.peek().tok == Tok::LParen {
                    let Some(func) = Func::from_name(first) else {
                        return Err((t.start, format!("unknown function `{first}`")));
                    };
                    return self.call(func, Vec::new(), t.start);
                }
                let mut name = first.to_string();
                let mut end = t.end;
                // `a.b.c`, stopping before `.m(` (a method call on `a.b`).
                while self.peek().tok == Tok::Dot
                    && matches!(self.peek_at(1).tok, Tok::Ident(_))
                    && self.peek_at(2).tok != Tok::LParen
                {
                    self.bump();
                    let seg = self.bump();
                    if let Tok::Ident(s) = seg.tok {
                        name.push('.');
                        name.push_str(s);
                    }
                    end = seg.end;
                }
                return self.node(
                    ExprKind::Attribute(name),
                    Span {
                        start: t.start,
                        end,
                    },
                );
            }
            other => {
                return Err((t.start, format!("expected an expression, found {other}")));
            }
        };
        self.node(kind, span)
    }
}

fn int_literal(s: &str, offset: usize) -> Result<ExprKind, Fail> {
    s.parse::<i64>()
        .map(ExprKind::Int)
        .map_err(|_| (offset, format!("integer `{s}` out of range")))
}

fn float_literal(s: &str, offset: usize) -> Result<ExprKind, Fail> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(ExprKind::Double(v)),
        _ => Err((offset, format!("number `{s}` out of range"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn shape(text: &str) -> String {
        parse(text).unwrap().to_string()
    }

    /// Every binary operation parenthesized.
    fn full(text: &str) -> String {
        fn go(e: &Expr) -> String {
            match &e.kind {
                ExprKind::Binary { op, lhs, rhs } => {
                    format!("({} {} {})", go(lhs), op.symbol(), go(rhs))
                }
                ExprKind::Not(a) => format!("!{}", go(a)),
                ExprKind::Index { map, key } => format!("{}[{}]", go(map), go(key)),
                _ => e.to_string(),
            }
        }
        go(&parse(text).unwrap())
    }

    fn err(text: &str) -> ParseError {
        parse(text).unwrap_err()
    }

    #[test]
    fn precedence_follows_go() {
        assert_eq!(full("a || b && c"), "(a || (b && c))");
        assert_eq!(full("a && b == c"), "(a && (b == c))");
        assert_eq!(
            full(r#"request.headers["x"] | "" == "abc""#),
            r#"((request.headers["x"] | "") == "abc")"#
        );
        assert_eq!(full("a == b != c"), "((a == b) != c)");
        assert_eq!(full("!a && b"), "(!a && b)");
        assert_eq!(full("!(a && b)"), "!(a && b)");
        assert_eq!(full("(a || b) && c"), "((a || b) && c)");
        assert_eq!(full("a | b | c"), "((a | b) | c)");
        assert_eq!(full("a | (b | c)"), "(a | (b | c))");
    }

    #[test]
    fn canonical_text_keeps_needed_parentheses_only() {
        assert_eq!(shape("((a || b)) && (c)"), "(a || b) && c");
        assert_eq!(shape("a || (b && c)"), "a || b && c");
        assert_eq!(shape("a | (b | c) | d"), "a | (b | c) | d");
        assert_eq!(shape("!(!a)"), "!!a");
        assert_eq!(shape("!(a == b)"), "!(a == b)");
        assert_eq!(shape("(a | b).startsWith(c)"), "(a | b).startsWith(c)");
        assert_eq!(shape("(!a)[\"k\"]"), "(!a)[\"k\"]");
        assert_eq!(shape("5.startsWith(x)"), "5.startsWith(x)");
        assert_eq!(shape("-5.5[x]"), "-5.5[x]");
        for text in [
            "5.startsWith(x)",
            "-5.5[x]",
            "1e16.endsWith(a)",
            "startsWith(a)",
            "!-1",
        ] {
            let e = parse(text).unwrap();
            assert_eq!(parse(&e.to_string()).unwrap(), e, "{text}");
        }
    }

    #[test]
    fn canonical_text_of_limit_sized_trees_parses_back() {
        let chain = vec!["a"; 200].join(" || ");
        let mut nested = "a".to_string();
        for i in 0..(MAX_NESTING - 1) {
            let op = if i % 2 == 0 { "&&" } else { "||" };
            nested = format!("b {op} ({nested})");
        }
        for text in [chain, nested] {
            let e = parse(&text).unwrap();
            assert_eq!(parse(&e.to_string()).unwrap(), e);
        }
    }

    #[test]
    fn names_literals_calls_and_methods() {
        assert_eq!(
            shape("destination.service.host"),
            "destination.service.host"
        );
        assert_eq!(
            shape("request.path.startsWith(\"/api\")"),
            "request.path.startsWith(\"/api\")"
        );
        assert_eq!(shape("startsWith(a, \"x\")"), "a.startsWith(\"x\")");
        assert_eq!(shape("match(a.b, `/x*`)"), "match(a.b, \"/x*\")");
        assert_eq!(
            shape("ip(\"10.0.0.1\").endsWith(\"1\")"),
            "ip(\"10.0.0.1\").endsWith(\"1\")"
        );
        assert_eq!(shape("m[\"k\"][\"j\"]"), "m[\"k\"][\"j\"]");
        assert_eq!(shape("-5 == -2.5e3"), "-5 == -2500.0");
        assert_eq!(shape("x == 1.5"), "x == 1.5");
        assert_eq!(
            shape("x == -9223372036854775808"),
            "x == -9223372036854775808"
        );
        assert_eq!(shape("\"a\\\"b\\n\""), "\"a\\\"b\\n\"");
        assert_eq!(
            parse("conditional(a, 1, 2)").unwrap().kind,
            ExprKind::Call {
                func: Func::Conditional,
                args: vec![
                    Expr::new(ExprKind::Attribute("a".into()), Span::default()),
                    Expr::new(ExprKind::Int(1), Span::default()),
                    Expr::new(ExprKind::Int(2), Span::default()),
                ],
            }
        );
    }

    #[test]
    fn spans_cover_sub_expressions() {
        let e = parse("a == \"x\" && b").unwrap();
        let ExprKind::Binary { lhs, rhs, .. } = &e.kind else {
            panic!("{e:?}")
        };
        assert_eq!(lhs.span, Span { start: 0, end: 8 });
        assert_eq!(rhs.span, Span { start: 12, end: 13 });
    }

    #[test]
    fn errors_name_their_column() {
        let e = err("a == ");
        assert_eq!((e.offset, e.column), (5, 6));
        assert!(e.message.contains("end of input"), "{e}");
        let e = err("a = b");
        assert_eq!(e.column, 3);
        assert_eq!(err("\"abc").column, 1);
        assert_eq!(err("a ) b").column, 3);
        assert!(err("nosuch(1)").message.contains("unknown function"));
        assert!(err("a.nosuch(1)").message.contains("unknown method"));
        assert!(err("99999999999999999999").message.contains("out of range"));
        assert!(err("1e999").message.contains("out of range"));
        assert!(err("12abc").message.contains("malformed"));
        assert_eq!(err("\"é\" == #").column, 8);
        assert_eq!(err("é").column, 1);
        assert!(err("\"\\q\"").message.contains("escape"));
        assert!(err("f(").message.contains("unknown function"));
        assert!(err("match(a,").message.contains("expected an expression"));
        assert!(err("").message.contains("end of input"));
        assert!(err("-a").message.contains("number"));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{}a{}", "(".repeat(5_000), ")".repeat(5_000));
        assert!(err(&deep).message.contains("nested deeper"));
        let bangs = format!("{}a", "!".repeat(10_000));
        assert!(err(&bangs).message.contains("nested deeper"));
        let chain = vec!["a"; 1_000].join(" && ");
        assert!(err(&chain).message.contains("taller"));
        let ok = vec!["a"; 200].join(" || ");
        assert!(parse(&ok).is_ok());
        let long = "a".repeat(MAX_LEN + 1);
        assert!(err(&long).message.contains("longer"));
        let nested_ok = format!("{}a{}", "(".repeat(60), ")".repeat(60));
        assert!(parse(&nested_ok).is_ok());
    }
}
