//! The fake neuron's `POST /v1/chat/completions`: a canned answer naming
//! the model and the node, or an OpenAI stream whose pacing and failures
//! (cut, stall, endless line, early end) follow the [`Behaviour`].
//!
//! [`Behaviour`]: super::Behaviour

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cortex_core::neuron_api::ModelState;
use serde_json::{json, Value};

use super::{error, now_ms, prompt_tokens, Shared, PROMPT_TOKENS_HEADER};

enum Step {
    Data(Bytes),
    Cut,
    Endless,
}

/// Counts a stream as finished or cancelled when it is dropped.
struct StreamGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl StreamGuard {
    fn done(&mut self) {
        self.finished = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut i = self.shared.lock();
        if self.finished {
            i.streams_finished += 1;
        } else {
            i.streams_cancelled += 1;
        }
    }
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

pub(super) async fn chat(State(s): State<Arc<Shared>>, Json(req): Json<Value>) -> Response {
    let model = req["model"].as_str().unwrap_or_default().to_string();
    let stream = req["stream"].as_bool().unwrap_or(false);
    let include_usage = req["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let prompt = prompt_tokens(&req);
    let b = {
        let mut i = s.lock();
        let b = i.behaviour.clone();
        if let Some(st) = b.chat_status {
            return error(st, "the fake refuses this request", "fake_error");
        }
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
        m.last_used_at = now_ms();
        b
    };
    let mut pieces = vec![
        "Hello ".to_string(),
        format!("from {model} "),
        format!("on {}", s.name),
    ];
    pieces.extend(std::iter::repeat_n(".".to_string(), b.extra_chunks));
    let completion = pieces.len() as u64;
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion});
    let headers = [(PROMPT_TOKENS_HEADER, prompt.to_string())];
    if !stream {
        return (
            headers,
            Json(json!({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": pieces.concat()},
                    "finish_reason": "stop", "logprobs": null}],
                "usage": usage,
            })),
        )
            .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        sse(
            &json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
            "logprobs": null}], "usage": null}),
        )
    };
    let mut data = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for p in &pieces {
        data.push(chunk(json!({"content": p}), Value::Null));
    }
    data.push(chunk(json!({}), json!("stop")));
    if include_usage {
        data.push(sse(
            &json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
            "created": 1, "model": model, "choices": [], "usage": usage}),
        ));
    }
    data.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let mut steps: VecDeque<Step> = VecDeque::new();
    for (n, d) in data.into_iter().enumerate() {
        if b.cut_after == Some(n) {
            steps.push_back(Step::Cut);
            break;
        }
        if b.end_after == Some(n) {
            break;
        }
        if b.endless_line_after == Some(n) {
            steps.push_back(Step::Data(Bytes::from_static(b"data: ")));
            steps.push_back(Step::Endless);
            break;
        }
        steps.push_back(Step::Data(d));
    }
    let state = (
        steps,
        0usize,
        b,
        StreamGuard {
            shared: s.clone(),
            finished: false,
        },
    );
    let body = futures::stream::unfold(state, |(mut steps, sent, b, mut guard)| async move {
        let Some(step) = steps.front() else {
            guard.done();
            return None;
        };
        if let Step::Endless = step {
            // A line that never ends, as fast as the reader takes it
            // (bounded, in case nobody ever stops reading).
            let out = if sent > 64 * 1024 {
                Err(std::io::Error::other("endless line cut (fake)"))
            } else {
                Ok(Bytes::from(vec![b'x'; 1024]))
            };
            return Some((out, (steps, sent + 1, b, guard)));
        }
        let mut wait = if sent == 0 {
            b.first_chunk_delay
        } else {
            b.chunk_delay
        };
        if let Some((n, d)) = b.stall_after {
            if n == sent {
                wait += d;
            }
        }
        tokio::time::sleep(wait).await;
        let out: Result<Bytes, std::io::Error> = match steps.pop_front() {
            Some(Step::Data(d)) => Ok(d),
            _ => Err(std::io::Error::other("connection cut (fake)")),
        };
        Some((out, (steps, sent + 1, b, guard)))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        headers,
        Body::from_stream(body),
    )
        .into_response()
}
