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

use serde_json::{Map, Number, Value};

use super::hermes::closed_by;
use super::json::Scan;
use super::pycall::{self, PResult};
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
    let mut c = FgCursor {
        s,
        i: i + FG_CALL.len(),
    };
    let parsed = c.word().and_then(|name| {
        let args = c.object()?;
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
    let mut i = skip_ws(s, CODE_OPEN.len());
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
                i = skip_ws(s, end);
            }
            Err(Scan::Incomplete) => return Step::more_unless(eof),
            Err(_) => return Step::NotACall,
        }
    }
}

fn skip_ws(s: &str, i: usize) -> usize {
    super::json::skip_ws(s, i)
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

struct FgCursor<'a> {
    s: &'a str,
    i: usize,
}

impl FgCursor<'_> {
    fn rest(&self) -> &str {
        &self.s[self.i..]
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn ws(&mut self) {
        self.i = skip_ws(self.s, self.i);
    }

    /// A bare word: a name, a key, a number or a literal.
    fn word(&mut self) -> PResult<String> {
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'+'))
        {
            self.i += 1;
        }
        if self.peek().is_none() {
            return Err(Scan::Incomplete);
        }
        if self.i == start {
            return Err(Scan::Invalid);
        }
        Ok(self.s[start..self.i].to_string())
    }

    fn escaped(&mut self) -> PResult<String> {
        self.i += FG_ESCAPE.len();
        match self.rest().find(FG_ESCAPE) {
            Some(n) => {
                let text = self.rest()[..n].to_string();
                self.i += n + FG_ESCAPE.len();
                Ok(text)
            }
            None => Err(Scan::Incomplete),
        }
    }

    /// Whether the text here is `<escape>`, or might become it.
    fn at_escape(&self) -> PResult<bool> {
        let rest = self.rest();
        if rest.starts_with(FG_ESCAPE) {
            Ok(true)
        } else if rest.starts_with('<') && FG_ESCAPE.starts_with(rest) {
            Err(Scan::Incomplete)
        } else {
            Ok(false)
        }
    }

    fn key(&mut self) -> PResult<String> {
        if self.at_escape()? {
            self.escaped()
        } else {
            self.word()
        }
    }

    fn object(&mut self) -> PResult<Value> {
        match self.peek() {
            None => return Err(Scan::Incomplete),
            Some(b'{') => self.i += 1,
            Some(_) => return Err(Scan::Invalid),
        }
        let mut map = Map::new();
        loop {
            self.ws();
            match self.peek() {
                None => return Err(Scan::Incomplete),
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Object(map));
                }
                // Commas between members are optional in what is read.
                Some(b',') if !map.is_empty() => {
                    self.i += 1;
                    continue;
                }
                Some(_) => {}
            }
            let key = self.key()?;
            self.ws();
            match self.peek() {
                None => return Err(Scan::Incomplete),
                Some(b':') => self.i += 1,
                Some(_) => return Err(Scan::Invalid),
            }
            self.ws();
            let value = self.value()?;
            map.insert(key, value);
        }
    }

    fn list(&mut self) -> PResult<Value> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.ws();
            match self.peek() {
                None => return Err(Scan::Incomplete),
                Some(b']') => {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                Some(b',') if !items.is_empty() => {
                    self.i += 1;
                    continue;
                }
                Some(_) => items.push(self.value()?),
            }
        }
    }

    fn value(&mut self) -> PResult<Value> {
        if self.at_escape()? {
            return self.escaped().map(Value::String);
        }
        match self.peek() {
            None => Err(Scan::Incomplete),
            Some(b'{') => self.object(),
            Some(b'[') => self.list(),
            Some(_) => {
                let word = self.word()?;
                match word.as_str() {
                    "true" | "True" => Ok(Value::Bool(true)),
                    "false" | "False" => Ok(Value::Bool(false)),
                    "null" | "None" => Ok(Value::Null),
                    w => {
                        if let Ok(n) = w.parse::<i64>() {
                            return Ok(Value::Number(n.into()));
                        }
                        w.parse::<f64>()
                            .ok()
                            .and_then(Number::from_f64)
                            .map(Value::Number)
                            .ok_or(Scan::Invalid)
                    }
                }
            }
        }
    }
}
