//! `POST /v1/embeddings`: checks the request (see
//! `cortex_core::embeddings`), tokenizes its inputs with the model's own
//! tokenizer, refuses inputs longer than the model's positions (400, as
//! OpenAI does, rather than truncating silently) unless the request says
//! `"truncate": true` (then each keeps its start), runs the encoder on the
//! model's device worker and writes the vectors as floats or base64.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use cortex_core::embeddings::{
    Embedding, EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage, EncodingFormat,
    RequestError, Vector,
};
use tokio::sync::oneshot;

use super::chat::Recorder;
use super::error::ApiError;
use super::extract::ApiJson;
use super::{Acquired, AppState};
use crate::device_worker::{EmbedRequest, FaultKind};
use crate::engine::Assets;
use crate::fault::Site;
use crate::metrics::NeuronMetrics;

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        ApiError::bad_param(e.param, e.message)
    }
}

/// Base64 of `v`'s little-endian f32 bytes (what OpenAI's `base64`
/// encoding is, and what its SDK decodes with `numpy.frombuffer`).
pub fn base64_f32(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let texts = req.texts()?;
    let truncate = req.truncate.unwrap_or(false);
    let format = req.format()?;
    let inject = super::chat::injection(&state, &headers)?;
    if inject.is_some_and(|i| i.kind == FaultKind::Hang) {
        return Err(ApiError::bad_request(
            "hang faults are not injected into embeddings",
        ));
    }
    let Acquired {
        guard,
        model,
        assets,
    } = super::acquire(&state, &req.model, Assets::embedding)?;
    req.check_dimensions(assets.dims)?;

    let mut inputs = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let ids = match inject.filter(|j| j.site == Site::Tokenize) {
            Some(j) => Err(j.message()),
            None if truncate => assets.encode_truncated(text).map_err(|e| e.chain()),
            None => assets.encode(text).map_err(|e| e.chain()),
        };
        let ids = match ids {
            Ok(ids) => ids,
            Err(chain) => {
                return Err(ApiError::tokenize_failed(
                    &model.health,
                    false,
                    &chain,
                    || {
                        ApiError::bad_param("input", format!("cannot tokenize input {i}: {chain}"))
                            .code("invalid_input")
                    },
                ));
            }
        };
        let max = assets.max_positions;
        if ids.len() > max {
            let at = if texts.len() > 1 {
                format!("input[{i}]")
            } else {
                "input".into()
            };
            return Err(ApiError::bad_param(
                "input",
                format!(
                    "This model's maximum context length is {max} tokens, however {at} has {} tokens. Shorten it or split it.",
                    ids.len()
                ),
            )
            .code("context_length_exceeded"));
        }
        inputs.push(ids);
    }
    let prompt_tokens: u64 = inputs.iter().map(|v| v.len() as u64).sum();

    // Counts the request (499 until answered) and its duration when dropped.
    let mut rec = Recorder::new(state.metrics.clone(), &req.model, false, started);
    let (reply, rx) = oneshot::channel();
    model
        .worker
        .embed(EmbedRequest {
            key: model.key,
            inputs,
            health: model.health.clone(),
            inject,
            reply,
        })
        .map_err(|e| ApiError::internal(e.to_string()).code("worker_gone"))?;
    let vectors = match rx.await {
        Ok(Ok(v)) => v,
        Ok(Err(f)) => {
            rec.set_status(500);
            return Err(if f.device_fault {
                ApiError::internal(format!(
                    "embedding failed with a device fault; the model is marked poisoned and must be reloaded: {}",
                    f.chain
                ))
                .code("device_fault")
            } else {
                ApiError::internal(format!("embedding failed: {}", f.chain)).code("inference_error")
            });
        }
        Err(_) => {
            rec.set_status(500);
            return Err(
                ApiError::internal("the device worker dropped the request").code("worker_gone")
            );
        }
    };
    drop(guard);
    state
        .metrics
        .prompt_tokens
        .get_or_create(&NeuronMetrics::model(&req.model))
        .inc_by(prompt_tokens);
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| Embedding {
            object: "embedding".into(),
            index,
            embedding: match format {
                EncodingFormat::Float => Vector::Float(v),
                EncodingFormat::Base64 => Vector::Base64(base64_f32(&v)),
            },
        })
        .collect();
    rec.set_status(200);
    Ok((
        StatusCode::OK,
        Json(EmbeddingsResponse {
            object: "list".into(),
            data,
            model: req.model.clone(),
            usage: EmbeddingsUsage {
                prompt_tokens,
                total_tokens: prompt_tokens,
            },
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        // 1.0f32 = 0x3f800000 → bytes 00 00 80 3f.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[]), "");
        let v = [0.25f32, -3.5, 1e-7];
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(base64_f32(&v))
            .unwrap();
        let back: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(back, v);
    }
}
