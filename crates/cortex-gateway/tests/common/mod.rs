//! Shared harness of the gateway's integration tests: gateway settings with
//! short intervals, a gateway served on `127.0.0.1:0` (and its router for
//! `oneshot`), bounded waits on the fleet view, request bodies in both
//! dialects, an SSE splitter, metrics lookup and raw HTTP over TCP.
#![allow(dead_code, clippy::unwrap_used)]

pub mod fake_neuron;
pub mod raw_neuron;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use cortex_core::config::{GatewayConfig, ModelsFile, NeuronEndpoint};
use cortex_core::fleet::FleetView;
use cortex_core::neuron_api::ModelState;
use cortex_core::{ByteSize, HumanDuration};
use cortex_gateway::fleet::FleetHandle;
use cortex_gateway::{Gateway, GatewaySettings};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

pub use fake_neuron::FakeNeuron;

/// How long a bounded wait waits.
pub const WAIT: Duration = Duration::from_secs(5);

pub fn ms(n: u64) -> HumanDuration {
    HumanDuration::from_millis(n)
}

/// Settings for a gateway in front of `neurons` (name, endpoint), with
/// short intervals: polls every 50 ms, down after 2 failures, evictor every
/// 50 ms, no idle unloads, no thrash guard, no defragmentation.
pub fn settings_for(neurons: &[(&str, String)]) -> GatewaySettings {
    let mut c = GatewayConfig::default();
    c.gateway.listen = "127.0.0.1:0".into();
    c.gateway.metrics_listen = "127.0.0.1:0".into();
    c.gateway.poll_interval = ms(50);
    c.gateway.poll_timeout = ms(1000);
    c.gateway.down_after_failures = 2;
    c.eviction.interval = ms(50);
    c.eviction.min_residency = ms(0);
    c.eviction.idle_unload_after = ms(0);
    c.eviction.defrag_after_cycles = 0;
    let l = &mut c.limits;
    l.load_wait = ms(5000);
    l.load_timeout = ms(5000);
    l.connect_timeout = ms(1000);
    l.first_byte_timeout = ms(5000);
    l.idle_timeout = ms(5000);
    l.request_deadline = ms(10_000);
    c.neurons = neurons
        .iter()
        .map(|(name, endpoint)| NeuronEndpoint {
            name: name.to_string(),
            endpoint: endpoint.clone(),
            admin_token: None,
        })
        .collect();
    GatewaySettings::new(c, ModelsFile::default())
}

/// [`settings_for`] the given fakes.
pub fn settings(fakes: &[&FakeNeuron]) -> GatewaySettings {
    let n: Vec<(&str, String)> = fakes
        .iter()
        .map(|f| (f.name.as_str(), f.endpoint()))
        .collect();
    settings_for(&n)
}

/// Add a `models.toml`, validated against the settings.
pub fn with_models(mut s: GatewaySettings, toml: &str) -> GatewaySettings {
    let m = ModelsFile::from_toml(toml, "models.toml").unwrap();
    m.validate("models.toml", &s.config).unwrap();
    s.models = m;
    s
}

pub fn kib(n: u64) -> ByteSize {
    ByteSize(n * 1024)
}

/// A fake neuron `a` with `model` loaded, and a gateway in front of it
/// that has seen it ready.
pub async fn one_fake_with(model: &str) -> (FakeNeuron, TestGateway) {
    let a = FakeNeuron::builder("a")
        .file(model, 100)
        .loaded(model)
        .start()
        .await;
    let gw = TestGateway::start(settings(&[&a])).await;
    gw.wait_ready(model, "a").await;
    (a, gw)
}

/// A gateway serving on loopback, with its router and fleet at hand.
pub struct TestGateway {
    /// `http://127.0.0.1:PORT` of the API.
    pub base: String,
    pub api_addr: SocketAddr,
    /// `http://127.0.0.1:PORT` of `/metrics`.
    pub metrics_base: String,
    pub router: Router,
    pub fleet: FleetHandle,
    pub http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl TestGateway {
    pub async fn start(settings: GatewaySettings) -> Self {
        settings.config.validate("test").unwrap();
        let gw = Gateway::start(settings);
        let router = gw.router();
        let fleet = gw.fleet().clone();
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_addr = api.local_addr().unwrap();
        let metrics_base = format!("http://{}", metrics.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(gw.run(
            api,
            metrics,
            async {
                let _ = rx.await;
            },
            Duration::from_secs(1),
        ));
        Self {
            base: format!("http://{api_addr}"),
            api_addr,
            metrics_base,
            router,
            fleet,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            _stop: tx,
        }
    }

    /// Start, and wait until every configured neuron is up.
    pub async fn start_up(settings: GatewaySettings) -> Self {
        let nodes: Vec<String> = settings
            .config
            .neurons
            .iter()
            .map(|n| n.name.clone())
            .collect();
        let gw = Self::start(settings).await;
        let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
        gw.wait_up(&names).await;
        gw
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// A request through the router, without a socket.
    pub async fn oneshot(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, bytes)
    }

    /// `POST path` with a raw body through the router.
    pub async fn oneshot_post(
        &self,
        path: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, HeaderMap, Value) {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap();
        let (s, h, b) = self.oneshot(req).await;
        (s, h, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    pub async fn view(&self) -> FleetView {
        self.fleet.view().await.unwrap()
    }

    /// Wait (bounded) until the fleet view satisfies `ok`.
    pub async fn wait_for(&self, what: &str, ok: impl Fn(&FleetView) -> bool) -> FleetView {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.view().await;
            if ok(&v) {
                return v;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out waiting for {what}; fleet: {v:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until these nodes are up.
    pub async fn wait_up(&self, nodes: &[&str]) -> FleetView {
        self.wait_for(&format!("{nodes:?} up"), |v| {
            nodes.iter().all(|n| node_up(v, n))
        })
        .await
    }

    /// Wait until `model` is ready on `node`.
    pub async fn wait_ready(&self, model: &str, node: &str) -> FleetView {
        self.wait_for(&format!("{model} ready on {node}"), |v| {
            node_up(v, node) && placement(v, model, node) == Some(ModelState::Ready)
        })
        .await
    }

    /// The text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.metrics_base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

pub fn node_up(v: &FleetView, node: &str) -> bool {
    v.nodes.iter().any(|n| n.name == node && n.up)
}

/// The state of `model` on `node`, if it is placed there.
pub fn placement(v: &FleetView, model: &str, node: &str) -> Option<ModelState> {
    v.models
        .iter()
        .find(|m| m.id == model)?
        .placements
        .iter()
        .find(|p| p.node == node)
        .map(|p| p.state)
}

/// Models placed on `node`, sorted.
pub fn placed_on(v: &FleetView, node: &str) -> Vec<String> {
    let mut out: Vec<String> = v
        .models
        .iter()
        .filter(|m| m.placements.iter().any(|p| p.node == node))
        .map(|m| m.id.clone())
        .collect();
    out.sort();
    out
}

/// Wait (bounded) until `f` is true.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run `f` under a generous bound: a hang guard, not a performance check.
pub async fn no_hang<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("the request hung")
}

/// An OpenAI chat body.
pub fn chat(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    })
}

/// An Anthropic messages body.
pub fn messages(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    })
}

/// The content of a non-streamed OpenAI answer.
pub fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// One SSE event as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// Split an SSE body into events.
pub fn parse_sse(text: &str) -> Vec<Event> {
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = Some(e.trim().to_string());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
                }
            }
            Event {
                event,
                data: data.join("\n"),
            }
        })
        .collect()
}

/// The concatenated `delta.content` of OpenAI chunks.
pub fn streamed_text(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// The value of the sample `name{...}` whose labels include all of
/// `labels` (`key="value"`), if any.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|lab| l.contains(lab)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Write `request` to `addr` as is, and read until the server closes (or
/// 15 s pass). Returns what was read.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

/// The status code of a raw HTTP answer (0 when there is none).
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A loopback port with nothing listening: bound, then closed.
pub async fn dead_endpoint() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// Status and body of a non-streamed chat through the gateway.
pub async fn ask(gw: &TestGateway, model: &str) -> (u16, Value) {
    let r = gw.post("/v1/chat/completions", &chat(model, false)).await;
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// `v` is an OpenAI error of type `kind` (and `code`, when given) with
/// every field of the envelope present.
pub fn assert_openai_error(v: &Value, kind: &str, code: Option<&str>) {
    let e = &v["error"];
    assert_eq!(e["type"], kind, "{v}");
    assert!(!e["message"].as_str().unwrap().is_empty(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    if let Some(c) = code {
        assert_eq!(e["code"], c, "{v}");
    }
}

/// `v` is an Anthropic error of type `kind` with a message.
pub fn assert_anthropic_error(v: &Value, kind: &str) {
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(!v["error"]["message"].as_str().unwrap().is_empty(), "{v}");
}

/// A fake's behaviour for a stream that lasts: 200 more chunks, 50 ms apart.
pub fn slow(b: &mut fake_neuron::Behaviour) {
    b.chunk_delay = Duration::from_millis(50);
    b.extra_chunks = 200;
}
