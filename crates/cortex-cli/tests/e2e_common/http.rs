//! A blocking HTTP client for the end-to-end tests, and readers of what the
//! gateway answers: `/admin/fleet` (nodes, placements), `/v1/models`,
//! Prometheus text and SSE bodies.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Status and body (JSON, or the text as a JSON string).
pub fn get(url: &str) -> (u16, Value) {
    answer(client().get(url).send().unwrap())
}

pub fn post(url: &str, body: &Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = client().post(url).json(body).send().unwrap();
    let headers = r.headers().clone();
    let (status, body) = answer(r);
    (status, body, headers)
}

fn answer(r: reqwest::blocking::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn get_text(url: &str) -> String {
    client().get(url).send().unwrap().text().unwrap()
}

/// A greedy OpenAI chat completion of one user message.
pub fn chat_body(model: &str, prompt: &str, max_tokens: u32) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
    })
}

pub fn chat(api: &str, model: &str, prompt: &str, max_tokens: u32) -> (u16, Value) {
    let (s, b, _) = post(
        &format!("{api}/v1/chat/completions"),
        &chat_body(model, prompt, max_tokens),
    );
    (s, b)
}

/// Poll `f` every 100 ms until it gives `Some`, for at most `limit`.
pub fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET /admin/fleet`.
pub fn fleet(api: &str) -> Value {
    let (s, v) = get(&format!("{api}/admin/fleet"));
    assert_eq!(s, 200, "{v}");
    v
}

/// Whether the fleet view has `node` up (`None`: no such node).
pub fn node_up(fleet: &Value, node: &str) -> Option<bool> {
    fleet["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == node)
        .and_then(|n| n["up"].as_bool())
}

/// `(node, state)` of every placement of `model` in the fleet view.
pub fn placements(fleet: &Value, model: &str) -> Vec<(String, String)> {
    fleet["models"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["id"] == model)
        .flat_map(|m| m["placements"].as_array().cloned().unwrap_or_default())
        .map(|p| {
            (
                p["node"].as_str().unwrap_or_default().to_string(),
                p["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Nodes on which `model` is `ready`.
pub fn ready_on(fleet: &Value, model: &str) -> Vec<String> {
    placements(fleet, model)
        .into_iter()
        .filter(|(_, s)| s == "ready")
        .map(|(n, _)| n)
        .collect()
}

/// Ids of `GET /v1/models`.
pub fn model_ids(api: &str) -> Vec<String> {
    let (s, v) = get(&format!("{api}/v1/models"));
    assert_eq!(s, 200, "{v}");
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// Sum of the samples of `name` in Prometheus text whose labels contain
/// every one of `labels` (`model="alpha"`); 0 when there are none.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let base = series.split('{').next()?;
            (base == name && labels.iter().all(|x| series.contains(x)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(str::to_string)
        .collect()
}
