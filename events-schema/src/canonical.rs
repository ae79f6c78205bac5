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
        Value::Object(map) => write_object(map, None, out),
    }
}

/// An object, with one more string entry `extra` merged into its keys'
/// order when given (replacing an entry of the same key).
fn write_object(map: &Map<String, Value>, extra: Option<(&str, &str)>, out: &mut Vec<u8>) {
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    if let Some((key, _)) = extra {
        keys.retain(|k| *k != key);
        keys.push(key);
    }
    keys.sort_unstable();
    out.push(b'{');
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        match (extra, map.get(key)) {
            (Some((extra_key, value)), _) if extra_key == key => write_string(value, out),
            (_, Some(value)) => write_canonical(value, out),
            (_, None) => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
}

/// The canonical encoding of the object `map`.
pub fn map_to_canonical(map: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(768);
    write_object(map, None, &mut out);
    out
}

/// The canonical encoding of the object `map` with one more string entry,
/// `key: value`, as if it were in the map: the stored bytes of an envelope
/// from the map its hash was computed over, without rebuilding the map.
pub fn map_to_canonical_with(map: &Map<String, Value>, key: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(832);
    write_object(map, Some((key, value)), &mut out);
    out
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
