//! The prefix cache as the gateway sees it, with the real default model:
//! a finished conversation is reported in `/status` under the id the
//! gateway computes for its next turn (`cortex_core::prefix`), with the
//! tokens its KV still holds.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use cortex_core::openai::ChatCompletionRequest;
use serde_json::{json, Value};

fn conversation_id(body: &Value) -> u64 {
    let req: ChatCompletionRequest = serde_json::from_value(body.clone()).unwrap();
    *cortex_core::prefix::conversation_hashes(&req)
        .last()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_conversation_is_reported_for_its_next_turn() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::start(config(dir), false).await;
    let (s, b) = n.post("/models/load", json!({"model": MODEL_ID})).await;
    assert_eq!(s, 200, "{b}");

    let system = "You are a helpful assistant who answers in one short sentence. ".repeat(6);
    let turn1 = json!({"model": MODEL_ID, "temperature": 0, "max_tokens": 8, "messages": [
        {"role": "system", "content": format!("x-anthropic-billing-header: cc_version=1; cch=aa;\n{system}")},
        {"role": "user", "content": "What is the capital of France?"}]});
    let (s, b) = n.chat(turn1.clone()).await;
    assert_eq!(s, 200, "{b}");
    let answer = b["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let prompt_tokens = b["usage"]["prompt_tokens"].as_u64().unwrap();

    let (_, st) = n.get("/status").await;
    let cached = st["models"][0]["cached_prefixes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let id = conversation_id(&turn1);
    let entry = cached
        .iter()
        .find(|p| p["hash"].as_u64() == Some(id))
        .unwrap_or_else(|| panic!("turn 1 not reported: {st}"));
    let tokens = entry["tokens"].as_u64().unwrap();
    assert!(tokens >= 16 && tokens % 16 == 0, "{entry}");
    assert!(
        tokens <= prompt_tokens + 8,
        "{entry} vs {prompt_tokens} prompt tokens"
    );

    // Turn 2, with another billing-header hash, re-sends turn 1: the id
    // the gateway computes for its first two messages is turn 1's.
    let mut turn2 = turn1.clone();
    turn2["messages"][0]["content"] = json!(format!(
        "x-anthropic-billing-header: cc_version=1; cch=bb;\n{system}"
    ));
    turn2["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": answer}),
        json!({"role": "user", "content": "And of Italy?"}),
    ]);
    let req2: ChatCompletionRequest = serde_json::from_value(turn2.clone()).unwrap();
    let ids2 = cortex_core::prefix::conversation_hashes(&req2);
    assert_eq!(ids2[1], id);
    let (s, b) = n.chat(turn2.clone()).await;
    assert_eq!(s, 200, "{b}");
    let (_, st) = n.get("/status").await;
    let reported: Vec<u64> = st["models"][0]["cached_prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["hash"].as_u64().unwrap())
        .collect();
    assert_eq!(
        reported.first(),
        Some(&conversation_id(&turn2)),
        "most recent first: {st}"
    );
    assert!(reported.contains(&id));
    n.stop().await;
}
