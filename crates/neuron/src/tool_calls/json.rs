//! Finding JSON values in streamed model text.
//!
//! Owns the structural scan that says where a JSON object or array that
//! starts at a given byte ends — or that more text is needed, or that it
//! cannot be JSON — without parsing it, so a half-generated call costs a
//! linear scan per new piece. `serde_json` has the last word on validity;
//! this module only finds the span, and the raw text of an object's
//! members (so arguments keep the model's own key order and spelling).

use serde_json::Value;

/// What a scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The value ends at this byte offset (exclusive).
    Complete(usize),
    /// The text ends before the value does.
    Incomplete,
    /// The text cannot be the value.
    Invalid,
}

/// Offset of the first non-whitespace byte at or after `i` (JSON whitespace).
pub fn skip_ws(s: &str, mut i: usize) -> usize {
    let b = s.as_bytes();
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The end of the string literal that starts at `s[i] == '"'`.
pub fn string_end(s: &str, i: usize) -> Scan {
    let b = s.as_bytes();
    if b.get(i) != Some(&b'"') {
        return Scan::Invalid;
    }
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Scan::Complete(j + 1),
            // Raw control characters are not allowed inside JSON strings.
            c if c < 0x20 => return Scan::Invalid,
            _ => j += 1,
        }
    }
    Scan::Incomplete
}

/// The end of the object or array that starts at `s[i]` (`{` or `[`):
/// brackets matched outside strings. Mismatched brackets are `Invalid`;
/// anything else inside is left for `serde_json` to judge.
pub fn container_end(s: &str, i: usize) -> Scan {
    let b = s.as_bytes();
    if !matches!(b.get(i), Some(b'{' | b'[')) {
        return Scan::Invalid;
    }
    let mut stack: Vec<u8> = Vec::new();
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'{' => stack.push(b'}'),
            b'[' => stack.push(b']'),
            c @ (b'}' | b']') => {
                if stack.pop() != Some(c) {
                    return Scan::Invalid;
                }
                if stack.is_empty() {
                    return Scan::Complete(j + 1);
                }
            }
            b'"' => match string_end(s, j) {
                Scan::Complete(end) => {
                    j = end;
                    continue;
                }
                other => return other,
            },
            _ => {}
        }
        j += 1;
    }
    Scan::Incomplete
}

/// A complete JSON object starting at `s[i]`: its end and its members.
/// `Invalid` when the span is not a JSON object.
pub fn object_at(s: &str, i: usize) -> Result<(usize, Vec<Member<'_>>), Scan> {
    match container_end(s, i) {
        Scan::Complete(end) => {
            let text = &s[i..end];
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(_)) => Ok((end, members(text))),
                _ => Err(Scan::Invalid),
            }
        }
        other => Err(other),
    }
}

/// One `"key": value` of an object, the value as the model wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<'a> {
    pub key: String,
    pub raw: &'a str,
}

impl Member<'_> {
    /// The value as a string, when it is a JSON string.
    pub fn as_string(&self) -> Option<String> {
        serde_json::from_str::<String>(self.raw).ok()
    }
}

/// The top-level members of `obj`, which must be a valid JSON object.
fn members(obj: &str) -> Vec<Member<'_>> {
    let b = obj.as_bytes();
    let mut out = Vec::new();
    let mut i = skip_ws(obj, 1);
    while i < b.len() && b[i] == b'"' {
        let Scan::Complete(key_end) = string_end(obj, i) else {
            break;
        };
        let key = serde_json::from_str::<String>(&obj[i..key_end]).unwrap_or_default();
        let colon = skip_ws(obj, key_end);
        let start = skip_ws(obj, colon + 1);
        let end = value_end(obj, start);
        out.push(Member {
            key,
            raw: obj[start..end].trim_end(),
        });
        i = skip_ws(obj, skip_ws(obj, end) + 1);
    }
    out
}

/// The end of the value at `start` inside a valid document: the next
/// top-level `,` or closing bracket.
fn value_end(s: &str, start: usize) -> usize {
    let b = s.as_bytes();
    match b.get(start) {
        Some(b'{' | b'[') => match container_end(s, start) {
            Scan::Complete(e) => e,
            _ => b.len(),
        },
        Some(b'"') => match string_end(s, start) {
            Scan::Complete(e) => e,
            _ => b.len(),
        },
        _ => {
            let mut j = start;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']') {
                j += 1;
            }
            j
        }
    }
}

/// Call arguments as a JSON document: an object or array as written; a
/// string that itself holds a JSON object or array (some models serialise
/// their arguments twice) decoded once; any other value as written.
pub fn arguments_text(raw: &str) -> String {
    if raw.starts_with('"') {
        if let Ok(inner) = serde_json::from_str::<String>(raw) {
            let t = inner.trim();
            if matches!(
                serde_json::from_str::<Value>(t),
                Ok(Value::Object(_) | Value::Array(_))
            ) {
                return t.to_string();
            }
        }
    }
    raw.to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn containers_end_where_their_brackets_match() {
        assert_eq!(container_end(r#"{"a": "}"} x"#, 0), Scan::Complete(10));
        assert_eq!(container_end(r#"[1, {"b": [2]}]"#, 0), Scan::Complete(15));
        assert_eq!(container_end(r#"{"a": "\"}"#, 0), Scan::Incomplete);
        assert_eq!(container_end(r#"{"a": [1}"#, 0), Scan::Invalid);
        assert_eq!(container_end("x", 0), Scan::Invalid);
        assert_eq!(container_end("{\"a\n\"}", 0), Scan::Invalid);
    }

    #[test]
    fn members_keep_the_raw_values() {
        let s = r#" {"name" : "f", "arguments": {"b": 1, "a": [2, 3]} , "n": -1.5e3, "t": true}"#;
        let (end, m) = object_at(s, 1).unwrap();
        assert_eq!(end, s.len());
        let pairs: Vec<(&str, &str)> = m.iter().map(|m| (m.key.as_str(), m.raw)).collect();
        assert_eq!(
            pairs,
            [
                ("name", "\"f\""),
                ("arguments", r#"{"b": 1, "a": [2, 3]}"#),
                ("n", "-1.5e3"),
                ("t", "true")
            ]
        );
        assert_eq!(m[0].as_string().as_deref(), Some("f"));
        assert_eq!(object_at("[1]", 0).unwrap_err(), Scan::Invalid);
        assert_eq!(object_at("{\"a\": 1,}", 0).unwrap_err(), Scan::Invalid);
    }

    #[test]
    fn arguments_serialised_twice_are_decoded_once() {
        assert_eq!(arguments_text(r#""{\"a\": 1}""#), r#"{"a": 1}"#);
        assert_eq!(arguments_text(r#""hello""#), r#""hello""#);
        assert_eq!(arguments_text(r#"{"a": 1}"#), r#"{"a": 1}"#);
    }
}
