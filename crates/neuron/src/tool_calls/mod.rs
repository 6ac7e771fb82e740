//! Tool calls in generated text: which syntax a model writes them in, and a
//! streaming parser that turns the text into plain text and calls.
//!
//! What lives here:
//! - [`ToolFormat`] and [`detect`]: the call syntax of a model, read from its
//!   GGUF chat template (and architecture): Hermes/Qwen `<tool_call>`,
//!   Llama 3.x JSON and `<|python_tag|>`, Mistral `[TOOL_CALLS]` (both
//!   generations), FunctionGemma, and Gemma 3 `tool_code` blocks; one file
//!   per family ([`hermes`], [`llama3`], [`mistral`], [`gemma`], with
//!   [`json`] and [`pycall`] as their scanners);
//! - [`ToolCallParser`]: the streaming driver. Like the stop-sequence
//!   matcher, it holds back text that might be the start of a call marker,
//!   so the result does not depend on how the text was split, and it never
//!   loses or repeats text. A call is held back until it is complete and
//!   valid (a delta sent to a client cannot be taken back), then comes out
//!   whole; a call that never completes, or is not a call, comes out as the
//!   text it was. Whitespace right before a call, between calls and after
//!   the last one is dropped, so a client never sees an empty text block
//!   before a call.
//! - [`prompt`]: what the prompt needs for tools — the request's
//!   `tool_choice`, the tool instructions for templates without tool
//!   support, earlier calls and results rewritten for them, and the forced
//!   start of a call for a named `tool_choice`.
//!
//! What does not: HTTP, token ids and generation; the chat API feeds text in
//! and turns the events into OpenAI messages and deltas.

pub mod gemma;
pub mod hermes;
pub mod json;
pub mod llama3;
pub mod mistral;
pub mod prompt;
pub mod pycall;

use serde::Serialize;

use crate::engine::stop::partial_suffix_len;
use json::Member;

/// A call syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolFormat {
    /// `<tool_call>{"name", "arguments"}</tool_call>` (Hermes, Qwen).
    Hermes,
    /// `{"name", "parameters"}` answers and `<|python_tag|>` (Llama 3.x).
    Llama3,
    /// `[TOOL_CALLS]…`; `v11` when the template writes `name[ARGS]{…}`.
    Mistral { v11: bool },
    /// `<start_function_call>call:name{…}<end_function_call>`.
    FunctionGemma,
    /// ```` ```tool_code name(k=v) ``` ```` (Gemma 3, prompted by cortex).
    GemmaToolCode,
}

/// How a model handles tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolSupport {
    /// The syntax its calls are parsed in; `None` when unknown.
    pub format: Option<ToolFormat>,
    /// The template ignores tools, so cortex describes them to the model
    /// itself (in the system prompt) and asks for `format`.
    pub prompted: bool,
}

/// The call syntax of a model, from its chat template text and its
/// architecture (`general.architecture`).
///
/// A template that shows one of the known call syntaxes gets that format.
/// A template that never mentions `tools` gets tools described by cortex:
/// Gemma models (whose template has no system role and no tool support) in
/// Google's `tool_code` style, others in the Hermes style. A template that
/// renders tools in a syntax not known here gets no parsing at all.
pub fn detect(template: &str, architecture: &str) -> ToolSupport {
    let native = |format| ToolSupport {
        format: Some(format),
        prompted: false,
    };
    if template.contains(gemma::FG_OPEN) {
        return native(ToolFormat::FunctionGemma);
    }
    if template.contains(mistral::TOOL_CALLS) {
        return native(ToolFormat::Mistral {
            v11: template.contains(mistral::ARGS),
        });
    }
    if template.contains(hermes::OPEN) {
        // Qwen3-Coder's XML parameters (`<function=…>`) are another syntax.
        if template.contains("<function=") {
            return ToolSupport {
                format: None,
                prompted: false,
            };
        }
        return native(ToolFormat::Hermes);
    }
    if template.contains(llama3::PYTHON_TAG) || template.contains("Environment: ipython") {
        return native(ToolFormat::Llama3);
    }
    if !template.contains("tools") {
        let format = if architecture.starts_with("gemma") {
            ToolFormat::GemmaToolCode
        } else {
            ToolFormat::Hermes
        };
        return ToolSupport {
            format: Some(format),
            prompted: true,
        };
    }
    ToolSupport {
        format: None,
        prompted: false,
    }
}

impl ToolFormat {
    /// Texts that start a call anywhere in the answer.
    fn markers(self) -> &'static [&'static str] {
        match self {
            ToolFormat::Hermes => &[hermes::OPEN],
            ToolFormat::Llama3 => &[llama3::PYTHON_TAG],
            ToolFormat::Mistral { .. } => &[mistral::TOOL_CALLS],
            ToolFormat::FunctionGemma => &[gemma::FG_OPEN],
            ToolFormat::GemmaToolCode => &[gemma::CODE_OPEN],
        }
    }

    /// `s` starts with one of [`Self::markers`].
    fn parse(self, s: &str, eof: bool) -> Step {
        match self {
            ToolFormat::Hermes => hermes::parse(s, eof),
            ToolFormat::Llama3 => llama3::parse_tagged(s, eof),
            ToolFormat::Mistral { .. } => mistral::parse(s, eof),
            ToolFormat::FunctionGemma => gemma::parse_function_gemma(s, eof),
            ToolFormat::GemmaToolCode => gemma::parse_tool_code(s, eof),
        }
    }

    /// Calls without a marker, at the start of the answer or after a call
    /// (`s` starts with its first non-whitespace character); `None` for
    /// formats that always mark their calls.
    fn parse_boundary(self, s: &str, eof: bool, after_call: bool) -> Option<Step> {
        match self {
            ToolFormat::Llama3 => Some(llama3::parse_boundary(s, eof, after_call)),
            _ => None,
        }
    }

    /// Special tokens the detokenizer must write out as text (they are
    /// skipped otherwise), as llama.cpp's "preserved tokens".
    pub fn special_tokens(self) -> &'static [&'static str] {
        match self {
            ToolFormat::Hermes => &[hermes::OPEN, hermes::CLOSE],
            ToolFormat::Llama3 => &[llama3::PYTHON_TAG],
            ToolFormat::Mistral { .. } => &[mistral::TOOL_CALLS, mistral::ARGS, mistral::CALL_ID],
            ToolFormat::FunctionGemma => &[
                gemma::FG_OPEN,
                gemma::FG_CLOSE,
                gemma::FG_ESCAPE,
                gemma::FG_RESPONSE,
            ],
            ToolFormat::GemmaToolCode => &[],
        }
    }

    /// Extra stop strings while tools are on: FunctionGemma goes on to
    /// invent the tool's answer after a call.
    pub fn stops(self) -> &'static [&'static str] {
        match self {
            ToolFormat::FunctionGemma => &[gemma::FG_RESPONSE],
            _ => &[],
        }
    }

    /// The start of an answer that must be a call: the model completes it
    /// (with `name`, only the arguments are left to write).
    pub fn forced_prefix(self, name: Option<&str>) -> String {
        match self {
            ToolFormat::Hermes => hermes::forced_prefix(name),
            ToolFormat::Llama3 => llama3::forced_prefix(name),
            ToolFormat::Mistral { v11 } => mistral::forced_prefix(v11, name),
            ToolFormat::FunctionGemma => gemma::function_gemma_prefix(name),
            ToolFormat::GemmaToolCode => gemma::tool_code_prefix(name),
        }
    }

    /// Mistral templates refuse ids that are not nine letters and digits.
    pub fn wants_short_ids(self) -> bool {
        matches!(self, ToolFormat::Mistral { .. })
    }
}

/// A call found in the text: the function name and its arguments as a
/// JSON object (text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCall {
    pub name: String,
    pub arguments: String,
}

/// What a format's parser says about text starting at a (possible) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The first `consumed` bytes are these calls (possibly none: a
    /// separator between calls).
    Calls {
        calls: Vec<ParsedCall>,
        consumed: usize,
    },
    /// It may still become a call: wait for more text.
    More,
    /// It is not a call, whatever follows: the marker is text.
    NotACall,
}

impl Step {
    /// `More`, or `NotACall` when there is no more text to come.
    fn more_unless(eof: bool) -> Step {
        if eof {
            Step::NotACall
        } else {
            Step::More
        }
    }
}

/// A call from a JSON object's members: a non-empty string `name` and the
/// first of `arg_keys` present (an object; `null` or, unless
/// `require_args`, absent means no arguments).
fn call_from(members: &[Member<'_>], arg_keys: &[&str], require_args: bool) -> Option<ParsedCall> {
    let name = members
        .iter()
        .find(|m| m.key == "name")?
        .as_string()
        .filter(|n| !n.trim().is_empty())?;
    let args = arg_keys
        .iter()
        .find_map(|k| members.iter().find(|m| m.key == *k));
    let arguments = match args {
        Some(m) if m.raw == "null" => "{}".to_string(),
        Some(m) => {
            let text = json::arguments_text(m.raw);
            if !text.starts_with('{') {
                return None;
            }
            text
        }
        None if require_args => return None,
        None => "{}".to_string(),
    };
    Some(ParsedCall { name, arguments })
}

/// A fresh tool call id: nine letters and digits for formats that demand
/// it, else `call_` and 24 of them.
pub fn call_id(format: Option<ToolFormat>) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    let mut rng = rand::rng();
    if format.is_some_and(ToolFormat::wants_short_ids) {
        Alphanumeric.sample_string(&mut rng, 9)
    } else {
        format!("call_{}", Alphanumeric.sample_string(&mut rng, 24))
    }
}

/// What the parser yields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Text(String),
    Call(ParsedCall),
}

/// The streaming parser of one answer.
#[derive(Debug, Clone)]
pub struct ToolCallParser {
    format: ToolFormat,
    /// Text received and not yet decided on. It starts with plain text that
    /// might begin a marker, or with a call in progress.
    buf: String,
    /// At the start of the answer or right after a call (where Llama 3's
    /// unmarked JSON calls may come).
    boundary: bool,
    /// Whitespace held back: sent before the next text, dropped before a
    /// call, and dropped at the end once a call was made.
    space: String,
    /// Nothing but whitespace since the last call (which is dropped).
    after_call: bool,
    calls: usize,
}

impl ToolCallParser {
    pub fn new(format: ToolFormat) -> Self {
        Self {
            format,
            buf: String::new(),
            boundary: true,
            space: String::new(),
            after_call: false,
            calls: 0,
        }
    }

    pub fn format(&self) -> ToolFormat {
        self.format
    }

    /// Calls found so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Adds streamed text; returns what is decided.
    pub fn push(&mut self, text: &str) -> Vec<Event> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        self.run(false, &mut out);
        out
    }

    /// Ends the answer: a call in progress becomes text; held whitespace is
    /// sent unless a call was made.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        self.run(true, &mut out);
        let space = std::mem::take(&mut self.space);
        if self.calls == 0 && !space.is_empty() {
            out.push(Event::Text(space));
        }
        out
    }

    fn run(&mut self, eof: bool, out: &mut Vec<Event>) {
        while !self.buf.is_empty() {
            if self.boundary {
                let start = self.buf.len() - self.buf.trim_start().len();
                let space: String = self.buf.drain(..start).collect();
                if !self.after_call {
                    self.space.push_str(&space);
                }
                if self.buf.is_empty() {
                    return;
                }
                match self.format.parse_boundary(&self.buf, eof, self.calls > 0) {
                    Some(Step::Calls { calls, consumed }) => {
                        self.emit_calls(calls, consumed, out);
                        continue;
                    }
                    Some(Step::More) => return,
                    Some(Step::NotACall) | None => self.boundary = false,
                }
            }
            let Some((pos, marker)) = self.find_marker() else {
                let keep = if eof { 0 } else { self.partial_marker_len() };
                let text: String = self.buf.drain(..self.buf.len() - keep).collect();
                self.text(text, out);
                return;
            };
            let before: String = self.buf.drain(..pos).collect();
            self.text(before, out);
            match self.format.parse(&self.buf, eof) {
                Step::Calls { calls, consumed } => {
                    self.emit_calls(calls, consumed, out);
                    self.boundary = true;
                }
                Step::More => return,
                Step::NotACall => {
                    let text: String = self.buf.drain(..marker.len()).collect();
                    self.text(text, out);
                }
            }
        }
    }

    fn emit_calls(&mut self, calls: Vec<ParsedCall>, consumed: usize, out: &mut Vec<Event>) {
        self.buf.drain(..consumed);
        self.space.clear();
        self.after_call |= !calls.is_empty();
        self.calls += calls.len();
        out.extend(calls.into_iter().map(Event::Call));
    }

    /// Plain text: trailing whitespace is held back (see [`Self::space`]),
    /// leading whitespace right after a call dropped.
    fn text(&mut self, text: String, out: &mut Vec<Event>) {
        let text = if self.after_call {
            text.trim_start().to_string()
        } else {
            text
        };
        let body = text.trim_end();
        if body.is_empty() {
            self.space.push_str(&text);
            return;
        }
        self.after_call = false;
        let trailing = text[body.len()..].to_string();
        let mut piece = std::mem::take(&mut self.space);
        piece.push_str(body);
        out.push(Event::Text(piece));
        self.space = trailing;
        self.boundary = false;
    }

    /// The earliest marker in the buffer.
    fn find_marker(&self) -> Option<(usize, &'static str)> {
        self.format
            .markers()
            .iter()
            .filter_map(|m| self.buf.find(m).map(|i| (i, *m)))
            .min_by_key(|(i, _)| *i)
    }

    /// Length of the longest suffix of the buffer that may still become a
    /// marker.
    fn partial_marker_len(&self) -> usize {
        partial_suffix_len(&self.buf, self.format.markers().iter().copied())
    }
}

#[cfg(test)]
pub(crate) mod fixtures;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
