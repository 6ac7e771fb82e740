//! Node and lifecycle routes: `/health`, `/status`, `/models/load`,
//! `/models/unload`, `/v1/models`, `/tokenize`, `/metrics`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cortex_core::neuron_api::{
    LoadRequest, LoadResponse, NodeStatus, TokenizeRequest, TokenizeResponse, UnloadRequest,
    UnloadResponse,
};
use cortex_core::openai::{ModelList, ModelObject};

use super::error::ApiError;
use super::extract::ApiJson;
use super::prompt::{self, PromptError, PromptInput};
use super::{Acquired, AppState};
use crate::engine::Assets;

pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

pub async fn status(State(state): State<Arc<AppState>>) -> Json<NodeStatus> {
    Json(state.registry.status().await)
}

pub async fn load(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<LoadRequest>,
) -> Result<Json<LoadResponse>, ApiError> {
    let (model, load_ms) = state
        .registry
        .load(&req.model, req.source.as_deref(), req.device)
        .await?;
    Ok(Json(LoadResponse { model, load_ms }))
}

pub async fn unload(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<UnloadRequest>,
) -> Result<Json<UnloadResponse>, ApiError> {
    let unloaded = state.registry.unload(&req.model).await?;
    Ok(Json(UnloadResponse {
        model: req.model,
        unloaded,
    }))
}

pub async fn models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    let data = state
        .registry
        .ready_ids()
        .into_iter()
        .map(|(id, loaded_at)| ModelObject {
            id,
            object: "model".into(),
            created: loaded_at / 1000,
            owned_by: state.node_name.clone(),
            context_length: None,
        })
        .collect();
    Json(ModelList::new(data))
}

pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<TokenizeRequest>,
) -> Result<Json<TokenizeResponse>, ApiError> {
    if req.messages.is_empty() == req.prompt.is_none() {
        return Err(ApiError::bad_param(
            "messages",
            "give either a non-empty `messages` or a `prompt`",
        ));
    }
    // The guard keeps the model from being unloaded while its tokenizer runs.
    let Acquired {
        guard: _in_flight,
        assets,
        ..
    } = super::acquire(&state, &req.model, Assets::chat)?;
    let invalid = |e: crate::engine::EngineError| {
        ApiError::bad_request(format!("cannot build the prompt: {}", e.chain()))
            .code("invalid_prompt")
    };
    // The same prompt a chat request with these messages and tools gets
    // (`tool_choice` left to its default), so counts agree with usage.
    let ids = match &req.prompt {
        Some(p) => assets.encode(p).map_err(invalid)?,
        None => {
            let input = PromptInput {
                messages: &req.messages,
                tools: req.tools.as_deref(),
                tool_choice: None,
                parallel_tool_calls: None,
            };
            match prompt::build(&assets, input, state.prompt) {
                Ok(p) => p.ids,
                Err(PromptError::Request(e)) => return Err(e),
                Err(PromptError::Engine(e)) => return Err(invalid(e)),
            }
        }
    };
    Ok(Json(TokenizeResponse {
        count: ids.len() as u64,
        max_model_len: assets.meta.max_positions() as u64,
        tokens: req.return_tokens.then_some(ids),
    }))
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    // Refreshes the device memory and KV cache gauges.
    let _ = state.registry.devices();
    state.registry.refresh_cache_gauges();
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.prometheus).is_err() {
        return ApiError::internal("cannot encode metrics").into_response();
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Lifecycle routes need `Authorization: Bearer TOKEN` when an admin token
/// is configured.
pub async fn require_admin(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.admin_token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Compare without an early exit, so that timing does not reveal a prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
