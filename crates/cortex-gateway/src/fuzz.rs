//! Fuzz harnesses for everything the gateway still parses or interprets
//! itself: SSE decoding, translation (requests, answers and streams), the
//! request probe and the whole API on arbitrary bodies, paths and model
//! names. Each runs proptest cases for a time budget, `CORTEX_FUZZ_SECS`
//! seconds (default 1; `scripts/test` gives each more), with fresh seeds
//! every round: no panic, and the invariants each states.
//!
//! No nightly toolchain is needed (cargo-fuzz needs one); a failure prints
//! the seed and the shrunk input like any proptest failure.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use cortex_core::anthropic::MessagesRequest;
use cortex_core::openai::{ChatCompletion, ChatCompletionChunk};
use futures::future::BoxFuture;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::json_strategy::json_value;
use crate::neuron_client::{Answer, NeuronApi, NeuronRequest, NodeInfo, UpstreamError};
use crate::sse::SseDecoder;
use crate::translate::stream::props::check_well_formed;
use crate::translate::stream::AnthropicStream;

#[path = "../../cortex-core/tests/support/fuzz.rs"]
mod runner;
use runner::fuzz;

/// Bytes cut into pieces at arbitrary points.
fn pieces(bytes: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<Vec<u8>>> {
    (bytes, prop::collection::vec(any::<usize>(), 0..8)).prop_map(|(b, mut cuts)| {
        cuts.iter_mut().for_each(|c| *c %= b.len() + 1);
        cuts.sort_unstable();
        cuts.dedup();
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([b.len()]) {
            out.push(b[at..c].to_vec());
            at = c;
        }
        out
    })
}

/// SSE decoding: any bytes, cut anywhere; never a panic, no event data
/// over the line limit, and an error repeats once it came.
#[test]
fn sse_decoding() {
    const MAX: usize = 64;
    let bytes = prop_oneof![
        crate::sse::tests::sse_bytes(),
        prop::collection::vec(any::<u8>(), 0..300),
    ];
    fuzz("sse_decoding", pieces(bytes), |pieces| {
        let mut d = SseDecoder::new(MAX);
        let mut failed = None;
        for p in &pieces {
            match d.push(p) {
                Ok(events) => {
                    prop_assert!(failed.is_none(), "events after an error");
                    for e in events {
                        prop_assert!(e.data.len() <= MAX, "{}", e.data.len());
                    }
                }
                Err(e) => {
                    if let Some(f) = &failed {
                        prop_assert_eq!(f, &e);
                    }
                    failed = Some(e);
                }
            }
        }
        let end = d.finish();
        if let Some(f) = failed {
            prop_assert_eq!(end, Err(f));
        }
        Ok(())
    });
}

/// JSON shaped like an Anthropic request, often invalid.
fn messages_like() -> impl Strategy<Value = Value> {
    let block = prop_oneof![
        json_value(),
        ("[a-z ]{0,8}").prop_map(|t| json!({"type": "text", "text": t})),
        ("[a-z_]{0,5}", json_value())
            .prop_map(|(n, i)| json!({"type": "tool_use", "id": "t1", "name": n, "input": i})),
        (json_value(), any::<bool>()).prop_map(
            |(c, e)| json!({"type": "tool_result", "tool_use_id": "t1", "content": c, "is_error": e})
        ),
        Just(json!({"type": "image", "source": {"type": "base64", "data": "AA"}})),
    ];
    let content = prop_oneof![
        "[a-z ]{0,8}".prop_map(Value::from),
        prop::collection::vec(block, 0..4).prop_map(Value::from),
        json_value(),
    ];
    let role = prop_oneof![
        Just("user"),
        Just("assistant"),
        Just("system"),
        "[a-z]{0,6}".prop_map(|r| Box::leak(r.into_boxed_str()) as &str),
    ];
    let message = (role, content).prop_map(|(r, c)| json!({"role": r, "content": c}));
    (
        prop::collection::vec(message, 0..5),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        any::<u16>(),
    )
        .prop_map(|(messages, system, tools, tool_choice, stop, max)| {
            let mut v = json!({"model": "m", "max_tokens": max, "messages": messages});
            for (k, x) in [
                ("system", system),
                ("tools", tools),
                ("tool_choice", tool_choice),
                ("stop_sequences", stop),
            ] {
                if let Some(x) = x {
                    v[k] = x;
                }
            }
            v
        })
}

/// Translating requests: whatever parses as an Anthropic request either
/// translates into an OpenAI request that serialises, or is refused with a
/// reason; never a panic.
#[test]
fn request_translation() {
    fuzz("request_translation", messages_like(), |v| {
        if let Ok(req) = serde_json::from_value::<MessagesRequest>(v) {
            if let Ok(chat) = crate::translate::request::messages_to_chat(req.clone()) {
                prop_assert!(serde_json::to_vec(&chat).is_ok());
            }
            let _ = crate::translate::request::messages_to_chat_for_count(req);
        }
        Ok(())
    });
}

/// JSON shaped like an OpenAI chunk or answer, often odd.
fn chunk_like() -> impl Strategy<Value = Value> {
    let call = (
        0u32..3,
        prop::option::of("[a-z0-9_]{0,5}"),
        prop::option::of("[a-z_]{0,5}"),
        "[{}\":a-z0-9 ]{0,6}",
    )
        .prop_map(|(i, id, name, args)| {
            json!({"index": i, "id": id, "type": "function",
                   "function": {"name": name, "arguments": args}})
        });
    let delta = (
        prop::option::of("[a-z \n]{0,6}"),
        prop::option::of(prop::collection::vec(call, 0..3)),
        prop::option::of(Just("assistant")),
    )
        .prop_map(|(c, t, r)| json!({"content": c, "tool_calls": t, "role": r}));
    let finish = prop::option::of(prop_oneof![
        Just("stop"),
        Just("length"),
        Just("tool_calls"),
        Just("content_filter"),
        "[a-z]{0,5}".prop_map(|s| Box::leak(s.into_boxed_str()) as &str),
    ]);
    let choice =
        (delta, finish).prop_map(|(d, f)| json!({"index": 0, "delta": d, "finish_reason": f}));
    let usage = prop::option::of((0u64..1000, 0u64..1000)).prop_map(|u| {
        u.map(|(p, c)| json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}))
    });
    prop_oneof![
        8 => (prop::collection::vec(choice, 0..2), usage).prop_map(|(c, u)| json!({
            "id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": c, "usage": u,
        })),
        1 => json_value(),
    ]
}

/// Translating streams: any sequence of chunks, ended cleanly or by a
/// failure, gives a well-formed Anthropic stream.
#[test]
fn stream_translation() {
    let chunks = prop::collection::vec(chunk_like(), 0..20);
    fuzz(
        "stream_translation",
        (chunks, any::<bool>()),
        |(chunks, fail)| {
            let mut s = AnthropicStream::new("x".into(), "m".into(), 3);
            let mut out = s.start();
            for c in chunks {
                if let Ok(c) = serde_json::from_value::<ChatCompletionChunk>(c) {
                    out.extend(s.on_chunk(c));
                }
            }
            out.extend(if fail {
                s.fail("api_error", "boom")
            } else {
                s.finish()
            });
            prop_assert!(s.is_done());
            check_well_formed(&out, fail).map_err(TestCaseError::fail)?;
            Ok(())
        },
    );
}

/// JSON shaped like a whole OpenAI answer, sometimes not one.
fn answer_like() -> impl Strategy<Value = Value> {
    let call =
        ("[a-z0-9_]{0,5}", "[a-z_]{0,5}", "[{}\":a-z0-9 ]{0,8}").prop_map(|(id, name, args)| {
            json!({"id": id, "type": "function",
                                  "function": {"name": name, "arguments": args}})
        });
    let message = (
        prop::option::of(".{0,10}"),
        prop::option::of(prop::collection::vec(call, 0..3)),
    )
        .prop_map(|(c, t)| json!({"role": "assistant", "content": c, "tool_calls": t}));
    let finish = prop::option::of(prop::sample::select(vec![
        "stop",
        "length",
        "tool_calls",
        "content_filter",
    ]));
    let choice = (message, finish, prop::option::of("[A-Z]{0,3}")).prop_map(|(m, f, s)| {
        json!({"index": 0, "message": m, "finish_reason": f, "logprobs": null, "stop_reason": s})
    });
    prop_oneof![
        8 => (prop::collection::vec(choice, 0..3), 0u64..1000, 0u64..1000).prop_map(
            |(c, p, k)| json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                "choices": c, "usage": {"prompt_tokens": p, "completion_tokens": k,
                "total_tokens": p + k}})
        ),
        1 => json_value(),
    ]
}

/// Translating whole answers: anything that parses as an OpenAI answer
/// becomes an Anthropic message that serialises.
#[test]
fn answer_translation() {
    fuzz("answer_translation", answer_like(), |v| {
        if let Ok(a) = serde_json::from_value::<ChatCompletion>(v) {
            let m = crate::translate::response::chat_to_message(a, "m");
            prop_assert!(serde_json::to_vec(&m).is_ok());
        }
        Ok(())
    });
}

/// A neuron that answers every request at once: a chat completion, a
/// short stream, or a token count.
struct Canned;

impl NeuronApi for Canned {
    fn send<'a>(
        &'a self,
        _node: &'a NodeInfo,
        req: NeuronRequest,
    ) -> BoxFuture<'a, Result<Answer, UpstreamError>> {
        Box::pin(async move {
            let stream = serde_json::from_slice::<Value>(&req.body)
                .is_ok_and(|v| v["stream"] == json!(true));
            let usage = json!({"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4});
            let body = if req.path == "/tokenize" {
                json!({"count": 3, "max_model_len": 4096}).to_string()
            } else if stream {
                let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
                    "model": "m", "choices": [{"index": 0, "delta": {"content": "hi"},
                    "finish_reason": "stop"}]});
                let last = json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
                    "model": "m", "choices": [], "usage": usage});
                format!("data: {chunk}\n\ndata: {last}\n\ndata: [DONE]\n\n")
            } else {
                json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                    "finish_reason": "stop"}], "usage": usage})
                .to_string()
            };
            Ok(http::Response::builder()
                .status(200)
                .body(
                    Full::new(Bytes::from(body))
                        .map_err(|e| match e {})
                        .boxed_unsync(),
                )
                .unwrap())
        })
    }
}

/// A runtime and the API in front of [`Canned`] (node `a`, model `m`).
fn api() -> (tokio::runtime::Runtime, axum::Router) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let limits = cortex_core::config::LimitsConfig {
        max_body: cortex_core::ByteSize(4096),
        ..Default::default()
    };
    let state = rt.block_on(crate::testing::app_state(Arc::new(Canned), &["a"], limits));
    let app = crate::api::app(Arc::new(state));
    (rt, app)
}

/// One request through the API: status, headers' content type, body.
fn call(
    rt: &tokio::runtime::Runtime,
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, Bytes) {
    rt.block_on(async {
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Dialect {
    OpenAi,
    Anthropic,
    Ollama,
}

/// Is `body` an error envelope of the dialect?
fn in_dialect(body: &[u8], dialect: Dialect) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    match dialect {
        Dialect::Anthropic => {
            v["type"] == "error"
                && v["error"]["type"].is_string()
                && v["error"]["message"].is_string()
        }
        Dialect::OpenAi => v["error"]["type"].is_string() && v["error"]["message"].is_string(),
        Dialect::Ollama => v["error"].is_string(),
    }
}

/// Ollama `/api/chat` and `/api/generate` bodies with arbitrary options and
/// keep-alives (never `0`: unloading the one model is not what this
/// exercises) around arbitrary content.
fn ollama_like() -> impl Strategy<Value = Value> {
    let keep = prop_oneof![
        Just(json!("5m")),
        Just(json!(-1)),
        Just(json!(30)),
        Just(json!("soon")),
        Just(json!([1])),
        Just(Value::Null),
    ];
    (json_value(), json_value(), keep, any::<bool>()).prop_map(|(v, opts, keep, stream)| {
        json!({"model": "m", "messages": [{"role": "user", "content": v, "images": v}],
               "prompt": v, "system": v, "options": opts, "keep_alive": keep,
               "stream": stream, "format": v, "tools": v})
    })
}

/// The request probe and everything behind it: any body to the inference
/// routes is answered, 200 or an error in the route's dialect; never a
/// panic, never a 5xx for a client's bad body.
#[test]
fn api_bodies() {
    let (rt, app) = api();
    let body = prop_oneof![
        3 => messages_like().prop_map(|v| v.to_string().into_bytes()),
        2 => (json_value(), any::<bool>(), json_value()).prop_map(|(v, stream, opts)| {
            json!({"model": "m", "messages": [{"role": "user", "content": v}],
                   "stream": stream, "stream_options": opts, "stop": v})
            .to_string()
            .into_bytes()
        }),
        2 => ollama_like().prop_map(|v| v.to_string().into_bytes()),
        1 => (json_value(), json_value()).prop_map(|(v, w)| {
            json!({"model": "m", "input": v, "prompt": v, "truncate": w,
                   "dimensions": w, "encoding_format": v})
            .to_string()
            .into_bytes()
        }),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => prop::collection::vec(any::<u8>(), 4000..5000),
    ];
    let route = prop_oneof![
        Just(("/v1/chat/completions", Dialect::OpenAi)),
        Just(("/v1/messages", Dialect::Anthropic)),
        Just(("/v1/messages/count_tokens", Dialect::Anthropic)),
        Just(("/api/chat", Dialect::Ollama)),
        Just(("/api/generate", Dialect::Ollama)),
        Just(("/api/show", Dialect::Ollama)),
        Just(("/api/embed", Dialect::Ollama)),
        Just(("/api/embeddings", Dialect::Ollama)),
        Just(("/v1/embeddings", Dialect::OpenAi)),
        Just(("/v1/responses", Dialect::OpenAi)),
    ];
    fuzz("api_bodies", (route, body), |((path, dialect), body)| {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let (status, answer) = call(&rt, &app, req);
        prop_assert!(!status.is_server_error(), "{path}: {status} {answer:?}");
        if status != StatusCode::OK {
            prop_assert!(in_dialect(&answer, dialect), "{path}: {status} {answer:?}");
        }
        Ok(())
    });
}

/// Paths and model names: tricks never reach a handler (only the API's
/// own paths answer 200), and a model name is found only when it is one.
#[test]
fn paths_and_model_names() {
    let (rt, app) = api();
    let segment = prop_oneof![
        Just("v1".to_string()),
        Just("admin".to_string()),
        Just("fleet".to_string()),
        Just("models".to_string()),
        Just("api".to_string()),
        Just("tags".to_string()),
        Just("ps".to_string()),
        Just("m".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just("%2e%2e".to_string()),
        Just("%2F".to_string()),
        Just("%00".to_string()),
        Just(String::new()),
        "[a-zA-Z0-9._~%-]{0,6}",
    ];
    let path = prop::collection::vec(segment, 1..6).prop_map(|s| format!("/{}", s.join("/")));
    let name = prop_oneof![Just("m".to_string()), "[ -~]{0,12}", ".{0,8}"];
    fuzz("paths_and_model_names", (path, name), |(path, name)| {
        let Ok(req) = Request::get(path.as_str()).body(Body::empty()) else {
            return Ok(());
        };
        let (status, body) = call(&rt, &app, req);
        let known = [
            "/v1/models",
            "/v1/models/m",
            "/health",
            "/ready",
            "/admin/fleet",
            "/api/tags",
            "/api/ps",
            "/api/version",
        ];
        prop_assert!(
            status != StatusCode::OK || known.contains(&path.as_str()),
            "{path}: {status}"
        );
        if path != "/admin/fleet" {
            prop_assert!(
                !String::from_utf8_lossy(&body).contains("consecutive_failures"),
                "{path}"
            );
        }
        let req = Request::post("/v1/chat/completions")
            .body(Body::from(
                json!({"model": name, "messages": []}).to_string(),
            ))
            .unwrap();
        let (status, _) = call(&rt, &app, req);
        prop_assert_eq!(
            status == StatusCode::NOT_FOUND,
            name != "m",
            "{:?}: {}",
            name,
            status
        );
        Ok(())
    });
}
