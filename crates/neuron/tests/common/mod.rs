//! Shared test helpers: finding the real default model, starting a neuron
//! in-process on 127.0.0.1:0, and small HTTP helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use cortex_core::config::NeuronConfig;
use cortex_core::ByteSize;
use neuron::lifecycle::Registry;
use neuron::{Neuron, RunOptions};
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const MODEL_ID: &str = "smollm2-135m-instruct-q4_1";

/// The directory holding the default model, or `None` (after saying why)
/// when it is missing locally. In CI (`CI` set) a missing model fails.
pub fn models_dir() -> Option<PathBuf> {
    let dir = std::env::var("CORTEX_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    if dir.join(MODEL_FILE).is_file() {
        return Some(dir);
    }
    let msg = format!(
        "the default model {MODEL_FILE} is missing from {}; run scripts/fetch-model",
        dir.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// The embedding model's directory name and id (`scripts/fetch-model --embed`).
pub const EMBED_DIR: &str = "all-MiniLM-L6-v2";
pub const EMBED_ID: &str = "all-minilm-l6-v2";

/// The models directory when it holds the default model and the embedding
/// model; `None` (after saying why) or a panic in CI as [`models_dir`].
pub fn embed_models_dir() -> Option<PathBuf> {
    let dir = models_dir()?;
    if dir.join(EMBED_DIR).join("model.safetensors").is_file() {
        return Some(dir);
    }
    let msg = format!(
        "the embedding model {EMBED_DIR}/ is missing from {}; run scripts/fetch-model --embed",
        dir.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// A neuron running in this process.
pub struct TestNeuron {
    pub url: String,
    pub registry: Arc<Registry>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub client: reqwest::Client,
}

impl TestNeuron {
    pub async fn start(config: NeuronConfig, fault_injection: bool) -> Self {
        let neuron = Neuron::build(
            config,
            RunOptions {
                fault_injection,
                shutdown_grace: std::time::Duration::from_secs(5),
            },
        )
        .expect("build neuron");
        let registry = neuron.registry().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            neuron
                .run(listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            url,
            registry,
            stop: Some(tx),
            task: Some(task),
            client: reqwest::Client::new(),
        }
    }

    /// A neuron over `dir` with the default model loaded.
    pub async fn with_model(dir: PathBuf, fault_injection: bool) -> Self {
        let n = Self::start(config(dir), fault_injection).await;
        let (status, body) = n.post("/models/load", json!({"model": MODEL_ID})).await;
        assert_eq!(status, 200, "{body}");
        n
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let h = r.headers().clone();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            h,
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A chat completion; returns (status, body).
    pub async fn chat(&self, body: Value) -> (u16, Value) {
        self.post("/v1/chat/completions", body).await
    }

    /// A streamed chat completion: the `data:` payloads in order.
    pub async fn chat_stream(&self, body: Value, headers: &[(&str, &str)]) -> (u16, Vec<String>) {
        let mut req = self
            .client
            .post(format!("{}/v1/chat/completions", self.url))
            .json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        if status != 200 {
            // An error answer is one JSON document, not a stream.
            return (status, vec![text]);
        }
        (status, sse_data(&text))
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(str::to_string)
        .collect()
}

/// The content of a streamed answer, and the last chunk with a finish reason.
pub fn stream_text(data: &[String]) -> (String, Option<Value>) {
    let mut text = String::new();
    let mut finish = None;
    for d in data {
        if d == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(d).unwrap();
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(c);
        }
        if !v["choices"][0]["finish_reason"].is_null()
            && v["choices"].as_array().is_some_and(|a| !a.is_empty())
        {
            finish = Some(v);
        }
    }
    (text, finish)
}

pub fn config(dir: PathBuf) -> NeuronConfig {
    NeuronConfig {
        name: Some("test-neuron".into()),
        listen: "127.0.0.1:0".into(),
        models_dirs: vec![dir.display().to_string()],
        memory_budget: Some(ByteSize::gib(4)),
        ..NeuronConfig::default()
    }
}

pub fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

pub const FRANCE: &str = "What is the capital of France? Answer in one sentence.";
