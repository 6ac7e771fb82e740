//! A canned neuron for gateway benchmarks: one ready model, `bench`, and
//! answers written at once, so that what a benchmark measures is the
//! gateway (or proxy) in front of it, not inference.
//!
//! ```text
//! cargo run --release -p cortex-gateway --example canned_upstream -- [127.0.0.1:0]
//! ```
//!
//! Prints `listening http://ADDR` on stdout once bound. Routes:
//! - `GET /status`: a `NodeStatus` with one CPU device and `bench` ready;
//! - `GET /health`: `{"status":"ok"}`;
//! - `POST /v1/chat/completions`: a fixed `chat.completion`, or with
//!   `"stream": true` a short SSE stream (role chunk, three content chunks,
//!   the finish chunk, a usage chunk when `stream_options.include_usage`,
//!   `[DONE]`), each event its own chunk of a chunked body, as a neuron
//!   sends them; with `"bench_interval_ms": I` as well, the LLM load shape:
//!   `max_tokens` token events (default 500), one every `I` ms, each
//!   carrying `bench_sent_us` (unix µs when it was written) so that a
//!   client can measure how late each one arrives (`examples/sse_load.rs`);
//! - anything else: 404.
//!
//! hyper directly (no router, no middleware) on a multi-thread runtime, with
//! every fixed answer serialised once at start.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use cortex_core::neuron_api::{
    AvailableModel, DeviceKind, DeviceStatus, ModelState, ModelStatus, NodeStatus,
};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;

const MODEL: &str = "bench";
const CREATED: u64 = 1_700_000_000;

type Body = BoxBody<Bytes, Infallible>;

/// The answers, serialised once.
struct Canned {
    status: Bytes,
    health: Bytes,
    completion: Bytes,
    /// SSE events without the usage chunk and `[DONE]`.
    events: Vec<Bytes>,
    usage: Bytes,
    done: Bytes,
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    /// Slow streaming: one token event every this many ms.
    #[serde(default)]
    bench_interval_ms: Option<u64>,
    #[serde(default)]
    max_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

fn sse(v: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn chunk(delta: serde_json::Value, finish: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })
}

impl Canned {
    fn new() -> Self {
        let gib = 1u64 << 30;
        let status = NodeStatus {
            name: "canned".into(),
            version: "bench".into(),
            devices: vec![DeviceStatus {
                index: 0,
                kind: DeviceKind::Cpu,
                name: "cpu".into(),
                memory_total_bytes: 16 * gib,
                memory_free_bytes: 8 * gib,
                memory_budget_bytes: 8 * gib,
                memory_used_bytes: 100 << 20,
            }],
            models: vec![ModelStatus {
                kind: Default::default(),
                id: MODEL.into(),
                state: ModelState::Ready,
                device: 0,
                memory_bytes: 90 << 20,
                kv_reserve_bytes: 10 << 20,
                loaded_at: 1,
                last_used_at: 1,
                in_flight: 0,
                source: "bench.gguf".into(),
                context_length: 8192,
                error: None,
                cached_prefixes: Vec::new(),
            }],
            available: vec![AvailableModel {
                kind: Default::default(),
                id: MODEL.into(),
                source: "bench.gguf".into(),
                size_bytes: 90 << 20,
                estimated_bytes: 100 << 20,
                context_length: None,
                architecture: None,
            }],
        };
        let usage =
            serde_json::json!({"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13});
        let completion = serde_json::json!({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED, "model": MODEL,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the bench."},
                "finish_reason": "stop",
            }],
            "usage": usage,
        });
        let mut events = vec![sse(&chunk(
            serde_json::json!({"role": "assistant", "content": ""}),
            None,
        ))];
        for piece in ["Hello", " from the", " bench."] {
            events.push(sse(&chunk(serde_json::json!({"content": piece}), None)));
        }
        events.push(sse(&chunk(serde_json::json!({}), Some("stop"))));
        let usage_chunk = serde_json::json!({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED,
            "model": MODEL, "choices": [], "usage": usage,
        });
        Self {
            status: Bytes::from(serde_json::to_vec(&status).unwrap()),
            health: Bytes::from_static(br#"{"status":"ok"}"#),
            completion: Bytes::from(serde_json::to_vec(&completion).unwrap()),
            events,
            usage: sse(&usage_chunk),
            done: Bytes::from_static(b"data: [DONE]\n\n"),
        }
    }
}

fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body).boxed())
        .unwrap()
}

fn stream(c: &Canned, usage: bool) -> Response<Body> {
    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = c
        .events
        .iter()
        .cloned()
        .map(|b| Ok(Frame::data(b)))
        .collect();
    if usage {
        frames.push(Ok(Frame::data(c.usage.clone())));
    }
    frames.push(Ok(Frame::data(c.done.clone())));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(BodyExt::boxed(StreamBody::new(futures::stream::iter(
            frames,
        ))))
        .unwrap()
}

/// Unix time in µs.
fn now_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// The LLM load shape: `tokens` token events, one every `interval`, then
/// the finish chunk, the usage chunk (when asked) and `[DONE]`.
fn slow_stream(
    c: &Canned,
    usage: bool,
    tokens: u64,
    interval: std::time::Duration,
) -> Response<Body> {
    let tail: Vec<Bytes> = [c.events[c.events.len() - 1].clone()]
        .into_iter()
        .chain(usage.then(|| c.usage.clone()))
        .chain([c.done.clone()])
        .collect();
    let start = tokio::time::Instant::now() + interval;
    let ticks = tokio::time::interval_at(start, interval);
    let events = futures::stream::unfold((ticks, 0u64), move |(mut ticks, n)| async move {
        if n == tokens {
            return None;
        }
        ticks.tick().await;
        let ev = format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":{CREATED},\"model\":\"{MODEL}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" tok\"}},\"finish_reason\":null}}],\"bench_sent_us\":{}}}\n\n",
            now_us()
        );
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from(ev))),
            (ticks, n + 1),
        ))
    });
    let head = futures::stream::iter([Ok(Frame::data(c.events[0].clone()))]);
    let tail = futures::stream::iter(tail.into_iter().map(|b| Ok(Frame::data(b))));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(BodyExt::boxed(StreamBody::new(futures::StreamExt::chain(
            futures::StreamExt::chain(head, events),
            tail,
        ))))
        .unwrap()
}

async fn handle(c: Arc<Canned>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    const JSON: &str = "application/json";
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/status") => full(StatusCode::OK, JSON, c.status.clone()),
        (&Method::GET, "/health") => full(StatusCode::OK, JSON, c.health.clone()),
        (&Method::POST, "/v1/chat/completions") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return Ok(full(StatusCode::BAD_REQUEST, JSON, Bytes::new())),
            };
            match serde_json::from_slice::<Probe>(&body) {
                Ok(p) if p.stream == Some(true) => {
                    let usage = p
                        .stream_options
                        .and_then(|o| o.include_usage)
                        .unwrap_or(false);
                    match p.bench_interval_ms {
                        Some(ms) => slow_stream(
                            &c,
                            usage,
                            p.max_tokens.unwrap_or(500),
                            std::time::Duration::from_millis(ms.max(1)),
                        ),
                        None => stream(&c, usage),
                    }
                }
                Ok(_) => full(StatusCode::OK, JSON, c.completion.clone()),
                Err(_) => full(
                    StatusCode::BAD_REQUEST,
                    JSON,
                    Bytes::from_static(
                        br#"{"error":{"message":"invalid JSON","type":"invalid_request_error"}}"#,
                    ),
                ),
            }
        }
        _ => full(
            StatusCode::NOT_FOUND,
            JSON,
            Bytes::from_static(br#"{"error":{"message":"not found","type":"not_found_error"}}"#),
        ),
    };
    Ok(resp)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await.unwrap();
    println!("listening http://{}", listener.local_addr().unwrap());
    let canned = Arc::new(Canned::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let c = canned.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(c.clone(), req));
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
