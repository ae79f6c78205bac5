//! The canonical encoding that hashes are computed over: JSON with object
//! keys sorted bytewise, no whitespace, integers only. It is written by hand
//! rather than left to `serde_json::Value`'s map order, because a feature of
//! another crate (`preserve_order`) could otherwise change every hash.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Appends the canonical encoding of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            write_object(map, None, out);
        }
    }
}

/// Writes the object `map`; with `slot_for`, returns where an entry of that
/// key (absent from the map) goes in the output.
fn write_object(map: &Map<String, Value>, slot_for: Option<&str>, out: &mut Vec<u8>) -> Option<Slot> {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_unstable();
    let mut slot = None;
    out.push(b'{');
    for (i, key) in keys.iter().enumerate() {
        if slot.is_none()
            && let Some(extra) = slot_for
            && extra < key.as_str()
        {
            slot = Some(Slot { at: out.len(), first: i == 0, alone: false });
        }
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        write_canonical(&map[key.as_str()], out);
    }
    if slot.is_none() && slot_for.is_some() {
        slot = Some(Slot { at: out.len(), first: keys.is_empty(), alone: keys.is_empty() });
    }
    out.push(b'}');
    slot
}

/// Where one more entry goes in a canonical object: its keys stay sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Byte offset of the insertion.
    at: usize,
    /// No entry comes before it.
    first: bool,
    /// No entry at all.
    alone: bool,
}

impl Slot {
    /// `bytes` (the object the slot was taken from) with the string entry
    /// `key: value` inserted.
    pub fn fill(self, bytes: &[u8], key: &str, value: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len() + key.len() + value.len() + 8);
        out.extend_from_slice(&bytes[..self.at]);
        if !self.first {
            out.push(b',');
        }
        write_string(key, &mut out);
        out.push(b':');
        write_string(value, &mut out);
        if self.first && !self.alone {
            out.push(b',');
        }
        out.extend_from_slice(&bytes[self.at..]);
        out
    }
}

/// The canonical encoding of the object `map` (which has no `key`), and the
/// slot of an entry `key` in it: an envelope's bytes are written once, its
/// hash computed over them, and the hash put in its slot.
pub fn map_to_canonical_with_slot(map: &Map<String, Value>, key: &str) -> (Vec<u8>, Slot) {
    let mut out = Vec::with_capacity(768);
    let slot = write_object(map, Some(key), &mut out).unwrap_or(Slot { at: 1, first: true, alone: true });
    (out, slot)
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping is deterministic; writing a `&str` into a
    // `Vec<u8>` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The canonical encoding of `value`.
pub fn to_canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_canonical(value, &mut out);
    out
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Filling a slot gives what writing the whole object gives, wherever
    /// the key sorts.
    #[test]
    fn a_filled_slot_is_the_canonical_encoding_of_the_whole_object() {
        let cases = [
            serde_json::json!({}),
            serde_json::json!({ "b": 1 }),
            serde_json::json!({ "i": [1, { "z": null, "a": "x" }] }),
            serde_json::json!({ "a": true, "c": "y", "z": -3 }),
            serde_json::json!({ "actor": { "kind": "user" }, "eventId": "e", "occurredAt": "t", "type": "x" }),
        ];
        for case in cases {
            let Value::Object(map) = case else { panic!("objects only") };
            let (bytes, slot) = map_to_canonical_with_slot(&map, "hash");
            assert_eq!(bytes, to_canonical(&Value::Object(map.clone())));
            let mut whole = map.clone();
            whole.insert("hash".into(), Value::from("h\"quoted"));
            assert_eq!(
                String::from_utf8(slot.fill(&bytes, "hash", "h\"quoted")).expect("utf-8"),
                String::from_utf8(to_canonical(&Value::Object(whole))).expect("utf-8")
            );
        }
    }
}
