//! A fast reader for the block-style YAML that Kubernetes manifests are written in.
//!
//! It understands block mappings and sequences (including indentless sequences and
//! `- key: value` items), one-line plain, single- and double-quoted scalars, one-line
//! flow collections and comments, and borrows every unescaped scalar from the input.
//! Anything else (anchors, aliases, tags, block and multi-line scalars, complex keys,
//! tabs, duplicate keys, unusual characters or escapes, deep nesting) makes it give up
//! with [`Unsupported`], and the caller falls back to the full YAML parser. When it
//! does produce a tree, that tree is the one the full parser would produce; the
//! differential tests and the fuzz target hold it to that.

use std::borrow::Cow;

use super::{node::Node, scalar::resolve_plain};

/// The document uses YAML this reader leaves to the full parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unsupported;

type R<T> = Result<T, Unsupported>;

/// Deepest nesting accepted (the full parser refuses deeper documents anyway).
const MAX_DEPTH: usize = 64;

/// Longest key accepted (the full parser limits simple keys to 1024 characters).
const MAX_KEY_LEN: usize = 1000;

/// One line with content.
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    indent: usize,
    text: &'a str,
}

/// Reads a document, or reports that it needs the full parser.
pub(crate) fn parse(doc: &str) -> R<Node<'_>> {
    if !all_printable(doc) {
        return Err(Unsupported);
    }
    let mut lines = Vec::with_capacity(doc.len() / 16);
    for raw in doc.split('\n') {
        let text = raw.trim_start_matches(' ');
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let indent = raw.len() - text.len();
        if indent == 0
            && (text.starts_with("---") || text.starts_with("...") || text.starts_with('%'))
        {
            return Err(Unsupported);
        }
        lines.push(Line {
            indent,
            text: text.trim_end_matches(' '),
        });
    }
    let Some(first) = lines.first().copied() else {
        return Ok(Node::Null);
    };
    let mut p = Reader {
        lines,
        pos: 0,
        depth: 0,
    };
    let node = p.block(first.indent)?;
    if p.pos != p.lines.len() {
        return Err(Unsupported);
    }
    Ok(node)
}

/// Whether every character is one the full parser accepts in a plain document and
/// this reader handles: printable ASCII, newlines and printable non-ASCII.
fn all_printable(doc: &str) -> bool {
    if doc.bytes().all(|b| b == b'\n' || (0x20..0x7f).contains(&b)) {
        return true;
    }
    doc.chars().all(|c| {
        matches!(c, '\n' | ' '..='~' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fefe}' | '\u{ff00}'..='\u{fffd}')
            || c >= '\u{10000}'
    })
}

fn is_seq_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

struct Reader<'a> {
    lines: Vec<Line<'a>>,
    pos: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<Line<'a>> {
        self.lines.get(self.pos).copied()
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(Unsupported)
        } else {
            Ok(())
        }
    }

    /// A block node whose first line is the current one, at `indent`.
    fn block(&mut self, indent: usize) -> R<Node<'a>> {
        self.enter()?;
        let line = self.peek().ok_or(Unsupported)?;
        let node = if is_seq_item(line.text) {
            self.sequence(indent)
        } else {
            self.mapping(indent)
        };
        self.depth -= 1;
        node
    }

    fn mapping(&mut self, indent: usize) -> R<Node<'a>> {
        let mut entries: Vec<(Node<'a>, Node<'a>)> = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent < indent || (line.indent == indent && is_seq_item(line.text)) {
                break;
            }
            if line.indent > indent {
                return Err(Unsupported);
            }
            let (key, rest) = split_key(line.text)?.ok_or(Unsupported)?;
            if matches!(key, Node::F64(_)) {
                return Err(Unsupported);
            }
            self.pos += 1;
            let value = self.value_after_key(indent, rest)?;
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(Unsupported);
            }
            entries.push((key, value));
        }
        if entries.is_empty() {
            return Err(Unsupported);
        }
        Ok(Node::Map(entries))
    }

    fn value_after_key(&mut self, indent: usize, rest: &'a str) -> R<Node<'a>> {
        if rest.is_empty() || rest.starts_with('#') {
            return match self.peek() {
                Some(l) if l.indent > indent => self.block(l.indent),
                Some(l) if l.indent == indent && is_seq_item(l.text) => {
                    self.enter()?;
                    let seq = self.sequence(indent);
                    self.depth -= 1;
                    seq
                }
                _ => Ok(Node::Null),
            };
        }
        let node = self.inline(rest)?;
        // A deeper line would continue a multi-line scalar (or be an error).
        if self.peek().is_some_and(|l| l.indent > indent) {
            return Err(Unsupported);
        }
        Ok(node)
    }

    fn sequence(&mut self, indent: usize) -> R<Node<'a>> {
        let mut items = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent < indent {
                break;
            }
            if line.indent > indent {
                return Err(Unsupported);
            }
            if !is_seq_item(line.text) {
                break;
            }
            let after = &line.text[1..];
            let content = after.trim_start_matches(' ');
            let column = line.indent + 1 + (after.len() - content.len());
            if content.is_empty() || content.starts_with('#') {
                self.pos += 1;
                match self.peek() {
                    Some(l) if l.indent > indent => items.push(self.block(l.indent)?),
                    _ => items.push(Node::Null),
                }
            } else if is_seq_item(content) {
                return Err(Unsupported);
            } else if split_key(content)?.is_some() {
                // `- key: value`: a mapping whose keys sit at the column of `key`.
                if let Some(current) = self.lines.get_mut(self.pos) {
                    *current = Line {
                        indent: column,
                        text: content,
                    };
                }
                self.enter()?;
                let map = self.mapping(column)?;
                self.depth -= 1;
                items.push(map);
            } else {
                self.pos += 1;
                let node = self.inline(content)?;
                if self.peek().is_some_and(|l| l.indent > indent) {
                    return Err(Unsupported);
                }
                items.push(node);
            }
        }
        Ok(Node::Seq(items))
    }

    /// A value written on the rest of a line: a quoted or plain scalar or a flow
    /// collection, optionally followed by a comment.
    fn inline(&mut self, text: &'a str) -> R<Node<'a>> {
        match text.as_bytes().first() {
            Some(b'"' | b'\'') => {
                let (value, rest) = quoted(text)?;
                end_of_value(rest)?;
                Ok(Node::Str(value))
            }
            Some(b'[' | b'{') => {
                let mut cursor = text;
                let node = flow(&mut cursor, self.depth)?;
                end_of_value(cursor)?;
                Ok(node)
            }
            _ => plain_block(text),
        }
    }
}

/// Only spaces and then a comment may follow a value.
fn end_of_value(rest: &str) -> R<()> {
    let trimmed = rest.trim_start_matches(' ');
    let spaced = trimmed.len() < rest.len();
    if rest.is_empty() || (spaced && (trimmed.is_empty() || trimmed.starts_with('#'))) {
        Ok(())
    } else {
        Err(Unsupported)
    }
}

/// Splits `key: rest` (a plain or quoted key followed by `:` and a space or the end of
/// the line). `Ok(None)` when the line is not a key line.
fn split_key(text: &str) -> R<Option<(Node<'_>, &str)>> {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b'"' | b'\'') => {
            let (key, rest) = quoted(text)?;
            let rest = rest.trim_start_matches(' ');
            match rest.strip_prefix(':') {
                Some(after) if after.is_empty() || after.starts_with(' ') => {
                    if text.len() - rest.len() > MAX_KEY_LEN {
                        return Err(Unsupported);
                    }
                    Ok(Some((Node::Str(key), after.trim_start_matches(' '))))
                }
                _ => Ok(None),
            }
        }
        Some(
            b'[' | b'{' | b'?' | b'&' | b'*' | b'!' | b'|' | b'>' | b'%' | b'@' | b'`' | b'#'
            | b',' | b']' | b'}',
        ) => Ok(None),
        None => Ok(None),
        Some(_) => {
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b':' if i + 1 == bytes.len() || bytes[i + 1] == b' ' => {
                        let key = text[..i].trim_end_matches(' ');
                        if key.is_empty() || key.len() > MAX_KEY_LEN || key == "<<" {
                            return Err(Unsupported);
                        }
                        let rest = text[i + 1..].trim_start_matches(' ');
                        return Ok(Some((resolve_plain(key)?, rest)));
                    }
                    b'#' if i > 0 && bytes[i - 1] == b' ' => return Ok(None),
                    _ => {}
                }
                i += 1;
            }
            Ok(None)
        }
    }
}

/// A plain scalar in block context, up to a comment.
fn plain_block(text: &str) -> R<Node<'_>> {
    let first = text.as_bytes().first().copied().ok_or(Unsupported)?;
    if matches!(
        first,
        b'&' | b'*'
            | b'!'
            | b'|'
            | b'>'
            | b'%'
            | b'@'
            | b'`'
            | b'#'
            | b','
            | b']'
            | b'}'
            | b'?'
            | b':'
    ) || text == "-"
        || text.starts_with("- ")
    {
        return Err(Unsupported);
    }
    // One pass: a ` #` starts a comment; `: ` (or a final `:`) inside the value would
    // make the full parser refuse the document.
    let bytes = text.as_bytes();
    let mut end = bytes.len();
    for (i, pair) in bytes.windows(2).enumerate() {
        match pair {
            [b' ', b'#'] => {
                end = i;
                break;
            }
            [b':', b' '] => return Err(Unsupported),
            _ => {}
        }
    }
    let value = text[..end].trim_end_matches(' ');
    if value.ends_with(':') {
        return Err(Unsupported);
    }
    resolve_plain(value)
}

/// A quoted scalar at the start of `text`, and what follows its closing quote.
fn quoted(text: &str) -> R<(Cow<'_, str>, &str)> {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b'\'') => {
            let mut owned: Option<String> = None;
            let mut start = 1;
            let mut i = 1;
            while i < bytes.len() {
                if bytes[i] == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        let buf = owned.get_or_insert_with(String::new);
                        buf.push_str(&text[start..=i]);
                        i += 2;
                        start = i;
                        continue;
                    }
                    let value = match owned {
                        Some(mut buf) => {
                            buf.push_str(&text[start..i]);
                            Cow::Owned(buf)
                        }
                        None => Cow::Borrowed(&text[1..i]),
                    };
                    return Ok((value, &text[i + 1..]));
                }
                i += 1;
            }
            Err(Unsupported)
        }
        Some(b'"') => {
            let mut owned: Option<String> = None;
            let mut start = 1;
            let mut i = 1;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        let value = match owned {
                            Some(mut buf) => {
                                buf.push_str(&text[start..i]);
                                Cow::Owned(buf)
                            }
                            None => Cow::Borrowed(&text[1..i]),
                        };
                        return Ok((value, &text[i + 1..]));
                    }
                    b'\\' => {
                        let buf = owned.get_or_insert_with(String::new);
                        buf.push_str(&text[start..i]);
                        let (ch, used) = escape(&bytes[i + 1..])?;
                        buf.push(ch);
                        i += 1 + used;
                        start = i;
                    }
                    _ => i += 1,
                }
            }
            Err(Unsupported)
        }
        _ => Err(Unsupported),
    }
}

/// A double-quoted escape (after the backslash): the character and the bytes used.
fn escape(after: &[u8]) -> R<(char, usize)> {
    let hex = |n: usize| -> R<(char, usize)> {
        let digits = after.get(1..=n).ok_or(Unsupported)?;
        let text = std::str::from_utf8(digits).map_err(|_| Unsupported)?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Unsupported);
        }
        let code = u32::from_str_radix(text, 16).map_err(|_| Unsupported)?;
        let ch = char::from_u32(code).ok_or(Unsupported)?;
        // Keep to what plain documents carry; the full parser decides the rest.
        if ch.is_control() || ch == '\u{feff}' {
            return Err(Unsupported);
        }
        Ok((ch, n + 1))
    };
    match after.first() {
        Some(b'"') => Ok(('"', 1)),
        Some(b'\\') => Ok(('\\', 1)),
        Some(b'/') => Ok(('/', 1)),
        Some(b'n') => Ok(('\n', 1)),
        Some(b't') => Ok(('\t', 1)),
        Some(b'r') => Ok(('\r', 1)),
        Some(b'0') => Ok(('\0', 1)),
        Some(b' ') => Ok((' ', 1)),
        Some(b'x') => hex(2),
        Some(b'u') => hex(4),
        Some(b'U') => hex(8),
        _ => Err(Unsupported),
    }
}

/// A flow collection or scalar at the start of `cursor`, advancing past it.
fn flow<'a>(cursor: &mut &'a str, depth: usize) -> R<Node<'a>> {
    if depth > MAX_DEPTH {
        return Err(Unsupported);
    }
    *cursor = cursor.trim_start_matches(' ');
    match cursor.as_bytes().first() {
        Some(b'[') => {
            *cursor = &cursor[1..];
            let mut items = Vec::new();
            *cursor = cursor.trim_start_matches(' ');
            if let Some(rest) = cursor.strip_prefix(']') {
                *cursor = rest;
                return Ok(Node::Seq(items));
            }
            loop {
                items.push(flow(cursor, depth + 1)?);
                *cursor = cursor.trim_start_matches(' ');
                if let Some(rest) = cursor.strip_prefix(',') {
                    *cursor = rest.trim_start_matches(' ');
                    if cursor.starts_with(']') {
                        return Err(Unsupported);
                    }
                } else if let Some(rest) = cursor.strip_prefix(']') {
                    *cursor = rest;
                    return Ok(Node::Seq(items));
                } else {
                    return Err(Unsupported);
                }
            }
        }
        Some(b'{') => {
            *cursor = &cursor[1..];
            let mut entries: Vec<(Node<'a>, Node<'a>)> = Vec::new();
            *cursor = cursor.trim_start_matches(' ');
            if let Some(rest) = cursor.strip_prefix('}') {
                *cursor = rest;
                return Ok(Node::Map(entries));
            }
            loop {
                let key = flow_scalar(cursor)?;
                if matches!(key, Node::F64(_)) {
                    return Err(Unsupported);
                }
                *cursor = cursor.trim_start_matches(' ');
                let rest = cursor.strip_prefix(':').ok_or(Unsupported)?;
                if !rest.starts_with(' ') {
                    return Err(Unsupported);
                }
                *cursor = rest.trim_start_matches(' ');
                if cursor.starts_with([',', '}']) {
                    return Err(Unsupported);
                }
                let value = flow(cursor, depth + 1)?;
                if entries.iter().any(|(k, _)| *k == key) {
                    return Err(Unsupported);
                }
                entries.push((key, value));
                *cursor = cursor.trim_start_matches(' ');
                if let Some(rest) = cursor.strip_prefix(',') {
                    *cursor = rest.trim_start_matches(' ');
                    if cursor.starts_with('}') {
                        return Err(Unsupported);
                    }
                } else if let Some(rest) = cursor.strip_prefix('}') {
                    *cursor = rest;
                    return Ok(Node::Map(entries));
                } else {
                    return Err(Unsupported);
                }
            }
        }
        _ => flow_scalar(cursor),
    }
}

/// A quoted or plain scalar inside a flow collection, advancing past it.
fn flow_scalar<'a>(cursor: &mut &'a str) -> R<Node<'a>> {
    let text = *cursor;
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b'"' | b'\'') => {
            let (value, rest) = quoted(text)?;
            *cursor = rest;
            return Ok(Node::Str(value));
        }
        Some(
            b'&' | b'*' | b'!' | b'|' | b'>' | b'%' | b'@' | b'`' | b'#' | b',' | b'[' | b']'
            | b'{' | b'}' | b'?' | b':',
        )
        | None => return Err(Unsupported),
        Some(b'-') if bytes.get(1).is_none_or(|b| *b == b' ') => return Err(Unsupported),
        Some(_) => {}
    }
    let end = text
        .find([',', ']', '}', ':', '#', '[', '{'])
        .unwrap_or(text.len());
    match bytes.get(end) {
        // The full parser refuses `:` inside flow plain scalars, reads ` #` as a comment
        // and any bracket as a flow indicator; leave all of these to it. `: ` ends a
        // flow mapping key.
        Some(b':') if bytes.get(end + 1) != Some(&b' ') => return Err(Unsupported),
        Some(b'#' | b'[' | b'{') => return Err(Unsupported),
        _ => {}
    }
    let value = text[..end].trim_end_matches(' ');
    if value.is_empty() {
        return Err(Unsupported);
    }
    *cursor = &text[end..];
    resolve_plain(value)
}

#[cfg(test)]
#[path = "fast_yaml_tests.rs"]
mod tests;
