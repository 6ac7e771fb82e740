//! Llama 3.1 – 3.3 calls: a JSON object `{"name": …, "parameters": {…}}`
//! as the answer (3.2 sometimes adds `"type": "function"`; some fine-tunes
//! write `"arguments"`), several separated by `;`, and the built-in tool
//! form after `<|python_tag|>` (`brave_search.call(query="…")`, or the same
//! JSON).
//!
//! A bare JSON call is recognised only at the start of the answer or right
//! after another call, as llama.cpp does: JSON in the middle of prose is
//! prose. The object must name the function and carry its parameters.

use serde_json::Value;

use super::json::{self, Scan};
use super::{call_from, pycall, ParsedCall, Step};

pub const PYTHON_TAG: &str = "<|python_tag|>";

/// Keys that may start a call object.
const CALL_KEYS: [&str; 2] = ["name", "type"];

/// `s` starts with [`PYTHON_TAG`].
pub fn parse_tagged(s: &str, eof: bool) -> Step {
    let i = json::skip_ws(s, PYTHON_TAG.len());
    match s.as_bytes().get(i) {
        None => Step::more_unless(eof),
        Some(b'{') => json_call(s, i, eof),
        Some(_) => match pycall::call_at(s, i) {
            Ok((name, args, end)) => Step::Calls {
                calls: vec![ParsedCall {
                    name,
                    arguments: args.to_string(),
                }],
                consumed: end,
            },
            Err(Scan::Incomplete) => Step::more_unless(eof),
            Err(_) => Step::NotACall,
        },
    }
}

/// `s` starts with a non-whitespace character at the start of the answer
/// or after a call (`after_call`): a JSON call, or the `;` between calls.
pub fn parse_boundary(s: &str, eof: bool, after_call: bool) -> Step {
    match s.as_bytes().first() {
        Some(b';') if after_call => Step::Calls {
            calls: Vec::new(),
            consumed: 1,
        },
        Some(b'{') => {
            // Decide early whether this object can be a call at all, so
            // ordinary JSON answers are not held back to their end.
            let k = json::skip_ws(s, 1);
            if k == s.len() {
                return Step::more_unless(eof);
            }
            match json::string_end(s, k) {
                Scan::Complete(e) => {
                    let key = serde_json::from_str::<String>(&s[k..e]).unwrap_or_default();
                    if !CALL_KEYS.contains(&key.as_str()) {
                        return Step::NotACall;
                    }
                }
                Scan::Incomplete => {
                    let partial = &s[k + 1..];
                    if !eof && CALL_KEYS.iter().any(|c| c.starts_with(partial)) {
                        return Step::More;
                    }
                    return Step::NotACall;
                }
                Scan::Invalid => return Step::NotACall,
            }
            json_call(s, 0, eof)
        }
        _ => Step::NotACall,
    }
}

fn json_call(s: &str, i: usize, eof: bool) -> Step {
    let (end, members) = match json::object_at(s, i) {
        Ok(found) => found,
        Err(Scan::Incomplete) => return Step::more_unless(eof),
        Err(_) => return Step::NotACall,
    };
    let typed = members.iter().find(|m| m.key == "type");
    if typed.is_some_and(|m| m.as_string().as_deref() != Some("function")) {
        return Step::NotACall;
    }
    match call_from(&members, &["parameters", "arguments"], true) {
        Some(call) => Step::Calls {
            calls: vec![call],
            consumed: end,
        },
        None => Step::NotACall,
    }
}

/// The forced start of a call.
pub fn forced_prefix(name: Option<&str>) -> String {
    match name {
        Some(n) => format!(
            "{{\"name\": {}, \"parameters\": ",
            Value::String(n.to_string())
        ),
        None => "{\"name\": \"".to_string(),
    }
}
