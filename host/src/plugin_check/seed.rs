//! The contents a check starts an in-memory bucket with, read from a file.
//!
//! Two shapes, told apart by the first non-blank character:
//! - a JSON object, `{"user/1": "alice", "user/2": {"name": "bob"}}`;
//! - JSON Lines, one `{"key": "user/1", "value": "alice"}` per line (or `"value_base64"` for
//!   bytes that are not text), for files too large to hold as one document.
//!
//! A string value is stored as its UTF-8 bytes; any other JSON value as its compact JSON text
//! (what a handler reading JSON documents expects).

use base64::Engine as _;
use serde_json::Value;
use std::path::Path;

/// A bucket's first contents: `(key, value)` in file order.
pub type Seed = Vec<(String, Vec<u8>)>;

/// The most entries one seed file may hold: a check runs in memory.
pub const MAX_SEED_ENTRIES: usize = 1_000_000;

/// The entries of the seed file at `path`, in file order.
pub fn read_seed(path: &Path) -> Result<Seed, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_seed(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse_seed(text: &str) -> Result<Seed, String> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Ok(vec![]);
    }
    // A JSON Lines file also starts with `{`: it is one object only if it parses as one.
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(trimmed) {
        let looks_like_a_line = map.contains_key("key")
            && (map.contains_key("value") || map.contains_key("value_base64"))
            && map.len() <= 2;
        if !looks_like_a_line {
            check_count(map.len())?;
            return Ok(map.into_iter().map(|(k, v)| (k, value_bytes(v))).collect());
        }
    }
    let mut entries = vec![];
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = n + 1;
        let entry: Value =
            serde_json::from_str(line).map_err(|e| format!("line {line_no}: {e}"))?;
        entries.push(line_entry(entry).map_err(|e| format!("line {line_no}: {e}"))?);
        check_count(entries.len())?;
    }
    Ok(entries)
}

fn check_count(n: usize) -> Result<(), String> {
    if n > MAX_SEED_ENTRIES {
        return Err(format!(
            "more than {MAX_SEED_ENTRIES} entries; a check runs in memory"
        ));
    }
    Ok(())
}

fn line_entry(entry: Value) -> Result<(String, Vec<u8>), String> {
    let Value::Object(mut map) = entry else {
        return Err(r#"expected an object like {"key": "...", "value": ...}"#.into());
    };
    let key = match map.remove("key") {
        Some(Value::String(k)) => k,
        _ => return Err(r#"missing "key" (a string)"#.into()),
    };
    let value = match (map.remove("value"), map.remove("value_base64")) {
        (Some(v), None) => value_bytes(v),
        (None, Some(Value::String(b))) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map_err(|e| format!("value_base64 of {key}: {e}"))?,
        (None, Some(_)) => return Err("value_base64 must be a string".into()),
        (Some(_), Some(_)) => return Err(r#"give "value" or "value_base64", not both"#.into()),
        (None, None) => return Err(format!(r#"missing "value" for key {key}"#)),
    };
    if let Some(other) = map.keys().next() {
        return Err(format!("unknown field {other:?}"));
    }
    Ok((key, value))
}

fn value_bytes(v: Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_seeds_strings_as_text_and_documents_as_json() {
        let e = parse_seed(r#"{"a": "x", "b": {"n": 1}}"#).unwrap();
        assert_eq!(
            e,
            [
                ("a".into(), b"x".to_vec()),
                ("b".into(), br#"{"n":1}"#.to_vec())
            ]
        );
    }

    #[test]
    fn json_lines_seed_in_order_with_bytes_in_base64() {
        let e = parse_seed(
            "{\"key\": \"k2\", \"value\": \"two\"}\n\n{\"key\": \"k1\", \"value_base64\": \"AAE=\"}\n",
        )
        .unwrap();
        assert_eq!(
            e,
            [("k2".into(), b"two".to_vec()), ("k1".into(), vec![0, 1])]
        );
        // One line alone is read as a line, not as an object with the keys "key" and "value".
        let one = parse_seed(r#"{"key": "k", "value": 3}"#).unwrap();
        assert_eq!(one, [("k".into(), b"3".to_vec())]);
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = parse_seed("{\"key\": \"a\", \"value\": 1}\n{\"value\": 2}\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        let err = parse_seed("{\"key\": \"a\", \"value\": 1}\nnot json\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }
}
