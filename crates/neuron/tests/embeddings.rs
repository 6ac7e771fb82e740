//! `POST /v1/embeddings` over real HTTP with the real all-MiniLM-L6-v2:
//! vectors equal to the reference (see `src/engine/embed/testdata`), float
//! and base64 equal, usage, the refusals (dimensions, token ids, over-long
//! input, a model of the other kind), `/status` reporting the kind and the
//! footprint, and faults (a host error or a panic fails one request; a
//! device fault poisons).

#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

fn reference() -> Value {
    serde_json::from_str(include_str!("../src/engine/embed/testdata/reference.json")).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn from_base64(v: &Value) -> Vec<f32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

async fn loaded(fault_injection: bool) -> Option<TestNeuron> {
    let dir = embed_models_dir()?;
    let n = TestNeuron::start(config(dir), fault_injection).await;
    let (s, b) = n.post("/models/load", json!({"model": EMBED_ID})).await;
    assert_eq!(s, 200, "{b}");
    Some(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_match_the_reference_over_http() {
    let Some(n) = loaded(false).await else { return };
    let r = reference();
    let texts: Vec<&str> = r["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    let (s, b) = n
        .post("/v1/embeddings", json!({"model": EMBED_ID, "input": texts}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["object"], "list");
    assert_eq!(b["model"], EMBED_ID);
    let ids_len: u64 = r["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ids"].as_array().unwrap().len() as u64)
        .sum();
    assert_eq!(
        b["usage"],
        json!({"prompt_tokens": ids_len, "total_tokens": ids_len})
    );
    let data = b["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (i, (d, want)) in data
        .iter()
        .zip(r["sentences"].as_array().unwrap())
        .enumerate()
    {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        let v = floats(&d["embedding"]);
        assert_eq!(v.len(), 384);
        for (got, want) in v.iter().zip(floats(&want["leading"])) {
            assert!((got - want).abs() < 1e-4, "input {i}: {got} vs {want}");
        }
    }

    // One string: the same vector as in the list; base64 decodes to the
    // same floats; `dimensions` equal to the model's width is accepted.
    let (s, one) = n
        .post(
            "/v1/embeddings",
            json!({"model": EMBED_ID, "input": texts[1]}),
        )
        .await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    let (s, b64) = n
        .post(
            "/v1/embeddings",
            json!({"model": EMBED_ID, "input": [texts[1]], "encoding_format": "base64", "dimensions": 384}),
        )
        .await;
    assert_eq!(s, 200, "{b64}");
    let f = floats(&one["data"][0]["embedding"]);
    assert_eq!(from_base64(&b64["data"][0]["embedding"]), f);
    for (a, b) in f.iter().zip(floats(&data[1]["embedding"])) {
        assert!((a - b).abs() < 1e-5);
    }

    // The catalogue says what it is and what it takes.
    let (_, st) = n.get("/status").await;
    let m = st["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == EMBED_ID)
        .unwrap();
    assert_eq!(m["kind"], "embedding", "{m}");
    assert_eq!(m["state"], "ready");
    assert_eq!(m["context_length"], 512);
    assert!(m["memory_bytes"].as_u64().unwrap() > 90_000_000, "{m}");
    assert!(m["kv_reserve_bytes"].as_u64().unwrap() > 0, "{m}");
    let a = st["available"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == EMBED_ID)
        .unwrap();
    assert_eq!(a["kind"], "embedding");
    assert_eq!(a["source"], EMBED_DIR);
    assert_eq!(
        a["estimated_bytes"].as_u64(),
        Some(m["memory_bytes"].as_u64().unwrap() + m["kv_reserve_bytes"].as_u64().unwrap()),
        "{a} {m}"
    );
    let chat = st["available"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == MODEL_ID)
        .unwrap();
    assert_eq!(chat["kind"], "chat");

    let (_, metrics) = n.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains(&format!("model=\"{EMBED_ID}\",status=\"200\"")),
        "{metrics}"
    );

    let (s, b) = n.post("/models/unload", json!({"model": EMBED_ID})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = n
        .post("/v1/embeddings", json!({"model": EMBED_ID, "input": "x"}))
        .await;
    assert_eq!(s, 404, "{b}");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_embedding_requests_are_refused_clearly() {
    let Some(n) = loaded(false).await else { return };
    let (s, b) = n.post("/models/load", json!({"model": MODEL_ID})).await;
    assert_eq!(s, 200, "{b}");
    let long = "word ".repeat(600);
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "dimensions",
            json!({"model": EMBED_ID, "input": "x", "dimensions": 128}),
            "dimensions",
            "384 dimensions",
        ),
        (
            "token ids",
            json!({"model": EMBED_ID, "input": [101, 102]}),
            "input",
            "token ids",
        ),
        (
            "empty string",
            json!({"model": EMBED_ID, "input": ["a", ""]}),
            "input",
            "empty string",
        ),
        (
            "encoding",
            json!({"model": EMBED_ID, "input": "x", "encoding_format": "int8"}),
            "encoding_format",
            "int8",
        ),
        (
            "too long",
            json!({"model": EMBED_ID, "input": ["short", long]}),
            "input",
            "input[1] has 602 tokens",
        ),
        (
            "a chat model",
            json!({"model": MODEL_ID, "input": "x"}),
            "model",
            "chat model",
        ),
    ];
    for (what, body, param, says) in cases {
        let (s, b) = n.post("/v1/embeddings", body).await;
        assert_eq!(s, 400, "{what}: {b}");
        assert_eq!(b["error"]["param"], param, "{what}: {b}");
        assert_eq!(b["error"]["type"], "invalid_request_error", "{what}: {b}");
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{what}: {msg}");
    }
    // A chat request (and a token count) for the embedding model.
    let (s, b) = n
        .chat(json!({"model": EMBED_ID, "messages": user("hi")}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["code"], "model_kind_mismatch");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("embedding model"));
    let (s, b) = n
        .post("/tokenize", json!({"model": EMBED_ID, "prompt": "hi"}))
        .await;
    assert_eq!(s, 400, "{b}");
    // Both models still serve.
    let (s, b) = n
        .post(
            "/v1/embeddings",
            json!({"model": EMBED_ID, "input": "still here"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = n
        .chat(json!({"model": MODEL_ID, "messages": user("hi"), "max_tokens": 2}))
        .await;
    assert_eq!(s, 200, "{b}");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_keeps_the_start_of_a_long_input() {
    let Some(n) = loaded(false).await else { return };
    // 600 words are [CLS] + 600 + [SEP] tokens; cut to 512 they are the
    // same ids as 510 words: [CLS] + 510 + [SEP].
    let (long, fits) = ("word ".repeat(600), "word ".repeat(510));
    let (s, b) = n
        .post(
            "/v1/embeddings",
            json!({"model": EMBED_ID, "input": [long, fits, "other words"], "truncate": true}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["usage"]["prompt_tokens"], 512 + 512 + 4, "{}", b["usage"]);
    let v: Vec<Vec<f32>> = (0..3).map(|i| floats(&b["data"][i]["embedding"])).collect();
    let diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    assert!(
        diff(&v[0], &v[1]) < 1e-5,
        "cut input != its start: {}",
        diff(&v[0], &v[1])
    );
    assert!(
        diff(&v[0], &v[2]) > 1e-2,
        "a different text gave the same vector"
    );
    // Without it (or with false) the long input is refused.
    let (s, b) = n
        .post(
            "/v1/embeddings",
            json!({"model": EMBED_ID, "input": "word ".repeat(600), "truncate": false}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["code"], "context_length_exceeded", "{b}");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_in_the_encoder_are_classified() {
    let Some(n) = loaded(true).await else { return };
    let embed = |fault: &'static str| {
        let n = &n;
        async move {
            let body = serde_json::to_vec(&json!({"model": EMBED_ID, "input": "x"})).unwrap();
            let headers: Vec<(&str, &str)> = if fault.is_empty() {
                vec![]
            } else {
                vec![("x-neuron-inject-fault", fault)]
            };
            let (s, b, _) = n.post_raw("/v1/embeddings", body, &headers).await;
            (s, b)
        }
    };
    for fault in ["host@prefill", "panic@prefill", "host@tokenize"] {
        let (s, b) = embed(fault).await;
        assert!(s == 500 || s == 400, "{fault}: {s} {b}");
        assert_ne!(b["error"]["code"], "device_fault", "{fault}: {b}");
        let (s, b) = embed("").await;
        assert_eq!(s, 200, "after {fault}: {b}");
    }
    let (s, b) = embed("device@prefill").await;
    assert_eq!(s, 500, "{b}");
    assert_eq!(b["error"]["code"], "device_fault");
    let (s, b) = embed("").await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(b["error"]["code"], "model_poisoned");
    let (_, st) = n.get("/status").await;
    assert_eq!(st["models"][0]["state"], "poisoned", "{st}");
    // A reload brings it back.
    let (s, b) = n.post("/models/load", json!({"model": EMBED_ID})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = embed("").await;
    assert_eq!(s, 200, "{b}");
    n.stop().await;
}
