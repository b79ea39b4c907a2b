//! Attribute bags in the Mixer API's compressed form ([`CompressedAttributes`]).
//!
//! Names and text values are word indexes: `i >= 0` is word `i` of the global
//! dictionary (only the first `global_word_count` words, as many as the client
//! says it knows), `i < 0` is word `-i - 1` of the message's own list. Decoding
//! checks everything a client could get wrong (an index out of range, a name sent
//! twice, a value in the wrong slot for its type, an IP address of 5 bytes, a
//! timestamp out of range) and answers with an error, never a panic.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use mesh_api::mixer::v1::{
    CompressedAttributes, ReportRequest, StringMap as WireStringMap,
    report_request::RepeatedAttributesSemantics,
};

use crate::{AttrName, AttributeTypes, Bag, Value, ValueType, dictionary::GLOBAL_WORDS};

/// Why a compressed bag cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A word index points nowhere.
    #[error(
        "word index {index} is out of range ({global} global words known, {local} in the message)"
    )]
    WordIndex {
        /// The index.
        index: i32,
        /// Global words the client knows.
        global: usize,
        /// Words in the message.
        local: usize,
    },
    /// The client claims to know more global words than exist.
    #[error("global_word_count {0} is larger than the global dictionary ({len} words)", len = GLOBAL_WORDS.len())]
    GlobalWordCount(u32),
    /// An attribute appears twice.
    #[error("attribute {0} is sent more than once")]
    Duplicate(String),
    /// An attribute arrives in a slot its declared type does not use.
    #[error("attribute {name} is {declared} but was sent as {sent}")]
    WrongType {
        /// The attribute.
        name: String,
        /// Its type in the vocabulary.
        declared: ValueType,
        /// The slot it came in.
        sent: &'static str,
    },
    /// An IP address that is neither 4 nor 16 bytes.
    #[error("attribute {name} is an IP address of {len} bytes (4 or 16 expected)")]
    IpLength {
        /// The attribute.
        name: String,
        /// Its length.
        len: usize,
    },
    /// A timestamp or duration that cannot be represented.
    #[error("attribute {name}: {reason}")]
    Time {
        /// The attribute.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// An attribute name held by a bag: a word of the global dictionary, with its
/// slot (no allocation), or a name of its own.
#[derive(Clone)]
enum Name {
    Global(u8, &'static str),
    Owned(Arc<str>),
}

impl Name {
    /// `name` as a bag keeps it: a global word by its slot, anything else copied.
    fn new(name: &str) -> Name {
        match global_slot(name) {
            Some(slot) => Name::Global(slot, GLOBAL_WORDS[usize::from(slot)]),
            None => Name::Owned(Arc::from(name)),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Name::Global(_, s) => s,
            Name::Owned(s) => s,
        }
    }

    fn slot(&self) -> Option<u8> {
        match self {
            Name::Global(slot, _) => Some(*slot),
            Name::Owned(_) => None,
        }
    }
}

/// Slots a bag keeps: one per word of the global dictionary.
const SLOTS: usize = GLOBAL_WORDS.len();
const _: () = assert!(
    SLOTS < u8::MAX as usize,
    "a global word's slot fits in a u8"
);

/// `slots[i]` of a bag: no such attribute.
const ABSENT: u8 = 0;
/// `slots[i]` of a bag: the attribute is at an entry past 253; look for it.
const FAR: u8 = u8::MAX;

/// A decoded bag: attribute name to value.
///
/// Entries are kept in a list; an attribute named by a word of the global
/// dictionary (nearly all of them) is also found through a table indexed by that
/// word, so that a compiled expression ([`AttrName`]) reads it without hashing or
/// comparing its name.
#[derive(Clone)]
pub struct AttributeBag {
    /// Entry position + 1 of each global word's attribute ([`ABSENT`], [`FAR`]).
    slots: [u8; SLOTS],
    entries: Vec<(Name, Value)>,
}

impl Default for AttributeBag {
    fn default() -> Self {
        Self {
            slots: [ABSENT; SLOTS],
            entries: Vec::new(),
        }
    }
}

impl PartialEq for AttributeBag {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .all(|(n, v)| other.value(n.as_str()) == Some(v))
    }
}

impl fmt::Debug for AttributeBag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Sorted<'a>(&'a AttributeBag);
        impl fmt::Debug for Sorted<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map().entries(self.0.iter()).finish()
            }
        }
        f.debug_struct("AttributeBag")
            .field("values", &Sorted(self))
            .finish()
    }
}

impl AttributeBag {
    /// An empty bag.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty bag with room for `n` attributes.
    fn with_capacity(n: usize) -> Self {
        Self {
            slots: [ABSENT; SLOTS],
            entries: Vec::with_capacity(n),
        }
    }

    /// Sets `name`.
    pub fn insert(&mut self, name: &str, value: Value) {
        self.put(Name::new(name), value);
    }

    /// Sets `name`; the value it replaces, if any.
    fn put(&mut self, name: Name, value: Value) -> Option<Value> {
        if let Some(i) = self.position(&name) {
            return Some(std::mem::replace(&mut self.entries[i].1, value));
        }
        if let Some(slot) = name.slot() {
            self.slots[usize::from(slot)] = u8::try_from(self.entries.len() + 1).unwrap_or(FAR);
        }
        self.entries.push((name, value));
        None
    }

    /// Where `name` is in the list.
    fn position(&self, name: &Name) -> Option<usize> {
        match name.slot() {
            Some(slot) => self.slot_position(slot),
            None => {
                let text = name.as_str();
                self.entries.iter().position(|(n, _)| n.as_str() == text)
            }
        }
    }

    /// Where the attribute of global word `slot` is in the list.
    fn slot_position(&self, slot: u8) -> Option<usize> {
        match self.slots[usize::from(slot)] {
            ABSENT => None,
            FAR => self
                .entries
                .iter()
                .position(|(n, _)| n.slot() == Some(slot)),
            p => Some(usize::from(p) - 1),
        }
    }

    /// Every attribute, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        let mut all: Vec<(&str, &Value)> =
            self.entries.iter().map(|(n, v)| (n.as_str(), v)).collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
    }

    /// How many attributes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Applies `delta`'s attributes over this bag's (Report's delta encoding).
    pub fn merge(&mut self, delta: AttributeBag) {
        for (name, value) in delta.entries {
            self.put(name, value);
        }
    }

    /// The value of `name`, borrowed.
    pub fn value(&self, name: &str) -> Option<&Value> {
        let at = match global_slot(name) {
            Some(slot) => self.slot_position(slot),
            None => self.entries.iter().position(|(n, _)| n.as_str() == name),
        };
        at.map(|i| &self.entries[i].1)
    }

    /// The value of a compiled attribute name, borrowed.
    pub fn attr_value(&self, attr: &AttrName) -> Option<&Value> {
        let at = match attr.slot() {
            Some(slot) => self.slot_position(slot),
            None => {
                let text = attr.as_str();
                self.entries.iter().position(|(n, _)| n.as_str() == text)
            }
        };
        at.map(|i| &self.entries[i].1)
    }
}

impl Bag for AttributeBag {
    fn get(&self, name: &str) -> Option<Value> {
        self.value(name).cloned()
    }

    fn get_attr(&self, attr: &AttrName) -> Option<Value> {
        self.attr_value(attr).cloned()
    }
}

/// The slot of a global word: the position of its first occurrence in the
/// dictionary.
fn global_slot(word: &str) -> Option<u8> {
    crate::dictionary::global_index(word).and_then(|i| u8::try_from(i).ok())
}

/// The slot of the global word at wire index `index` (a word listed twice in the
/// dictionary has the slot of its first occurrence).
fn slot_of_index(index: usize) -> Option<u8> {
    static SLOT_OF: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        GLOBAL_WORDS
            .iter()
            .enumerate()
            .map(|(i, w)| global_slot(w).unwrap_or(u8::try_from(i).unwrap_or(FAR)))
            .collect()
    });
    SLOT_OF.get(index).copied()
}

/// A word of a message: from the global dictionary, or from the message's list.
#[derive(Clone, Copy)]
enum Word<'a> {
    /// Wire index and text.
    Global(usize, &'static str),
    Local(&'a str),
}

impl<'a> Word<'a> {
    fn as_str(self) -> &'a str {
        match self {
            Word::Global(_, s) | Word::Local(s) => s,
        }
    }

    /// The word as a bag's name; only a name of the message's own list that is
    /// not a global word is copied.
    fn to_name(self) -> Name {
        match self {
            Word::Global(i, s) => match slot_of_index(i) {
                Some(slot) => Name::Global(slot, s),
                None => Name::Owned(Arc::from(s)),
            },
            Word::Local(s) => Name::new(s),
        }
    }
}

/// A message's own list of words, each borrowed for `'t`.
trait WordList<'t> {
    fn word(&self, i: usize) -> Option<&'t str>;
    fn count(&self) -> usize;
}

/// The words of a decoded message.
impl<'t> WordList<'t> for &'t [String] {
    fn word(&self, i: usize) -> Option<&'t str> {
        self.get(i).map(String::as_str)
    }

    fn count(&self) -> usize {
        self.len()
    }
}

/// Words read in place: slices of the request's bytes.
impl<'t> WordList<'t> for &[&'t str] {
    fn word(&self, i: usize) -> Option<&'t str> {
        self.get(i).copied()
    }

    fn count(&self) -> usize {
        self.len()
    }
}

/// The words a message's indexes point at: the first `global_word_count` global
/// words, and the message's own list.
struct Words<L> {
    global: &'static [&'static str],
    local: L,
}

impl<'t, L: WordList<'t>> Words<L> {
    fn new(local: L, global_word_count: u32) -> Result<Self, WireError> {
        let count = usize::try_from(global_word_count).unwrap_or(usize::MAX);
        let global = GLOBAL_WORDS
            .get(..count)
            .ok_or(WireError::GlobalWordCount(global_word_count))?;
        Ok(Self { global, local })
    }

    fn get(&self, index: i32) -> Result<Word<'t>, WireError> {
        let found = if index >= 0 {
            usize::try_from(index)
                .ok()
                .and_then(|i| self.global.get(i).map(|w| Word::Global(i, w)))
        } else {
            // -1 is local[0]; computed in i64 so i32::MIN cannot overflow.
            usize::try_from(-(i64::from(index)) - 1)
                .ok()
                .and_then(|i| self.local.word(i))
                .map(Word::Local)
        };
        found.ok_or(WireError::WordIndex {
            index,
            global: self.global.len(),
            local: self.local.count(),
        })
    }

    /// The text of word `index`.
    fn text(&self, index: i32) -> Result<&'t str, WireError> {
        self.get(index).map(Word::as_str)
    }
}

/// Text values shared by the bags of one Report: a word's text is copied once,
/// however many requests of the batch carry it.
#[derive(Default)]
struct Texts<'a> {
    known: HashMap<&'a str, Arc<str>, foldhash::fast::RandomState>,
}

impl<'a> Texts<'a> {
    fn get(&mut self, text: &'a str) -> Value {
        Value::String(
            self.known
                .entry(text)
                .or_insert_with(|| Arc::from(text))
                .clone(),
        )
    }
}

/// One attribute as the wire carries it: a map of the message (its slot) and the
/// value found there, before names and text are looked up.
enum Slot<'m> {
    Str(i32),
    Int64(i64),
    Double(f64),
    Bool(bool),
    /// Seconds and nanos.
    Timestamp(i64, i32),
    /// Seconds and nanos.
    Duration(i64, i32),
    Bytes(&'m [u8]),
    /// Key and value word indexes, in key order, each key once.
    StringMap(Vec<(i32, i32)>),
}

impl Slot<'_> {
    fn name(&self) -> &'static str {
        match self {
            Slot::Str(_) => "string",
            Slot::Int64(_) => "int64",
            Slot::Double(_) => "double",
            Slot::Bool(_) => "bool",
            Slot::Timestamp(..) => "timestamp",
            Slot::Duration(..) => "duration",
            Slot::Bytes(_) => "bytes",
            Slot::StringMap(_) => "string map",
        }
    }
}

/// Builds a bag from its attributes in wire order (the maps in field order, each
/// in key order, a key once per map): names and text looked up in `words`, each
/// value checked against its declared type, a name given twice refused.
fn build<'a, 't, L: WordList<'t>>(
    entries: impl Iterator<Item = (i32, Slot<'a>)>,
    capacity: usize,
    words: &Words<L>,
    types: &dyn AttributeTypes,
    texts: &mut Texts<'t>,
) -> Result<AttributeBag, WireError> {
    let mut bag = AttributeBag::with_capacity(capacity);
    for (key, slot) in entries {
        let name = words.get(key)?.to_name();
        let declared = match name.slot() {
            Some(s) => types.type_of_slot(s, name.as_str()),
            None => types.type_of(name.as_str()),
        };
        let sent = slot.name();
        let value = match slot {
            Slot::Str(v) => texts.get(words.text(v)?),
            Slot::Int64(v) => Value::Int64(v),
            Slot::Double(v) => Value::Double(v),
            Slot::Bool(v) => Value::Bool(v),
            Slot::Timestamp(secs, nanos) => {
                Value::Timestamp(timestamp_from(name.as_str(), secs, nanos)?)
            }
            Slot::Duration(secs, nanos) => {
                Value::Duration(duration_from(name.as_str(), secs, nanos)?)
            }
            // An address is built straight from the slice, without a copy of it.
            Slot::Bytes(b) if declared == Some(ValueType::IpAddress) => {
                Value::Ip(ip_from(name.as_str(), b)?)
            }
            Slot::Bytes(b) => Value::Bytes(Arc::from(b)),
            Slot::StringMap(pairs) => {
                let mut map = BTreeMap::new();
                for (k, v) in pairs {
                    map.insert(words.text(k)?.to_string(), words.text(v)?.to_string());
                }
                Value::StringMap(Arc::new(map))
            }
        };
        let value = match (declared, value) {
            (None, v) => v,
            (Some(declared), v) if accepts(declared, &v) => v,
            (Some(declared), _) => {
                return Err(WireError::WrongType {
                    name: name.as_str().to_string(),
                    declared,
                    sent,
                });
            }
        };
        if bag.position(&name).is_some() {
            return Err(WireError::Duplicate(name.as_str().to_string()));
        }
        bag.put(name, value);
    }
    Ok(bag)
}

/// Decodes a compressed bag; `types` says what each known name must be (unknown
/// names are kept with the type of their slot). `default_words` stand in for the
/// message's own list when it has none (Report's shared dictionary).
pub fn decode(
    msg: &CompressedAttributes,
    global_word_count: u32,
    default_words: &[String],
    types: &dyn AttributeTypes,
) -> Result<AttributeBag, WireError> {
    decode_with(
        msg,
        global_word_count,
        default_words,
        types,
        &mut Texts::default(),
    )
}

fn decode_with<'a>(
    msg: &'a CompressedAttributes,
    global_word_count: u32,
    default_words: &'a [String],
    types: &dyn AttributeTypes,
    texts: &mut Texts<'a>,
) -> Result<AttributeBag, WireError> {
    let local = if msg.words.is_empty() {
        default_words
    } else {
        &msg.words
    };
    let words = Words::new(local, global_word_count)?;
    let count = msg.strings.len()
        + msg.int64s.len()
        + msg.doubles.len()
        + msg.bools.len()
        + msg.timestamps.len()
        + msg.durations.len()
        + msg.bytes.len()
        + msg.string_maps.len();
    let entries = msg
        .strings
        .iter()
        .map(|(k, v)| (*k, Slot::Str(*v)))
        .chain(msg.int64s.iter().map(|(k, v)| (*k, Slot::Int64(*v))))
        .chain(msg.doubles.iter().map(|(k, v)| (*k, Slot::Double(*v))))
        .chain(msg.bools.iter().map(|(k, v)| (*k, Slot::Bool(*v))))
        .chain(
            msg.timestamps
                .iter()
                .map(|(k, t)| (*k, Slot::Timestamp(t.seconds, t.nanos))),
        )
        .chain(
            msg.durations
                .iter()
                .map(|(k, d)| (*k, Slot::Duration(d.seconds, d.nanos))),
        )
        .chain(
            msg.bytes
                .iter()
                .map(|(k, b)| (*k, Slot::Bytes(b.as_slice()))),
        )
        .chain(msg.string_maps.iter().map(|(k, m)| {
            (
                *k,
                Slot::StringMap(m.entries.iter().map(|(a, b)| (*a, *b)).collect()),
            )
        }));
    build(entries, count, &words, types, texts)
}

/// Decodes every bag of a Report. With delta encoding (the default), each bag
/// holds what differs from the one before it, so bag `i` is bags `0..=i` merged.
pub fn decode_report(
    req: &ReportRequest,
    types: &dyn AttributeTypes,
) -> Result<Vec<AttributeBag>, ReportError> {
    let delta = req.repeated_attributes_semantics() == RepeatedAttributesSemantics::DeltaEncoding;
    let mut texts = Texts::default();
    let mut out: Vec<AttributeBag> = Vec::with_capacity(req.attributes.len());
    for (i, msg) in req.attributes.iter().enumerate() {
        let bag = decode_with(
            msg,
            req.global_word_count,
            &req.default_words,
            types,
            &mut texts,
        )
        .map_err(|source| ReportError { index: i, source })?;
        push_bag(&mut out, bag, delta);
    }
    Ok(out)
}

/// Adds a Report's next bag: with delta encoding, over a copy of the one before.
fn push_bag(out: &mut Vec<AttributeBag>, bag: AttributeBag, delta: bool) {
    let bag = match (delta, out.last()) {
        (true, Some(previous)) => {
            let mut merged = previous.clone();
            merged.merge(bag);
            merged
        }
        _ => bag,
    };
    out.push(bag);
}

/// A Report bag that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attribute bag {index}: {source}")]
pub struct ReportError {
    /// Its position in the request.
    pub index: usize,
    /// Why.
    pub source: WireError,
}

/// Whether a value decoded from its slot is of a declared type.
fn accepts(declared: ValueType, v: &Value) -> bool {
    match v {
        Value::String(_) => declared.is_text(),
        other => other.value_type() == declared,
    }
}

fn ip_from(name: &str, b: &[u8]) -> Result<IpAddr, WireError> {
    match b.len() {
        4 => {
            let mut a = [0u8; 4];
            a.copy_from_slice(b);
            Ok(IpAddr::from(a))
        }
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            Ok(IpAddr::from(a))
        }
        len => Err(WireError::IpLength {
            name: name.to_string(),
            len,
        }),
    }
}

fn timestamp_from(name: &str, seconds: i64, nanos: i32) -> Result<SystemTime, WireError> {
    let bad = |reason| WireError::Time {
        name: name.to_string(),
        reason,
    };
    let nanos = u32::try_from(nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or(bad("timestamp nanos out of range"))?;
    let offset = Duration::new(seconds.unsigned_abs(), 0);
    let base = if seconds >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    base.and_then(|b| b.checked_add(Duration::from_nanos(u64::from(nanos))))
        .ok_or(bad("timestamp out of range"))
}

fn duration_from(name: &str, seconds: i64, nanos: i32) -> Result<Duration, WireError> {
    let bad = |reason| WireError::Time {
        name: name.to_string(),
        reason,
    };
    let secs = u64::try_from(seconds).map_err(|_| bad("negative duration"))?;
    let nanos = u32::try_from(nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or(bad("duration nanos out of range"))?;
    Ok(Duration::new(secs, nanos))
}

/// Encodes `bag` as a client would: names and text found among the first
/// `global_word_count` global words by index, the rest in the message's own list.
pub fn encode(bag: &AttributeBag, global_word_count: u32) -> CompressedAttributes {
    let known = i64::from(global_word_count);
    let mut msg = CompressedAttributes::default();
    let mut local: BTreeMap<String, i32> = BTreeMap::new();
    let mut index = |msg: &mut CompressedAttributes, word: &str| -> i32 {
        if let Some(i) = crate::dictionary::global_index(word).filter(|i| i64::from(*i) < known) {
            return i;
        }
        if let Some(i) = local.get(word) {
            return *i;
        }
        msg.words.push(word.to_string());
        let i = -i32::try_from(msg.words.len()).unwrap_or(i32::MAX);
        local.insert(word.to_string(), i);
        i
    };
    for (name, value) in bag.iter() {
        let k = index(&mut msg, name);
        match value {
            Value::String(s) => {
                let v = index(&mut msg, s);
                msg.strings.insert(k, v);
            }
            Value::Int64(v) => {
                msg.int64s.insert(k, *v);
            }
            Value::Double(v) => {
                msg.doubles.insert(k, *v);
            }
            Value::Bool(v) => {
                msg.bools.insert(k, *v);
            }
            Value::Timestamp(t) => {
                let (seconds, nanos) = match t.duration_since(UNIX_EPOCH) {
                    Ok(d) => (
                        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                        i32::try_from(d.subsec_nanos()).unwrap_or(0),
                    ),
                    Err(e) => {
                        let d = e.duration();
                        let (s, n) = (d.as_secs(), d.subsec_nanos());
                        // Whole seconds below the epoch, then nanos forward.
                        if n == 0 {
                            (-i64::try_from(s).unwrap_or(i64::MAX), 0)
                        } else {
                            (
                                -i64::try_from(s).unwrap_or(i64::MAX) - 1,
                                i32::try_from(1_000_000_000 - n).unwrap_or(0),
                            )
                        }
                    }
                };
                msg.timestamps
                    .insert(k, prost_types::Timestamp { seconds, nanos });
            }
            Value::Duration(d) => {
                msg.durations.insert(
                    k,
                    prost_types::Duration {
                        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
                    },
                );
            }
            Value::Bytes(b) => {
                msg.bytes.insert(k, b.to_vec());
            }
            Value::Ip(ip) => {
                let b = match ip {
                    IpAddr::V4(a) => a.octets().to_vec(),
                    IpAddr::V6(a) => a.octets().to_vec(),
                };
                msg.bytes.insert(k, b);
            }
            Value::StringMap(m) => {
                let mut entries = BTreeMap::new();
                for (mk, mv) in m.iter() {
                    let mk = index(&mut msg, mk);
                    let mv = index(&mut msg, mv);
                    entries.insert(mk, mv);
                }
                msg.string_maps.insert(k, WireStringMap { entries });
            }
        }
    }
    msg
}

#[path = "wire_raw.rs"]
pub mod raw;

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
