//! The streamed chat answer: an [`Answer`] as OpenAI SSE chunks.
//!
//! Order: a role chunk; content deltas; each tool call as two deltas (id,
//! type and name with empty arguments, then the arguments) under its own
//! index; the finish chunk; the usage chunk when asked for; `[DONE]`. A
//! failure is one error line and the end. When the request has tools the
//! role chunk carries no `content`, so nothing looks like (empty) text
//! before a call.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use cortex_core::openai::{
    ChatCompletionChunk, ChunkChoice, Delta, FinishReason, FunctionCallDelta, Role, ToolCall,
    ToolCallDelta, Usage,
};
use futures::stream;

use super::answer::{Answer, AnswerEvent, Piece};
use super::chat::{gen_error, Meta, Recorder};

/// Streams carry the prompt size up front (the gateway puts it in
/// Anthropic's `message_start`).
pub use cortex_core::neuron_api::PROMPT_TOKENS_HEADER;

fn sse(value: &impl serde::Serialize) -> Bytes {
    Bytes::from(sse_vec(value))
}

fn sse_vec(value: &impl serde::Serialize) -> Vec<u8> {
    let mut out = b"data: ".to_vec();
    // Serialising our own plain structs cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"\n\n");
    out
}

fn chunk(
    meta: &Meta,
    delta: Delta,
    finish: Option<FinishReason>,
    stop: Option<String>,
) -> ChatCompletionChunk {
    ChatCompletionChunk {
        id: meta.id.clone(),
        object: "chat.completion.chunk".into(),
        created: meta.created,
        model: meta.model.clone(),
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish,
            logprobs: None,
            stop_reason: stop,
        }],
        usage: None,
    }
}

/// A complete call as two deltas: the header, then the arguments.
fn call_chunks(meta: &Meta, index: u32, call: ToolCall) -> Bytes {
    let head = ToolCallDelta {
        index,
        id: Some(call.id),
        kind: Some(call.kind),
        function: FunctionCallDelta {
            name: Some(call.function.name),
            arguments: String::new(),
        },
    };
    let args = ToolCallDelta {
        index,
        id: None,
        kind: None,
        function: FunctionCallDelta {
            name: None,
            arguments: call.function.arguments,
        },
    };
    let mut out = Vec::new();
    for d in [head, args] {
        let delta = Delta {
            tool_calls: Some(vec![d]),
            ..Delta::default()
        };
        out.extend(sse_vec(&chunk(meta, delta, None, None)));
    }
    Bytes::from(out)
}

enum Phase {
    Start,
    Running,
    Usage(Usage),
    Done,
    Over,
}

struct StreamState {
    answer: Answer,
    meta: Meta,
    include_usage: bool,
    rec: Recorder,
    phase: Phase,
}

/// The SSE response of `answer`.
pub(super) fn response(answer: Answer, meta: Meta, include_usage: bool, rec: Recorder) -> Response {
    let prompt_tokens = answer.prompt_tokens();
    let state = StreamState {
        answer,
        meta,
        include_usage,
        rec,
        phase: Phase::Start,
    };
    let body = stream::unfold(state, |mut s| async move {
        let bytes = match std::mem::replace(&mut s.phase, Phase::Running) {
            Phase::Start => {
                let delta = Delta {
                    role: Some(Role::Assistant),
                    content: (!s.answer.reads_calls()).then(String::new),
                    tool_calls: None,
                };
                sse(&chunk(&s.meta, delta, None, None))
            }
            Phase::Running => match s.answer.next().await {
                Some(AnswerEvent::Piece(Piece::Text(t))) => {
                    let delta = Delta {
                        content: Some(t),
                        ..Delta::default()
                    };
                    sse(&chunk(&s.meta, delta, None, None))
                }
                Some(AnswerEvent::Piece(Piece::Call(index, call))) => {
                    call_chunks(&s.meta, index, call)
                }
                Some(AnswerEvent::Done {
                    finish,
                    stop,
                    usage,
                }) => {
                    s.rec.finish(&s.answer.stats(), 200);
                    s.phase = if s.include_usage {
                        Phase::Usage(usage)
                    } else {
                        Phase::Done
                    };
                    sse(&chunk(&s.meta, Delta::default(), Some(finish), stop))
                }
                Some(AnswerEvent::Failed(failed)) => {
                    s.rec.finish(&s.answer.stats(), 500);
                    s.phase = Phase::Over;
                    sse(&gen_error(&failed).body())
                }
                None => return None,
            },
            Phase::Usage(u) => {
                s.phase = Phase::Done;
                let mut c = chunk(&s.meta, Delta::default(), None, None);
                c.choices.clear();
                c.usage = Some(u);
                sse(&c)
            }
            Phase::Done => {
                s.phase = Phase::Over;
                Bytes::from_static(b"data: [DONE]\n\n")
            }
            Phase::Over => return None,
        };
        Some((Ok::<_, Infallible>(bytes), s))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        [(PROMPT_TOKENS_HEADER, prompt_tokens.to_string())],
        Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "stream_tests.rs"]
mod tests;
