//! A parsed YAML document as a tree of resolved nodes, and a serde `Deserializer`
//! over it that records the field path of any error.
//!
//! Both parsers produce this tree: the fast block-YAML reader ([`super::fast_yaml`])
//! borrows scalars from the input, and the full YAML parser's output is converted
//! into it ([`Node::from_yaml`]). Typed specs are then deserialized from the tree the
//! same way whichever parser read the document. Plain scalars are resolved as the full
//! parser resolves them (YAML 1.2 core schema: `null`, `true`, integers, floats,
//! otherwise strings), and a mapping or sequence may be null (read as empty).

use std::{borrow::Cow, fmt};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};

/// One node of a YAML document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node<'a> {
    /// `null`, `~` or nothing.
    Null,
    /// A boolean.
    Bool(bool),
    /// A non-negative integer.
    U64(u64),
    /// A negative integer.
    I64(i64),
    /// A float.
    F64(f64),
    /// A string.
    Str(Cow<'a, str>),
    /// A sequence.
    Seq(Vec<Node<'a>>),
    /// A mapping, in document order.
    Map(Vec<(Node<'a>, Node<'a>)>),
}

impl<'a> Node<'a> {
    /// Converts the full YAML parser's value (tags are dropped).
    pub(crate) fn from_yaml(value: serde_norway::Value) -> Node<'static> {
        use serde_norway::Value;
        match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    Node::U64(u)
                } else if let Some(i) = n.as_i64() {
                    Node::I64(i)
                } else {
                    Node::F64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => Node::Str(Cow::Owned(s)),
            Value::Sequence(items) => Node::Seq(items.into_iter().map(Node::from_yaml).collect()),
            Value::Mapping(map) => Node::Map(
                map.into_iter()
                    .map(|(k, v)| (Node::from_yaml(k), Node::from_yaml(v)))
                    .collect(),
            ),
            Value::Tagged(tagged) => Node::from_yaml(tagged.value),
        }
    }

    /// The string, if this is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Removes and returns the value of the string key `key` of a mapping.
    pub(crate) fn take(&mut self, key: &str) -> Option<Node<'a>> {
        let Node::Map(entries) = self else {
            return None;
        };
        let at = entries.iter().position(|(k, _)| k.as_str() == Some(key))?;
        Some(entries.remove(at).1)
    }

    fn unexpected(&self) -> Unexpected<'_> {
        match self {
            Node::Null => Unexpected::Unit,
            Node::Bool(b) => Unexpected::Bool(*b),
            Node::U64(u) => Unexpected::Unsigned(*u),
            Node::I64(i) => Unexpected::Signed(*i),
            Node::F64(f) => Unexpected::Float(*f),
            Node::Str(s) => Unexpected::Str(s),
            Node::Seq(_) => Unexpected::Seq,
            Node::Map(_) => Unexpected::Map,
        }
    }

    /// The text of a scalar used as a path segment.
    fn key_text(&self) -> String {
        match self {
            Node::Null => "~".to_string(),
            Node::Bool(b) => b.to_string(),
            Node::U64(u) => u.to_string(),
            Node::I64(i) => i.to_string(),
            Node::F64(f) => f.to_string(),
            Node::Str(s) => s.to_string(),
            Node::Seq(_) | Node::Map(_) => "?".to_string(),
        }
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// A deserialization error with the path of the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeError {
    /// Innermost segment first.
    path: Vec<Segment>,
    message: String,
}

impl NodeError {
    fn within(mut self, segment: Segment) -> Self {
        self.path.push(segment);
        self
    }

    /// The field path below `root`, e.g. `spec.http[0].route`.
    pub(crate) fn field(&self, root: &str) -> String {
        let mut out = String::from(root);
        for seg in self.path.iter().rev() {
            match seg {
                Segment::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Segment::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
        out
    }

    /// What is wrong.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NodeError {}

impl de::Error for NodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        NodeError {
            path: Vec::new(),
            message: msg.to_string(),
        }
    }
}

/// Deserializes from a borrowed node.
pub(crate) struct NodeDe<'n, 'de>(pub(crate) &'n Node<'de>);

impl<'n, 'de> NodeDe<'n, 'de> {
    fn invalid<V: Visitor<'de>>(&self, visitor: &V) -> NodeError {
        de::Error::invalid_type(self.0.unexpected(), visitor)
    }

    fn visit_str<V: Visitor<'de>>(s: &'n Cow<'de, str>, visitor: V) -> Result<V::Value, NodeError> {
        match s {
            Cow::Borrowed(b) => visitor.visit_borrowed_str(b),
            Cow::Owned(o) => visitor.visit_str(o),
        }
    }

    fn number<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        match self.0 {
            Node::U64(u) => visitor.visit_u64(*u),
            Node::I64(i) => visitor.visit_i64(*i),
            Node::F64(f) => visitor.visit_f64(*f),
            _ => Err(self.invalid(&visitor)),
        }
    }
}

macro_rules! numbers {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
                self.number(visitor)
            }
        )*
    };
}

impl<'n, 'de> Deserializer<'de> for NodeDe<'n, 'de> {
    type Error = NodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        match self.0 {
            Node::Null => visitor.visit_unit(),
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::U64(u) => visitor.visit_u64(*u),
            Node::I64(i) => visitor.visit_i64(*i),
            Node::F64(f) => visitor.visit_f64(*f),
            Node::Str(s) => Self::visit_str(s, visitor),
            Node::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter(),
                index: 0,
            }),
            Node::Map(entries) => visitor.visit_map(MapDe {
                entries: entries.iter(),
                value: None,
            }),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        match self.0 {
            Node::Bool(b) => visitor.visit_bool(*b),
            _ => Err(self.invalid(&visitor)),
        }
    }

    numbers! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        match self.0 {
            Node::Str(s) => Self::visit_str(s, visitor),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        match self.0 {
            Node::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        match self.0 {
            Node::Null => visitor.visit_unit(),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, NodeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, NodeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        match self.0 {
            Node::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter(),
                index: 0,
            }),
            Node::Null => visitor.visit_seq(SeqDe {
                items: [].iter(),
                index: 0,
            }),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, NodeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, NodeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        match self.0 {
            Node::Map(entries) => visitor.visit_map(MapDe {
                entries: entries.iter(),
                value: None,
            }),
            Node::Null => visitor.visit_map(MapDe {
                entries: [].iter(),
                value: None,
            }),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, NodeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, NodeError> {
        match self.0 {
            Node::Str(Cow::Borrowed(s)) => {
                visitor.visit_enum(de::value::BorrowedStrDeserializer::<NodeError>::new(s))
            }
            Node::Str(Cow::Owned(s)) => {
                visitor.visit_enum(de::value::StrDeserializer::<NodeError>::new(s))
            }
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        visitor.visit_unit()
    }
}

struct SeqDe<'n, 'de> {
    items: std::slice::Iter<'n, Node<'de>>,
    index: usize,
}

impl<'n, 'de> SeqAccess<'de> for SeqDe<'n, 'de> {
    type Error = NodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, NodeError> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(NodeDe(item))
            .map(Some)
            .map_err(|e| e.within(Segment::Index(index)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'n, 'de> {
    entries: std::slice::Iter<'n, (Node<'de>, Node<'de>)>,
    value: Option<(&'n Node<'de>, &'n Node<'de>)>,
}

impl<'n, 'de> MapAccess<'de> for MapDe<'n, 'de> {
    type Error = NodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, NodeError> {
        let Some((k, v)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((k, v));
        seed.deserialize(NodeDe(k))
            .map(Some)
            .map_err(|e| e.within(Segment::Key(k.key_text())))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, NodeError> {
        match self.value.take() {
            Some((k, v)) => seed
                .deserialize(NodeDe(v))
                .map_err(|e| e.within(Segment::Key(k.key_text()))),
            None => Err(de::Error::custom("value requested before key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// Deserializes a `T` from a node, reporting errors with their path.
pub(crate) fn from_node<'de, T: serde::Deserialize<'de>>(node: &Node<'de>) -> Result<T, NodeError> {
    T::deserialize(NodeDe(node))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        n: u32,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        mode: Option<Mode>,
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    enum Mode {
        On,
        Off,
    }

    fn s(text: &str) -> Node<'_> {
        Node::Str(Cow::Borrowed(text))
    }

    #[test]
    fn deserializes_structs_and_reports_paths() {
        let node = Node::Map(vec![
            (s("n"), Node::U64(3)),
            (
                s("tags"),
                Node::Seq(vec![s("a"), Node::Str(Cow::Owned("b".into()))]),
            ),
            (s("mode"), Node::Str(Cow::Owned("ON".into()))),
        ]);
        let v: Inner = from_node(&node).unwrap();
        assert_eq!(
            v,
            Inner {
                n: 3,
                tags: vec!["a".into(), "b".into()],
                mode: Some(Mode::On)
            }
        );

        let bad = Node::Map(vec![
            (s("n"), Node::U64(3)),
            (s("tags"), Node::Seq(vec![s("a"), Node::U64(1)])),
        ]);
        let err = from_node::<Inner>(&bad).unwrap_err();
        assert_eq!(err.field("spec"), "spec.tags[1]");
        assert!(err.message().contains("invalid type: integer `1`"), "{err}");

        let unknown = Node::Map(vec![(s("n"), Node::U64(1)), (s("nn"), Node::Null)]);
        let err = from_node::<Inner>(&unknown).unwrap_err();
        assert_eq!(err.field("spec"), "spec.nn");

        let bad_enum = Node::Map(vec![(s("n"), Node::U64(1)), (s("mode"), s("MAYBE"))]);
        let err = from_node::<Inner>(&bad_enum).unwrap_err();
        assert_eq!(err.field("spec"), "spec.mode");
        assert!(err.message().contains("ON"), "{err}");

        let negative = Node::Map(vec![(s("n"), Node::I64(-1))]);
        assert_eq!(from_node::<Inner>(&negative).unwrap_err().field("x"), "x.n");
    }

    #[test]
    fn null_collections_are_empty() {
        let v: Vec<String> = from_node(&Node::Null).unwrap();
        assert!(v.is_empty());
        let m: BTreeMap<String, String> = from_node(&Node::Null).unwrap();
        assert!(m.is_empty());
        let o: Option<u32> = from_node(&Node::Null).unwrap();
        assert_eq!(o, None);
    }

    #[test]
    fn converts_full_parser_values() {
        let value: serde_norway::Value =
            serde_norway::from_str("a: [1, -2, 1.5, x, ~, true]\n").unwrap();
        let node = Node::from_yaml(value);
        assert_eq!(
            node,
            Node::Map(vec![(
                Node::Str(Cow::Owned("a".into())),
                Node::Seq(vec![
                    Node::U64(1),
                    Node::I64(-2),
                    Node::F64(1.5),
                    Node::Str(Cow::Owned("x".into())),
                    Node::Null,
                    Node::Bool(true),
                ])
            )])
        );
    }
}
