//! Bad input gets a clear error in OpenAI's envelope and breaks nothing:
//! malformed bodies, wrong types, out-of-range values, unknown models,
//! oversized bodies, path tricks on /models/load, missing admin token.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use cortex_core::ByteSize;
use serde_json::{json, Value};

fn assert_envelope(body: &Value) {
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(e["type"].is_string(), "{body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_rejected_in_dialect_and_nothing_breaks() {
    let Some(dir) = models_dir() else { return };
    let mut cfg = config(dir);
    cfg.max_body = ByteSize(64 * 1024);
    let n = TestNeuron::start(cfg, false).await;
    let (s, b) = n.post("/models/load", json!({"model": MODEL_ID})).await;
    assert_eq!(s, 200, "{b}");

    let good = json!({"model": MODEL_ID, "messages": user("hi")});
    let raw_cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("malformed JSON", b"{\"model\": ".to_vec(), 400),
        ("not JSON", b"hello".to_vec(), 400),
        ("empty body", Vec::new(), 400),
        ("array body", b"[]".to_vec(), 400),
        (
            "body over the limit",
            {
                let mut v = good.clone();
                v["messages"][0]["content"] = json!("x".repeat(100 * 1024));
                serde_json::to_vec(&v).unwrap()
            },
            413,
        ),
    ];
    for (what, body, want) in raw_cases {
        let (s, b, _) = n.post_raw("/v1/chat/completions", body, &[]).await;
        assert_eq!(s, want, "{what}: {b}");
        assert_envelope(&b);
    }

    let mut json_cases: Vec<(&str, Value, u16, Option<&str>)> = vec![
        ("missing messages", json!({"model": MODEL_ID}), 400, None),
        ("missing model", json!({"messages": user("hi")}), 400, None),
        (
            "empty messages",
            json!({"model": MODEL_ID, "messages": []}),
            400,
            Some("messages"),
        ),
        (
            "messages not a list",
            json!({"model": MODEL_ID, "messages": "hi"}),
            400,
            None,
        ),
        (
            "unknown role",
            json!({"model": MODEL_ID, "messages": [{"role": "wizard", "content": "x"}]}),
            400,
            None,
        ),
        (
            "content wrong type",
            json!({"model": MODEL_ID, "messages": [{"role": "user", "content": 5}]}),
            400,
            None,
        ),
        (
            "temperature a string",
            json!({"model": MODEL_ID, "messages": user("hi"), "temperature": "hot"}),
            400,
            None,
        ),
        (
            "unknown model",
            json!({"model": "nope", "messages": user("hi")}),
            404,
            Some("model"),
        ),
        (
            "path as model",
            json!({"model": "../../etc/passwd", "messages": user("hi")}),
            404,
            Some("model"),
        ),
        (
            "url as model",
            json!({"model": "http://evil/x", "messages": user("hi")}),
            404,
            Some("model"),
        ),
    ];
    // Walked field by field against OpenAI's answers (CONFORMANCE.md).
    let call =
        json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}});
    for (what, messages) in [
        ("user message without content", json!([{"role": "user"}])),
        (
            "user content null",
            json!([{"role": "user", "content": null}]),
        ),
        (
            "system message without content",
            json!([{"role": "system"}, {"role": "user", "content": "x"}]),
        ),
        (
            "empty content array",
            json!([{"role": "user", "content": []}]),
        ),
        (
            "assistant with neither content nor tool_calls",
            json!([{"role": "user", "content": "x"}, {"role": "assistant"}]),
        ),
        (
            "tool message without tool_call_id",
            json!([{"role": "user", "content": "q"},
            {"role": "assistant", "tool_calls": [call.clone()]}, {"role": "tool", "content": "42"}]),
        ),
        (
            "tool message answering no call",
            json!([{"role": "user", "content": "q"},
            {"role": "tool", "tool_call_id": "c1", "content": "42"}]),
        ),
        (
            "tool message without content",
            json!([{"role": "user", "content": "q"},
            {"role": "assistant", "tool_calls": [call.clone()]}, {"role": "tool", "tool_call_id": "c1"}]),
        ),
        (
            "tool_calls on a user message",
            json!([{"role": "user", "content": "q", "tool_calls": [call.clone()]}]),
        ),
        (
            "content part without type",
            json!([{"role": "user", "content": [{"text": "x"}]}]),
        ),
        ("message without role", json!([{"content": "x"}])),
    ] {
        let p = if what == "content part without type" || what == "message without role" {
            None
        } else {
            Some("messages")
        };
        json_cases.push((
            what,
            json!({"model": MODEL_ID, "messages": messages}),
            400,
            p,
        ));
    }
    json_cases.push((
        "empty model",
        json!({"model": "", "messages": user("hi")}),
        400,
        Some("model"),
    ));
    for (k, v, p) in [
        ("frequency_penalty", json!(2.5), "frequency_penalty"),
        ("presence_penalty", json!(-3), "presence_penalty"),
        (
            "tools",
            json!([{"type": "function", "function": {"name": "bad name"}}]),
            "tools",
        ),
        (
            "tools",
            json!([{"type": "retrieval", "function": {"name": "f"}}]),
            "tools",
        ),
        ("top_k", json!(-1), "top_k"),
        ("n", json!(3), "n"),
        ("max_completion_tokens", json!(0), "max_completion_tokens"),
        ("max_tokens", json!(0), "max_tokens"),
        ("max_tokens", json!(-1), "max_tokens"),
        ("temperature", json!(2.01), "temperature"),
        ("temperature", json!(-1), "temperature"),
        ("top_p", json!(0), "top_p"),
    ] {
        let mut v2 = good.clone();
        v2[k] = v;
        json_cases.push(("out of range", v2, 400, Some(p)));
    }
    for (what, body, want, param) in json_cases {
        let (s, b) = n.chat(body.clone()).await;
        assert_eq!(s, want, "{what}: {body} -> {b}");
        assert_envelope(&b);
        if let Some(p) = param {
            assert_eq!(b["error"]["param"], p, "{what}");
        }
        let mut sb = body.clone();
        if sb.is_object() {
            sb["stream"] = json!(true);
            let (s, b) = n.chat(sb).await;
            assert_eq!(s, want, "{what} (stream): {b}");
        }
    }
    // Unknown fields are ignored, not rejected.
    let mut extra = good.clone();
    extra["logit_bias"] = json!({"1": 1});
    extra["some_future_field"] = json!(true);
    extra["max_tokens"] = json!(2);
    let (s, b) = n.chat(extra).await;
    assert_eq!(s, 200, "{b}");
    // The model is healthy and not poisoned.
    let (_, st) = n.get("/status").await;
    assert_eq!(st["models"][0]["state"], "ready", "{st}");
    assert_eq!(n.registry.get(MODEL_ID).unwrap().health.poisoned(), None);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_refuses_path_tricks() {
    let Some(dir) = models_dir() else { return };
    let t = tempfile::tempdir().unwrap();
    let models = t.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(dir.join(MODEL_FILE), t.path().join("outside.gguf")).unwrap();
    std::os::unix::fs::symlink(t.path().join("outside.gguf"), models.join("escape.gguf")).unwrap();
    std::fs::write(models.join("garbage.gguf"), b"this is not a gguf file").unwrap();
    let n = TestNeuron::start(config(models.clone()), false).await;
    let outside = t.path().join("outside.gguf").display().to_string();
    for (source, want) in [
        ("../outside.gguf", 400),
        ("sub/../../outside.gguf", 400),
        (outside.as_str(), 400),
        ("/etc/passwd", 400),
        ("escape.gguf", 400),
        ("http://example.com/x.gguf", 400),
        ("missing.gguf", 404),
        ("garbage.gguf", 422),
    ] {
        let (s, b) = n
            .post("/models/load", json!({"model": "x", "source": source}))
            .await;
        assert_eq!(s, want, "{source}: {b}");
        assert_envelope(&b);
    }
    for id in ["../x", "/abs", "a/b", ""] {
        let (s, b) = n.post("/models/load", json!({"model": id})).await;
        assert_eq!(s, 400, "{id}: {b}");
    }
    let (_, st) = n.get("/status").await;
    assert_eq!(st["models"], json!([]), "nothing was loaded: {st}");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_routes_need_the_admin_token() {
    let Some(dir) = models_dir() else { return };
    let mut cfg = config(dir);
    cfg.admin_token = Some("s3cret".into());
    let n = TestNeuron::start(cfg, false).await;
    let body = serde_json::to_vec(&json!({"model": MODEL_ID})).unwrap();
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "s3cret")],
    ] {
        let (s, b, _) = n.post_raw("/models/load", body.clone(), &headers).await;
        assert_eq!(s, 401, "{headers:?}: {b}");
        assert!(
            !b.to_string().contains("s3cret"),
            "the token is never echoed"
        );
        let (s, _, _) = n.post_raw("/models/unload", body.clone(), &headers).await;
        assert_eq!(s, 401);
    }
    let (s, b, _) = n
        .post_raw(
            "/models/load",
            body.clone(),
            &[("authorization", "Bearer s3cret")],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    // Inference and status stay open.
    let (s, _) = n
        .chat(json!({"model": MODEL_ID, "messages": user("hi"), "max_tokens": 1}))
        .await;
    assert_eq!(s, 200);
    let (s, _) = n.get("/status").await;
    assert_eq!(s, 200);
    n.stop().await;
}
