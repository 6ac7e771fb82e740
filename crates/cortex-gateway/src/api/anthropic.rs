//! Anthropic routes: `/v1/messages` (translated to the neuron's OpenAI
//! dialect and back, streaming and not, with `ping` keepalives while the
//! neuron is silent) and `/v1/messages/count_tokens` (the model's own
//! template and tokenizer, through the neuron's `/tokenize`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use cortex_core::anthropic::{CountTokensResponse, MessagesRequest};
use cortex_core::neuron_api::{ModelKind, TokenizeRequest, TokenizeResponse};

use super::error::Anthropic;
use super::{admit, body_or_error, event_stream, parse, resolve_for, send};
use crate::error::GatewayError;
use crate::metrics::Api;
use crate::proxy::stream;
use crate::state::AppState;
use crate::translate::request::{messages_to_chat, messages_to_chat_for_count};
use crate::translate::response::chat_to_message;
use crate::translate::stream::AnthropicStream;

/// `POST /v1/messages`.
pub async fn messages(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle(&s, body_or_error(body)).await {
        Ok(r) => r,
        Err(e) => Anthropic(e).into_response(),
    }
}

async fn handle(s: &AppState, body: Result<Bytes, GatewayError>) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let body = body?;
    let req: MessagesRequest = parse(&body)?;
    let requested = req.model.clone();
    let resolved = resolve_for(s, &requested, ModelKind::Chat)?;
    let stream = req.stream.unwrap_or(false);
    let mut chat = messages_to_chat(req)?;
    chat.model = resolved.id.to_string();
    let upstream_body = serde_json::to_vec(&chat).map_err(GatewayError::Encode)?;
    let permit = admit(s, &resolved.id).await?;
    let (d, mut stats) = send(
        s,
        &resolved.id,
        crate::proxy::CHAT_PATH,
        Bytes::from(upstream_body),
        Api::Anthropic,
        started,
    )
    .await?;
    let status = d.resp.status();
    if status != StatusCode::OK || !stream {
        let answer = d.completion(s, &mut stats).await?;
        return Ok(Json(chat_to_message(answer, &requested)).into_response());
    }
    let hint = d.prompt_tokens_hint();
    let id = format!(
        "msg_{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    );
    let tr = AnthropicStream::new(id, requested, hint);
    Ok(event_stream(stream::translated(s, d, stats, tr, permit)))
}

/// `POST /v1/messages/count_tokens` → `{"input_tokens": N}`.
pub async fn count_tokens(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match count(&s, body_or_error(body)).await {
        Ok(r) => r,
        Err(e) => Anthropic(e).into_response(),
    }
}

async fn count(s: &AppState, body: Result<Bytes, GatewayError>) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let body = body?;
    let req: MessagesRequest = parse(&body)?;
    let resolved = resolve_for(s, &req.model, ModelKind::Chat)?;
    let _permit = admit(s, &resolved.id).await?;
    let chat = messages_to_chat_for_count(req)?;
    let tok = TokenizeRequest {
        model: resolved.id.to_string(),
        messages: chat.messages,
        prompt: None,
        tools: chat.tools,
        return_tokens: false,
    };
    let bytes = serde_json::to_vec(&tok).map_err(GatewayError::Encode)?;
    let (d, mut stats) = send(
        s,
        &resolved.id,
        "/tokenize",
        Bytes::from(bytes),
        Api::CountTokens,
        started,
    )
    .await?;
    let status = d.resp.status();
    let bytes = d.read_all(s).await?;
    stats.finish(status.as_u16());
    if status != StatusCode::OK {
        return Err(GatewayError::from_answer(status.as_u16(), &bytes));
    }
    let t: TokenizeResponse =
        serde_json::from_slice(&bytes).map_err(GatewayError::InvalidAnswer)?;
    Ok(Json(CountTokensResponse {
        input_tokens: t.count,
    })
    .into_response())
}
