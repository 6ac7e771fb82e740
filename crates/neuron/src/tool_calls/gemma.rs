//! Gemma's two call syntaxes.
//!
//! - **FunctionGemma** (Gemma 3 270M tuned for calls; its template has the
//!   `<start_function_call>` tokens):
//!   `<start_function_call>call:get_weather{city:<escape>Paris<escape>,days:3}<end_function_call>`.
//!   Strings sit between `<escape>` tokens, everything else (numbers,
//!   booleans, nested `{…}` and `[…]`) is written bare; keys are bare words.
//!   A string stays a string even when it looks like a number: the template
//!   writes numbers bare, so `<escape>42<escape>` is the text "42".
//! - **Gemma 3** has no tool support in its template. Google's guide for it
//!   has the model write Python calls in a fenced block, ```` ```tool_code
//!   get_weather(city="Paris") ``` ````, and reads results back in
//!   ```` ```tool_output ```` blocks; cortex prompts Gemma 3 that way (see
//!   `prompt.rs`) and parses the block here.

use serde_json::{Map, Value};

use super::hermes::closed_by;
use super::json::{self, Scan};
use super::pycall::{self, Cursor, PResult};
use super::{ParsedCall, Step};

pub const FG_OPEN: &str = "<start_function_call>";
pub const FG_CLOSE: &str = "<end_function_call>";
pub const FG_ESCAPE: &str = "<escape>";
/// FunctionGemma starts to invent the tool's answer with this token.
pub const FG_RESPONSE: &str = "<start_function_response>";
const FG_CALL: &str = "call:";

pub const CODE_OPEN: &str = "```tool_code";
const FENCE: &str = "```";

/// `s` starts with [`FG_OPEN`].
pub fn parse_function_gemma(s: &str, eof: bool) -> Step {
    let i = FG_OPEN.len();
    let rest = &s[i..];
    if !rest.starts_with(FG_CALL) {
        return if FG_CALL.starts_with(rest) {
            Step::more_unless(eof)
        } else {
            Step::NotACall
        };
    }
    let mut c = Cursor {
        s,
        i: i + FG_CALL.len(),
    };
    let parsed = word(&mut c).and_then(|name| {
        let args = object(&mut c)?;
        Ok((name, args))
    });
    match parsed {
        Ok((name, args)) => {
            let call = ParsedCall {
                name,
                arguments: args.to_string(),
            };
            closed_by(s, c.i, FG_CLOSE, eof, call)
        }
        Err(Scan::Incomplete) => Step::more_unless(eof),
        Err(_) => Step::NotACall,
    }
}

/// `s` starts with [`CODE_OPEN`]: one or more calls, one per line, then
/// the closing fence (or the end of the answer).
pub fn parse_tool_code(s: &str, eof: bool) -> Step {
    let mut calls = Vec::new();
    let mut i = json::skip_ws(s, CODE_OPEN.len());
    loop {
        if i == s.len() {
            return if eof && !calls.is_empty() {
                Step::Calls { calls, consumed: i }
            } else {
                Step::more_unless(eof)
            };
        }
        let rest = &s[i..];
        if rest.starts_with(FENCE) {
            if calls.is_empty() {
                return Step::NotACall;
            }
            return Step::Calls {
                calls,
                consumed: i + FENCE.len(),
            };
        }
        if FENCE.starts_with(rest) && !calls.is_empty() {
            return if eof {
                Step::Calls { calls, consumed: i }
            } else {
                Step::More
            };
        }
        match pycall::call_at(s, i) {
            Ok((name, args, end)) => {
                calls.push(ParsedCall {
                    name,
                    arguments: args.to_string(),
                });
                i = json::skip_ws(s, end);
            }
            Err(Scan::Incomplete) => return Step::more_unless(eof),
            Err(_) => return Step::NotACall,
        }
    }
}

/// Calls as Gemma 3 is asked to write them (for conversation history).
pub fn render_tool_code(calls: &[(String, Value)]) -> String {
    let lines: Vec<String> = calls
        .iter()
        .map(|(name, args)| pycall::render_call(name, args))
        .collect();
    format!("{CODE_OPEN}\n{}\n{FENCE}", lines.join("\n"))
}

/// A tool's result as Gemma 3 is told to expect it.
pub fn render_tool_output(text: &str) -> String {
    format!("{FENCE}tool_output\n{text}\n{FENCE}")
}

/// The forced start of a FunctionGemma call.
pub fn function_gemma_prefix(name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{FG_OPEN}{FG_CALL}{n}{{"),
        None => format!("{FG_OPEN}{FG_CALL}"),
    }
}

/// The forced start of a `tool_code` call.
pub fn tool_code_prefix(name: Option<&str>) -> String {
    format!(
        "{CODE_OPEN}\n{}",
        name.map(|n| format!("{n}(")).unwrap_or_default()
    )
}

/// A bare word: a name, a key, a number or a literal.
fn word(c: &mut Cursor<'_>) -> PResult<String> {
    c.take(|b, _| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+'))
}

/// The string between two `<escape>` tokens (the cursor is on the first).
fn escaped(c: &mut Cursor<'_>) -> PResult<String> {
    c.i += FG_ESCAPE.len();
    let n = c.rest().find(FG_ESCAPE).ok_or(Scan::Incomplete)?;
    let text = c.rest()[..n].to_string();
    c.i += n + FG_ESCAPE.len();
    Ok(text)
}

/// Whether the text here is `<escape>`, or might become it.
fn at_escape(c: &Cursor<'_>) -> PResult<bool> {
    let rest = c.rest();
    if rest.starts_with(FG_ESCAPE) {
        Ok(true)
    } else if rest.starts_with('<') && FG_ESCAPE.starts_with(rest) {
        Err(Scan::Incomplete)
    } else {
        Ok(false)
    }
}

fn object(c: &mut Cursor<'_>) -> PResult<Value> {
    c.expect(b'{')?;
    let mut map = Map::new();
    loop {
        c.ws();
        match c.peek() {
            None => return Err(Scan::Incomplete),
            Some(b'}') => {
                c.i += 1;
                return Ok(Value::Object(map));
            }
            // Commas between members are optional in what is read.
            Some(b',') if !map.is_empty() => {
                c.i += 1;
                continue;
            }
            Some(_) => {}
        }
        let key = if at_escape(c)? { escaped(c)? } else { word(c)? };
        c.ws();
        c.expect(b':')?;
        c.ws();
        let value = value(c)?;
        map.insert(key, value);
    }
}

fn list(c: &mut Cursor<'_>) -> PResult<Value> {
    c.i += 1;
    let mut items = Vec::new();
    loop {
        c.ws();
        match c.peek() {
            None => return Err(Scan::Incomplete),
            Some(b']') => {
                c.i += 1;
                return Ok(Value::Array(items));
            }
            Some(b',') if !items.is_empty() => c.i += 1,
            Some(_) => items.push(value(c)?),
        }
    }
}

fn value(c: &mut Cursor<'_>) -> PResult<Value> {
    if at_escape(c)? {
        return escaped(c).map(Value::String);
    }
    match c.peek() {
        None => Err(Scan::Incomplete),
        Some(b'{') => object(c),
        Some(b'[') => list(c),
        Some(_) => match word(c)?.as_str() {
            "true" | "True" => Ok(Value::Bool(true)),
            "false" | "False" => Ok(Value::Bool(false)),
            "null" | "None" => Ok(Value::Null),
            w => pycall::number(w).ok_or(Scan::Invalid),
        },
    }
}
