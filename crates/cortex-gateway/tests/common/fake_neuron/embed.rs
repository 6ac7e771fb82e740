//! The fake neuron's `POST /v1/embeddings`: for each input string a
//! 3-dimensional vector `[chars, index, 1]`, 1 token per character, from a
//! loaded embedding model; a chat model here is a 400, as on a real neuron.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cortex_core::neuron_api::{ModelKind, ModelState};
use serde_json::{json, Value};

use super::{error, now_ms, Shared};

pub(super) async fn embeddings(State(s): State<Arc<Shared>>, Json(req): Json<Value>) -> Response {
    let model = req["model"].as_str().unwrap_or_default().to_string();
    {
        let mut i = s.lock();
        if i.poisoned.contains(&model) {
            return error(503, "model is poisoned (fake)", "model_poisoned");
        }
        let Some(m) = i
            .models
            .iter_mut()
            .find(|m| m.id == model && m.state == ModelState::Ready)
        else {
            return error(404, "model not loaded here", "model_not_found");
        };
        if m.kind != ModelKind::Embedding {
            return error(400, "a chat model (fake)", "model_kind_mismatch");
        }
        m.last_used_at = now_ms();
    }
    let texts: Vec<String> = match &req["input"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => return error(400, "bad input (fake)", "invalid_input"),
    };
    let tokens: usize = texts.iter().map(|t| t.chars().count()).sum();
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"object": "embedding", "index": i,
                "embedding": [t.chars().count() as f32, i as f32, 1.0]})
        })
        .collect();
    Json(json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
    .into_response()
}
