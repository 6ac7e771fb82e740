//! Finding one top-level field of a JSON object without parsing the rest:
//! the gateway reads `usage` from every whole answer it passes on, and
//! deserializing the answer (even into a struct that ignores the other
//! fields) cost more than everything else the gateway does with it.
//!
//! This is a scanner, not a validator: it follows strings (with their
//! escapes) and brackets, and answers `None` for whatever it cannot follow.
//! Only the value it returns is then parsed for real.

/// The raw value of the top-level field `key` of the object in `json` (the
/// first one, when the key repeats); `None` if `json` is not an object,
/// has no such field, or ends before the value does (what follows the
/// value is not looked at). A key written with escapes is not matched.
pub fn field<'a>(json: &'a [u8], key: &str) -> Option<&'a [u8]> {
    fields(json)
        .find(|(name, _)| *name == key.as_bytes())
        .map(|(_, value)| value)
}

/// The top-level fields of the object in `json` as (raw name, raw value),
/// in order, until the end of the object or what cannot be followed.
pub fn fields(json: &[u8]) -> Fields<'_> {
    let i = skip_ws(json, 0);
    let at = (json.get(i) == Some(&b'{')).then(|| skip_ws(json, i + 1));
    Fields { b: json, at }
}

/// See [`fields`].
pub struct Fields<'a> {
    b: &'a [u8],
    /// Where the next field starts; `None` once done.
    at: Option<usize>,
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.b;
        let i = self.at.take()?;
        if *b.get(i)? != b'"' {
            return None;
        }
        let end = string_end(b, i + 1)?;
        let colon = skip_ws(b, end + 1);
        if *b.get(colon)? != b':' {
            return None;
        }
        let start = skip_ws(b, colon + 1);
        let stop = value_end(b, start)?;
        let next = skip_ws(b, stop);
        if b.get(next) == Some(&b',') {
            self.at = Some(skip_ws(b, next + 1));
        }
        Some((&b[i + 1..end], &b[start..stop]))
    }
}

/// The raw value of `key` when it is the last field of the object in
/// `json`, found from the end: a whole answer ends with its `usage`, so this
/// reads a few dozen bytes where [`field`] reads them all. `None` when the
/// last field is another one (or the end is not an object's).
pub fn last_field<'a>(json: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let b = json;
    let end = skip_ws_back(b, b.len());
    if b.get(end.checked_sub(1)?) != Some(&b'}') {
        return None;
    }
    let value_end = skip_ws_back(b, end - 1);
    let value_start = value_start(b, value_end)?;
    let colon = skip_ws_back(b, value_start).checked_sub(1)?;
    if b[colon] != b':' {
        return None;
    }
    let close = skip_ws_back(b, colon).checked_sub(1)?;
    if b[close] != b'"' {
        return None;
    }
    let open = string_start(b, close)?;
    if &b[open + 1..close] != key.as_bytes() {
        return None;
    }
    // A field of this object: after a comma, or first after its brace.
    let before = skip_ws_back(b, open).checked_sub(1)?;
    matches!(b[before], b',' | b'{').then(|| &b[value_start..value_end])
}

/// `end`, moved back over whitespace.
fn skip_ws_back(b: &[u8], mut end: usize) -> usize {
    while end > 0 && matches!(b[end - 1], b' ' | b'\t' | b'\n' | b'\r') {
        end -= 1;
    }
    end
}

/// The quote that opens the string whose closing quote is at `close`: the
/// nearest quote before it that no backslash escapes (an even number of
/// backslashes before it).
fn string_start(b: &[u8], close: usize) -> Option<usize> {
    let mut j = close;
    loop {
        j = memchr::memrchr(b'"', &b[..j])?;
        let backslashes = b[..j].iter().rev().take_while(|&&c| c == b'\\').count();
        if backslashes % 2 == 0 {
            return Some(j);
        }
    }
}

/// Brackets and quotes: what a scan across a value stops at. The scans
/// below jump from one to the next (`position`, `rposition`), which the
/// compiler turns into tight loops over the bytes in between.
fn is_structural(c: &u8) -> bool {
    matches!(c, b'"' | b'{' | b'}' | b'[' | b']')
}

/// Where the value that ends just before `end` starts. Scanning back from
/// outside any string, every quote met closes one.
fn value_start(b: &[u8], end: usize) -> Option<usize> {
    let last = end.checked_sub(1)?;
    match b[last] {
        b'"' => string_start(b, last),
        b'}' => flat_object_start(b, last).or_else(|| nested_value_start(b, end)),
        b']' => nested_value_start(b, end),
        b'{' | b'[' | b',' | b':' => None,
        _ => {
            let n = b[..end].iter().rev().position(|c| {
                matches!(c, b',' | b':' | b'{' | b'[' | b' ' | b'\t' | b'\n' | b'\r')
            })?;
            Some(end - n)
        }
    }
}

/// Where the object that ends at `close` starts, when it is flat (no
/// brackets or backslashes inside; `usage` is such an object): at the last
/// `{` before `close`, if an even number of quotes follow it (a `{` inside a
/// string is followed by its string's closing quote, and then by pairs).
/// One pass over the object; `None` for any other object.
fn flat_object_start(b: &[u8], close: usize) -> Option<usize> {
    let open = memchr::memrchr(b'{', &b[..close])?;
    // Without an early exit, so that the compiler can vectorize the pass.
    let (quotes, others) = b[open + 1..close].iter().fold((0u32, 0u32), |(q, o), &c| {
        let other = matches!(c, b'\\' | b'[' | b']' | b'}');
        (q + u32::from(c == b'"'), o + u32::from(other))
    });
    (others == 0 && quotes % 2 == 0).then_some(open)
}

/// Where the object or array that ends just before `end` starts, whatever
/// it holds.
fn nested_value_start(b: &[u8], end: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut j = end;
    loop {
        j = b[..j].iter().rposition(is_structural)?;
        match b[j] {
            b'"' => j = string_start(b, j)?,
            b'}' | b']' => depth += 1,
            _ => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(j);
                }
            }
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The index of the quote that ends the string whose contents start at `i`.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b[i] == b'"' {
            return Some(i);
        }
        // A backslash and the character it escapes.
        i += 2;
    }
}

/// Where the value that starts at `i` ends: a string, an object or array
/// (at its matching bracket), or a scalar (at the next delimiter, which must
/// be there).
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i + 1).map(|e| e + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                j += b.get(j..)?.iter().position(is_structural)?;
                match b[j] {
                    b'"' => j = string_end(b, j + 1)?,
                    b'{' | b'[' => depth += 1,
                    _ => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                }
                j += 1;
            }
        }
        b'}' | b']' | b',' | b':' => None,
        _ => {
            let n = b[i + 1..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))?;
            Some(i + 1 + n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use crate::json_strategy::json_value;

    #[test]
    fn finds_a_field_after_nested_values_and_tricky_strings() {
        let doc = br#" { "id" : "x\"}{" , "choices":[{"message":{"content":"\"usage\": {\\"}}], "n": -1.5e3,
            "usage" : {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7} } "#;
        let v = field(doc, "usage").unwrap();
        let v: Value = serde_json::from_slice(v).unwrap();
        assert_eq!(v["total_tokens"], 7);
        assert_eq!(field(doc, "n"), Some(&b"-1.5e3"[..]));
        assert_eq!(field(doc, "id"), Some(&br#""x\"}{""#[..]));
        assert_eq!(field(doc, "missing"), None);
        let v: Value = serde_json::from_slice(last_field(doc, "usage").unwrap()).unwrap();
        assert_eq!(v["prompt_tokens"], 3);
        assert_eq!(last_field(doc, "n"), None, "not the last field");
        // Quotes and braces in strings near the end, escaped backslashes.
        let doc = br#"{"a":"}\\","usage":{"k\"}":"{\\\\","n":[1,"]"]}}"#;
        let usage = &br#"{"k\"}":"{\\\\","n":[1,"]"]}"#[..];
        assert!(serde_json::from_slice::<Value>(doc).is_ok());
        assert_eq!(last_field(doc, "usage"), Some(usage));
        assert_eq!(field(doc, "usage"), Some(usage));
        assert_eq!(last_field(br#"{"x":{"usage":1}}"#, "usage"), None, "nested");
        assert_eq!(last_field(br#"["usage":1}"#, "usage"), None);
    }

    #[test]
    fn not_an_object_or_cut_short_is_none() {
        for doc in [
            &b""[..],
            b"[]",
            b"{}",
            b"\"usage\"",
            br#"{"usage""#,
            br#"{"usage":"#,
            br#"{"usage":{"a":1"#.as_slice(),
            br#"{"usage":[1,{"b":2}"#,
            br#"{"usage":12"#,
            br#"{"a":1 "usage":2}"#,
            br#"{"a":""usage":2"#,
        ] {
            if let Some(v) = field(doc, "usage") {
                panic!("{:?} gave {:?}", String::from_utf8_lossy(doc), v);
            }
        }
        assert_eq!(
            field(br#"{"usage":{"a":1}}"#, "usage"),
            Some(&br#"{"a":1}"#[..])
        );
        assert_eq!(field(br#"{"usage":null}"#, "usage"), Some(&b"null"[..]));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), key in "[a-z]{0,6}") {
            let _ = field(&bytes, &key);
            let _ = last_field(&bytes, &key);
        }

        #[test]
        fn agrees_with_a_parser_on_what_serde_json_writes(
            fields in prop::collection::btree_map("[a-z_\"\\\\]{0,8}", json_value(), 0..6),
            key in "[a-z_]{0,8}",
            pretty in any::<bool>(),
        ) {
            let doc = Value::Object(fields.clone().into_iter().collect());
            let text = if pretty {
                serde_json::to_vec_pretty(&doc).unwrap()
            } else {
                serde_json::to_vec(&doc).unwrap()
            };
            let parse = |v: &[u8]| serde_json::from_slice::<Value>(v).unwrap();
            let found = field(&text, &key).map(parse);
            prop_assert_eq!(found.as_ref(), fields.get(&key));
            // From the end: the last field (keys come sorted), and no other.
            let last = fields.iter().next_back().map(|(k, v)| (k.as_str(), v));
            match last {
                Some((k, v)) if !k.contains(['"', '\\']) => {
                    let got = last_field(&text, k).map(parse);
                    prop_assert_eq!(got.as_ref(), Some(v));
                }
                _ => {}
            }
            if last.is_none_or(|(k, _)| k != key) {
                prop_assert_eq!(last_field(&text, &key), None);
            }
        }
    }

    proptest! {
        /// A last field that is a flat object, its keys and strings full of
        /// braces, brackets, quotes and backslashes: found whole (by the
        /// one-pass rule, or by the general scan when that rule declines).
        #[test]
        fn a_flat_last_object_is_found_whatever_its_strings_hold(
            inner in prop::collection::btree_map(
                "[a-z{}\\[\\]\"\\\\]{0,6}",
                prop_oneof![
                    any::<u32>().prop_map(Value::from),
                    "[a-z {}\\[\\]\"\\\\]{0,6}".prop_map(Value::from),
                ],
                0..5,
            ),
        ) {
            let doc = json!({"a": "{", "usage": Value::Object(inner.into_iter().collect())});
            let text = serde_json::to_vec(&doc).unwrap();
            let got = last_field(&text, "usage").map(|v| serde_json::from_slice::<Value>(v).unwrap());
            prop_assert_eq!(got.as_ref(), Some(&doc["usage"]));
        }
    }

    #[test]
    fn a_whole_chat_answer() {
        let answer = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "{\"usage\": 1}"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
        });
        let text = serde_json::to_vec(&answer).unwrap();
        assert_eq!(last_field(&text, "usage"), field(&text, "usage"));
        let usage: cortex_core::openai::Usage =
            serde_json::from_slice(last_field(&text, "usage").unwrap()).unwrap();
        assert_eq!(usage, cortex_core::openai::Usage::new(9, 2));
    }
}
