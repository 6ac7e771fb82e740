//! Ollama's embeddings routes on the embeddings path: `POST /api/embed`
//! (`{"model", "input"}`, a string or a list → `{"model", "embeddings":
//! [[…]]}`) and its older `POST /api/embeddings` (`{"model", "prompt"}` →
//! `{"embedding": […]}`; no prompt only loads the model, as Ollama does).
//! Both become a `/v1/embeddings` request (routing, cold loads, admission,
//! metrics with `api="ollama"`) and apply the request's `keep_alive` once
//! answered. Errors are Ollama's `{"error": message}` with the HTTP status.
//! `truncate` (Ollama's default `true`; the older route always truncates)
//! cuts an input longer than the model's positions to its start; with
//! `false` such an input is a 400.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use cortex_core::embeddings::{EmbeddingsRequest, EmbeddingsResponse, Vector};
use cortex_core::neuron_api::ModelKind;
use cortex_core::ollama::{EmbedRequest, LegacyEmbeddingsRequest, LegacyEmbeddingsResponse};

use super::error::Ollama;
use super::ollama::KeepAliveAfter;
use super::{body_or_error, parse, resolve_for};
use crate::error::GatewayError;
use crate::metrics::Api;
use crate::state::AppState;
use crate::translate::ollama::response::embed_response;
use crate::translate::ollama::{model_name, Timings};

/// `POST /api/embed`.
pub async fn embed(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    in_dialect(answer(&s, body_or_error(body)).await)
}

/// `POST /api/embeddings`.
pub async fn embeddings(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    in_dialect(answer_legacy(&s, body_or_error(body)).await)
}

fn in_dialect(r: Result<Response, GatewayError>) -> Response {
    r.unwrap_or_else(|e| Ollama(e).into_response())
}

async fn answer(s: &AppState, body: Result<Bytes, GatewayError>) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let body = body?;
    let req: EmbedRequest = parse(&body)?;
    let name = model_name(&req.model);
    let id = resolve_for(s, name, ModelKind::Embedding)?.id;
    let _keep = KeepAliveAfter::new(s, &id, req.keep_alive);
    let upstream = EmbeddingsRequest {
        model: id.to_string(),
        input: serde_json::Value::from(req.input.into_vec()),
        encoding_format: None,
        dimensions: req.dimensions.map(i64::from),
        user: None,
        truncate: Some(req.truncate.unwrap_or(true)),
    };
    let (embeddings, prompt_tokens) = vectors(s, &id, &upstream, started).await?;
    let timings = Timings {
        prompt_eval: started.elapsed(),
        ..Timings::default()
    };
    Ok(Json(embed_response(name, embeddings, prompt_tokens, timings)).into_response())
}

async fn answer_legacy(
    s: &AppState,
    body: Result<Bytes, GatewayError>,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let body = body?;
    let req: LegacyEmbeddingsRequest = parse(&body)?;
    let id = resolve_for(s, model_name(&req.model), ModelKind::Embedding)?.id;
    let _keep = KeepAliveAfter::new(s, &id, req.keep_alive);
    let Some(prompt) = req.prompt.filter(|p| !p.is_empty()) else {
        s.fleet.ensure_ready(&id, Vec::new(), None).await?;
        return Ok(Json(LegacyEmbeddingsResponse {
            embedding: Vec::new(),
        })
        .into_response());
    };
    let upstream = EmbeddingsRequest {
        model: id.to_string(),
        input: serde_json::Value::from(prompt),
        encoding_format: None,
        dimensions: None,
        user: None,
        truncate: Some(true),
    };
    let (mut embeddings, _) = vectors(s, &id, &upstream, started).await?;
    let embedding = embeddings.pop().ok_or_else(|| {
        GatewayError::InvalidAnswer(serde::de::Error::custom("an answer without a vector"))
    })?;
    Ok(Json(LegacyEmbeddingsResponse { embedding }).into_response())
}

/// Sends `upstream` for model `id` on the embeddings path; its vectors (as
/// floats) and prompt tokens.
async fn vectors(
    s: &AppState,
    id: &str,
    upstream: &EmbeddingsRequest,
    started: Instant,
) -> Result<(Vec<Vec<f32>>, u64), GatewayError> {
    let upstream = serde_json::to_vec(upstream).map_err(GatewayError::Encode)?;
    let (status, _, bytes) =
        super::embeddings::embed(s, id, Bytes::from(upstream), started, Api::Ollama).await?;
    if status != StatusCode::OK {
        return Err(GatewayError::from_answer(status.as_u16(), &bytes));
    }
    let answer: EmbeddingsResponse =
        serde_json::from_slice(&bytes).map_err(GatewayError::InvalidAnswer)?;
    let embeddings = answer
        .data
        .into_iter()
        .map(|e| match e.embedding {
            Vector::Float(v) => Ok(v),
            Vector::Base64(_) => Err(GatewayError::InvalidAnswer(serde::de::Error::custom(
                "a base64 vector where floats were asked for",
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((embeddings, answer.usage.prompt_tokens))
}
