//! The streams a client gets from a neuron's event stream: OpenAI chunks
//! passed through ([`openai`]) or translated into another dialect
//! ([`translated`], through a [`Translator`]: Anthropic events with `ping`
//! keepalives while the neuron is silent, Responses events, Ollama lines). Both
//! tap the request's metrics, end with an error event in the client's
//! dialect when the neuron's stream breaks (never a silent cut), and keep
//! the request's in-flight count and admission slot until they are dropped
//! (a client that goes away drops them, which closes the neuron connection
//! and so stops the generation).
//!
//! Events that have already arrived go out together, in one write; a
//! stream never waits to fill a write.

use std::convert::Infallible;

use bytes::Bytes;
use cortex_core::anthropic::StreamEvent;
use cortex_core::openai::ChatCompletionChunk;
use futures::{stream, Stream};

use super::stats::{Probe, Stats};
use super::upstream::{StreamFailure, UpstreamSse};
use super::Dispatched;
use crate::admission::Permit;
use crate::error::{openai_body, GatewayError};
use crate::fleet::InFlightGuard;
use crate::neuron_client::error_of;
use crate::sse::SseEvent;
use crate::state::AppState;
use crate::translate::stream::{encode_event, AnthropicStream};

/// A client's event stream.
pub type Events = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>>;

/// What one upstream read gave: an event, a failure, or the end (`None`).
type Next = Option<Result<SseEvent, StreamFailure>>;

/// Why the neuron's stream ended before it was complete.
const CUT: &str = "the neuron ended the stream before it was complete";

/// What a stream holds until it is dropped.
struct Held {
    _guard: InFlightGuard,
    _permit: Permit,
}

/// The neuron's OpenAI chunks passed through; the usage chunk is dropped
/// when `strip_usage` (the client did not ask for it; the metrics did).
pub fn openai(
    state: &AppState,
    d: Dispatched,
    stats: Stats,
    strip_usage: bool,
    permit: Permit,
) -> Events {
    let (up, guard) = d.into_sse(&state.limits);
    let p = Passing {
        up,
        stats,
        strip_usage,
        done: false,
        _held: Held {
            _guard: guard,
            _permit: permit,
        },
    };
    Box::pin(stream::unfold(p, |mut p| async move {
        let mut out = Vec::new();
        while out.is_empty() {
            if p.done {
                return None;
            }
            let next = p.up.next().await;
            p.pass(next, &mut out);
            while !p.done {
                let Some(next) = p.up.next_ready() else {
                    break;
                };
                p.pass(next, &mut out);
            }
        }
        Some((Ok(Bytes::from(out)), p))
    }))
}

struct Passing {
    up: UpstreamSse,
    stats: Stats,
    strip_usage: bool,
    done: bool,
    _held: Held,
}

/// One `data: {"error": …}` line for a failure after the stream started.
fn error_chunk(message: &str, out: &mut Vec<u8>) {
    let e = openai_body(&GatewayError::Stream(message.to_string()));
    out.extend_from_slice(b"data: ");
    let _ = serde_json::to_writer(&mut *out, &e);
    out.extend_from_slice(b"\n\n");
}

impl Passing {
    /// Append what the client gets for one upstream event (or the end) to
    /// `out`; record the request when the stream ends.
    fn pass(&mut self, next: Next, out: &mut Vec<u8>) {
        match next {
            None => {
                self.done = true;
                self.stats.finish(502);
                error_chunk(CUT, out);
            }
            Some(Err(f)) => {
                self.done = true;
                self.stats.finish(502);
                error_chunk(&f.0, out);
            }
            Some(Ok(ev)) if ev.data == "[DONE]" => {
                self.done = true;
                self.stats.finish(200);
                self.up.drain();
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            Some(Ok(ev)) => {
                let probe: Probe = serde_json::from_str(&ev.data).unwrap_or_default();
                if probe.error.is_some() {
                    self.done = true;
                    self.stats.finish(500);
                }
                if probe.has_output() {
                    self.stats.token();
                    self.up.started = true;
                }
                if let Some(u) = probe.usage {
                    self.stats.usage = Some(u);
                    if self.strip_usage && probe.choices.is_empty() {
                        return;
                    }
                }
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(ev.data.as_bytes());
                out.extend_from_slice(b"\n\n");
            }
        }
    }
}

/// A per-stream translator from the neuron's chat chunks to a client's
/// dialect (Anthropic events, Responses events, Ollama lines), each
/// appending its encoded output to `out`.
pub trait Translator: Send + 'static {
    /// What goes out before the first upstream event.
    fn start(&mut self, out: &mut Vec<u8>);
    fn on_chunk(&mut self, chunk: ChatCompletionChunk, out: &mut Vec<u8>);
    /// Upstream ended cleanly.
    fn finish(&mut self, out: &mut Vec<u8>);
    /// Upstream failed with `message`; nothing follows.
    fn fail(&mut self, message: &str, out: &mut Vec<u8>);
    fn is_done(&self) -> bool;
    /// A keepalive while the neuron is silent, for dialects that have one.
    fn ping(&self, _out: &mut Vec<u8>) {}
}

impl Translator for AnthropicStream {
    fn start(&mut self, out: &mut Vec<u8>) {
        encode_all(&AnthropicStream::start(self), out);
    }
    fn on_chunk(&mut self, chunk: ChatCompletionChunk, out: &mut Vec<u8>) {
        encode_all(&AnthropicStream::on_chunk(self, chunk), out);
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        encode_all(&AnthropicStream::finish(self), out);
    }
    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        encode_all(&AnthropicStream::fail(self, "api_error", message), out);
    }
    fn is_done(&self) -> bool {
        AnthropicStream::is_done(self)
    }
    fn ping(&self, out: &mut Vec<u8>) {
        if let Some(p) = AnthropicStream::ping(self) {
            out.extend_from_slice(&encode_event(&p));
        }
    }
}

/// The neuron's OpenAI chunks in another dialect, through `tr`.
pub fn translated<T: Translator>(
    state: &AppState,
    d: Dispatched,
    stats: Stats,
    tr: T,
    permit: Permit,
) -> Events {
    let (up, guard) = d.into_sse(&state.limits);
    let mut ping = tokio::time::interval(state.limits.ping_interval.get());
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let t = Translating {
        up,
        tr,
        stats,
        ping,
        started: false,
        _held: Held {
            _guard: guard,
            _permit: permit,
        },
    };
    Box::pin(stream::unfold(t, |mut t| async move {
        let mut out = Vec::new();
        if !t.started {
            t.started = true;
            // The interval's first tick is immediate; consume it.
            t.ping.tick().await;
            t.tr.start(&mut out);
            if !out.is_empty() {
                return Some((Ok(Bytes::from(out)), t));
            }
        }
        while out.is_empty() {
            if t.tr.is_done() {
                return None;
            }
            let next = tokio::select! {
                ev = t.up.next() => ev,
                _ = t.ping.tick() => {
                    t.tr.ping(&mut out);
                    continue;
                }
            };
            t.translate(next, &mut out);
            while !t.tr.is_done() {
                let Some(next) = t.up.next_ready() else {
                    break;
                };
                t.translate(next, &mut out);
            }
        }
        Some((Ok(Bytes::from(out)), t))
    }))
}

// Fields drop in order: the neuron connection first, then the in-flight
// count and admission slot, then the translator, so that a translator's own
// `Drop` (Ollama's `keep_alive`) sees the request finished.
struct Translating<T> {
    up: UpstreamSse,
    stats: Stats,
    ping: tokio::time::Interval,
    started: bool,
    _held: Held,
    tr: T,
}

fn encode_all(events: &[StreamEvent], out: &mut Vec<u8>) {
    for e in events {
        out.extend_from_slice(&encode_event(e));
    }
}

impl<T: Translator> Translating<T> {
    /// Append the client's events for one upstream event (or the end) to
    /// `out`; record the request when the stream ends.
    fn translate(&mut self, next: Next, out: &mut Vec<u8>) {
        match next {
            None => {
                self.stats.finish(502);
                self.tr.fail(CUT, out)
            }
            Some(Err(f)) => {
                self.stats.finish(502);
                self.tr.fail(&f.0, out)
            }
            Some(Ok(ev)) if ev.data == "[DONE]" => {
                self.stats.finish(200);
                self.up.drain();
                self.tr.finish(out)
            }
            Some(Ok(ev)) => match serde_json::from_str::<ChatCompletionChunk>(&ev.data) {
                Ok(chunk) => {
                    let output = chunk.choices.iter().any(|c| {
                        c.delta.content.as_deref().is_some_and(|t| !t.is_empty())
                            || c.delta.tool_calls.is_some()
                    });
                    if output {
                        self.stats.token();
                        self.up.started = true;
                    }
                    if let Some(u) = chunk.usage {
                        self.stats.usage = Some(u);
                    }
                    self.tr.on_chunk(chunk, out)
                }
                Err(_) => {
                    // Not a chunk: the neuron's error line, or garbage.
                    let (message, _) = error_of(ev.data.as_bytes());
                    self.stats.finish(500);
                    self.tr.fail(&message, out)
                }
            },
        }
    }
}
