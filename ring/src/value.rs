//! Message values as they cross the ring: a small tagged binary format both
//! the host (Rust) and the guest SDKs (Python, JavaScript) speak without a
//! schema. Little endian throughout:
//!
//! ```text
//! 0x00 none     0x01 false     0x02 true
//! 0x03 int      i64
//! 0x04 float    f64 (NaN and infinities allowed)
//! 0x05 str      u32 length, UTF-8
//! 0x06 bytes    u32 length, raw (guests read them in place)
//! 0x07 list     u32 count, then the items
//! 0x08 map      u32 count, then (u32 length, UTF-8 key, value) pairs
//! ```
//! Decoding treats the bytes as hostile: every length is checked against
//! what remains, nesting is bounded by [`MAX_DEPTH`], and a value must use
//! its input exactly. It is linear in the input: duplicate map keys are
//! found with a hash set (std's randomly keyed SipHash, so keys chosen to
//! collide do not help), and memory grows with the items actually decoded,
//! never with a count the input merely claims. Every item takes at least
//! one input byte and becomes at most one [`Value`] (32 bytes) or one map
//! entry (56 bytes for at least 5 input bytes), so a decoded value holds at
//! most [`MAX_EXPANSION`] times its input's size, twice that while a list
//! grows.

use std::collections::HashSet;

/// Deepest nesting of lists and maps.
pub const MAX_DEPTH: usize = 64;

/// Most bytes of decoded values per byte of input (a list of `None`s: one
/// input byte, one 32-byte [`Value`]).
pub const MAX_EXPANSION: usize = 32;

/// Items reserved up front for a list or map, whatever count it claims;
/// beyond this the vector grows as items actually decode.
const RESERVE_LIMIT: usize = 256;

const NONE: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const FLOAT: u8 = 4;
const STR: u8 = 5;
const BYTES: u8 = 6;
const LIST: u8 = 7;
const MAP: u8 = 8;

/// A message value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value (tag 0x00).
    None,
    /// A boolean (tags 0x01 and 0x02).
    Bool(bool),
    /// A signed 64-bit integer (tag 0x03).
    Int(i64),
    /// A 64-bit float, NaN and infinities included (tag 0x04).
    Float(f64),
    /// A UTF-8 string (tag 0x05).
    Str(String),
    /// Raw bytes (tag 0x06).
    Bytes(Vec<u8>),
    /// A list of values (tag 0x07).
    List(Vec<Value>),
    /// Keys in order (duplicates are refused when decoding).
    Map(Vec<(String, Value)>),
}

/// Why bytes are not a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The input ends before the value does (at the byte offset given).
    #[error("value ends early at byte {0}")]
    Truncated(usize),
    /// A byte that is not a known tag where a value should start.
    #[error("unknown value tag {tag:#04x} at byte {at}")]
    Tag {
        /// The unknown tag byte.
        tag: u8,
        /// Its offset in the input.
        at: usize,
    },
    /// A string or map key (starting at the byte offset given) is not UTF-8.
    #[error("string at byte {0} is not UTF-8")]
    Utf8(usize),
    /// Lists and maps nest deeper than [`MAX_DEPTH`].
    #[error("values nest deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A map has the same key twice (the key given).
    #[error("map key {0:?} appears twice")]
    DuplicateKey(String),
    /// Bytes (this many) remain after the value ends.
    #[error("{0} bytes follow the value")]
    Trailing(usize),
    /// A string, byte string, list or map of this many items or bytes is
    /// longer than a `u32` length can state.
    #[error("a string or byte string of {0} bytes does not fit the format")]
    TooLong(usize),
}

impl Value {
    /// Appends the encoding of `self` to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), ValueError> {
        match self {
            Value::None => out.push(NONE),
            Value::Bool(b) => out.push(if *b { TRUE } else { FALSE }),
            Value::Int(i) => {
                out.push(INT);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Value::Float(f) => {
                out.push(FLOAT);
                out.extend_from_slice(&f.to_le_bytes());
            }
            Value::Str(s) => {
                out.push(STR);
                put_len(out, s.len())?;
                out.extend_from_slice(s.as_bytes());
            }
            Value::Bytes(b) => {
                out.push(BYTES);
                put_len(out, b.len())?;
                out.extend_from_slice(b);
            }
            Value::List(items) => {
                out.push(LIST);
                put_len(out, items.len())?;
                for v in items {
                    v.encode_into(out)?;
                }
            }
            Value::Map(entries) => {
                out.push(MAP);
                put_len(out, entries.len())?;
                for (k, v) in entries {
                    put_len(out, k.len())?;
                    out.extend_from_slice(k.as_bytes());
                    v.encode_into(out)?;
                }
            }
        }
        Ok(())
    }

    /// The encoding of `self`.
    pub fn encode(&self) -> Result<Vec<u8>, ValueError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Decodes exactly one value from `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Value, ValueError> {
        let mut r = Reader { bytes, at: 0 };
        let v = r.value(0)?;
        match bytes.len() - r.at {
            0 => Ok(v),
            n => Err(ValueError::Trailing(n)),
        }
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), ValueError> {
    let n = u32::try_from(len).map_err(|_| ValueError::TooLong(len))?;
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ValueError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(ValueError::Truncated(self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<usize, ValueError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn u64(&mut self) -> Result<[u8; 8], ValueError> {
        let b = self.take(8)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        Ok(w)
    }

    /// A length-prefixed UTF-8 string, borrowed from the input.
    fn str(&mut self) -> Result<&'a str, ValueError> {
        let len = self.u32()?;
        let at = self.at;
        let b = self.take(len)?;
        std::str::from_utf8(b).map_err(|_| ValueError::Utf8(at))
    }

    /// A count of items, each at least one byte: never more than remain.
    fn count(&mut self) -> Result<usize, ValueError> {
        let n = self.u32()?;
        if n > self.bytes.len() - self.at {
            return Err(ValueError::Truncated(self.at));
        }
        Ok(n)
    }

    fn value(&mut self, depth: usize) -> Result<Value, ValueError> {
        let at = self.at;
        let tag = self.take(1)?[0];
        Ok(match tag {
            NONE => Value::None,
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            INT => Value::Int(i64::from_le_bytes(self.u64()?)),
            FLOAT => Value::Float(f64::from_le_bytes(self.u64()?)),
            STR => Value::Str(self.str()?.to_owned()),
            BYTES => {
                let len = self.u32()?;
                Value::Bytes(self.take(len)?.to_vec())
            }
            LIST | MAP if depth >= MAX_DEPTH => return Err(ValueError::TooDeep),
            LIST => {
                let n = self.count()?;
                let mut items = Vec::with_capacity(n.min(RESERVE_LIMIT));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::List(items)
            }
            MAP => {
                let n = self.count()?;
                let mut entries: Vec<(String, Value)> = Vec::with_capacity(n.min(RESERVE_LIMIT));
                // Keys borrow the input: the set costs a pointer and a
                // length per key, no copies.
                let mut seen: HashSet<&'a str> = HashSet::with_capacity(n.min(RESERVE_LIMIT));
                for _ in 0..n {
                    let k = self.str()?;
                    if !seen.insert(k) {
                        return Err(ValueError::DuplicateKey(k.to_owned()));
                    }
                    let v = self.value(depth + 1)?;
                    entries.push((k.to_owned(), v));
                }
                Value::Map(entries)
            }
            tag => return Err(ValueError::Tag { tag, at }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shared with guest-image/python/tests/test_value.py: both codecs must
    /// produce and accept exactly these bytes.
    pub(crate) fn golden() -> (Value, &'static str) {
        let v = Value::Map(vec![
            ("n".into(), Value::Int(-2)),
            ("x".into(), Value::Float(1.5)),
            ("s".into(), Value::Str("hé".into())),
            ("b".into(), Value::Bytes(vec![0, 255])),
            (
                "l".into(),
                Value::List(vec![Value::None, Value::Bool(true), Value::Bool(false)]),
            ),
        ]);
        let hex = "0805000000\
                   010000006e03feffffffffffffff\
                   010000007804000000000000f83f\
                   01000000730503000000 68c3a9\
                   01000000620602000000 00ff\
                   010000006c0703000000 000201";
        (v, hex)
    }

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn golden_vector_round_trips() {
        let (v, hex) = golden();
        let bytes = unhex(hex);
        assert_eq!(v.encode().unwrap(), bytes);
        assert_eq!(Value::decode(&bytes).unwrap(), v);
    }

    #[test]
    fn floats_keep_nan_and_infinities() {
        for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0] {
            let got = Value::decode(&Value::Float(f).encode().unwrap()).unwrap();
            let Value::Float(g) = got else { panic!() };
            assert_eq!(g.to_bits(), f.to_bits());
        }
    }

    #[test]
    fn hostile_bytes_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (&[], "ends early"),
            (&[9], "unknown value tag"),
            (&[5, 2, 0, 0, 0, 0xff, 0xfe], "not UTF-8"),
            (&[6, 0xff, 0xff, 0xff, 0xff], "ends early"),
            (&[7, 0xff, 0xff, 0xff, 0xff], "ends early"),
            (&[0, 0], "follow the value"),
            (
                &[8, 2, 0, 0, 0, 1, 0, 0, 0, b'k', 0, 1, 0, 0, 0, b'k', 0],
                "appears twice",
            ),
        ];
        for (bytes, msg) in cases {
            let e = Value::decode(bytes).unwrap_err().to_string();
            assert!(e.contains(msg), "{bytes:?}: {e}");
        }
        let mut deep = [7u8, 1, 0, 0, 0].repeat(MAX_DEPTH + 1);
        deep.push(0);
        assert_eq!(Value::decode(&deep), Err(ValueError::TooDeep));
    }
}
