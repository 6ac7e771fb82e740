//! Real inference through the neuron API with the real default model:
//! greedy answers, streaming, concurrency, stop sequences, max_tokens and
//! the context limit.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use futures::future::join_all;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_answer_mentions_paris() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, false).await;
    let (status, body) = n
        .chat(json!({"model": MODEL_ID, "messages": user(FRANCE), "temperature": 0, "max_tokens": 40}))
        .await;
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text:?}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let u = &body["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 10);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_equals_non_stream_and_follows_the_wire_format() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, false).await;
    let req = json!({"model": MODEL_ID, "messages": user("Name three colours."), "temperature": 0, "max_tokens": 30});
    let (_, full) = n.chat(req.clone()).await;
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let (status, data) = n.chat_stream(sreq, &[]).await;
    assert_eq!(status, 200);
    let (text, finish) = stream_text(&data);
    assert_eq!(
        text,
        full["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(
        finish.unwrap()["choices"][0]["finish_reason"],
        full["choices"][0]["finish_reason"]
    );

    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let first = &chunks[0];
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], first["id"]);
        assert_eq!(c["created"], first["created"]);
    }
    // The usage chunk comes just before [DONE], with no choices; all others carry usage: null.
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(usage["usage"][k], full["usage"][k], "{k}");
    }
    // The same prompt again: its whole blocks come from the prefix cache.
    let cached = |u: &Value| {
        u["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(cached(&full["usage"]), 0, "{}", full["usage"]);
    let prompt = full["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        cached(&usage["usage"]),
        (prompt - 1) / 16 * 16,
        "{}",
        usage["usage"]
    );
    for c in &chunks[..chunks.len() - 1] {
        assert!(c["usage"].is_null(), "{c}");
    }
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_requests_equal_the_same_run_one_by_one() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, false).await;
    let prompts = [
        "What is the capital of France?",
        "Name a fruit.",
        "Say hello in Spanish.",
        "What is 2 + 2?",
        "Name a planet.",
        "What colour is the sky?",
        "Write one word about cats.",
        "Give me a number between 1 and 10.",
    ];
    let req = |p: &str| json!({"model": MODEL_ID, "messages": user(p), "temperature": 0, "max_tokens": 24});
    let mut sequential = Vec::new();
    for p in prompts {
        let (s, b) = n.chat(req(p)).await;
        assert_eq!(s, 200, "{b}");
        sequential.push(
            b["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let concurrent: Vec<String> = join_all(prompts.iter().map(|p| n.chat(req(p))))
        .await
        .into_iter()
        .map(|(s, b)| {
            assert_eq!(s, 200, "{b}");
            b["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(concurrent, sequential);
    // Streaming and non-streaming mixed, concurrently, still equal.
    let mixed = join_all(prompts.iter().enumerate().map(|(i, p)| {
        let n = &n;
        async move {
            if i % 2 == 0 {
                let mut r = req(p);
                r["stream"] = json!(true);
                stream_text(&n.chat_stream(r, &[]).await.1).0
            } else {
                n.chat(req(p)).await.1["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }
        }
    }))
    .await;
    assert_eq!(mixed, sequential);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sequences_cut_the_text_and_are_reported() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, false).await;
    let base =
        json!({"model": MODEL_ID, "messages": user(FRANCE), "temperature": 0, "max_tokens": 40});
    let (_, full) = n.chat(base.clone()).await;
    let full_text = full["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let at = full_text
        .find("Paris")
        .expect("greedy answer mentions Paris");

    for stop in [json!("Paris"), json!(["xyz", "Paris"])] {
        let mut r = base.clone();
        r["stop"] = stop.clone();
        let (s, b) = n.chat(r.clone()).await;
        assert_eq!(s, 200);
        let text = b["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(text, &full_text[..at], "stop {stop}");
        assert_eq!(b["choices"][0]["finish_reason"], "stop");
        assert_eq!(b["choices"][0]["stop_reason"], "Paris");
        // Streaming gives the same cut.
        r["stream"] = json!(true);
        let (_, data) = n.chat_stream(r, &[]).await;
        let (stext, fin) = stream_text(&data);
        assert_eq!(stext, &full_text[..at]);
        let fin = fin.unwrap();
        assert_eq!(fin["choices"][0]["finish_reason"], "stop");
        assert_eq!(fin["choices"][0]["stop_reason"], "Paris");
    }
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_gives_length_and_exactly_n_tokens() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, false).await;
    for (key, max) in [("max_tokens", 7), ("max_completion_tokens", 3)] {
        let mut r = json!({"model": MODEL_ID, "messages": user("Write a long story about a dragon."), "temperature": 0});
        r[key] = json!(max);
        let (s, b) = n.chat(r.clone()).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["choices"][0]["finish_reason"], "length");
        assert_eq!(b["usage"]["completion_tokens"], max);
        // The text is exactly those N tokens.
        let text = b["choices"][0]["message"]["content"].as_str().unwrap();
        let (_, t) = n
            .post("/tokenize", json!({"model": MODEL_ID, "prompt": text}))
            .await;
        assert_eq!(t["count"], max, "{text:?} re-tokenizes to {t}");
        r["stream"] = json!(true);
        r["stream_options"] = json!({"include_usage": true});
        let (_, data) = n.chat_stream(r, &[]).await;
        let (stext, fin) = stream_text(&data);
        assert_eq!(stext, text);
        assert_eq!(fin.unwrap()["choices"][0]["finish_reason"], "length");
        let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
        assert_eq!(usage["usage"]["completion_tokens"], max);
    }
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_past_the_context_is_a_clear_400() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, false).await;
    let long = "hello ".repeat(9000);
    let (s, b) = n
        .chat(json!({"model": MODEL_ID, "messages": user(&long)}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["code"], "context_length_exceeded");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("maximum context length is 8192"));
    let (s, b) = n
        .chat(json!({"model": MODEL_ID, "messages": user("hi"), "max_tokens": 8190}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["param"], "max_tokens");
    // With the clamp extension (what the gateway's Anthropic route sends) it
    // generates what fits instead.
    let (s, b) = n
        .chat(
            json!({"model": MODEL_ID, "messages": user(FRANCE), "temperature": 0,
                     "max_tokens": 32000, "clamp_max_tokens": true}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"][0]["finish_reason"], "stop");
    // Nothing broke.
    let (s, _) = n
        .chat(json!({"model": MODEL_ID, "messages": user("hi"), "max_tokens": 2}))
        .await;
    assert_eq!(s, 200);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_counts_with_the_real_template() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, false).await;
    let (s, b) = n
        .post(
            "/tokenize",
            json!({"model": MODEL_ID, "messages": user("Hi"), "return_tokens": true}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["max_model_len"], 8192);
    let ids: Vec<u64> = b["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(ids.len() as u64, b["count"].as_u64().unwrap());
    // ChatML: starts with <|im_start|> (id 1) and ends with "<|im_start|>assistant\n".
    assert_eq!(ids[0], 1);
    // "<|im_start|>assistant\n": 1, "ass" 520, "istant" 9531, "\n" 198.
    assert_eq!(ids[ids.len() - 4..], [1, 520, 9531, 198], "{ids:?}");
    // The chat's usage agrees with /tokenize.
    let (_, c) = n
        .chat(json!({"model": MODEL_ID, "messages": user("Hi"), "max_tokens": 1}))
        .await;
    assert_eq!(c["usage"]["prompt_tokens"], b["count"]);
    n.stop().await;
}
