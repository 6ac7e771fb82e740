//! Mistral calls after the `[TOOL_CALLS]` control token, in both the
//! forms Mistral's tokenizers define:
//! - up to v7 (Mistral 7B v0.3, Nemo, Small 3.1): a JSON array,
//!   `[TOOL_CALLS][{"name": …, "arguments": {…}, "id": …}, …]`;
//! - v11 and later (Small 3.2, Magistral, Devstral): one call per token,
//!   `[TOOL_CALLS]name[ARGS]{…}` (with `[CALL_ID]id` before `[ARGS]` in
//!   some versions), repeated for parallel calls.
//!
//! The parser reads both whatever the template says; the template decides
//! only how a forced call starts. Mistral templates demand tool call ids of
//! nine letters and digits, so calls get such ids (see [`super::call_id`]).

use serde_json::Value;

use super::json::{self, Scan};
use super::{call_from, ParsedCall, Step};

pub const TOOL_CALLS: &str = "[TOOL_CALLS]";
pub const ARGS: &str = "[ARGS]";
pub const CALL_ID: &str = "[CALL_ID]";

/// `s` starts with [`TOOL_CALLS`].
pub fn parse(s: &str, eof: bool) -> Step {
    let i = json::skip_ws(s, TOOL_CALLS.len());
    match s.as_bytes().get(i) {
        None => Step::more_unless(eof),
        Some(b'[') if !s[i..].starts_with(ARGS) => array(s, i, eof),
        Some(_) => named(s, i, eof),
    }
}

/// `[{…}, {…}]` starting at `i`.
fn array(s: &str, i: usize, eof: bool) -> Step {
    let mut calls = Vec::new();
    let mut j = i + 1;
    loop {
        j = json::skip_ws(s, j);
        if calls.is_empty() && s[j..].starts_with(']') {
            return Step::NotACall;
        }
        let (end, members) = match json::object_at(s, j) {
            Ok(found) => found,
            Err(Scan::Incomplete) => return Step::more_unless(eof),
            Err(_) if j == s.len() => return Step::more_unless(eof),
            Err(_) => return Step::NotACall,
        };
        let Some(call) = call_from(&members, &["arguments", "parameters"], false) else {
            return Step::NotACall;
        };
        calls.push(call);
        j = json::skip_ws(s, end);
        match s.as_bytes().get(j) {
            None => return Step::more_unless(eof),
            Some(b',') => j += 1,
            Some(b']') => {
                return Step::Calls {
                    calls,
                    consumed: j + 1,
                }
            }
            Some(_) => return Step::NotACall,
        }
    }
}

/// `name[CALL_ID]id[ARGS]{…}` starting at `i`; `[CALL_ID]…` and `[ARGS]`
/// are optional (`[ARGS]` disappears when a client decodes without special
/// tokens).
fn named(s: &str, i: usize, eof: bool) -> Step {
    let b = s.as_bytes();
    let name_ok = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.');
    let mut j = i;
    while j < b.len() && name_ok(b[j]) {
        j += 1;
    }
    let name = &s[i..j];
    if j == b.len() {
        return Step::more_unless(eof);
    }
    if name.is_empty() {
        return Step::NotACall;
    }
    let rest = &s[j..];
    if rest.starts_with(CALL_ID) {
        j += CALL_ID.len();
        while j < b.len() && b[j].is_ascii_alphanumeric() {
            j += 1;
        }
        if j == b.len() {
            return Step::more_unless(eof);
        }
    } else if is_partial(rest, &[CALL_ID, ARGS]) {
        return Step::more_unless(eof);
    }
    let rest = &s[j..];
    if rest.starts_with(ARGS) {
        j += ARGS.len();
    } else if is_partial(rest, &[ARGS]) {
        return Step::more_unless(eof);
    }
    let j = json::skip_ws(s, j);
    if j == s.len() {
        return Step::more_unless(eof);
    }
    match json::object_at(s, j) {
        Ok((end, _)) => Step::Calls {
            calls: vec![ParsedCall {
                name: name.to_string(),
                arguments: s[j..end].to_string(),
            }],
            consumed: end,
        },
        Err(Scan::Incomplete) => Step::more_unless(eof),
        Err(_) => Step::NotACall,
    }
}

/// Whether `rest` is a proper prefix of one of `tags`.
fn is_partial(rest: &str, tags: &[&str]) -> bool {
    tags.iter()
        .any(|t| t.len() > rest.len() && t.starts_with(rest))
}

/// The forced start of a call in the template's own form.
pub fn forced_prefix(v11: bool, name: Option<&str>) -> String {
    match (v11, name) {
        (true, Some(n)) => format!("{TOOL_CALLS}{n}{ARGS}"),
        (true, None) => TOOL_CALLS.to_string(),
        (false, Some(n)) => format!(
            "{TOOL_CALLS}[{{\"name\": {}, \"arguments\": ",
            Value::String(n.to_string())
        ),
        (false, None) => format!("{TOOL_CALLS}[{{\"name\": \""),
    }
}
