//! The prefix cache as the gateway sees it, with the real default model:
//! a finished conversation is reported in `/status` under the id the
//! gateway computes for its next turn (`cortex_core::prefix`), with the
//! tokens its KV still holds, and the KV pool's gauges count them.

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

    // The worker records a sequence as it leaves, just after the answer's
    // last event: poll briefly.
    let id = conversation_id(&turn1);
    let reported = |want: u64| {
        let n = &n;
        async move {
            for _ in 0..50 {
                let (_, st) = n.get("/status").await;
                let all: Vec<Value> = st["models"][0]["cached_prefixes"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if all.first().and_then(|p| p["hash"].as_u64()) == Some(want) {
                    return all;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!(
                "{want} never reported first: {:?}",
                n.get("/status").await.1
            )
        }
    };
    let all = reported(id).await;
    let entry = &all[0];
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
    let all = reported(conversation_id(&turn2)).await;
    let reported: Vec<u64> = all.iter().map(|p| p["hash"].as_u64().unwrap()).collect();
    assert!(reported.contains(&id));

    // The gauges: the pool's size, and the cached blocks that hold at least
    // turn 1's reported prefix; nothing runs now, so nothing is in use.
    let (_, m) = n.get("/metrics").await;
    let m = m.as_str().unwrap().to_string();
    let gauge = |name: &str| -> u64 {
        let prefix = format!("{name}{{model=\"{MODEL_ID}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {name} in:\n{m}"))
            .parse()
            .unwrap()
    };
    let capacity = gauge("neuron_kv_capacity_tokens");
    let cached = gauge("neuron_prefix_cache_tokens");
    assert!(capacity >= 8192, "{capacity}");
    assert!(
        cached >= tokens && cached <= capacity,
        "{cached} of {capacity}"
    );
    assert_eq!(gauge("neuron_kv_used_tokens"), 0);
    n.stop().await;
}
