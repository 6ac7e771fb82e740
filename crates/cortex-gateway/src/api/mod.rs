//! The gateway's HTTP API: OpenAI routes ([`openai`]), the Responses API
//! ([`responses`]), embeddings ([`embeddings`], and Ollama's `/api/embed`
//! in [`ollama_embed`]), Anthropic routes ([`anthropic`]), Ollama's API
//! ([`ollama`]), the fleet page
//! ([`ui`]), the admin API ([`admin`]), authentication and path
//! normalisation ([`guard`]), and errors in each dialect ([`error`]).

pub mod admin;
pub mod anthropic;
pub mod embeddings;
pub mod error;
pub mod guard;
pub mod ollama;
pub mod ollama_embed;
pub mod openai;
pub mod responses;
pub mod ui;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use cortex_core::model_id::is_valid_model_id;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::admission::Permit;
use crate::error::GatewayError;
use crate::fleet::Resolved;
use crate::metrics::{Api, ModelLabel};
use crate::proxy::stats::Stats;
use crate::proxy::{dispatch, Dispatched};
use crate::state::AppState;
use error::{Anthropic, Ollama, OpenAi};

/// A request body may pause this long between two reads.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The API routes: every route of the gateway's API, behind the guard
/// (path checks, API keys, the body limit).
pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.limits.max_body.bytes() as usize;
    Router::new()
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{id}", get(openai::model))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/responses", post(responses::create))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/api/embed", post(ollama_embed::embed))
        .route("/api/embeddings", post(ollama_embed::embeddings))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/version", get(ollama::version))
        .route("/ui", get(ui::page))
        .route("/", get(ui::root))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/admin/fleet", get(admin::fleet))
        .route("/admin/models/{id}/{action}", post(admin::model_action))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestBodyTimeoutLayer::new(BODY_READ_TIMEOUT))
        .with_state(state)
}

/// Does this caller speak Anthropic? Anthropic paths, and any request with
/// an `anthropic-version` header.
pub fn wants_anthropic(path: &str, headers: &HeaderMap) -> bool {
    path.starts_with("/v1/messages") || headers.contains_key("anthropic-version")
}

/// `e` in the caller's dialect.
pub fn in_dialect(path: &str, headers: &HeaderMap, e: GatewayError) -> Response {
    if path.starts_with("/api/") {
        Ollama(e).into_response()
    } else if wants_anthropic(path, headers) {
        Anthropic(e).into_response()
    } else {
        OpenAi(e).into_response()
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Ready when at least one neuron is up.
async fn ready(State(s): State<Arc<AppState>>) -> Response {
    let up = s.fleet.table().nodes_up;
    let body = Json(serde_json::json!({"ready": up > 0, "neurons_up": up}));
    if up > 0 {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn not_found(uri: Uri, headers: HeaderMap) -> Response {
    in_dialect(uri.path(), &headers, GatewayError::RouteNotFound)
}

async fn method_not_allowed(uri: Uri, headers: HeaderMap) -> Response {
    in_dialect(uri.path(), &headers, GatewayError::MethodNotAllowed)
}

/// The body, or the right error: 413 over the limit, 400 otherwise.
pub fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, GatewayError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            GatewayError::PayloadTooLarge
        } else {
            GatewayError::bad_request(format!("cannot read the request body: {e}"))
        }
    })
}

/// A `text/event-stream` answer with `body` as its events.
pub fn event_stream(body: crate::proxy::stream::Events) -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/event-stream"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// Parse a JSON body into `T`, with a 400 naming the problem.
pub fn parse<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, GatewayError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::bad_request(
            "request body is empty; expected a JSON object",
        ));
    }
    // JSON is UTF-8: checked once for the whole body, so that the parser
    // does not check each string again.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        GatewayError::bad_request(format!(
            "invalid JSON body: not UTF-8 (byte {})",
            e.valid_up_to()
        ))
    })?;
    serde_json::from_str(text).map_err(GatewayError::Json)
}

/// Resolve a client's model name. Names are identifiers: anything else is
/// unknown (404) without touching files or the network.
pub fn resolve(state: &AppState, name: &str) -> Result<Resolved, GatewayError> {
    if !is_valid_model_id(name) {
        return Err(GatewayError::ModelNotFound(
            name.chars().take(128).collect(),
        ));
    }
    let table = state.fleet.table();
    let r = table
        .resolve(name)
        .cloned()
        .ok_or_else(|| GatewayError::ModelNotFound(name.to_string()))?;
    if !r.servable {
        return Err(GatewayError::Unavailable {
            message: format!("no healthy neuron can serve `{name}` right now"),
            retry_after_s: 5,
        });
    }
    Ok(r)
}

/// [`resolve`] for an API of `kind`: a model of the other kind (an
/// embedding model asked to chat, a chat model asked for embeddings) is a
/// 400 naming `model`, before anything is loaded.
pub fn resolve_for(
    state: &AppState,
    name: &str,
    kind: cortex_core::neuron_api::ModelKind,
) -> Result<Resolved, GatewayError> {
    let r = resolve(state, name)?;
    if r.kind != kind {
        return Err(GatewayError::BadRequest {
            message: r.kind.wrong_api_message(name),
            param: Some("model".into()),
        });
    }
    Ok(r)
}

/// Admit a request for `model` (bounded by `load_wait`), recording how long
/// it queued.
pub async fn admit(state: &AppState, model: &str) -> Result<Permit, GatewayError> {
    let (permit, waited) = state
        .admission
        .admit(model, state.limits.load_wait.get())
        .await?;
    permit
        .queue_wait(|| {
            state
                .metrics
                .queue_wait
                .get_or_create(&ModelLabel {
                    model: model.to_string(),
                })
                .clone()
        })
        .observe(waited.as_secs_f64());
    Ok(permit)
}

/// Sends an admitted request's `body` to `path` on a neuron serving model
/// `id`, within the request deadline counted from `started`, and starts its
/// metrics as `api`.
pub async fn send(
    s: &AppState,
    id: &str,
    path: &'static str,
    body: Bytes,
    api: Api,
    started: Instant,
) -> Result<(Dispatched, Stats), GatewayError> {
    let deadline = started + s.limits.request_deadline.get();
    let d = dispatch(s, id, path, body, deadline).await?;
    let stats = Stats::new(d.replica.metrics(&s.metrics), api, started);
    Ok((d, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_not_utf8_json_is_a_bad_request() {
        #[derive(serde::Deserialize, Debug)]
        struct Probe<'a> {
            #[serde(borrow)]
            model: std::borrow::Cow<'a, str>,
        }
        let ok: Probe = parse(br#" {"model": "m\u00e9", "x": ["\u00e9t\u00e9"]} "#).unwrap();
        assert_eq!(ok.model, "m\u{e9}");
        for (body, says) in [
            (&b"{\"model\": \"m\xff\"}"[..], "not UTF-8 (byte 12)"),
            (b"{\"model\": \"m\", \"x\": \"\xc3\"}", "not UTF-8"),
            (b"  ", "request body is empty"),
            (b"{\"model\": }", "invalid JSON body"),
        ] {
            let e = parse::<Probe>(body).unwrap_err();
            assert_eq!(crate::error::openai_status(&e), 400, "{e:?}");
            assert!(e.message().contains(says), "{}", e.message());
        }
    }
}
