//! Model lifecycle through the API: coalesced loads, unload waiting for
//! in-flight requests, client disconnects freeing their sequence, memory
//! budget refusals and the status document.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use cortex_core::ByteSize;
use futures::future::join_all;
use futures::StreamExt;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_loads_coalesce_into_one() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::start(config(dir), false).await;
    let results =
        join_all((0..5).map(|_| n.post("/models/load", json!({"model": MODEL_ID})))).await;
    for (s, b) in &results {
        assert_eq!(*s, 200, "{b}");
        assert_eq!(b["model"]["state"], "ready");
    }
    let (_, m) = n.get("/metrics").await;
    let m = m.as_str().unwrap();
    assert!(
        m.contains(
            "neuron_model_loads_total{model=\"smollm2-135m-instruct-q4_1\",result=\"ok\"} 1"
        ),
        "{m}"
    );
    // Loading again is a no-op that reports load_ms 0.
    let (_, b) = n.post("/models/load", json!({"model": MODEL_ID})).await;
    assert_eq!(b["load_ms"], 0);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_devices_models_and_available_files() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::start(config(dir), false).await;
    let (_, st) = n.get("/status").await;
    assert_eq!(st["name"], "test-neuron");
    let cpu = &st["devices"][st["devices"].as_array().unwrap().len() - 1];
    assert_eq!(cpu["kind"], "cpu");
    assert_eq!(cpu["memory_budget_bytes"], 4u64 << 30);
    assert_eq!(cpu["memory_used_bytes"], 0);
    let avail = st["available"].as_array().unwrap();
    let a = avail
        .iter()
        .find(|a| a["id"] == MODEL_ID)
        .expect("default model available");
    assert_eq!(a["source"], MODEL_FILE);
    assert_eq!(a["size_bytes"], 98_362_432);
    let estimated = a["estimated_bytes"].as_u64().unwrap();
    // Read from the header before any load (the gateway advertises them).
    assert_eq!(a["context_length"], 8192);
    assert_eq!(a["architecture"], "llama");

    n.post("/models/load", json!({"model": MODEL_ID})).await;
    let (_, st) = n.get("/status").await;
    let m = &st["models"][0];
    assert_eq!(m["id"], MODEL_ID);
    assert_eq!(m["state"], "ready");
    // The default 384 MiB reserve as whole 16-token blocks of 720 KiB
    // (30 layers × K and V × 16 × 192 f32): 546 blocks, 8,736 positions.
    assert_eq!(m["kv_reserve_bytes"], 546u64 * 737_280);
    assert_eq!(m["context_length"], 8192, "the file's whole context");
    let footprint = m["memory_bytes"].as_u64().unwrap() + m["kv_reserve_bytes"].as_u64().unwrap();
    assert_eq!(
        footprint, estimated,
        "the estimate before loading equals the footprint after"
    );
    let cpu = &st["devices"][st["devices"].as_array().unwrap().len() - 1];
    assert_eq!(cpu["memory_used_bytes"].as_u64().unwrap(), footprint);
    let (_, list) = n.get("/v1/models").await;
    assert_eq!(list["data"][0]["id"], MODEL_ID);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_does_not_fit_the_budget_is_refused() {
    let Some(dir) = models_dir() else { return };
    let mut cfg = config(dir);
    cfg.memory_budget = Some(ByteSize::mib(100));
    let n = TestNeuron::start(cfg, false).await;
    let (s, b) = n.post("/models/load", json!({"model": MODEL_ID})).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["error"]["code"], "insufficient_memory");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_waits_for_in_flight_requests() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, false).await;
    let long = json!({"model": MODEL_ID, "messages": user("Write a long story about a dragon."), "temperature": 0, "max_tokens": 60});
    let chat = n.chat(long);
    let unload = async {
        // Let the request get admitted first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        n.post("/models/unload", json!({"model": MODEL_ID})).await
    };
    let ((cs, cb), (us, ub)) = tokio::join!(chat, unload);
    assert_eq!(cs, 200, "the in-flight request finished: {cb}");
    assert_eq!(cb["usage"]["completion_tokens"], 60);
    assert_eq!(us, 200, "{ub}");
    assert_eq!(ub["unloaded"], true);
    let (s, b) = n
        .chat(json!({"model": MODEL_ID, "messages": user("hi")}))
        .await;
    assert_eq!(s, 404, "{b}");
    let (_, b) = n.post("/models/unload", json!({"model": MODEL_ID})).await;
    assert_eq!(b["unloaded"], false);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_stops_its_generation() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, false).await;
    let worker = n.registry.workers().last().unwrap().clone();
    let resp = n
        .client
        .post(format!("{}/v1/chat/completions", n.url))
        .json(&json!({"model": MODEL_ID, "messages": user("Write a very long story."), "max_tokens": 4000, "stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    for _ in 0..3 {
        body.next().await.unwrap().unwrap();
    }
    assert_eq!(worker.active_sequences(), 1);
    drop(body);
    // The worker notices at its next step; poll instead of sleeping a fixed time.
    let mut freed = false;
    for _ in 0..100 {
        if worker.active_sequences() == 0 && n.registry.get(MODEL_ID).unwrap().in_flight() == 0 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "the sequence was not dropped after the client left");
    let (_, m) = n.get("/metrics").await;
    let m = m.as_str().unwrap();
    assert!(
        m.lines().any(|l| l.starts_with("neuron_requests_total{")
            && l.contains("status=\"499\"")
            && l.ends_with(" 1")),
        "the abandoned stream is counted as 499: {m}"
    );
    // And the model still serves.
    let (s, _) = n
        .chat(json!({"model": MODEL_ID, "messages": user("hi"), "max_tokens": 2}))
        .await;
    assert_eq!(s, 200);
    n.stop().await;
}
