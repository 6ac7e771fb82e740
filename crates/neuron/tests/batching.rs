//! Continuous batching through the HTTP API with the real default model: a
//! short request is answered while a long prompt is still being read in
//! chunks, and a client that leaves during a long prefill is dropped at the
//! next chunk boundary.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::json;

/// A neuron whose prompts go through `chunk` tokens per pass.
async fn chunked_neuron(chunk: usize) -> Option<TestNeuron> {
    let dir = models_dir()?;
    let mut cfg = config(dir);
    cfg.prefill_chunk = chunk;
    cfg.max_batch_tokens = 2 * chunk;
    let n = TestNeuron::start(cfg, false).await;
    let (s, b) = n.post("/models/load", json!({"model": MODEL_ID})).await;
    assert_eq!(s, 200, "{b}");
    Some(n)
}

/// About `16 × n` prompt tokens.
fn long_prompt(n: usize) -> String {
    "The river that runs through the old town carried wool and grain to the coast. ".repeat(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_request_is_answered_while_a_long_prompt_is_read() {
    let Some(n) = chunked_neuron(8).await else {
        return;
    };
    // About 3,000 tokens: some 380 passes.
    let long = n
        .client
        .post(format!("{}/v1/chat/completions", n.url))
        .json(&json!({"model": MODEL_ID, "messages": user(&long_prompt(180)), "temperature": 0, "max_tokens": 4, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 200);
    let mut long_body = long.bytes_stream();
    for _ in 0..200 {
        if n.registry.workers()[0].active_sequences() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, b) = n
        .chat(json!({"model": MODEL_ID, "messages": user(FRANCE), "temperature": 0, "max_tokens": 16}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("Paris"));
    // The long request has not produced a token yet: it was still in its
    // prefill while the short one came and went.
    let early = tokio::time::timeout(Duration::from_millis(10), long_body.next()).await;
    let early_text = match early {
        Ok(Some(chunk)) => String::from_utf8_lossy(&chunk.unwrap()).to_string(),
        _ => String::new(),
    };
    // (The stream opens with the role chunk, whose content is empty.)
    let generated = early_text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .any(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        });
    assert!(!generated, "{early_text}");
    // And it completes.
    let mut rest = early_text;
    while let Some(chunk) = long_body.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(
        rest.contains("[DONE]") && !rest.contains("\"error\""),
        "{rest}"
    );
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_leaves_during_a_long_prefill_is_dropped_at_a_chunk_boundary() {
    // One prompt token per pass and about 6,000 tokens: the whole prefill
    // is 6,000 passes, minutes even at the speed of a decode step.
    let Some(n) = chunked_neuron(1).await else {
        return;
    };
    let worker = n.registry.workers()[0].clone();
    let req = n
        .client
        .post(format!("{}/v1/chat/completions", n.url))
        .json(&json!({"model": MODEL_ID, "messages": user(&long_prompt(370)), "temperature": 0, "max_tokens": 4, "stream": true}))
        .send();
    let resp = req.await.unwrap();
    assert_eq!(resp.status(), 200);
    for _ in 0..200 {
        if worker.active_sequences() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(worker.active_sequences(), 1, "the prefill is running");
    let left = Instant::now();
    drop(resp);
    // The sequence goes at the next pass, long before its prefill could end.
    while worker.active_sequences() != 0 {
        assert!(
            left.elapsed() < Duration::from_secs(60),
            "the sequence was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The model serves on, and unloads (nothing in flight).
    let (s, b) = n
        .chat(json!({"model": MODEL_ID, "messages": user(FRANCE), "temperature": 0, "max_tokens": 16}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = n.post("/models/unload", json!({"model": MODEL_ID})).await;
    assert_eq!(s, 200, "{b}");
    n.stop().await;
}
