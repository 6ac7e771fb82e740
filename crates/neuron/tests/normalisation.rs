//! Prompt normalisation on a real neuron: Claude Code's per-request billing
//! header does not change the prompt tokens, unless the neuron is told to
//! keep it.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

fn conversation(header: Option<&str>) -> Value {
    let system = match header {
        Some(hash) => format!(
            "x-anthropic-billing-header: cc_version=2.1.37.{hash}; cc_entrypoint=cli; cch={hash};\nYou are Claude Code, a coding assistant."
        ),
        None => "You are Claude Code, a coding assistant.".to_string(),
    };
    json!([
        {"role": "system", "content": system},
        {"role": "user", "content": "List the files."}
    ])
}

async fn tokens(n: &TestNeuron, messages: Value) -> Vec<u64> {
    let (status, body) = n
        .post(
            "/tokenize",
            json!({"model": MODEL_ID, "messages": messages, "return_tokens": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_billing_header_hash_does_not_change_the_prompt() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, false).await;
    let a = tokens(&n, conversation(Some("3a3f1"))).await;
    let b = tokens(&n, conversation(Some("9bc04"))).await;
    assert_eq!(a, b);
    assert_eq!(a, tokens(&n, conversation(None)).await);
    // The chat path builds the same prompt.
    let (status, body) = n
        .chat(json!({"model": MODEL_ID, "messages": conversation(Some("77e2d")), "max_tokens": 1}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], a.len());
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_billing_header_keeps_it() {
    let Some(dir) = models_dir() else { return };
    let mut cfg = config(dir);
    cfg.keep_billing_header = true;
    let n = TestNeuron::start(cfg, false).await;
    let (status, body) = n.post("/models/load", json!({"model": MODEL_ID})).await;
    assert_eq!(status, 200, "{body}");
    let a = tokens(&n, conversation(Some("3a3f1"))).await;
    let b = tokens(&n, conversation(Some("9bc04"))).await;
    assert_ne!(a, b);
    assert!(a.len() > tokens(&n, conversation(None)).await.len());
    n.stop().await;
}
