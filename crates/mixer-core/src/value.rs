//! Attribute values and their types.

use std::{
    collections::BTreeMap,
    fmt,
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

/// The type of an attribute (Istio's `ValueType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValueType {
    /// UTF-8 text.
    String,
    /// A 64-bit signed integer.
    Int64,
    /// A 64-bit float.
    Double,
    /// true or false.
    Bool,
    /// A point in time.
    Timestamp,
    /// A length of time.
    Duration,
    /// Raw bytes.
    Bytes,
    /// An IPv4 or IPv6 address.
    IpAddress,
    /// An email address (text, checked).
    EmailAddress,
    /// A DNS name (text, checked).
    DnsName,
    /// A URI (text, checked).
    Uri,
    /// A map of text to text (headers, labels).
    StringMap,
}

impl ValueType {
    /// The name used in manifests and messages (`STRING`, `INT64`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ValueType::String => "STRING",
            ValueType::Int64 => "INT64",
            ValueType::Double => "DOUBLE",
            ValueType::Bool => "BOOL",
            ValueType::Timestamp => "TIMESTAMP",
            ValueType::Duration => "DURATION",
            ValueType::Bytes => "BYTES",
            ValueType::IpAddress => "IP_ADDRESS",
            ValueType::EmailAddress => "EMAIL_ADDRESS",
            ValueType::DnsName => "DNS_NAME",
            ValueType::Uri => "URI",
            ValueType::StringMap => "STRING_MAP",
        }
    }

    /// The type named `name` (as [`ValueType::name`] spells it).
    pub fn parse(name: &str) -> Option<ValueType> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Every type.
    pub const ALL: [ValueType; 12] = [
        ValueType::String,
        ValueType::Int64,
        ValueType::Double,
        ValueType::Bool,
        ValueType::Timestamp,
        ValueType::Duration,
        ValueType::Bytes,
        ValueType::IpAddress,
        ValueType::EmailAddress,
        ValueType::DnsName,
        ValueType::Uri,
        ValueType::StringMap,
    ];

    /// Whether values of this type travel as text on the wire (strings, emails,
    /// DNS names and URIs share the wire's string slot).
    pub fn is_text(self) -> bool {
        matches!(
            self,
            ValueType::String | ValueType::EmailAddress | ValueType::DnsName | ValueType::Uri
        )
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text (also emails, DNS names and URIs).
    String(Arc<str>),
    /// An integer.
    Int64(i64),
    /// A float.
    Double(f64),
    /// A boolean.
    Bool(bool),
    /// A point in time.
    Timestamp(SystemTime),
    /// A length of time.
    Duration(Duration),
    /// Raw bytes.
    Bytes(Arc<[u8]>),
    /// An IP address.
    Ip(IpAddr),
    /// A map of text to text.
    StringMap(Arc<BTreeMap<String, String>>),
}

impl Value {
    /// The type of this value; text values report [`ValueType::String`].
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::String(_) => ValueType::String,
            Value::Int64(_) => ValueType::Int64,
            Value::Double(_) => ValueType::Double,
            Value::Bool(_) => ValueType::Bool,
            Value::Timestamp(_) => ValueType::Timestamp,
            Value::Duration(_) => ValueType::Duration,
            Value::Bytes(_) => ValueType::Bytes,
            Value::Ip(_) => ValueType::IpAddress,
            Value::StringMap(_) => ValueType::StringMap,
        }
    }

    /// A STRING_MAP value from key/value pairs.
    pub fn string_map<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Value {
        Value::StringMap(Arc::new(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        ))
    }

    /// The text of a text value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(Arc::from(s))
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int64(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

/// What a vocabulary says about attribute names: their types.
pub trait AttributeTypes {
    /// The type of `name`, or `None` if the vocabulary has no such attribute.
    fn type_of(&self, name: &str) -> Option<ValueType>;

    /// The type of `name`, the global dictionary's word at `slot` (the position of
    /// its first occurrence); vocabularies that index those say so faster.
    fn type_of_slot(&self, slot: u8, name: &str) -> Option<ValueType> {
        let _ = slot;
        self.type_of(name)
    }
}

impl AttributeTypes for BTreeMap<String, ValueType> {
    fn type_of(&self, name: &str) -> Option<ValueType> {
        self.get(name).copied()
    }
}

/// An attribute name as compiled expressions hold it: its text, and, when it is
/// a word of the global dictionary, that word's position, by which a decoded bag
/// finds it without hashing or comparing the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrName {
    name: Arc<str>,
    slot: Option<u8>,
}

impl AttrName {
    /// The compiled form of `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            slot: crate::dictionary::global_index(name).and_then(|i| u8::try_from(i).ok()),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The name, shared.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Its global word's slot, if it is one.
    pub(crate) fn slot(&self) -> Option<u8> {
        self.slot
    }
}

impl fmt::Display for AttrName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The attributes of one request, read by name.
pub trait Bag {
    /// The value of `name`, if present.
    fn get(&self, name: &str) -> Option<Value>;

    /// The value of a compiled name, if present; bags that can find it faster
    /// than by its text say how.
    fn get_attr(&self, attr: &AttrName) -> Option<Value> {
        self.get(attr.as_str())
    }
}

/// The namespace a request goes to: `destination.namespace`, else the namespace
/// part of `destination.service.host` (`name.namespace...`). Rules of a
/// namespace other than the root one apply to the requests it gives.
pub fn destination_namespace(bag: &dyn Bag) -> Option<String> {
    static NAMESPACE: std::sync::LazyLock<AttrName> =
        std::sync::LazyLock::new(|| AttrName::new("destination.namespace"));
    static HOST: std::sync::LazyLock<AttrName> =
        std::sync::LazyLock::new(|| AttrName::new("destination.service.host"));
    let text = |name: &AttrName| {
        bag.get_attr(name)
            .and_then(|v| v.as_str().map(str::to_string))
    };
    text(&NAMESPACE).or_else(|| text(&HOST).and_then(|h| h.split('.').nth(1).map(str::to_string)))
}

impl Bag for BTreeMap<String, Value> {
    fn get(&self, name: &str) -> Option<Value> {
        BTreeMap::get(self, name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_round_trip() {
        for t in ValueType::ALL {
            assert_eq!(ValueType::parse(t.name()), Some(t));
        }
        assert_eq!(ValueType::parse("string"), None);
        assert!(ValueType::Uri.is_text() && !ValueType::StringMap.is_text());
    }
}
