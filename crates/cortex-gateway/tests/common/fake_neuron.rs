//! A deterministic fake neuron: a small axum app that speaks the neuron API
//! (`/status`, `/models/load`, `/models/unload`, `/v1/chat/completions`,
//! `/v1/embeddings`, `/tokenize`, `/health`) well enough for the gateway, with behaviour that
//! tests switch at runtime (slow or failing loads, slow, cut, stalled or
//! over-long streams, poisoned models, error statuses, failing polls).
//!
//! It records every request (method, path, headers, body) and counts loads,
//! unloads and streams that were dropped before their end. It binds
//! `127.0.0.1:0` and serves that listener itself; connections are tracked
//! so that [`FakeNeuron::kill`] closes them all (a real crash), after which
//! connections are refused.

mod chat;
mod embed;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cortex_core::neuron_api::{
    AvailableModel, DeviceKind, DeviceStatus, LoadRequest, ModelState, ModelStatus, NodeStatus,
};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub use cortex_core::neuron_api::PROMPT_TOKENS_HEADER;

/// What the fake does; switch it with [`FakeNeuron::set`].
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// `GET /status` answers 500 (a failed poll).
    pub status_fails: bool,
    /// `POST /models/load` takes this long.
    pub load_delay: Duration,
    /// `POST /models/load` answers 500.
    pub load_fails: bool,
    /// Wait before the first chunk of a stream (prefill).
    pub first_chunk_delay: Duration,
    /// Wait between two chunks of a stream.
    pub chunk_delay: Duration,
    /// Extra `"."` content chunks after the greeting (long streams).
    pub extra_chunks: usize,
    /// Cut the connection after this many chunks.
    pub cut_after: Option<usize>,
    /// After this many chunks, start a line that never ends.
    pub endless_line_after: Option<usize>,
    /// After this many chunks, go silent for this long.
    pub stall_after: Option<(usize, Duration)>,
    /// End the stream cleanly after this many chunks (no `[DONE]`).
    pub end_after: Option<usize>,
    /// Chat answers this status with an error envelope.
    pub chat_status: Option<u16>,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub raw: String,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

#[derive(Debug, Default)]
struct Inner {
    behaviour: Behaviour,
    budget: u64,
    available: Vec<AvailableModel>,
    models: Vec<ModelStatus>,
    poisoned: HashSet<String>,
    requests: Vec<Recorded>,
    max_used: u64,
    over_budget: usize,
    streams_cancelled: usize,
    streams_finished: usize,
    /// Connections accepted.
    connections: usize,
}

impl Inner {
    fn used(&self) -> u64 {
        self.models.iter().map(ModelStatus::footprint_bytes).sum()
    }
}

struct Shared {
    name: String,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Builds a [`FakeNeuron`].
pub struct FakeBuilder {
    name: String,
    budget: u64,
    available: Vec<AvailableModel>,
    loaded: Vec<String>,
    behaviour: Behaviour,
    keep_alive: bool,
}

impl FakeBuilder {
    /// The CPU device's memory budget.
    pub fn budget(mut self, bytes: u64) -> Self {
        self.budget = bytes;
        self
    }

    /// A loadable file `{id}.gguf`, served as `id`, of `bytes` once loaded.
    pub fn file(self, id: &str, bytes: u64) -> Self {
        let source = format!("{id}.gguf");
        self.file_source(id, &source, bytes)
    }

    /// A loadable embedding model directory `{id}`, of `bytes` once loaded.
    pub fn embedding_model(mut self, id: &str, bytes: u64) -> Self {
        self = self.file_source(id, id, bytes);
        if let Some(a) = self.available.last_mut() {
            a.kind = cortex_core::neuron_api::ModelKind::Embedding;
        }
        self
    }

    /// A loadable file with an explicit source path.
    pub fn file_source(mut self, id: &str, source: &str, bytes: u64) -> Self {
        self.available.push(AvailableModel {
            kind: Default::default(),
            id: id.to_string(),
            source: source.to_string(),
            size_bytes: bytes,
            estimated_bytes: bytes,
            // What `model_status` reports once loaded.
            context_length: Some(2048),
            architecture: Some("llama".into()),
        });
        self
    }

    /// Start with this (declared) file loaded and ready.
    pub fn loaded(mut self, id: &str) -> Self {
        self.loaded.push(id.to_string());
        self
    }

    pub fn behaviour(mut self, f: impl FnOnce(&mut Behaviour)) -> Self {
        f(&mut self.behaviour);
        self
    }

    /// Keep HTTP connections open between requests (default: yes).
    pub fn keep_alive(mut self, on: bool) -> Self {
        self.keep_alive = on;
        self
    }

    pub async fn start(self) -> FakeNeuron {
        let mut inner = Inner {
            behaviour: self.behaviour,
            budget: self.budget,
            available: self.available,
            ..Inner::default()
        };
        for id in &self.loaded {
            let a = inner
                .available
                .iter()
                .find(|a| &a.id == id)
                .unwrap_or_else(|| panic!("{id} is not a declared file"))
                .clone();
            inner.models.push(model_status(id, &a, ModelState::Ready));
        }
        inner.max_used = inner.used();
        let shared = Arc::new(Shared {
            name: self.name.clone(),
            inner: Mutex::new(inner),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let server = tokio::spawn(serve(
            listener,
            app(shared.clone()),
            conns.clone(),
            self.keep_alive,
            shared.clone(),
        ));
        FakeNeuron {
            name: self.name,
            addr,
            shared,
            server: Some(server),
            conns,
        }
    }
}

/// A running fake neuron.
pub struct FakeNeuron {
    pub name: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
    conns: Arc<tokio::sync::Mutex<JoinSet<()>>>,
}

impl Drop for FakeNeuron {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

impl FakeNeuron {
    pub fn builder(name: &str) -> FakeBuilder {
        FakeBuilder {
            name: name.to_string(),
            budget: 1 << 30,
            available: Vec::new(),
            loaded: Vec::new(),
            behaviour: Behaviour::default(),
            keep_alive: true,
        }
    }

    /// A fake with `model` (100 bytes) loaded and ready, nothing else.
    pub async fn serving(name: &str, model: &str) -> FakeNeuron {
        Self::builder(name)
            .file(model, 100)
            .loaded(model)
            .start()
            .await
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Change the behaviour now.
    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.shared.lock().behaviour);
    }

    /// Mark `model` poisoned: `/status` says so and chats answer 503
    /// `model_poisoned`.
    pub fn poison(&self, model: &str, in_status: bool) {
        let mut i = self.shared.lock();
        i.poisoned.insert(model.to_string());
        if in_status {
            for m in i.models.iter_mut().filter(|m| m.id == model) {
                m.state = ModelState::Poisoned;
                m.error = Some("CUDA_ERROR_ILLEGAL_ADDRESS (fake)".into());
            }
        }
    }

    /// Report in `/status` that `model`'s prefix cache holds `tokens`
    /// tokens of the conversation with `hash`, last used `last_used_ms`.
    pub fn hold_prefix(&self, model: &str, hash: u64, tokens: u64, last_used_ms: u64) {
        let mut i = self.shared.lock();
        for m in i.models.iter_mut().filter(|m| m.id == model) {
            m.cached_prefixes
                .push(cortex_core::neuron_api::CachedPrefix {
                    hash,
                    tokens,
                    last_used_ms,
                });
        }
    }

    /// Forget `model` as a restarted neuron would (no unload call).
    pub fn forget(&self, model: &str) {
        self.shared.lock().models.retain(|m| m.id != model);
    }

    /// The state of `model` here, if it is loaded or loading.
    pub fn state(&self, model: &str) -> Option<ModelState> {
        let i = self.shared.lock();
        i.models.iter().find(|m| m.id == model).map(|m| m.state)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Requests to `path`.
    pub fn calls(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Requests other than status polls and health checks.
    pub fn traffic(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path != "/status" && r.path != "/health")
            .collect()
    }

    pub fn chat_calls(&self) -> usize {
        self.calls("/v1/chat/completions").len()
    }

    /// Models named by `/models/load` calls, in order.
    pub fn load_calls(&self) -> Vec<String> {
        model_names(self.calls("/models/load"))
    }

    /// Models named by `/models/unload` calls, in order.
    pub fn unload_calls(&self) -> Vec<String> {
        model_names(self.calls("/models/unload"))
    }

    /// Models loaded now (any state), sorted.
    pub fn loaded(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .shared
            .lock()
            .models
            .iter()
            .map(|m| m.id.clone())
            .collect();
        v.sort();
        v
    }

    pub fn budget(&self) -> u64 {
        self.shared.lock().budget
    }

    /// The most memory models ever held at once.
    pub fn max_used(&self) -> u64 {
        self.shared.lock().max_used
    }

    /// Loads refused because they would have exceeded the budget.
    pub fn over_budget(&self) -> usize {
        self.shared.lock().over_budget
    }

    /// Streams dropped before their end (the reader went away).
    pub fn streams_cancelled(&self) -> usize {
        self.shared.lock().streams_cancelled
    }

    /// Streams sent to their end.
    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    pub fn streams_finished(&self) -> usize {
        self.shared.lock().streams_finished
    }

    /// Crash: stop accepting, close every open connection. Connections to
    /// `addr` are refused afterwards.
    pub async fn kill(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
            let _ = s.await;
        }
        self.conns.lock().await.shutdown().await;
    }
}

fn model_names(calls: Vec<Recorded>) -> Vec<String> {
    calls
        .into_iter()
        .map(|r| r.body["model"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn now_ms() -> u64 {
    cortex_core::now_unix_ms()
}

fn model_status(id: &str, a: &AvailableModel, state: ModelState) -> ModelStatus {
    ModelStatus {
        kind: a.kind,
        id: id.to_string(),
        state,
        device: 0,
        memory_bytes: a.estimated_bytes,
        kv_reserve_bytes: 0,
        loaded_at: now_ms(),
        last_used_at: 0,
        in_flight: 0,
        source: a.source.clone(),
        context_length: 2048,
        error: None,
        cached_prefixes: Vec::new(),
    }
}

async fn serve(
    listener: TcpListener,
    router: Router,
    conns: Arc<tokio::sync::Mutex<JoinSet<()>>>,
    keep_alive: bool,
    shared: Arc<Shared>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        shared.lock().connections += 1;
        let svc = TowerToHyperService::new(router.clone());
        let mut set = conns.lock().await;
        while set.try_join_next().is_some() {}
        set.spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(keep_alive)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/models/load", post(load))
        .route("/models/unload", post(unload))
        .route("/tokenize", post(tokenize))
        .route("/v1/chat/completions", post(chat::chat))
        .route("/v1/embeddings", post(embed::embeddings))
        .fallback(|| async { error(404, "no such route", "not_found") })
        .layer(axum::middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

async fn record(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let raw = String::from_utf8_lossy(&bytes).to_string();
    s.lock().requests.push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        raw,
    });
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn error(status: u16, message: &str, code: &str) -> Response {
    let s = StatusCode::from_u16(status).unwrap();
    let kind = if s.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    (
        s,
        Json(json!({"error": {"message": message, "type": kind, "param": null, "code": code}})),
    )
        .into_response()
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    let i = s.lock();
    if i.behaviour.status_fails {
        return error(500, "status is failing (fake)", "internal");
    }
    let used = i.used();
    Json(NodeStatus {
        name: s.name.clone(),
        version: "fake".into(),
        devices: vec![DeviceStatus {
            index: 0,
            kind: DeviceKind::Cpu,
            name: "cpu".into(),
            memory_total_bytes: i.budget.saturating_mul(2),
            memory_free_bytes: i.budget.saturating_mul(2).saturating_sub(used),
            memory_budget_bytes: i.budget,
            memory_used_bytes: used,
        }],
        models: i.models.clone(),
        available: i.available.clone(),
    })
    .into_response()
}

async fn load(State(s): State<Arc<Shared>>, Json(req): Json<LoadRequest>) -> Response {
    let delay = {
        let mut i = s.lock();
        if i.behaviour.load_fails {
            return error(500, "loading failed (fake)", "load_failed");
        }
        if let Some(m) = i.models.iter().find(|m| m.id == req.model) {
            return Json(json!({"model": m, "load_ms": 0})).into_response();
        }
        let found = i
            .available
            .iter()
            .find(|a| match &req.source {
                Some(src) => &a.source == src,
                None => a.id == req.model,
            })
            .cloned();
        let Some(a) = found else {
            return error(404, "no such model file", "model_file_not_found");
        };
        if i.used() + a.estimated_bytes > i.budget {
            i.over_budget += 1;
            return error(409, "not enough memory (fake)", "insufficient_memory");
        }
        i.models
            .push(model_status(&req.model, &a, ModelState::Loading));
        i.max_used = i.max_used.max(i.used());
        i.behaviour.load_delay
    };
    tokio::time::sleep(delay).await;
    let mut i = s.lock();
    let Some(m) = i.models.iter_mut().find(|m| m.id == req.model) else {
        return error(500, "unloaded while loading (fake)", "load_failed");
    };
    m.state = ModelState::Ready;
    m.loaded_at = now_ms();
    let m = m.clone();
    Json(json!({"model": m, "load_ms": delay.as_millis() as u64})).into_response()
}

async fn unload(State(s): State<Arc<Shared>>, Json(req): Json<Value>) -> Response {
    let model = req["model"].as_str().unwrap_or_default().to_string();
    let mut i = s.lock();
    let before = i.models.len();
    i.models.retain(|m| m.id != model);
    let unloaded = i.models.len() != before;
    Json(json!({"model": model, "unloaded": unloaded})).into_response()
}

/// Deterministic token count: ten per message.
fn prompt_tokens(body: &Value) -> u64 {
    body["messages"].as_array().map_or(0, |m| m.len() as u64) * 10
}

async fn tokenize(Json(req): Json<Value>) -> Response {
    Json(json!({"count": prompt_tokens(&req), "max_model_len": 2048})).into_response()
}
