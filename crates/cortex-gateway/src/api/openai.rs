//! OpenAI routes: `/v1/chat/completions` (passed through to the neuron,
//! which speaks OpenAI; streams are forwarded event by event as they
//! arrive) and `/v1/models` (the merged catalogue).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use cortex_core::openai::{ModelList, ModelObject, Stop};
use futures::stream;
use serde::Deserialize;

use super::error::{GatewayError, OpenAi};
use super::{admit, body_or_error, event_stream, parse, resolve, AppState};
use crate::admission::Permit;
use crate::fleet::InFlightGuard;
use crate::http_server::{Reply, Whole};
use crate::metrics::Api;
use crate::proxy::stats::{usage_of, Probe, Stats};
use crate::proxy::upstream::{StreamFailure, UpstreamSse};
use crate::proxy::{dispatch, Dispatched};
use crate::sse::SseEvent;

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

pub async fn chat_completions(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAi> {
    chat(&s, body_or_error(body))
        .await
        .map(IntoResponse::into_response)
        .map_err(OpenAi)
}

/// `POST /v1/chat/completions` with its body (or the error reading it).
pub(crate) async fn chat(
    s: &Arc<AppState>,
    body: Result<Bytes, GatewayError>,
) -> Result<Reply, GatewayError> {
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
    let resolved = resolve(s, &probe.model)?;
    let stream = probe.stream.unwrap_or(false);
    let wants_usage = probe
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    // The neuron knows the canonical id; streams always carry usage so that
    // token metrics can be tapped (the usage chunk is dropped again when the
    // client did not ask for it).
    let body = if *resolved.id != *probe.model {
        rewrite(&body, &resolved.id, stream)?
    } else if stream && !wants_usage {
        match splice_include_usage(&body) {
            Some(b) => b,
            None => rewrite(&body, &resolved.id, stream)?,
        }
    } else {
        body
    };
    let permit = admit(s, &resolved.id).await?;
    let deadline = started + s.limits.request_deadline.get();
    let d = dispatch(s, &resolved.id, "/v1/chat/completions", body, deadline).await?;
    let mut stats = Stats::new(d.replica.metrics(&s.metrics), Api::OpenAi, started);
    let status = d.resp.status();
    if status != StatusCode::OK || !stream {
        let content_type = d.resp.content_type().cloned();
        let retry_after = retry_after(d.resp.headers());
        let bytes = d.read_all(s).await?;
        if status == StatusCode::OK {
            stats.usage = usage_of(&bytes);
        }
        stats.finish(status.as_u16());
        return Ok(Reply::Whole(passthrough(
            status,
            content_type,
            retry_after,
            bytes,
        )));
    }
    Ok(Reply::Response(stream_through(
        s,
        d,
        stats,
        !wants_usage,
        permit,
    )))
}

/// Of a neuron's answer headers besides its content type, the one passed
/// on: the others are the neuron's own business.
fn retry_after(others: &HeaderMap) -> Option<header::HeaderValue> {
    others.get(header::RETRY_AFTER).cloned()
}

/// A neuron's whole answer, passed on with its status, content type (bytes
/// without one are `application/octet-stream`, as axum labels them) and
/// `Retry-After`; its other headers are the neuron's own business.
fn passthrough(
    status: StatusCode,
    content_type: Option<header::HeaderValue>,
    retry_after: Option<header::HeaderValue>,
    body: Bytes,
) -> Whole {
    Whole {
        status,
        content_type: content_type
            .unwrap_or(header::HeaderValue::from_static("application/octet-stream")),
        retry_after,
        body,
    }
}

/// Ask for the usage chunk (the metrics need it) by adding
/// `"stream_options":{"include_usage":true}` after the body's opening brace,
/// without re-encoding the body; `None` when that would not be plainly
/// right (not an object; `stream_options` written anywhere; or a `\u`
/// escape, which could spell that key).
fn splice_include_usage(body: &[u8]) -> Option<Bytes> {
    const FIELD: &[u8] = br#""stream_options":{"include_usage":true},"#;
    let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let empty = body[open + 1..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_none_or(|b| *b == b'}');
    if body[open] != b'{'
        || empty
        || body.windows(14).any(|w| w == b"stream_options")
        || body.windows(2).any(|w| w == b"\\u")
    {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + FIELD.len());
    out.extend_from_slice(&body[..=open]);
    out.extend_from_slice(FIELD);
    out.extend_from_slice(&body[open + 1..]);
    Some(Bytes::from(out))
}

/// Set `model` to the canonical id and, for streams, ask for usage, by
/// re-encoding the body.
fn rewrite(body: &Bytes, id: &str, stream: bool) -> Result<Bytes, GatewayError> {
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
        .map_err(|e| GatewayError::Internal(e.to_string()))
}

/// One `data: {"error": …}` line for a failure after the stream started.
fn error_chunk(message: &str) -> Bytes {
    let e = GatewayError::BadGateway(message.to_string()).openai_body();
    let mut out = b"data: ".to_vec();
    let _ = serde_json::to_writer(&mut out, &e);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

struct Passing {
    up: UpstreamSse,
    stats: Stats,
    strip_usage: bool,
    done: bool,
    _guard: InFlightGuard,
    _permit: Permit,
}

impl Passing {
    /// Append what the client gets for one upstream event (or the end) to
    /// `out`; record the request when the stream ends.
    fn pass(&mut self, next: Option<Result<SseEvent, StreamFailure>>, out: &mut Vec<u8>) {
        match next {
            None => {
                self.done = true;
                self.stats.finish(502);
                out.extend_from_slice(&error_chunk(
                    "the neuron ended the stream before it was complete",
                ));
            }
            Some(Err(f)) => {
                self.done = true;
                self.stats.finish(502);
                out.extend_from_slice(&error_chunk(&f.0));
            }
            Some(Ok(ev)) if ev.data == "[DONE]" => {
                self.done = true;
                self.stats.finish(200);
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            Some(Ok(ev)) => {
                let probe: Probe = serde_json::from_str(&ev.data).unwrap_or_default();
                if probe.error.is_some() {
                    self.done = true;
                    self.stats.finish(500);
                }
                if probe.has_output() {
                    self.stats.token();
                    self.up.started = true;
                }
                if let Some(u) = probe.usage {
                    self.stats.usage = Some(u);
                    if self.strip_usage && probe.choices.is_empty() {
                        return;
                    }
                }
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(ev.data.as_bytes());
                out.extend_from_slice(b"\n\n");
            }
        }
    }
}

fn stream_through(
    s: &AppState,
    d: Dispatched,
    stats: Stats,
    strip_usage: bool,
    permit: Permit,
) -> Response {
    let (up, guard) = d.into_sse(&s.limits);
    let state = Passing {
        up,
        stats,
        strip_usage,
        done: false,
        _guard: guard,
        _permit: permit,
    };
    // Events that are already here go out together, in one write; the
    // stream never waits to fill a write.
    let body = stream::unfold(state, |mut p| async move {
        let mut out = Vec::new();
        while out.is_empty() {
            if p.done {
                return None;
            }
            let next = p.up.next().await;
            p.pass(next, &mut out);
            while !p.done {
                let Some(next) = p.up.next_ready() else {
                    break;
                };
                p.pass(next, &mut out);
            }
        }
        Some((Ok::<_, Infallible>(Bytes::from(out)), p))
    });
    event_stream(body)
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

/// Anthropic clients send `anthropic-version`; they get Anthropic's shapes.
pub fn wants_anthropic(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

fn openai_model(id: &str) -> ModelObject {
    ModelObject {
        id: id.to_string(),
        object: "model".into(),
        created: 0,
        owned_by: "cortex".into(),
    }
}

fn anthropic_model(id: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"
    })
}

/// `GET /v1/models`: every model some healthy neuron can serve, once each.
/// Anthropic clients get Anthropic's list shape.
pub async fn models(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let ids = servable_ids(&s);
    if wants_anthropic(&headers) {
        let data: Vec<serde_json::Value> = ids.iter().map(|id| anthropic_model(id)).collect();
        return Json(serde_json::json!({
            "data": data,
            "has_more": false,
            "first_id": ids.first(),
            "last_id": ids.last(),
        }))
        .into_response();
    }
    Json(ModelList::new(
        ids.iter().map(|id| openai_model(id)).collect(),
    ))
    .into_response()
}

/// `GET /v1/models/{id}` (`models.retrieve` in both SDKs); aliases resolve.
pub async fn model(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let found =
        resolve(&s, &id).map_err(|_| GatewayError::ModelNotFound(id.chars().take(128).collect()));
    match (found, wants_anthropic(&headers)) {
        (Ok(r), true) => Json(anthropic_model(&r.id)).into_response(),
        (Ok(r), false) => Json(openai_model(&r.id)).into_response(),
        (Err(e), true) => super::error::Anthropic(e).into_response(),
        (Err(e), false) => OpenAi(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_content_type_and_retry_after_of_an_answer_are_passed_on() {
        let json = header::HeaderValue::from_static("application/json");
        let mut others = HeaderMap::new();
        others.insert(header::RETRY_AFTER, header::HeaderValue::from_static("3"));
        others.insert("x-neuron-internal", header::HeaderValue::from_static("1"));
        others.insert(header::SET_COOKIE, header::HeaderValue::from_static("a=b"));
        let r = passthrough(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(json.clone()),
            retry_after(&others),
            Bytes::from_static(b"{}"),
        )
        .into_response();
        assert!(r.headers().get("x-neuron-internal").is_none());
        assert!(r.headers().get(header::SET_COOKIE).is_none());
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers().len(), 2);
        assert_eq!(r.headers()[header::CONTENT_TYPE], json);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        let r = passthrough(StatusCode::OK, None, None, Bytes::new()).into_response();
        assert_eq!(r.headers().len(), 1);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/octet-stream"
        );
    }
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    #[test]
    fn splice_adds_include_usage_to_an_object() {
        let b = splice_include_usage(br#" {"model":"m","stream":true}"#).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            json!({"model":"m","stream":true,"stream_options":{"include_usage":true}})
        );
    }

    #[test]
    fn splice_declines_what_it_cannot_do_plainly() {
        assert!(splice_include_usage(br#"["model","m"]"#).is_none());
        assert!(splice_include_usage(br#"{"model":"m","stream_options":null}"#).is_none());
        assert!(splice_include_usage(br#"{"model":"m","stream\u005foptions":null}"#).is_none());
        assert!(splice_include_usage(br#"{"model":"stream_option\u0073"}"#).is_none());
        assert!(splice_include_usage(b"   ").is_none());
        assert!(splice_include_usage(b"{ }").is_none());
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,12}".prop_map(Value::String),
        ]
    }

    proptest! {
        /// For any object, the spliced body decodes to the same object plus
        /// `stream_options.include_usage = true` (or the splice declines).
        #[test]
        fn splice_keeps_every_field(
            fields in prop::collection::btree_map("[a-z_]{1,16}", leaf(), 1..8),
            pretty in any::<bool>(),
        ) {
            let obj: Map<String, Value> = fields.into_iter().collect();
            let body = if pretty {
                serde_json::to_vec_pretty(&obj).unwrap()
            } else {
                serde_json::to_vec(&obj).unwrap()
            };
            if let Some(out) = splice_include_usage(&body) {
                let mut want = obj.clone();
                want.insert("stream_options".into(), json!({"include_usage": true}));
                let got: Map<String, Value> = serde_json::from_slice(&out).unwrap();
                prop_assert_eq!(got, want);
            } else {
                let text = String::from_utf8_lossy(&body).into_owned();
                prop_assert!(text.contains("stream_options") || text.contains("\\u"));
            }
        }
    }
}
