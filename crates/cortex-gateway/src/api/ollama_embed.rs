//! Ollama's `POST /api/embed` on the embeddings path: `{"model", "input"}`
//! (a string or a list) becomes a `/v1/embeddings` request (routing, cold
//! loads, admission, metrics with `api="ollama"`), and the vectors come
//! back as `{"model", "embeddings": [[…]]}`. Errors are Ollama's
//! `{"error": message}` with the HTTP status. `truncate` (Ollama's default
//! `true`) cuts an input longer than the model's positions to its start;
//! with `false` such an input is a 400.

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
use cortex_core::ollama::{EmbedRequest, ErrorResponse};

use super::{body_or_error, parse, resolve_for};
use crate::error::{openai_status, GatewayError};
use crate::metrics::Api;
use crate::state::AppState;
use crate::translate::ollama::response::embed_response;
use crate::translate::ollama::{model_name, Timings};

/// `POST /api/embed`.
pub async fn embed(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match answer(&s, body_or_error(body)).await {
        Ok(r) => r,
        Err(e) => (
            openai_status(&e),
            Json(ErrorResponse { error: e.message() }),
        )
            .into_response(),
    }
}

async fn answer(s: &AppState, body: Result<Bytes, GatewayError>) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let body = body?;
    let req: EmbedRequest = parse(&body)?;
    let name = model_name(&req.model);
    let resolved = resolve_for(s, name, ModelKind::Embedding)?;
    let upstream = EmbeddingsRequest {
        model: resolved.id.to_string(),
        input: serde_json::Value::from(req.input.into_vec()),
        encoding_format: None,
        dimensions: req.dimensions.map(i64::from),
        user: None,
        truncate: Some(req.truncate.unwrap_or(true)),
    };
    let upstream = serde_json::to_vec(&upstream).map_err(GatewayError::Encode)?;
    let (status, _, bytes) =
        super::embeddings::embed(s, &resolved.id, Bytes::from(upstream), started, Api::Ollama)
            .await?;
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
    let timings = Timings {
        prompt_eval: started.elapsed(),
        ..Timings::default()
    };
    Ok(Json(embed_response(
        name,
        embeddings,
        answer.usage.prompt_tokens,
        timings,
    ))
    .into_response())
}
