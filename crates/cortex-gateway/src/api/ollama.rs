//! Ollama's API on the gateway's own port: `GET /api/tags`, `GET /api/ps`,
//! `POST /api/show`, `POST /api/chat`, `POST /api/generate`,
//! `POST /api/embed` and `GET /api/version`. Chat and generate requests
//! become chat requests ([`crate::translate::ollama`]) and go the same way
//! as `/v1/chat/completions` (routing, cold loads, admission, metrics with
//! `api="ollama"`); their answers come back as one object or NDJSON lines.
//!
//! `keep_alive` maps onto cortex's unload rules when the request is done
//! ([`crate::fleet::FleetHandle::keep_alive`]): `0` unloads the model once
//! nothing runs on it, a duration replaces `idle_unload_after` for it,
//! a negative value keeps it from idling out, and no `keep_alive` puts it
//! back on the default. A request without messages (or prompt) loads the
//! model, or unloads it with `keep_alive: 0`, as Ollama does. Errors are
//! `{"error": message}` with the HTTP status ([`Ollama`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use cortex_core::ollama::{ChatRequest, GenerateRequest, KeepAlive, ShowRequest, VersionResponse};
use cortex_core::openai::{ChatCompletionChunk, ChatCompletionRequest};
use serde::Serialize;

use super::error::Ollama;
use super::{admit, body_or_error, parse, resolve, resolve_for, send};
use crate::error::GatewayError;
use crate::fleet::FleetHandle;
use crate::metrics::Api;
use crate::proxy::stream::{self, Translator};
use crate::proxy::CHAT_PATH;
use crate::state::AppState;
use crate::translate::ollama::catalog::{self, facts_from_fleet, ModelFacts};
use crate::translate::ollama::request::{chat_request, generate_request, Intent, Translated};
use crate::translate::ollama::response::{
    chat_lifecycle, chat_response, generate_lifecycle, generate_response,
};
use crate::translate::ollama::stream::{encode_line, Endpoint, OllamaStream};
use crate::translate::ollama::{model_name, Now, Timings};
use cortex_core::neuron_api::ModelKind;

/// The Ollama release whose API cortex follows; clients gate features on
/// `/api/version` (tools, for one), so it is this and not cortex's own.
pub const OLLAMA_API_VERSION: &str = "0.9.0";

/// NDJSON, as Ollama labels its streams.
const NDJSON: &str = "application/x-ndjson";

/// `GET /api/tags`: every model some healthy neuron can serve.
pub async fn tags(State(s): State<Arc<AppState>>) -> Response {
    match facts(&s).await {
        Ok(f) => Json(catalog::tags(&f)).into_response(),
        Err(e) => Ollama(e).into_response(),
    }
}

/// `GET /api/ps`: every loaded placement.
pub async fn ps(State(s): State<Arc<AppState>>) -> Response {
    match facts(&s).await {
        Ok(f) => Json(catalog::ps(&f)).into_response(),
        Err(e) => Ollama(e).into_response(),
    }
}

/// `POST /api/show`: one model's details, context length included.
pub async fn show(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let shown = async {
        let body = body_or_error(body)?;
        let req: ShowRequest = parse(&body)?;
        let resolved = resolve(&s, model_name(&req.model))?;
        facts(&s)
            .await?
            .into_iter()
            .find(|f| *f.id == *resolved.id)
            .map(|f| catalog::show(&f))
            .ok_or_else(|| GatewayError::ModelNotFound(resolved.id.to_string()))
    };
    match shown.await {
        Ok(r) => Json(r).into_response(),
        Err(e) => Ollama(e).into_response(),
    }
}

/// `GET /api/version`.
pub async fn version() -> Json<VersionResponse> {
    Json(VersionResponse {
        version: OLLAMA_API_VERSION.to_string(),
    })
}

/// `POST /api/chat`.
pub async fn chat(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    answer(&s, body, Endpoint::Chat).await
}

/// `POST /api/generate`.
pub async fn generate(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(&s, body, Endpoint::Generate).await
}

async fn answer(
    s: &Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Response {
    match handle(s, body_or_error(body), endpoint).await {
        Ok(r) => r,
        Err(e) => Ollama(e).into_response(),
    }
}

async fn handle(
    s: &Arc<AppState>,
    body: Result<Bytes, GatewayError>,
    endpoint: Endpoint,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let body = body?;
    let mut t = match endpoint {
        Endpoint::Chat => chat_request(parse::<ChatRequest>(&body)?)?,
        Endpoint::Generate => generate_request(parse::<GenerateRequest>(&body)?)?,
    };
    // Loading and unloading work for any model; generating needs a chat one.
    let id = match t.intent {
        Intent::Generate(_) => resolve_for(s, &t.model, ModelKind::Chat)?,
        Intent::Load | Intent::Unload => resolve(s, &t.model)?,
    }
    .id
    .to_string();
    match std::mem::replace(&mut t.intent, Intent::Load) {
        Intent::Load => {
            s.fleet.ensure_ready(&id, Vec::new(), None).await?;
            s.fleet.keep_alive(&id, t.keep_alive);
            Ok(lifecycle(endpoint, &t, false))
        }
        Intent::Unload => {
            s.fleet.unload(&id, None).await?;
            Ok(lifecycle(endpoint, &t, true))
        }
        Intent::Generate(chat) => {
            let mut chat: ChatCompletionRequest = *chat;
            chat.model = id.clone();
            forward(s, &t, chat, id, started, endpoint).await
        }
    }
}

/// The answer to a bare load or unload: one object, as a one-line stream
/// when the client streams.
fn lifecycle(endpoint: Endpoint, t: &Translated, unloaded: bool) -> Response {
    let now = Now::system();
    match endpoint {
        Endpoint::Chat => one(&chat_lifecycle(&t.model, now, unloaded), t.stream),
        Endpoint::Generate => one(&generate_lifecycle(&t.model, now, unloaded), t.stream),
    }
}

/// One answer object: JSON, or a single NDJSON line.
fn one<T: Serialize>(v: &T, stream: bool) -> Response {
    if !stream {
        return Json(v).into_response();
    }
    let mut line = serde_json::to_vec(v).unwrap_or_default();
    line.push(b'\n');
    ([(header::CONTENT_TYPE, NDJSON)], line).into_response()
}

/// Send the chat request upstream; answer one object or NDJSON lines.
async fn forward(
    s: &Arc<AppState>,
    t: &Translated,
    chat: ChatCompletionRequest,
    id: String,
    started: Instant,
    endpoint: Endpoint,
) -> Result<Response, GatewayError> {
    let upstream = serde_json::to_vec(&chat).map_err(GatewayError::Encode)?;
    let cold = !s.fleet.table().ready.contains_key(&id);
    let permit = admit(s, &id).await?;
    // From here on, however the request ends, its keep_alive applies.
    let keep = KeepAliveAfter::new(s, &id, t.keep_alive);
    let sent = Instant::now();
    let (d, mut stats) = send(
        s,
        &id,
        CHAT_PATH,
        Bytes::from(upstream),
        Api::Ollama,
        started,
    )
    .await?;
    // A cold model's load is most of the wait for the answer's head.
    let load = if cold { sent.elapsed() } else { Duration::ZERO };
    let status = d.resp.status();
    if status != StatusCode::OK || !t.stream {
        let answer = d.completion(s, &mut stats).await?;
        let timings = Timings {
            load,
            prompt_eval: Duration::ZERO,
            eval: sent.elapsed().saturating_sub(load),
        };
        let now = Now::system();
        let r = match endpoint {
            Endpoint::Chat => Json(chat_response(answer, &t.model, now, timings)).into_response(),
            Endpoint::Generate => {
                Json(generate_response(answer, &t.model, now, timings)).into_response()
            }
        };
        drop(permit);
        drop(keep);
        return Ok(r);
    }
    let lines = Lines {
        tr: OllamaStream::new(
            endpoint,
            t.model.clone(),
            Instant::now(),
            d.prompt_tokens_hint(),
        ),
        load,
        _keep: keep,
    };
    let body = axum::body::Body::from_stream(stream::translated(s, d, stats, lines, permit));
    Ok((
        [
            (header::CONTENT_TYPE, NDJSON),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

/// What cortex knows of its servable models, as Ollama's catalogue
/// describes them.
async fn facts(s: &AppState) -> Result<Vec<ModelFacts>, GatewayError> {
    let view = s.fleet.view().await?;
    let table = s.fleet.table();
    let mut facts = facts_from_fleet(
        &view,
        |id| s.fleet.idle_limit(id),
        cortex_core::now_unix_ms(),
    );
    facts.retain(|f| table.resolve(&f.id).is_some_and(|r| r.servable));
    for f in &mut facts {
        if let Some(file) = table.files.get(&f.id) {
            f.source.clone_from(&file.source);
            if file.size_bytes > 0 {
                f.size_bytes = file.size_bytes;
            }
            f.context_length = file.context_length;
            f.architecture.clone_from(&file.architecture);
        }
    }
    Ok(facts)
}

/// Applies a request's `keep_alive` when dropped: after the answer was
/// sent, or when its stream ends (the stream's in-flight count is gone by
/// then; see `proxy::stream`).
pub(super) struct KeepAliveAfter {
    fleet: FleetHandle,
    model: String,
    keep: Option<KeepAlive>,
}

impl KeepAliveAfter {
    pub(super) fn new(s: &AppState, model: &str, keep: Option<KeepAlive>) -> Self {
        Self {
            fleet: s.fleet.clone(),
            model: model.to_string(),
            keep,
        }
    }
}

impl Drop for KeepAliveAfter {
    fn drop(&mut self) {
        self.fleet.keep_alive(&self.model, self.keep);
    }
}

/// An Ollama NDJSON stream over the neuron's chat chunks.
struct Lines {
    tr: OllamaStream,
    load: Duration,
    _keep: KeepAliveAfter,
}

fn encode_all(lines: Vec<crate::translate::ollama::stream::Line>, out: &mut Vec<u8>) {
    for l in &lines {
        out.extend_from_slice(&encode_line(l));
    }
}

impl Translator for Lines {
    fn start(&mut self, _out: &mut Vec<u8>) {}
    fn on_chunk(&mut self, chunk: ChatCompletionChunk, out: &mut Vec<u8>) {
        encode_all(self.tr.on_chunk(chunk, Now::system()), out);
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        encode_all(self.tr.finish(Now::system(), self.load), out);
    }
    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        encode_all(self.tr.fail(message), out);
    }
    fn is_done(&self) -> bool {
        self.tr.is_done()
    }
}
