//! Reports read in place from their protobuf bytes.
//!
//! [`decode_report`] gives the same bags (or the same refusal) as
//! [`super::decode_report`] does for the message prost decodes from those bytes,
//! without building that message first: no map, vector or string of it is
//! allocated; names and text are looked up in slices of the request, and a text
//! value is copied once per Report. Protobuf's rules are kept: fields in any
//! order, unknown fields skipped, in a map the last entry of a key winning, a
//! missing key or value being its default.

use super::{AttributeBag, ReportError, Slot, Texts, WireError, Words, build, push_bag};
use crate::AttributeTypes;

/// Why a Report's bytes cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RawReportError {
    /// Not a well-formed ReportRequest.
    #[error("malformed ReportRequest: {0}")]
    Protobuf(&'static str),
    /// A bag that does not decode.
    #[error(transparent)]
    Bag(#[from] ReportError),
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// A protobuf reader over a slice.
#[derive(Clone, Copy)]
struct Reader<'a> {
    buf: &'a [u8],
}

type Read<T> = Result<T, RawReportError>;

fn malformed<T>(why: &'static str) -> Read<T> {
    Err(RawReportError::Protobuf(why))
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn varint(&mut self) -> Read<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some((&b, rest)) = self.buf.split_first() else {
                return malformed("truncated varint");
            };
            self.buf = rest;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                // The tenth byte may only carry the top bit.
                if i == 9 && b > 1 {
                    return malformed("varint too long");
                }
                return Ok(value);
            }
        }
        malformed("varint too long")
    }

    /// A field's number and wire type.
    fn key(&mut self) -> Read<(u32, u8)> {
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).unwrap_or(0);
        if field == 0 {
            return malformed("field number 0");
        }
        Ok((field, (key & 7) as u8))
    }

    fn take(&mut self, n: usize) -> Read<&'a [u8]> {
        if n > self.buf.len() {
            return malformed("truncated field");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn len_delimited(&mut self) -> Read<&'a [u8]> {
        let n = self.varint()?;
        self.take(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn fixed64(&mut self) -> Read<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn skip(&mut self, wire_type: u8) -> Read<()> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.take(4).map(drop),
            _ => malformed("unsupported wire type"),
        }
    }

    /// A field of the expected wire type.
    fn expect(wire_type: u8, wanted: u8) -> Read<()> {
        if wire_type == wanted {
            Ok(())
        } else {
            malformed("invalid wire type")
        }
    }
}

/// `sint32` from its varint (prost keeps the low 32 bits).
fn zigzag32(v: u64) -> i32 {
    let v = v as u32;
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

fn utf8(b: &[u8]) -> Read<&str> {
    std::str::from_utf8(b).or(malformed("invalid UTF-8 in a string"))
}

/// A map entry's key (field 1, `sint32`) and value (field 2, read by `value`),
/// each its default when missing, the last of each winning.
fn map_entry<'a, V: Default>(
    entry: &'a [u8],
    mut value: impl FnMut(&mut Reader<'a>, u8) -> Read<V>,
) -> Read<(i32, V)> {
    let mut r = Reader::new(entry);
    let (mut k, mut v) = (0, V::default());
    while !r.is_empty() {
        match r.key()? {
            (1, wt) => {
                Reader::expect(wt, VARINT)?;
                k = zigzag32(r.varint()?);
            }
            (2, wt) => v = value(&mut r, wt)?,
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok((k, v))
}

/// `google.protobuf.Timestamp` or `Duration`: seconds and nanos.
fn seconds_nanos(b: &[u8]) -> Read<(i64, i32)> {
    let mut r = Reader::new(b);
    let (mut secs, mut nanos) = (0i64, 0i32);
    while !r.is_empty() {
        match r.key()? {
            (1, wt) => {
                Reader::expect(wt, VARINT)?;
                secs = r.varint()? as i64;
            }
            (2, wt) => {
                Reader::expect(wt, VARINT)?;
                nanos = r.varint()? as i32;
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok((secs, nanos))
}

/// A map's entries in key order, the last of each key kept (as a decoded
/// message's map holds them).
fn by_key<V>(mut entries: Vec<(i32, V)>) -> Vec<(i32, V)> {
    // Stable: among equal keys the last stays last; keep it alone.
    entries.sort_by_key(|(k, _)| *k);
    let mut out: Vec<(i32, V)> = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        match out.last_mut() {
            Some(last) if last.0 == k => *last = (k, v),
            _ => out.push((k, v)),
        }
    }
    out
}

/// Reads one `CompressedAttributes` into `words` and `slots` (both cleared
/// first): its own words, and its attributes in the order [`super::decode`]
/// takes them, the maps in field order, each in key order, the last entry of a
/// key kept.
fn message<'a>(
    b: &'a [u8],
    words: &mut Vec<&'a str>,
    slots: &mut Vec<(u32, i32, Slot<'a>)>,
) -> Read<()> {
    words.clear();
    slots.clear();
    let mut r = Reader::new(b);
    let varint = |r: &mut Reader<'a>, wt| {
        Reader::expect(wt, VARINT)?;
        r.varint()
    };
    while !r.is_empty() {
        let (field, wt) = r.key()?;
        if !(1..=9).contains(&field) {
            r.skip(wt)?;
            continue;
        }
        Reader::expect(wt, LEN)?;
        let body = r.len_delimited()?;
        let (key, slot) = match field {
            1 => {
                words.push(utf8(body)?);
                continue;
            }
            2 => map_entry(body, |r, wt| varint(r, wt).map(zigzag32))
                .map(|(k, v)| (k, Slot::Str(v)))?,
            3 => map_entry(body, |r, wt| varint(r, wt).map(|v| v as i64))
                .map(|(k, v)| (k, Slot::Int64(v)))?,
            4 => map_entry(body, |r, wt| {
                Reader::expect(wt, FIXED64)?;
                r.fixed64().map(f64::from_bits)
            })
            .map(|(k, v)| (k, Slot::Double(v)))?,
            5 => map_entry(body, |r, wt| varint(r, wt).map(|v| v != 0))
                .map(|(k, v)| (k, Slot::Bool(v)))?,
            6 | 7 => {
                let (k, (secs, nanos)) = map_entry(body, |r, wt| {
                    Reader::expect(wt, LEN)?;
                    seconds_nanos(r.len_delimited()?)
                })?;
                if field == 6 {
                    (k, Slot::Timestamp(secs, nanos))
                } else {
                    (k, Slot::Duration(secs, nanos))
                }
            }
            8 => map_entry(body, |r, wt| {
                Reader::expect(wt, LEN)?;
                r.len_delimited()
            })
            .map(|(k, v)| (k, Slot::Bytes(v)))?,
            _ => map_entry(body, |r, wt| {
                Reader::expect(wt, LEN)?;
                string_map(r.len_delimited()?)
            })
            .map(|(k, v)| (k, Slot::StringMap(v)))?,
        };
        slots.push((field, key, slot));
    }
    // Stable, so that among entries of one map with the same key the last sent
    // stays last; then only that one is kept. (Usually already in order.)
    slots.sort_by_key(|(f, k, _)| (*f, *k));
    slots.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0 && later.1 == earlier.1;
        if same {
            std::mem::swap(later, earlier);
        }
        same
    });
    Ok(())
}

/// A `StringMap`'s entries (field 1), in key order, each key once. Entries of
/// several occurrences of the message merge, as protobuf merges messages.
fn string_map(b: &[u8]) -> Read<Vec<(i32, i32)>> {
    let mut r = Reader::new(b);
    let mut entries = Vec::new();
    while !r.is_empty() {
        match r.key()? {
            (1, wt) => {
                Reader::expect(wt, LEN)?;
                let e = r.len_delimited()?;
                entries.push(map_entry(e, |r, wt| {
                    Reader::expect(wt, VARINT)?;
                    r.varint().map(zigzag32)
                })?);
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(by_key(entries))
}

/// How many bags an encoded `ReportRequest` carries, as far as it can be read
/// (for counting what a refused Report held).
pub fn count_bags(bytes: &[u8]) -> usize {
    let mut r = Reader::new(bytes);
    let mut n = 0;
    while !r.is_empty() {
        let Ok((field, wire_type)) = r.key() else {
            break;
        };
        if r.skip(wire_type).is_err() {
            break;
        }
        if field == 1 && wire_type == LEN {
            n += 1;
        }
    }
    n
}

/// Decodes every bag of an encoded `ReportRequest`, as
/// [`super::decode_report`] does for the decoded message.
pub fn decode_report(
    bytes: &[u8],
    types: &dyn AttributeTypes,
) -> Result<Vec<AttributeBag>, RawReportError> {
    let mut r = Reader::new(bytes);
    let mut attributes: Vec<&[u8]> = Vec::new();
    let mut default_words: Vec<&str> = Vec::new();
    let (mut global_word_count, mut semantics) = (0u32, 0i32);
    while !r.is_empty() {
        match r.key()? {
            (1, wt) => {
                Reader::expect(wt, LEN)?;
                attributes.push(r.len_delimited()?);
            }
            (2, wt) => {
                Reader::expect(wt, LEN)?;
                default_words.push(utf8(r.len_delimited()?)?);
            }
            (3, wt) => {
                Reader::expect(wt, VARINT)?;
                global_word_count = r.varint()? as u32;
            }
            (4, wt) => {
                Reader::expect(wt, VARINT)?;
                semantics = r.varint()? as i32;
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    // Anything but INDEPENDENT_ENCODING (1) is the default, delta encoding.
    let delta = semantics != 1;
    let mut texts = Texts::default();
    let mut out = Vec::with_capacity(attributes.len());
    let (mut words, mut slots) = (Vec::new(), Vec::new());
    for (index, b) in attributes.iter().enumerate() {
        message(b, &mut words, &mut slots)?;
        let local: &[&str] = if words.is_empty() {
            default_words.as_slice()
        } else {
            words.as_slice()
        };
        let n = slots.len();
        let bag = Words::new(local, global_word_count)
            .and_then(|w| {
                build(
                    slots.drain(..).map(|(_, k, s)| (k, s)),
                    n,
                    &w,
                    types,
                    &mut texts,
                )
            })
            .map_err(|source: WireError| ReportError { index, source })?;
        push_bag(&mut out, bag, delta);
    }
    Ok(out)
}
