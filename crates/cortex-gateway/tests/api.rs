//! The gateway's API against fake neurons: the merged model list in both
//! shapes, OpenAI chat (streamed and not, usage handling and token
//! metrics), aliases, Anthropic messages (streamed and not) and token
//! counting, the admin API, and `/health` / `/ready`. Errors in the
//! caller's dialect are in `dialect_errors.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use cortex_core::fleet::FleetView;
use serde_json::{json, Value};

const SMOL_PROFILE: &str =
    "[[models]]\nid = \"smol\"\nsource = \"Smol.gguf\"\naliases = [\"smollm2\"]\n";

#[tokio::test]
async fn models_lists_every_servable_model_once_in_both_shapes() {
    let a = FakeNeuron::builder("a")
        .file_source("smol-file", "Smol.gguf", 100)
        .file("other", 100)
        .start()
        .await;
    let b = FakeNeuron::builder("b")
        .file_source("smol-file", "Smol.gguf", 100)
        .file("third", 100)
        .loaded("third")
        .start()
        .await;
    let gw = TestGateway::start_up(with_models(settings(&[&a, &b]), SMOL_PROFILE)).await;

    let resp = gw.get("/v1/models").await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    // The file covered by the profile is listed once, under the profile's
    // id; aliases are names, not models.
    assert_eq!(ids, ["other", "smol", "third"], "{v}");
    for m in data {
        assert_eq!(m["object"], "model");
        assert!(m["owned_by"].is_string() && m["created"].is_u64(), "{m}");
    }

    let v: Value = gw
        .http
        .get(gw.url("/v1/models"))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = v["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["other", "smol", "third"], "{v}");
    for m in data {
        assert_eq!(m["type"], "model");
        assert!(
            m["display_name"].is_string() && m["created_at"].is_string(),
            "{m}"
        );
    }
    assert_eq!(v["has_more"], false);
    assert_eq!(
        (v["first_id"].as_str(), v["last_id"].as_str()),
        (Some("other"), Some("third"))
    );

    // The alias resolves, and the neuron only ever hears the canonical id.
    let resp = gw
        .post("/v1/chat/completions", &chat("smollm2", false))
        .await;
    assert_eq!(resp.status(), 200);
    let served_by = if a.chat_calls() == 1 { &a } else { &b };
    assert_eq!(served_by.load_calls(), ["smol"]);
    let load = &served_by.calls("/models/load")[0].body;
    assert_eq!(load["source"], "Smol.gguf");
    assert_eq!(
        served_by.calls("/v1/chat/completions")[0].body["model"],
        "smol"
    );
}

#[tokio::test]
async fn openai_chat_passes_through_unstreamed() {
    let (a, gw) = one_fake_with("m").await;
    let resp = gw.post("/v1/chat/completions", &chat("m", false)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(content(&v), "Hello from m on a");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13})
    );
    assert_eq!(a.chat_calls(), 1);
}

#[tokio::test]
async fn openai_stream_passes_through_with_usage_when_asked() {
    let (a, gw) = one_fake_with("m").await;
    let mut body = chat("m", true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = parse_sse(&resp.text().await.unwrap());
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert_eq!(streamed_text(&events), "Hello from m on a");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Event::json).collect();
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13})
    );
    for c in &chunks[..chunks.len() - 1] {
        assert!(c["usage"].is_null(), "{c}");
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
    }
    assert_eq!(a.chat_calls(), 1);
    assert_eq!((a.streams_finished(), a.streams_cancelled()), (1, 0));
}

#[tokio::test]
async fn stream_without_include_usage_hides_usage_but_metrics_count_tokens() {
    let (a, gw) = one_fake_with("m").await;
    let resp = gw.post("/v1/chat/completions", &chat("m", true)).await;
    assert_eq!(resp.status(), 200);
    let events = parse_sse(&resp.text().await.unwrap());
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert_eq!(streamed_text(&events), "Hello from m on a");
    for e in &events[..events.len() - 1] {
        let c = e.json();
        assert!(
            c["usage"].is_null(),
            "usage reached a client that did not ask: {c}"
        );
        assert_ne!(
            c["choices"],
            json!([]),
            "the usage chunk was not dropped: {c}"
        );
    }
    // The gateway asked the neuron for usage to tap it.
    let sent = &a.calls("/v1/chat/completions")[0].body;
    assert_eq!(sent["stream_options"]["include_usage"], true);

    let text = gw.metrics_text().await;
    let labels = ["model=\"m\"", "node=\"a\""];
    assert_eq!(
        metric(&text, "cortex_prompt_tokens_total", &labels),
        Some(10.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "cortex_completion_tokens_total", &labels),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "cortex_time_to_first_token_seconds_count", &labels),
        Some(1.0),
        "{text}"
    );
    let ok = [
        "model=\"m\"",
        "node=\"a\"",
        "api=\"openai\"",
        "status=\"200\"",
    ];
    assert_eq!(
        metric(&text, "cortex_requests_total", &ok),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn anthropic_messages_unstreamed() {
    let (a, gw) = one_fake_with("m").await;
    let resp = gw.post("/v1/messages", &messages("m", false)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"), "{v}");
    assert_eq!(v["model"], "m");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "Hello from m on a"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 10);
    assert_eq!(v["usage"]["output_tokens"], 3);
    // The neuron got the OpenAI dialect.
    let sent = &a.calls("/v1/chat/completions")[0].body;
    assert_eq!(sent["messages"][0]["role"], "user");
}

#[tokio::test]
async fn anthropic_stream_is_well_formed() {
    let (_a, gw) = one_fake_with("m").await;
    let resp = gw.post("/v1/messages", &messages("m", true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events: Vec<Event> = parse_sse(&resp.text().await.unwrap())
        .into_iter()
        .filter(|e| e.event.as_deref() != Some("ping"))
        .collect();
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "message_start").count(), 1);
    assert_eq!(names.iter().filter(|n| **n == "message_stop").count(), 1);
    for e in &events {
        assert_eq!(e.json()["type"], e.event.as_deref().unwrap(), "{e:?}");
    }
    let start = events[0].json();
    // From the neuron's x-cortex-prompt-tokens header, before any usage.
    assert_eq!(start["message"]["usage"]["input_tokens"], 10);
    assert_eq!(start["message"]["content"], json!([]));
    let text: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| e.json()["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "Hello from m on a");
    let i_start = names
        .iter()
        .position(|n| *n == "content_block_start")
        .unwrap();
    let i_stop = names
        .iter()
        .position(|n| *n == "content_block_stop")
        .unwrap();
    let i_delta = names.iter().position(|n| *n == "message_delta").unwrap();
    assert!(
        0 < i_start && i_start < i_stop && i_stop < i_delta,
        "{names:?}"
    );
    assert_eq!(i_delta + 1, names.len() - 1, "{names:?}");
    let delta = events[i_delta].json();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 3);
    assert_eq!(delta["usage"]["input_tokens"], 10);
}

#[tokio::test]
async fn count_tokens_uses_the_neurons_tokenizer() {
    let (a, gw) = one_fake_with("m").await;
    let body = json!({
        "model": "m",
        "system": "be brief",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "again"},
        ],
    });
    let resp = gw.post("/v1/messages/count_tokens", &body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    // Ten tokens per message on the fake; the system prompt is one.
    assert_eq!(v, json!({"input_tokens": 40}));
    let sent = &a.calls("/tokenize")[0].body;
    assert_eq!(sent["model"], "m");
    assert_eq!(sent["messages"].as_array().unwrap().len(), 4);
    assert_eq!(a.chat_calls(), 0);
}

#[tokio::test]
async fn admin_fleet_has_the_documented_shape() {
    let (_a, gw) = one_fake_with("m").await;
    let resp = gw.get("/admin/fleet").await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let node = &v["nodes"][0];
    for key in [
        "name",
        "endpoint",
        "up",
        "consecutive_failures",
        "last_seen_ms_ago",
        "version",
        "devices",
    ] {
        assert!(node.get(key).is_some(), "nodes[0].{key} missing: {v}");
    }
    assert_eq!(node["name"], "a");
    assert_eq!(node["up"], true);
    assert_eq!(node["devices"][0]["kind"], "cpu");
    let model = &v["models"][0];
    for key in [
        "id",
        "aliases",
        "pinned",
        "priority",
        "configured",
        "placements",
        "loadable_on",
        "kind",
    ] {
        assert!(model.get(key).is_some(), "models[0].{key} missing: {v}");
    }
    let p = &model["placements"][0];
    for key in [
        "node",
        "state",
        "device",
        "memory_bytes",
        "kv_reserve_bytes",
        "loaded_at",
        "last_used_at",
        "in_flight",
    ] {
        assert!(p.get(key).is_some(), "placements[0].{key} missing: {v}");
    }
    assert_eq!(p["state"], "ready");
    let typed: FleetView = serde_json::from_value(v).unwrap();
    assert_eq!(typed.models[0].id, "m");
}

#[tokio::test]
async fn admin_load_unload_pin_unpin() {
    let a = FakeNeuron::builder("a").file("m", 100).start().await;
    let b = FakeNeuron::builder("b").file("m", 100).start().await;
    let gw = TestGateway::start_up(settings(&[&a, &b])).await;
    let post = |path: &'static str, body: Value| {
        let gw = &gw;
        async move {
            let r = if body.is_null() {
                gw.http.post(gw.url(path)).send().await.unwrap()
            } else {
                gw.post(path, &body).await
            };
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap())
        }
    };

    let (st, v) = post("/admin/models/m/load", Value::Null).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["model"], "m");
    assert!(v["load_ms"].is_u64() && v["evicted"] == json!([]), "{v}");
    let first = v["node"].as_str().unwrap().to_string();
    let other = if first == "a" { "b" } else { "a" };
    let (st, v) = post("/admin/models/m/load", json!({"node": other})).await;
    assert_eq!((st, v["node"].as_str()), (200, Some(other)), "{v}");
    assert_eq!((a.load_calls().len(), b.load_calls().len()), (1, 1));
    gw.wait_ready("m", other).await;

    let (st, v) = post("/admin/models/m/unload", json!({"node": first})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v, json!({"model": "m", "unloaded_from": [first]}));

    let (st, v) = post("/admin/models/m/pin", Value::Null).await;
    assert_eq!((st, v), (200, json!({"model": "m", "pinned": true})));
    assert!(gw
        .view()
        .await
        .models
        .iter()
        .any(|m| m.id == "m" && m.pinned));
    let (st, v) = post("/admin/models/m/unload", Value::Null).await;
    assert_eq!(st, 409, "unloading a pinned model: {v}");
    assert_openai_error(&v, "invalid_request_error", Some("conflict"));
    let fake_other = if other == "a" { &a } else { &b };
    assert!(fake_other.unload_calls().is_empty());

    let (st, v) = post("/admin/models/m/unpin", Value::Null).await;
    assert_eq!((st, v), (200, json!({"model": "m", "pinned": false})));
    let (st, v) = post("/admin/models/m/unload", Value::Null).await;
    assert_eq!((st, &v["unloaded_from"]), (200, &json!([other])), "{v}");

    let (st, v) = post("/admin/models/nope/load", Value::Null).await;
    assert_eq!(st, 404, "{v}");
    let (st, v) = post("/admin/models/m/load", json!({"node": "zz"})).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["param"], "node");
    let (st, _) = post("/admin/models/m/explode", Value::Null).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn health_always_and_ready_once_a_neuron_is_up() {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .behaviour(|b| b.status_fails = true)
        .start()
        .await;
    let gw = TestGateway::start(settings(&[&a])).await;
    let resp = gw.get("/health").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "ok");
    // The fake has been polled (and failed) at least once.
    eventually("a failed poll", || async { !a.calls("/status").is_empty() }).await;
    let resp = gw.get("/ready").await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.json::<Value>().await.unwrap()["ready"], false);

    a.set(|b| b.status_fails = false);
    eventually("/ready 200", || async {
        gw.get("/ready").await.status() == 200
    })
    .await;
    let v: Value = gw.get("/ready").await.json().await.unwrap();
    assert_eq!(v, json!({"ready": true, "neurons_up": 1}));
}
