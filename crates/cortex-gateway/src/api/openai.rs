//! OpenAI routes: `/v1/chat/completions` (passed through to the neuron,
//! which speaks OpenAI; streams are forwarded event by event as they
//! arrive) and `/v1/models` (the merged catalogue, each entry with its
//! `context_length` when known).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use cortex_core::neuron_api::ModelKind;
use cortex_core::openai::{ModelList, ModelObject, Stop};
use serde::Deserialize;

use super::error::OpenAi;
use super::{
    admit, body_or_error, event_stream, in_dialect, parse, resolve, resolve_for, send,
    wants_anthropic,
};
use crate::error::GatewayError;
use crate::fleet::RoutingTable;
use crate::metrics::Api;
use crate::proxy::stats::usage_of;
use crate::proxy::stream;
use crate::state::AppState;

/// What the gateway reads of a chat request; the rest passes through.
#[derive(Deserialize)]
struct ChatProbe<'a> {
    #[serde(borrow)]
    model: std::borrow::Cow<'a, str>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptionsProbe>,
    #[serde(default)]
    stop: Option<Stop>,
}

/// OpenAI's limit on stop sequences.
const OPENAI_MAX_STOPS: usize = 4;

#[derive(Deserialize)]
struct StreamOptionsProbe {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match chat(&s, body_or_error(body)).await {
        Ok(r) => r,
        Err(e) => OpenAi(e).into_response(),
    }
}

async fn chat(s: &AppState, body: Result<Bytes, GatewayError>) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let body = body?;
    let probe: ChatProbe = parse(&body)?;
    if let Some(Stop::Many(v)) = &probe.stop {
        if v.len() > OPENAI_MAX_STOPS {
            return Err(GatewayError::BadRequest {
                message: format!("stop: at most {OPENAI_MAX_STOPS} stop sequences are allowed"),
                param: Some("stop".into()),
            });
        }
    }
    let resolved = resolve_for(s, &probe.model, ModelKind::Chat)?;
    let stream = probe.stream.unwrap_or(false);
    let wants_usage = probe
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    // The neuron knows the canonical id; streams always carry usage so that
    // token metrics can be tapped (the usage chunk is dropped again when the
    // client did not ask for it).
    let body = if *resolved.id != *probe.model || (stream && !wants_usage) {
        rewrite(&body, &resolved.id, stream)?
    } else {
        body
    };
    let permit = admit(s, &resolved.id).await?;
    let (d, mut stats) = send(
        s,
        &resolved.id,
        crate::proxy::CHAT_PATH,
        body,
        Api::OpenAi,
        started,
    )
    .await?;
    let status = d.resp.status();
    if status != StatusCode::OK || !stream {
        let content_type = d.resp.headers().get(header::CONTENT_TYPE).cloned();
        let retry_after = d.resp.headers().get(header::RETRY_AFTER).cloned();
        let bytes = d.read_all(s).await?;
        if status == StatusCode::OK {
            stats.usage = usage_of(&bytes);
        }
        stats.finish(status.as_u16());
        return Ok(passthrough(status, content_type, retry_after, bytes));
    }
    Ok(event_stream(stream::openai(
        s,
        d,
        stats,
        !wants_usage,
        permit,
    )))
}

/// A neuron's whole answer, passed on with its status, content type (bytes
/// without one are `application/octet-stream`, as axum labels them) and
/// `Retry-After`; its other headers are the neuron's own business.
fn passthrough(
    status: StatusCode,
    content_type: Option<header::HeaderValue>,
    retry_after: Option<header::HeaderValue>,
    body: Bytes,
) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or(header::HeaderValue::from_static("application/octet-stream")),
    );
    if let Some(v) = retry_after {
        h.insert(header::RETRY_AFTER, v);
    }
    r
}

/// Set `model` to the canonical id and, for streams, ask for usage.
pub(super) fn rewrite(body: &Bytes, id: &str, stream: bool) -> Result<Bytes, GatewayError> {
    let mut v: serde_json::Map<String, serde_json::Value> = parse(body)?;
    v.insert("model".into(), serde_json::Value::String(id.to_string()));
    if stream {
        v.insert(
            "stream_options".into(),
            serde_json::json!({"include_usage": true}),
        );
    }
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(GatewayError::Encode)
}

/// Ids of every model some healthy neuron can serve, sorted, once each.
fn servable_ids(s: &AppState) -> Vec<String> {
    let table = s.fleet.table();
    let mut ids: Vec<String> = table
        .names
        .values()
        .filter(|r| r.servable)
        .map(|r| r.id.to_string())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// An OpenAI model entry, with the context window when a neuron told it
/// (loaded, or read from the file: see [`crate::fleet::FileFacts`]).
fn openai_model(table: &RoutingTable, id: &str) -> ModelObject {
    ModelObject {
        id: id.to_string(),
        object: "model".into(),
        created: 0,
        owned_by: "cortex".into(),
        context_length: table.files.get(id).and_then(|f| f.context_length),
    }
}

fn anthropic_model(id: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"
    })
}

/// `GET /v1/models`: every model some healthy neuron can serve, once each.
/// Anthropic clients get Anthropic's list shape.
pub async fn models(State(s): State<Arc<AppState>>, uri: Uri, headers: HeaderMap) -> Response {
    let ids = servable_ids(&s);
    if wants_anthropic(uri.path(), &headers) {
        let data: Vec<serde_json::Value> = ids.iter().map(|id| anthropic_model(id)).collect();
        return Json(serde_json::json!({
            "data": data,
            "has_more": false,
            "first_id": ids.first(),
            "last_id": ids.last(),
        }))
        .into_response();
    }
    let table = s.fleet.table();
    Json(ModelList::new(
        ids.iter().map(|id| openai_model(&table, id)).collect(),
    ))
    .into_response()
}

/// `GET /v1/models/{id}` (`models.retrieve` in both SDKs); aliases resolve.
pub async fn model(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match resolve(&s, &id) {
        Ok(r) if wants_anthropic(uri.path(), &headers) => {
            Json(anthropic_model(&r.id)).into_response()
        }
        Ok(r) => Json(openai_model(&s.fleet.table(), &r.id)).into_response(),
        Err(_) => in_dialect(
            uri.path(),
            &headers,
            GatewayError::ModelNotFound(id.chars().take(128).collect()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_content_type_and_retry_after_of_an_answer_are_passed_on() {
        let json = header::HeaderValue::from_static("application/json");
        let r = passthrough(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(json.clone()),
            Some(header::HeaderValue::from_static("3")),
            Bytes::from_static(b"{}"),
        );
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers().len(), 2, "{:?}", r.headers());
        assert_eq!(r.headers()[header::CONTENT_TYPE], json);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        let r = passthrough(StatusCode::OK, None, None, Bytes::new());
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/octet-stream"
        );
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn a_rewrite_sets_the_id_and_asks_a_stream_for_usage() {
        let body = Bytes::from_static(br#"{"model":"alias","stream":true,"x":[1,{"y":null}]}"#);
        let v: serde_json::Value =
            serde_json::from_slice(&rewrite(&body, "id", true).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model":"id","stream":true,"x":[1,{"y":null}],
                "stream_options":{"include_usage":true}})
        );
        let v: serde_json::Value =
            serde_json::from_slice(&rewrite(&body, "id", false).unwrap()).unwrap();
        assert!(v.get("stream_options").is_none());
    }
}
