//! Cache-aware routing through a real gateway with fake neurons: a
//! conversation follows the neuron that reports its prefix, within the load
//! margin and the affinity TTL, and the decisions are counted by reason.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// `m` ready on neurons `a` and `b` behind a gateway with `affinity_slack`
/// `slack` and a one-minute affinity TTL.
async fn two_ready(slack: u64) -> (FakeNeuron, FakeNeuron, TestGateway) {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .loaded("m")
        .start()
        .await;
    let b = FakeNeuron::builder("b")
        .file("m", 100)
        .loaded("m")
        .start()
        .await;
    let mut s = settings(&[&a, &b]);
    s.config.routing.affinity_slack = slack;
    s.config.routing.affinity_ttl = ms(60_000);
    let gw = TestGateway::start_up(s).await;
    gw.wait_ready("m", "a").await;
    gw.wait_ready("m", "b").await;
    (a, b, gw)
}

/// Cache-aware routing through a real gateway: with the model ready on two
/// neurons, a conversation goes to the neuron that reports its prefix
/// (turn after turn, as the prefix grows), unless that neuron is more than
/// `affinity_slack` requests busier; a prefix older than `affinity_ttl`
/// counts for nothing; each decision is counted by reason and shown in
/// `/admin/fleet`.
#[tokio::test]
async fn a_conversation_goes_to_the_neuron_that_holds_its_prefix() {
    let (a, b, gw) = two_ready(1).await;

    let turn1 = json!({"model": "m", "messages": [
        {"role": "system", "content": "x-anthropic-billing-header: cc_version=1; cch=1;\nYou are terse."},
        {"role": "user", "content": "hi"}]});
    let mut turn2 = turn1.clone();
    turn2["messages"][0]["content"] =
        json!("x-anthropic-billing-header: cc_version=1; cch=2;\nYou are terse.");
    turn2["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": "Hello."}),
        json!({"role": "user", "content": "more"}),
    ]);
    let hashes = |v: &Value| {
        cortex_core::prefix::conversation_hashes(&serde_json::from_value(v.clone()).unwrap())
    };
    // b served turn 1 and holds it (its whole conversation's hash).
    let now = cortex_core::now_unix_ms();
    b.hold_prefix("m", *hashes(&turn1).last().unwrap(), 480, now);
    // An unrelated prefix on a, to be sure only the match counts.
    a.hold_prefix("m", 42, 9_999, now);
    eventually("b's prefix polled", || async {
        let v: Value = gw.get("/admin/fleet").await.json().await.unwrap();
        v["models"][0]["placements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["node"] == "b" && p["cached_tokens"] == 480)
    })
    .await;

    for _ in 0..3 {
        let r = gw.post("/v1/chat/completions", &turn2).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(b.chat_calls(), 3, "turn 2 goes where turn 1's KV is");
    assert_eq!(a.chat_calls(), 0);
    // Through the Anthropic dialect too (translated to the same messages).
    let anthropic = json!({"model": "m", "max_tokens": 8,
        "system": "x-anthropic-billing-header: cc_version=1; cch=3;\nYou are terse.",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."},
                     {"role": "user", "content": "more"}]});
    let r = gw.post("/v1/messages", &anthropic).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        b.chat_calls(),
        4,
        "the Anthropic turn follows its prefix too"
    );

    // A conversation nobody holds goes by load, and is counted so.
    let other = json!({"model": "m", "messages": [{"role": "user", "content": "unrelated"}]});
    let r = gw.post("/v1/chat/completions", &other).await;
    assert_eq!(r.status(), 200);

    let text = gw.metrics_text().await;
    let count = |reason: &str| {
        metric(
            &text,
            "cortex_routing_decisions_total",
            &["model=\"m\"", &format!("reason=\"{reason}\"")],
        )
    };
    assert_eq!(count("cached_prefix"), Some(4.0), "{text}");
    assert_eq!(count("least_loaded"), Some(1.0), "{text}");
}

/// The margin: a neuron that holds the prefix but is busier than the
/// least loaded by more than `affinity_slack` loses to load; an expired
/// prefix counts for nothing.
#[tokio::test]
async fn affinity_yields_to_load_and_expires() {
    let (a, b, gw) = two_ready(0).await;
    let conv = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let h =
        *cortex_core::prefix::conversation_hashes(&serde_json::from_value(conv.clone()).unwrap())
            .last()
            .unwrap();
    // b holds it; an old prefix of the same conversation on a is expired.
    let now = cortex_core::now_unix_ms();
    b.hold_prefix("m", h, 64, now);
    a.hold_prefix("m", h, 640, now - 120_000);
    eventually("prefixes polled", || async {
        let v: Value = gw.get("/admin/fleet").await.json().await.unwrap();
        v["models"][0]["placements"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["cached_tokens"].as_u64() > Some(0))
    })
    .await;
    let r = gw.post("/v1/chat/completions", &conv).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        (a.chat_calls(), b.chat_calls()),
        (0, 1),
        "a's prefix has expired"
    );

    // b busy with a slow stream: with slack 0 the request goes to a.
    b.set(|bh| bh.first_chunk_delay = Duration::from_secs(3));
    let mut slow = conv.clone();
    slow["stream"] = json!(true);
    let gw2 = gw.http.clone();
    let url = gw.url("/v1/chat/completions");
    let held = tokio::spawn(async move {
        gw2.post(url)
            .json(&slow)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    eventually("b busy", || async { b.chat_calls() == 2 }).await;
    let r = gw.post("/v1/chat/completions", &conv).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        a.chat_calls(),
        1,
        "load wins over b's prefix beyond the margin"
    );
    let text = gw.metrics_text().await;
    let load = metric(
        &text,
        "cortex_routing_decisions_total",
        &["model=\"m\"", "reason=\"load\""],
    );
    assert_eq!(load, Some(1.0), "{text}");
    held.abort();
}
