//! OpenAI chat-completion chunks → Responses stream events, one
//! [`ResponsesStream`] per client stream, and their SSE encoding.
//!
//! The event grammar it guarantees: `response.created` then
//! `response.in_progress`, first; then output items, one open at a time,
//! with output indices 0, 1, 2, …: a message is `output_item.added`,
//! `content_part.added`, `output_text.delta`…, `output_text.done`,
//! `content_part.done`, `output_item.done`; a function call is
//! `output_item.added`, `function_call_arguments.delta`…,
//! `function_call_arguments.done`, `output_item.done`. Last, exactly one of
//! `response.completed`, `response.incomplete` (status `incomplete`, as
//! OpenAI sends when `max_output_tokens` cut the answer) or
//! `response.failed`, carrying the whole response. `sequence_number` rises
//! by one from 0. No `[DONE]`.
//!
//! Decisions where CONFORMANCE.md is silent (they mirror
//! [`super::response`], so that a stream's text equals the non-streamed
//! answer's):
//! - only choice 0 is translated;
//! - text that is only whitespace and comes while no message is open is
//!   held back: it joins the next text, and is dropped only if the whole
//!   answer is whitespace next to tool calls;
//! - a function call's item starts once its name is known (arguments are
//!   buffered until then); deltas for a call whose item was already closed
//!   (interleaved parallel calls, which no known server sends) are dropped
//!   with a warning rather than reopening an item;
//! - the open item is closed when the finish reason arrives; the final
//!   event waits for [`ResponsesStream::finish`], i.e. for the usage chunk;
//! - without a usage chunk, `input_tokens` is the hint given at creation and
//!   `output_tokens` the number of chunks that carried content;
//! - [`ResponsesStream::fail`] does not close the open item: a cut function
//!   call must not look complete. The failed response lists it as
//!   `incomplete`.

use bytes::Bytes;
use cortex_core::openai::{self, ChatCompletionChunk, FinishReason, ToolCallDelta};
use cortex_core::responses::{
    ItemStatus, OutputContent, OutputItem, Response, ResponseError, ResponseStatus, StreamEvent,
};

use super::response::{status_of, usage};
use super::ResponseSeed;
use crate::translate::tool_deltas::{StartedCall, ToolDeltas, ToolStep};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotStarted,
    Streaming,
    Done,
}

/// The item currently open.
#[derive(Debug)]
enum Open {
    Message {
        index: u32,
        id: String,
        text: String,
    },
    Call {
        index: u32,
        id: String,
        upstream: u32,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Per-stream translation state: chat chunks in, Responses events out.
#[derive(Debug)]
pub struct ResponsesStream {
    seed: ResponseSeed,
    input_tokens_hint: u64,
    phase: Phase,
    sequence: u64,
    /// Closed items, in output order.
    output: Vec<OutputItem>,
    open: Option<Open>,
    calls: ToolDeltas,
    /// Whitespace-only text waiting for a message (see module docs).
    pending_space: String,
    emitted_text: bool,
    finish: Option<FinishReason>,
    usage: Option<openai::Usage>,
    content_chunks: u64,
    /// The response of the final event, once sent.
    last: Option<Response>,
}

impl ResponsesStream {
    /// A stream answering for `seed`; `input_tokens_hint` is the prompt
    /// length reported when upstream sends no usage.
    pub fn new(seed: ResponseSeed, input_tokens_hint: u64) -> Self {
        Self {
            seed,
            input_tokens_hint,
            phase: Phase::NotStarted,
            sequence: 0,
            output: Vec::new(),
            open: None,
            calls: ToolDeltas::default(),
            pending_space: String::new(),
            emitted_text: false,
            finish: None,
            usage: None,
            content_chunks: 0,
            last: None,
        }
    }

    /// Events to send before any upstream chunk: `response.created` and
    /// `response.in_progress`. Call once, first; later calls return nothing.
    pub fn start(&mut self) -> Vec<StreamEvent> {
        if self.phase != Phase::NotStarted {
            return Vec::new();
        }
        self.phase = Phase::Streaming;
        let response = self
            .seed
            .response(ResponseStatus::InProgress, Vec::new(), None);
        vec![
            StreamEvent::Created {
                response: response.clone(),
                sequence_number: self.next_sequence(),
            },
            StreamEvent::InProgress {
                response,
                sequence_number: self.next_sequence(),
            },
        ]
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
                self.on_call_delta(call, &mut out);
            }
            if carried {
                self.content_chunks += 1;
            }
            if let Some(finish) = choice.finish_reason {
                self.finish = Some(finish);
                self.flush_pending_call(&mut out);
                self.close_open(self.closing_status(), &mut out);
            }
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        out
    }

    /// Upstream ended: close what is open, then `response.completed` (or
    /// `response.incomplete`) with the whole response and usage. Returns
    /// nothing once the stream is done.
    pub fn finish(&mut self) -> Vec<StreamEvent> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        let mut out = self.start();
        let closing = self.closing_status();
        self.flush_pending_call(&mut out);
        self.close_open(closing, &mut out);
        let space = std::mem::take(&mut self.pending_space);
        let keep_space = self.emitted_text || !self.calls.any_started();
        if (!space.is_empty() && keep_space) || self.output.is_empty() {
            self.open_message(&mut out);
            if !space.is_empty() {
                self.text_delta(space, &mut out);
            }
            self.close_open(closing, &mut out);
        }
        let (status, details) = status_of(self.finish);
        let usage = match self.usage {
            Some(u) => usage(&u),
            None => usage(&openai::Usage::new(
                self.input_tokens_hint,
                self.content_chunks,
            )),
        };
        let mut response =
            self.seed
                .response(status, std::mem::take(&mut self.output), Some(usage));
        response.incomplete_details = details;
        let sequence_number = self.next_sequence();
        out.push(if status == ResponseStatus::Incomplete {
            StreamEvent::Incomplete {
                response: response.clone(),
                sequence_number,
            }
        } else {
            StreamEvent::Completed {
                response: response.clone(),
                sequence_number,
            }
        });
        self.last = Some(response);
        self.phase = Phase::Done;
        out
    }

    /// Upstream failed mid-stream: `response.failed` with `error.code`
    /// `code` (`server_error`, …) and nothing after it.
    pub fn fail(&mut self, code: &str, message: &str) -> Vec<StreamEvent> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        let mut out = self.start();
        let mut output = std::mem::take(&mut self.output);
        if let Some(open) = self.open.take() {
            output.push(item_of(open, ItemStatus::Incomplete));
        }
        let mut response = self.seed.response(
            ResponseStatus::Failed,
            output,
            self.usage.as_ref().map(usage),
        );
        response.error = Some(ResponseError {
            code: code.to_string(),
            message: message.to_string(),
        });
        out.push(StreamEvent::Failed {
            response: response.clone(),
            sequence_number: self.next_sequence(),
        });
        self.last = Some(response);
        self.phase = Phase::Done;
        out
    }

    /// True once the final event was produced.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The response the final event carried (to store it for
    /// `previous_response_id`), once the stream is done.
    pub fn final_response(&self) -> Option<&Response> {
        self.last.as_ref()
    }

    fn next_sequence(&mut self) -> u64 {
        let n = self.sequence;
        self.sequence += 1;
        n
    }

    /// The status of an item closed by the finish reason.
    fn closing_status(&self) -> ItemStatus {
        match status_of(self.finish).0 {
            ResponseStatus::Incomplete => ItemStatus::Incomplete,
            _ => ItemStatus::Completed,
        }
    }

    fn on_text(&mut self, text: String, out: &mut Vec<StreamEvent>) {
        self.flush_pending_call(out);
        if matches!(self.open, Some(Open::Message { .. })) {
            self.text_delta(text, out);
        } else if text.trim().is_empty() {
            self.pending_space.push_str(&text);
        } else {
            let text = std::mem::take(&mut self.pending_space) + &text;
            self.close_open(ItemStatus::Completed, out);
            self.open_message(out);
            self.text_delta(text, out);
        }
    }

    fn on_call_delta(&mut self, call: ToolCallDelta, out: &mut Vec<StreamEvent>) {
        let open = match &self.open {
            Some(Open::Call { upstream, .. }) => Some(*upstream),
            _ => None,
        };
        for step in self.calls.on_delta(call, open) {
            match step {
                ToolStep::Start(call) => self.start_call(call, out),
                ToolStep::Arguments(delta) => {
                    let sequence_number = self.sequence;
                    if let Some(Open::Call {
                        index,
                        id,
                        arguments,
                        ..
                    }) = &mut self.open
                    {
                        arguments.push_str(&delta);
                        out.push(StreamEvent::FunctionCallArgumentsDelta {
                            item_id: id.clone(),
                            output_index: *index,
                            delta,
                            sequence_number,
                        });
                        self.sequence += 1;
                    }
                }
            }
        }
    }

    /// Start the pending call's item, with whatever name it has.
    fn flush_pending_call(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some(call) = self.calls.flush() {
            self.start_call(call, out);
        }
    }

    /// Open a `function_call` item for `call`, with the arguments it
    /// brought.
    fn start_call(&mut self, call: StartedCall, out: &mut Vec<StreamEvent>) {
        self.close_open(ItemStatus::Completed, out);
        let index = self.output.len() as u32;
        let id = self.seed.item_id("fc", index as usize);
        let call_id = call
            .id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| self.seed.call_id(index as usize));
        let item = OutputItem::FunctionCall {
            id: id.clone(),
            call_id: call_id.clone(),
            name: call.name.clone(),
            arguments: String::new(),
            status: ItemStatus::InProgress,
        };
        let sequence_number = self.next_sequence();
        out.push(StreamEvent::OutputItemAdded {
            output_index: index,
            item,
            sequence_number,
        });
        if !call.arguments.is_empty() {
            let sequence_number = self.next_sequence();
            out.push(StreamEvent::FunctionCallArgumentsDelta {
                item_id: id.clone(),
                output_index: index,
                delta: call.arguments.clone(),
                sequence_number,
            });
        }
        self.open = Some(Open::Call {
            index,
            id,
            upstream: call.upstream,
            call_id,
            name: call.name,
            arguments: call.arguments,
        });
    }

    fn open_message(&mut self, out: &mut Vec<StreamEvent>) {
        let index = self.output.len() as u32;
        let id = self.seed.item_id("msg", index as usize);
        let item = OutputItem::Message {
            id: id.clone(),
            status: ItemStatus::InProgress,
            role: "assistant".into(),
            content: Vec::new(),
        };
        let sequence_number = self.next_sequence();
        out.push(StreamEvent::OutputItemAdded {
            output_index: index,
            item,
            sequence_number,
        });
        let sequence_number = self.next_sequence();
        out.push(StreamEvent::ContentPartAdded {
            item_id: id.clone(),
            output_index: index,
            content_index: 0,
            part: OutputContent::text(""),
            sequence_number,
        });
        self.open = Some(Open::Message {
            index,
            id,
            text: String::new(),
        });
    }

    fn text_delta(&mut self, delta: String, out: &mut Vec<StreamEvent>) {
        let sequence_number = self.sequence;
        if let Some(Open::Message { index, id, text }) = &mut self.open {
            text.push_str(&delta);
            self.emitted_text |= !delta.is_empty();
            out.push(StreamEvent::OutputTextDelta {
                item_id: id.clone(),
                output_index: *index,
                content_index: 0,
                delta,
                logprobs: Vec::new(),
                sequence_number,
            });
            self.sequence += 1;
        }
    }

    /// Close the open item with `status`: its `.done` events, and it joins
    /// the output.
    fn close_open(&mut self, status: ItemStatus, out: &mut Vec<StreamEvent>) {
        let Some(open) = self.open.take() else {
            return;
        };
        match &open {
            Open::Message { index, id, text } => {
                let (index, id, text) = (*index, id.clone(), text.clone());
                let sequence_number = self.next_sequence();
                out.push(StreamEvent::OutputTextDone {
                    item_id: id.clone(),
                    output_index: index,
                    content_index: 0,
                    text: text.clone(),
                    logprobs: Vec::new(),
                    sequence_number,
                });
                let sequence_number = self.next_sequence();
                out.push(StreamEvent::ContentPartDone {
                    item_id: id,
                    output_index: index,
                    content_index: 0,
                    part: OutputContent::text(text),
                    sequence_number,
                });
            }
            Open::Call {
                index,
                id,
                name,
                arguments,
                ..
            } => {
                let (index, id, name, arguments) =
                    (*index, id.clone(), name.clone(), arguments.clone());
                let sequence_number = self.next_sequence();
                out.push(StreamEvent::FunctionCallArgumentsDone {
                    item_id: id,
                    output_index: index,
                    name,
                    arguments,
                    sequence_number,
                });
            }
        }
        let output_index = match &open {
            Open::Message { index, .. } | Open::Call { index, .. } => *index,
        };
        let item = item_of(open, status);
        let sequence_number = self.next_sequence();
        out.push(StreamEvent::OutputItemDone {
            output_index,
            item: item.clone(),
            sequence_number,
        });
        self.output.push(item);
    }
}

/// The output item an open item becomes, with `status`.
fn item_of(open: Open, status: ItemStatus) -> OutputItem {
    match open {
        Open::Message { id, text, .. } => OutputItem::Message {
            id,
            status,
            role: "assistant".into(),
            content: vec![OutputContent::text(text)],
        },
        Open::Call {
            id,
            call_id,
            name,
            arguments,
            ..
        } => OutputItem::FunctionCall {
            id,
            call_id,
            name,
            arguments,
            status,
        },
    }
}

/// One event as SSE: `event: TYPE\ndata: JSON\n\n`.
pub fn encode_event(ev: &StreamEvent) -> Bytes {
    match serde_json::to_string(ev) {
        Ok(json) => Bytes::from(format!("event: {}\ndata: {json}\n\n", ev.name())),
        // Unreachable with these types (no maps with non-string keys), but a
        // stream must never be cut silently.
        Err(_) => Bytes::from_static(
            b"event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"could not encode a stream event\",\"param\":null,\"sequence_number\":0}\n\n",
        ),
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "stream_props.rs"]
pub(crate) mod props;
