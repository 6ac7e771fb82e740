//! The OpenAI Responses API: `POST /v1/responses`, streamed and not. The
//! request (after the conversation `previous_response_id` names) becomes a
//! chat request ([`crate::translate::responses`]), goes the same way as
//! `/v1/chat/completions`, and its answer or stream comes back as a
//! `response` object or Responses events. Answers kept with `store` (the
//! default) go into [`AppState::responses`] for later requests to continue.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use cortex_core::neuron_api::ModelKind;
use cortex_core::openai::ChatCompletionChunk;
use cortex_core::responses::{InputItem, OutputItem, ResponsesRequest};

use super::error::OpenAi;
use super::{admit, body_or_error, event_stream, parse, resolve_for, send};
use crate::error::GatewayError;
use crate::metrics::Api;
use crate::proxy::stream::{self, Translator};
use crate::state::AppState;
use crate::translate::responses::request::responses_to_chat;
use crate::translate::responses::response::chat_to_response;
use crate::translate::responses::store::conversation;
use crate::translate::responses::stream::{encode_event, ResponsesStream};
use crate::translate::responses::{new_response_id, ResponseSeed};

/// `POST /v1/responses`.
pub async fn create(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle(&s, body_or_error(body)).await {
        Ok(r) => r,
        Err(e) => OpenAi(e).into_response(),
    }
}

async fn handle(
    s: &Arc<AppState>,
    body: Result<Bytes, GatewayError>,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let body = body?;
    let req: ResponsesRequest = parse(&body)?;
    let history: Arc<[InputItem]> = match &req.previous_response_id {
        None => Arc::from(Vec::new()),
        Some(id) => match lock(s).get(id, Instant::now()) {
            Ok(h) => h,
            Err(e) => return Ok((StatusCode::NOT_FOUND, Json(e.to_openai())).into_response()),
        },
    };
    let resolved = resolve_for(s, &req.model, ModelKind::Chat)?;
    let mut chat = responses_to_chat(&req, &history)?;
    chat.model = resolved.id.to_string();
    let stream = req.stream.unwrap_or(false);
    let upstream_body = serde_json::to_vec(&chat).map_err(GatewayError::Encode)?;
    let permit = admit(s, &resolved.id).await?;
    let (d, mut stats) = send(
        s,
        &resolved.id,
        crate::proxy::CHAT_PATH,
        Bytes::from(upstream_body),
        Api::Responses,
        started,
    )
    .await?;
    let seed = ResponseSeed::new(&req, new_response_id(), cortex_core::now_unix_ms() / 1000);
    let keep = seed.store.then(|| Keep {
        state: Arc::clone(s),
        history,
        input: req.input_items(),
    });
    let status = d.resp.status();
    if status != StatusCode::OK || !stream {
        let answer = d.completion(s, &mut stats).await?;
        let response = chat_to_response(answer, &seed);
        if let Some(k) = keep {
            k.store(&response.id, &response.output);
        }
        return Ok(Json(response).into_response());
    }
    let hint = d.prompt_tokens_hint();
    let tr = Streaming {
        tr: ResponsesStream::new(seed, hint),
        keep,
    };
    Ok(event_stream(stream::translated(s, d, stats, tr, permit)))
}

fn lock(
    s: &AppState,
) -> std::sync::MutexGuard<'_, crate::translate::responses::store::ResponseStore> {
    // The store is plain data, whole after every call: a panic elsewhere
    // while it was held leaves nothing half-written.
    s.responses.lock().unwrap_or_else(|p| p.into_inner())
}

/// What storing a finished response needs.
struct Keep {
    state: Arc<AppState>,
    history: Arc<[InputItem]>,
    input: Vec<InputItem>,
}

impl Keep {
    fn store(self, id: &str, output: &[OutputItem]) {
        let items = conversation(&self.history, self.input, output);
        lock(&self.state).put(id.to_string(), items, Instant::now());
    }
}

/// A Responses stream that stores its response once it completes.
struct Streaming {
    tr: ResponsesStream,
    keep: Option<Keep>,
}

fn encode_all(events: &[cortex_core::responses::StreamEvent], out: &mut Vec<u8>) {
    for e in events {
        out.extend_from_slice(&encode_event(e));
    }
}

impl Translator for Streaming {
    fn start(&mut self, out: &mut Vec<u8>) {
        encode_all(&self.tr.start(), out);
    }
    fn on_chunk(&mut self, chunk: ChatCompletionChunk, out: &mut Vec<u8>) {
        encode_all(&self.tr.on_chunk(chunk), out);
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        encode_all(&self.tr.finish(), out);
        // Failed responses are not kept: there is nothing to continue.
        if let (Some(k), Some(r)) = (self.keep.take(), self.tr.final_response()) {
            k.store(&r.id, &r.output);
        }
    }
    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        encode_all(&self.tr.fail("server_error", message), out);
    }
    fn is_done(&self) -> bool {
        self.tr.is_done()
    }
}
