//! Anthropic routes: `/v1/messages` (translated to the neuron's OpenAI
//! dialect and back, streaming and not, with `ping` keepalives while the
//! neuron is silent) and `/v1/messages/count_tokens` (the model's own
//! template and tokenizer, through the neuron's `/tokenize`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use cortex_core::anthropic::{CountTokensResponse, MessagesRequest, StreamEvent};
use cortex_core::neuron_api::{TokenizeRequest, TokenizeResponse};
use cortex_core::openai::{ChatCompletion, ChatCompletionChunk};
use futures::stream;

use super::error::{Anthropic, GatewayError};
use super::{admit, body_or_error, event_stream, parse, resolve, AppState};
use crate::admission::Permit;
use crate::fleet::InFlightGuard;
use crate::metrics::Api;
use crate::neuron_client::error_of;
use crate::proxy::stats::Stats;
use crate::proxy::upstream::{StreamFailure, UpstreamSse};
use crate::proxy::{dispatch, Dispatched};
use crate::sse::SseEvent;
use crate::translate::request::{messages_to_chat, messages_to_chat_for_count};
use crate::translate::response::chat_to_message;
use crate::translate::stream::{encode_event, AnthropicStream};

/// The neuron tells the prompt size in this header, so that
/// `message_start` can carry `input_tokens`.
pub const PROMPT_TOKENS_HEADER: &str = "x-cortex-prompt-tokens";

pub async fn messages(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Anthropic> {
    handle(&s, body_or_error(body)).await.map_err(Anthropic)
}

/// `POST /v1/messages` with its body (or the error reading it).
pub(crate) async fn handle(
    s: &Arc<AppState>,
    body: Result<Bytes, GatewayError>,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let body = body?;
    let req: MessagesRequest = parse(&body)?;
    let requested = req.model.clone();
    let resolved = resolve(s, &requested)?;
    let stream = req.stream.unwrap_or(false);
    let mut chat = messages_to_chat(req)?;
    chat.model = resolved.id.to_string();
    let upstream_body =
        serde_json::to_vec(&chat).map_err(|e| GatewayError::Internal(e.to_string()))?;
    let permit = admit(s, &resolved.id).await?;
    let deadline = started + s.limits.request_deadline.get();
    let d = dispatch(
        s,
        &resolved.id,
        "/v1/chat/completions",
        Bytes::from(upstream_body),
        deadline,
    )
    .await?;
    let mut stats = Stats::new(d.replica.metrics(&s.metrics), Api::Anthropic, started);
    let status = d.resp.status();
    if status != StatusCode::OK || !stream {
        let bytes = d.read_all(s).await?;
        stats.finish(status.as_u16());
        if status != StatusCode::OK {
            return Err(GatewayError::from_answer(status.as_u16(), &bytes));
        }
        let answer: ChatCompletion = serde_json::from_slice(&bytes).map_err(|e| {
            GatewayError::BadGateway(format!("the neuron sent an invalid answer: {e}"))
        })?;
        stats.usage = Some(answer.usage);
        return Ok(Json(chat_to_message(answer, &requested)).into_response());
    }
    let hint = d
        .resp
        .headers()
        .get(PROMPT_TOKENS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let id = format!(
        "msg_{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    );
    Ok(translate_stream(
        s,
        d,
        stats,
        AnthropicStream::new(id, requested, hint),
        permit,
    ))
}

struct Translating {
    up: UpstreamSse,
    tr: AnthropicStream,
    stats: Stats,
    ping: tokio::time::Interval,
    started: bool,
    _guard: InFlightGuard,
    _permit: Permit,
}

fn encode_all(events: &[StreamEvent]) -> Bytes {
    let mut out = Vec::new();
    for e in events {
        out.extend_from_slice(&encode_event(e));
    }
    Bytes::from(out)
}

impl Translating {
    /// Append the Anthropic events for one upstream event (or the end) to
    /// `out`; record the request when the stream ends.
    fn translate(&mut self, next: Option<Result<SseEvent, StreamFailure>>, out: &mut Vec<u8>) {
        let events = match next {
            None => {
                self.stats.finish(502);
                self.tr.fail(
                    "api_error",
                    "the neuron ended the stream before it was complete",
                )
            }
            Some(Err(f)) => {
                self.stats.finish(502);
                self.tr.fail("api_error", &f.0)
            }
            Some(Ok(ev)) if ev.data == "[DONE]" => {
                self.stats.finish(200);
                self.tr.finish()
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
                    self.tr.on_chunk(chunk)
                }
                Err(_) => {
                    // Not a chunk: the neuron's error line, or garbage.
                    let (message, _) = error_of(ev.data.as_bytes());
                    self.stats.finish(500);
                    self.tr.fail("api_error", &message)
                }
            },
        };
        for e in &events {
            out.extend_from_slice(&encode_event(e));
        }
    }
}

fn translate_stream(
    s: &AppState,
    d: Dispatched,
    stats: Stats,
    tr: AnthropicStream,
    permit: Permit,
) -> Response {
    let (up, guard) = d.into_sse(&s.limits);
    let mut ping = tokio::time::interval(s.limits.ping_interval.get());
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Translating {
        up,
        tr,
        stats,
        ping,
        started: false,
        _guard: guard,
        _permit: permit,
    };
    let body = stream::unfold(state, |mut t| async move {
        if !t.started {
            t.started = true;
            // The interval's first tick is immediate; consume it.
            t.ping.tick().await;
            return Some((Ok::<_, Infallible>(encode_all(&t.tr.start())), t));
        }
        // Events that are already here go out together, in one write; the
        // stream never waits to fill a write.
        let mut out = Vec::new();
        while out.is_empty() {
            if t.tr.is_done() {
                return None;
            }
            let next = tokio::select! {
                ev = t.up.next() => ev,
                _ = t.ping.tick() => {
                    if let Some(p) = t.tr.ping() {
                        out.extend_from_slice(&encode_event(&p));
                    }
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
    });
    event_stream(body)
}

/// `POST /v1/messages/count_tokens` → `{"input_tokens": N}`.
pub async fn count_tokens(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Anthropic> {
    count(&s, body).await.map_err(Anthropic)
}

async fn count(
    s: &Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let body = body_or_error(body)?;
    let req: MessagesRequest = parse(&body)?;
    let resolved = resolve(s, &req.model)?;
    let _permit = admit(s, &resolved.id).await?;
    let chat = messages_to_chat_for_count(req)?;
    let tok = TokenizeRequest {
        model: resolved.id.to_string(),
        messages: chat.messages,
        prompt: None,
        tools: chat.tools,
        return_tokens: false,
    };
    let bytes = serde_json::to_vec(&tok).map_err(|e| GatewayError::Internal(e.to_string()))?;
    let deadline = started + s.limits.request_deadline.get();
    let d = dispatch(s, &resolved.id, "/tokenize", Bytes::from(bytes), deadline).await?;
    let mut stats = Stats::new(d.replica.metrics(&s.metrics), Api::CountTokens, started);
    let status = d.resp.status();
    let bytes = d.read_all(s).await?;
    stats.finish(status.as_u16());
    if status != StatusCode::OK {
        return Err(GatewayError::from_answer(status.as_u16(), &bytes));
    }
    let t: TokenizeResponse = serde_json::from_slice(&bytes)
        .map_err(|e| GatewayError::BadGateway(format!("the neuron sent an invalid answer: {e}")))?;
    Ok(Json(CountTokensResponse {
        input_tokens: t.count,
    })
    .into_response())
}
