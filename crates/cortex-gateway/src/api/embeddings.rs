//! `POST /v1/embeddings`: routed like chat (catalogue, cold load,
//! eviction, admission, retries before any byte went upstream, metrics)
//! and passed through to a neuron that has the embedding model; the neuron
//! checks the request and answers in OpenAI's shape. The gateway reads only
//! `model`, and refuses a chat model here (400) before loading anything.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cortex_core::embeddings::EmbeddingsUsage;
use cortex_core::neuron_api::ModelKind;
use cortex_core::openai::Usage;
use serde::Deserialize;

use super::error::OpenAi;
use super::{admit, body_or_error, parse, resolve_for, send};
use crate::error::GatewayError;
use crate::metrics::Api;
use crate::state::AppState;

/// The neuron's embeddings route.
pub const EMBEDDINGS_PATH: &str = "/v1/embeddings";

/// What the gateway reads of an embeddings request; the rest passes through.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    model: std::borrow::Cow<'a, str>,
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle(&s, body_or_error(body)).await {
        Ok(r) => r,
        Err(e) => OpenAi(e).into_response(),
    }
}

async fn handle(s: &AppState, body: Result<Bytes, GatewayError>) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let body = body?;
    let probe: Probe = parse(&body)?;
    let resolved = resolve_for(s, &probe.model, ModelKind::Embedding)?;
    let body = if *resolved.id != *probe.model {
        super::openai::rewrite(&body, &resolved.id, false)?
    } else {
        body
    };
    let (status, content_type, bytes) =
        embed(s, &resolved.id, body, started, Api::Embeddings).await?;
    let mut r = (status, bytes).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or(header::HeaderValue::from_static("application/json")),
    );
    Ok(r)
}

/// Sends an embeddings request for model `id` (already resolved) to a
/// neuron, under admission and with its metrics recorded as `api`; the
/// neuron's status, content type and body. Shared with Ollama's
/// `/api/embed`.
pub async fn embed(
    s: &AppState,
    id: &str,
    body: Bytes,
    started: Instant,
    api: Api,
) -> Result<(StatusCode, Option<header::HeaderValue>, Bytes), GatewayError> {
    let _permit = admit(s, id).await?;
    let (d, mut stats) = send(s, id, EMBEDDINGS_PATH, body, api, started).await?;
    let status = d.resp.status();
    let content_type = d.resp.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = d.read_all(s).await?;
    if status == StatusCode::OK {
        stats.usage = usage_of(&bytes);
    }
    stats.finish(status.as_u16());
    Ok((status, content_type, bytes))
}

/// The prompt tokens of an embeddings answer, as chat usage (no
/// completion tokens).
fn usage_of(answer: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct WithUsage {
        usage: EmbeddingsUsage,
    }
    let u = serde_json::from_slice::<WithUsage>(answer).ok()?.usage;
    Some(Usage::new(u.prompt_tokens, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_an_embeddings_answer() {
        let answer =
            br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]}],
            "model":"m","usage":{"prompt_tokens":7,"total_tokens":7}}"#;
        let u = usage_of(answer).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (7, 0));
        assert!(usage_of(b"{}").is_none());
        assert!(usage_of(b"not json").is_none());
    }
}
