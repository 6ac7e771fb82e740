//! OpenAI chat-completion chunks → Anthropic stream events, one
//! [`AnthropicStream`] per client stream, and their SSE encoding.
//!
//! The event grammar it guarantees (CONFORMANCE.md, promise 13):
//! exactly one `message_start`, first; then blocks, one open at a time, with
//! indices 0, 1, 2, … each `content_block_start` → deltas →
//! `content_block_stop`; then one `message_delta` (stop reason and full
//! usage) and `message_stop`, last. A failure ends the stream with one
//! `error` event instead. `ping` may come anywhere before the end.
//!
//! Decisions where CONFORMANCE.md is silent:
//! - only choice 0 is translated;
//! - text that is only whitespace and comes while no text block is open is
//!   held back: it joins the next text, and is dropped if a tool call comes
//!   first (models often emit `"\n\n"` before a tool call);
//! - a tool call's block starts once its name is known (its arguments are
//!   buffered until then); deltas for a tool call whose block was already
//!   closed (interleaved parallel calls, which no known server sends) are
//!   dropped with a warning rather than reopening a block;
//! - a block is closed as soon as the finish reason arrives; `message_delta`
//!   waits for [`AnthropicStream::finish`], i.e. for the usage chunk and
//!   `[DONE]`;
//! - a stream that produced no block at all gets one empty text block, like
//!   the non-streamed answer;
//! - without a usage chunk, `input_tokens` is the hint given at creation and
//!   `output_tokens` the number of chunks that carried content;
//! - [`AnthropicStream::fail`] does not close open blocks: a cut tool call
//!   must not look complete to the client.

use bytes::Bytes;
use cortex_core::anthropic::{
    BlockDelta, ContentBlock, DeltaUsage, ErrorBody, MessageDeltaBody, MessagesResponse, Role,
    StopReason, StreamEvent, Usage,
};
use cortex_core::openai::{ChatCompletionChunk, FinishReason, ToolCallDelta};
use serde_json::{Map, Value};

use super::response::{self, finish_to_stop_reason, settle_stop_reason, tool_use_id};
use super::tool_deltas::{StartedCall, ToolDeltas, ToolStep};

/// Where the stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotStarted,
    Streaming,
    Done,
}

/// The block currently open.
#[derive(Debug, Clone, Copy)]
enum OpenBlock {
    Text { index: u32 },
    Tool { index: u32, upstream: u32 },
}

/// Per-stream translation state: OpenAI chunks in, Anthropic events out.
#[derive(Debug)]
pub struct AnthropicStream {
    message_id: String,
    model: String,
    input_tokens_hint: u64,
    phase: Phase,
    next_index: u32,
    open: Option<OpenBlock>,
    tools: ToolDeltas,
    /// Whitespace-only text waiting for a text block (see module docs).
    pending_space: String,
    finish: Option<FinishReason>,
    matched_stop: Option<String>,
    usage: Option<cortex_core::openai::Usage>,
    content_chunks: u64,
}

impl AnthropicStream {
    /// A stream answering as `message_id` (given a `msg_` prefix if it lacks
    /// one) for `requested_model`; `input_tokens_hint` is reported in
    /// `message_start`, before upstream says how long the prompt was.
    pub fn new(message_id: String, requested_model: String, input_tokens_hint: u64) -> Self {
        Self {
            message_id: response::message_id(&message_id),
            model: requested_model,
            input_tokens_hint,
            phase: Phase::NotStarted,
            next_index: 0,
            open: None,
            tools: ToolDeltas::default(),
            pending_space: String::new(),
            finish: None,
            matched_stop: None,
            usage: None,
            content_chunks: 0,
        }
    }

    /// Events to send before any upstream chunk arrives: exactly one
    /// `message_start`. Call once, first; later calls return nothing.
    pub fn start(&mut self) -> Vec<StreamEvent> {
        if self.phase != Phase::NotStarted {
            return Vec::new();
        }
        self.phase = Phase::Streaming;
        vec![StreamEvent::MessageStart {
            message: MessagesResponse {
                id: self.message_id.clone(),
                kind: "message".into(),
                role: Role::Assistant,
                content: Vec::new(),
                model: self.model.clone(),
                stop_reason: None,
                stop_sequence: None,
                usage: Usage {
                    input_tokens: self.input_tokens_hint,
                    ..Usage::default()
                },
            },
        }]
    }

    /// Translate one upstream chunk. Starts the stream if [`Self::start`]
    /// was not called; returns nothing once the stream is done.
    pub fn on_chunk(&mut self, chunk: ChatCompletionChunk) -> Vec<StreamEvent> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        let mut out = self.start();
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            let mut carried = false;
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                carried = true;
                self.on_text(text, &mut out);
            }
            for call in choice.delta.tool_calls.unwrap_or_default() {
                carried |= !call.function.arguments.is_empty();
                self.on_tool_delta(call, &mut out);
            }
            if carried {
                self.content_chunks += 1;
            }
            if let Some(finish) = choice.finish_reason {
                self.finish = Some(finish);
                self.matched_stop = choice.stop_reason;
                self.flush_pending_tool(&mut out);
                self.close_open(&mut out);
            }
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        out
    }

    /// Upstream said `[DONE]` or ended: close open blocks, then
    /// `message_delta` (stop reason, stop sequence, full usage) and
    /// `message_stop`. Returns nothing once the stream is done.
    pub fn finish(&mut self) -> Vec<StreamEvent> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        let mut out = self.start();
        self.flush_pending_tool(&mut out);
        self.close_open(&mut out);
        if self.next_index == 0 {
            let text = std::mem::take(&mut self.pending_space);
            self.open_text(&mut out);
            if !text.is_empty() {
                self.text_delta(text, &mut out);
            }
            self.close_open(&mut out);
        }
        let (reason, stop_sequence) =
            finish_to_stop_reason(self.finish, self.matched_stop.as_deref());
        let reason = settle_stop_reason(reason, self.tools.any_started());
        let stop_sequence = stop_sequence.filter(|_| reason == StopReason::StopSequence);
        let usage = match self.usage {
            Some(u) => {
                let a = Usage::from_openai(&u);
                DeltaUsage {
                    input_tokens: a.input_tokens,
                    output_tokens: a.output_tokens,
                    cache_read_input_tokens: a.cache_read_input_tokens,
                    cache_creation_input_tokens: a.cache_creation_input_tokens,
                }
            }
            None => DeltaUsage {
                input_tokens: self.input_tokens_hint,
                output_tokens: self.content_chunks,
                ..DeltaUsage::default()
            },
        };
        out.push(StreamEvent::MessageDelta {
            delta: MessageDeltaBody {
                stop_reason: Some(reason),
                stop_sequence,
            },
            usage,
        });
        out.push(StreamEvent::MessageStop);
        self.phase = Phase::Done;
        out
    }

    /// Upstream failed mid-stream: one `error` event of type `kind`
    /// (`api_error`, `overloaded_error`) and nothing after it.
    pub fn fail(&mut self, kind: &str, message: &str) -> Vec<StreamEvent> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        self.phase = Phase::Done;
        vec![StreamEvent::Error {
            error: ErrorBody {
                kind: kind.to_string(),
                message: message.to_string(),
            },
        }]
    }

    /// True once `message_stop` or `error` was produced.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// A keepalive `ping` while the stream is not done.
    pub fn ping(&self) -> Option<StreamEvent> {
        (self.phase != Phase::Done).then_some(StreamEvent::Ping)
    }

    fn on_text(&mut self, text: String, out: &mut Vec<StreamEvent>) {
        self.flush_pending_tool(out);
        if matches!(self.open, Some(OpenBlock::Text { .. })) {
            self.text_delta(text, out);
        } else if text.trim().is_empty() {
            self.pending_space.push_str(&text);
        } else {
            let text = std::mem::take(&mut self.pending_space) + &text;
            self.close_open(out);
            self.open_text(out);
            self.text_delta(text, out);
        }
    }

    fn on_tool_delta(&mut self, call: ToolCallDelta, out: &mut Vec<StreamEvent>) {
        let open = match self.open {
            Some(OpenBlock::Tool { upstream, .. }) => Some(upstream),
            _ => None,
        };
        for step in self.tools.on_delta(call, open) {
            match step {
                ToolStep::Start(tool) => self.start_tool(tool, out),
                ToolStep::Arguments(partial_json) => {
                    if let Some(OpenBlock::Tool { index, .. }) = self.open {
                        out.push(StreamEvent::ContentBlockDelta {
                            index,
                            delta: BlockDelta::InputJsonDelta { partial_json },
                        });
                    }
                }
            }
        }
    }

    /// Start the pending tool call's block, with whatever name it has.
    fn flush_pending_tool(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some(tool) = self.tools.flush() {
            self.start_tool(tool, out);
        }
    }

    /// Open a `tool_use` block for `tool`, with the arguments it brought.
    fn start_tool(&mut self, tool: StartedCall, out: &mut Vec<StreamEvent>) {
        self.close_open(out);
        self.pending_space.clear();
        let index = self.take_index();
        out.push(StreamEvent::ContentBlockStart {
            index,
            content_block: ContentBlock::ToolUse {
                id: tool
                    .id
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(tool_use_id),
                name: tool.name,
                input: Value::Object(Map::new()),
            },
        });
        if !tool.arguments.is_empty() {
            out.push(StreamEvent::ContentBlockDelta {
                index,
                delta: BlockDelta::InputJsonDelta {
                    partial_json: tool.arguments,
                },
            });
        }
        self.open = Some(OpenBlock::Tool {
            index,
            upstream: tool.upstream,
        });
    }

    fn open_text(&mut self, out: &mut Vec<StreamEvent>) {
        let index = self.take_index();
        out.push(StreamEvent::ContentBlockStart {
            index,
            content_block: ContentBlock::Text {
                text: String::new(),
                extra: Map::new(),
            },
        });
        self.open = Some(OpenBlock::Text { index });
    }

    fn text_delta(&mut self, text: String, out: &mut Vec<StreamEvent>) {
        if let Some(OpenBlock::Text { index }) = self.open {
            out.push(StreamEvent::ContentBlockDelta {
                index,
                delta: BlockDelta::TextDelta { text },
            });
        }
    }

    fn close_open(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some(open) = self.open.take() {
            let index = match open {
                OpenBlock::Text { index } | OpenBlock::Tool { index, .. } => index,
            };
            out.push(StreamEvent::ContentBlockStop { index });
        }
    }

    fn take_index(&mut self) -> u32 {
        let index = self.next_index;
        self.next_index += 1;
        index
    }
}

/// One event as SSE: `event: NAME\ndata: JSON\n\n`.
pub fn encode_event(ev: &StreamEvent) -> Bytes {
    match serde_json::to_string(ev) {
        Ok(json) => Bytes::from(format!("event: {}\ndata: {json}\n\n", ev.name())),
        // Unreachable with these types (no maps with non-string keys), but a
        // stream must never be cut silently.
        Err(_) => Bytes::from_static(
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"could not encode a stream event\"}}\n\n",
        ),
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "stream_props.rs"]
pub(crate) mod props;
