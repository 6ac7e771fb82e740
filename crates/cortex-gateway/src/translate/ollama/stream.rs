//! OpenAI chat-completion chunks → Ollama NDJSON answer objects, one
//! [`OllamaStream`] per client stream, for `/api/chat` or `/api/generate`.
//!
//! The grammar it guarantees: zero or more `done: false` objects (text
//! fragments; on `/api/chat` one object with all tool calls), then exactly
//! one `done: true` object with `done_reason`, token counts and durations,
//! last. A failure ends the stream with one `{"error": …}` line instead
//! (what the `ollama` package raises on). Nothing follows either.
//!
//! Decisions where CONFORMANCE.md is silent:
//! - only choice 0 is translated;
//! - tool calls are sent whole, as Ollama sends them: their fragments are
//!   gathered and go out in one `done: false` object just before the
//!   `done: true` one; `/api/generate` drops them (it has no tools);
//! - without a usage chunk, `prompt_eval_count` is the hint given at
//!   creation and `eval_count` the number of chunks that carried content;
//! - durations: `load_duration` is what the caller says, prompt evaluation
//!   runs from creation to the first content, evaluation from there to the
//!   last content.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cortex_core::ollama::{ChatResponse, ErrorResponse, GenerateResponse, Message};
use cortex_core::openai::{self, ChatCompletionChunk, FinishReason, FunctionCall, ToolCall};
use cortex_core::time::rfc3339;

use super::response::tool_calls;
use super::{done_reason, Now, Timings};

/// Which endpoint the stream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Generate,
}

/// One NDJSON line.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Chat(ChatResponse),
    Generate(GenerateResponse),
    Error(ErrorResponse),
}

impl Line {
    /// True for the line that ends a stream (`done: true` or an error).
    pub fn is_last(&self) -> bool {
        match self {
            Line::Chat(c) => c.done,
            Line::Generate(g) => g.done,
            Line::Error(_) => true,
        }
    }
}

/// A tool call being gathered, by upstream index.
#[derive(Debug)]
struct Gathered {
    upstream: u32,
    id: String,
    name: String,
    arguments: String,
}

/// Per-stream translation state: chat chunks in, Ollama objects out.
#[derive(Debug)]
pub struct OllamaStream {
    endpoint: Endpoint,
    model: String,
    started: Instant,
    prompt_tokens_hint: u64,
    first_content: Option<Instant>,
    last_content: Option<Instant>,
    calls: Vec<Gathered>,
    finish: Option<FinishReason>,
    usage: Option<openai::Usage>,
    content_chunks: u64,
    done: bool,
}

impl OllamaStream {
    /// A stream answering `endpoint` for `model` (the name the client
    /// used), whose upstream request went out at `started`;
    /// `prompt_tokens_hint` is reported when upstream sends no usage.
    pub fn new(
        endpoint: Endpoint,
        model: String,
        started: Instant,
        prompt_tokens_hint: u64,
    ) -> Self {
        Self {
            endpoint,
            model,
            started,
            prompt_tokens_hint,
            first_content: None,
            last_content: None,
            calls: Vec::new(),
            finish: None,
            usage: None,
            content_chunks: 0,
            done: false,
        }
    }

    /// Translate one upstream chunk, received at `now`.
    pub fn on_chunk(&mut self, chunk: ChatCompletionChunk, now: Now) -> Vec<Line> {
        if self.done {
            return Vec::new();
        }
        let mut out = Vec::new();
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            let mut carried = false;
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                carried = true;
                out.push(self.fragment(text, None, now));
            }
            for call in choice.delta.tool_calls.unwrap_or_default() {
                // The name is the first token of a call.
                carried |= !call.function.arguments.is_empty()
                    || call.function.name.as_ref().is_some_and(|n| !n.is_empty());
                let slot = match self.calls.iter_mut().position(|c| c.upstream == call.index) {
                    Some(i) => &mut self.calls[i],
                    None => {
                        self.calls.push(Gathered {
                            upstream: call.index,
                            id: String::new(),
                            name: String::new(),
                            arguments: String::new(),
                        });
                        let last = self.calls.len() - 1;
                        &mut self.calls[last]
                    }
                };
                if slot.id.is_empty() {
                    slot.id = call.id.unwrap_or_default();
                }
                slot.name.push_str(&call.function.name.unwrap_or_default());
                slot.arguments.push_str(&call.function.arguments);
            }
            if carried {
                self.content_chunks += 1;
                self.first_content.get_or_insert(now.instant);
                self.last_content = Some(now.instant);
            }
            if let Some(finish) = choice.finish_reason {
                self.finish = Some(finish);
            }
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        out
    }

    /// Upstream ended at `now`; `load` is how long the model took to load
    /// before the request went out. Gathered tool calls, then the
    /// `done: true` object.
    pub fn finish(&mut self, now: Now, load: Duration) -> Vec<Line> {
        if self.done {
            return Vec::new();
        }
        let mut out: Vec<Line> = self.flush_calls(now).into_iter().collect();
        let first = self.first_content.unwrap_or(now.instant);
        let last = self.last_content.unwrap_or(first);
        let timings = Timings {
            load,
            prompt_eval: first.saturating_duration_since(self.started),
            eval: last.saturating_duration_since(first),
        };
        let (prompt, generated) = match self.usage {
            Some(u) => (u.prompt_tokens, u.completion_tokens),
            None => (self.prompt_tokens_hint, self.content_chunks),
        };
        let stats = Some(timings.stats(prompt, generated));
        let reason = Some(done_reason(self.finish).to_string());
        let created_at = rfc3339(now.unix_ms);
        out.push(match self.endpoint {
            Endpoint::Chat => Line::Chat(ChatResponse {
                model: self.model.clone(),
                created_at,
                message: Message::assistant(""),
                done: true,
                done_reason: reason,
                stats,
            }),
            Endpoint::Generate => Line::Generate(GenerateResponse {
                model: self.model.clone(),
                created_at,
                response: String::new(),
                done: true,
                done_reason: reason,
                stats,
            }),
        });
        self.done = true;
        out
    }

    /// Upstream failed mid-stream: one `{"error": message}` line and
    /// nothing after it.
    pub fn fail(&mut self, message: &str) -> Vec<Line> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        vec![Line::Error(ErrorResponse {
            error: message.to_string(),
        })]
    }

    /// True once the last line was produced.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// A `done: false` object with a text fragment or tool calls.
    fn fragment(&self, text: String, calls: Option<Vec<ToolCall>>, now: Now) -> Line {
        let created_at = rfc3339(now.unix_ms);
        match self.endpoint {
            Endpoint::Chat => {
                let mut message = Message::assistant(text);
                message.tool_calls = calls.map(tool_calls);
                Line::Chat(ChatResponse {
                    model: self.model.clone(),
                    created_at,
                    message,
                    done: false,
                    done_reason: None,
                    stats: None,
                })
            }
            Endpoint::Generate => Line::Generate(GenerateResponse {
                model: self.model.clone(),
                created_at,
                response: text,
                done: false,
                done_reason: None,
                stats: None,
            }),
        }
    }

    /// The gathered tool calls, as one object (chat only).
    fn flush_calls(&mut self, now: Now) -> Option<Line> {
        if self.calls.is_empty() {
            return None;
        }
        let calls: Vec<ToolCall> = std::mem::take(&mut self.calls)
            .into_iter()
            .map(|c| ToolCall {
                id: c.id,
                kind: "function".into(),
                function: FunctionCall {
                    name: c.name,
                    arguments: c.arguments,
                },
            })
            .collect();
        match self.endpoint {
            Endpoint::Chat => Some(self.fragment(String::new(), Some(calls), now)),
            Endpoint::Generate => {
                tracing::debug!(calls = calls.len(), "dropping tool calls on /api/generate");
                None
            }
        }
    }
}

/// One line as NDJSON: JSON and `\n`.
pub fn encode_line(line: &Line) -> Bytes {
    let json = match line {
        Line::Chat(c) => serde_json::to_vec(c),
        Line::Generate(g) => serde_json::to_vec(g),
        Line::Error(e) => serde_json::to_vec(e),
    };
    match json {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            Bytes::from(bytes)
        }
        // Unreachable with these types, but a stream must never be cut
        // silently.
        Err(_) => Bytes::from_static(b"{\"error\":\"could not encode a stream object\"}\n"),
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
