//! Hermes / Qwen calls: `<tool_call>{"name": …, "arguments": {…}}</tool_call>`,
//! one block per call, text allowed around them (Hermes 2 Pro / 3, Qwen 2.5,
//! Qwen 3, and the format cortex teaches models whose template has no tool
//! support of its own).
//!
//! A block whose JSON is complete but whose closing tag never comes still
//! counts (the model stopped right after the call, as vLLM also accepts);
//! a block whose JSON never closes, or is not a call, is text.

use serde_json::Value;

use super::json::{self, Scan};
use super::{call_from, ParsedCall, Step};

pub const OPEN: &str = "<tool_call>";
pub const CLOSE: &str = "</tool_call>";

/// `s` starts with [`OPEN`].
pub fn parse(s: &str, eof: bool) -> Step {
    let i = json::skip_ws(s, OPEN.len());
    if i == s.len() {
        return Step::more_unless(eof);
    }
    let (end, members) = match json::object_at(s, i) {
        Ok(found) => found,
        Err(Scan::Incomplete) => return Step::more_unless(eof),
        Err(_) => return Step::NotACall,
    };
    let Some(call) = call_from(&members, &["arguments", "parameters"], false) else {
        return Step::NotACall;
    };
    closed_by(s, end, CLOSE, eof, call)
}

/// A call that ends at `end`, optionally followed by whitespace and the
/// closing tag `close` (consumed with it). Waits while what follows could
/// still become the tag.
pub fn closed_by(s: &str, end: usize, close: &str, eof: bool, call: ParsedCall) -> Step {
    let j = json::skip_ws(s, end);
    let rest = &s[j..];
    let consumed = if rest.starts_with(close) {
        j + close.len()
    } else if !eof && close.starts_with(rest) {
        return Step::More;
    } else {
        end
    };
    Step::Calls {
        calls: vec![call],
        consumed,
    }
}

/// One call as the model writes it (for conversation history).
pub fn render(name: &str, arguments: &Value) -> String {
    format!(
        "{OPEN}\n{{\"name\": {}, \"arguments\": {arguments}}}\n{CLOSE}",
        Value::String(name.to_string())
    )
}

/// What the answer starts with when the call is forced: the model writes
/// the arguments (or, without a name, the name and the arguments).
pub fn forced_prefix(name: Option<&str>) -> String {
    match name {
        Some(n) => format!(
            "{OPEN}\n{{\"name\": {}, \"arguments\": ",
            Value::String(n.to_string())
        ),
        None => format!("{OPEN}\n{{\"name\": \""),
    }
}
