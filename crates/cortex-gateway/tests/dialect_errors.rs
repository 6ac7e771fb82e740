//! Errors in the caller's dialect, against a fake neuron: an unknown model,
//! malformed JSON and a body over `limits.max_body` (through the router and
//! over a socket) as OpenAI or Anthropic errors with that dialect's status
//! codes, and every field of a Messages / count_tokens body walked against
//! Anthropic's rules.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn errors_come_in_the_callers_dialect() {
    let a = FakeNeuron::serving("a", "m").await;
    let mut s = settings(&[&a]);
    s.config.limits.max_body = kib(1);
    let gw = TestGateway::start(s).await;
    gw.wait_ready("m", "a").await;
    let oa = "/v1/chat/completions";
    let an = "/v1/messages";

    // Unknown model: 404.
    let (st, _, v) = gw.oneshot_post(oa, chat("nope", false).to_string()).await;
    assert_eq!(st, 404);
    assert_openai_error(&v, "invalid_request_error", Some("model_not_found"));
    assert_eq!(v["error"]["param"], "model");
    for path in [an, "/v1/messages/count_tokens"] {
        let (st, _, v) = gw
            .oneshot_post(path, messages("nope", false).to_string())
            .await;
        assert_eq!(st, 404, "{path}");
        assert_anthropic_error(&v, "not_found_error");
    }

    // Malformed JSON: 400.
    let (st, _, v) = gw.oneshot_post(oa, "{\"model\": ").await;
    assert_eq!(st, 400);
    assert_openai_error(&v, "invalid_request_error", None);
    let (st, _, v) = gw.oneshot_post(an, "{\"model\": ").await;
    assert_eq!(st, 400);
    assert_anthropic_error(&v, "invalid_request_error");

    // Over limits.max_body: 413, through the router and over a socket.
    let big = format!("{{\"model\": \"m\", \"pad\": \"{}\"}}", "x".repeat(4096));
    let (st, _, v) = gw.oneshot_post(oa, big.clone()).await;
    assert_eq!(st, 413);
    assert_openai_error(&v, "invalid_request_error", Some("request_too_large"));
    let (st, _, v) = gw.oneshot_post(an, big.clone()).await;
    assert_eq!(st, 413);
    assert_anthropic_error(&v, "request_too_large");
    // Over a socket: the same answers. And any route, in its dialect: a
    // declared body over the limit is refused before its handler.
    let padding = vec![b' '; 4096];
    for (method, path, body, anthropic) in [
        (reqwest::Method::POST, an, big.clone().into_bytes(), true),
        (reqwest::Method::POST, oa, big.clone().into_bytes(), false),
        (
            reqwest::Method::POST,
            "/v1/messages/count_tokens",
            padding.clone(),
            true,
        ),
        (reqwest::Method::GET, "/v1/models", padding, false),
    ] {
        let resp = gw
            .http
            .request(method, gw.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 413, "{path}");
        let v: Value = resp.json().await.unwrap();
        if anthropic {
            assert_anthropic_error(&v, "request_too_large");
        } else {
            assert_openai_error(&v, "invalid_request_error", Some("request_too_large"));
        }
    }
    for (path, body) in [(oa, "{\"model\": "), (an, "{\"model\": ")] {
        let resp = gw.http.post(gw.url(path)).body(body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{path}");
    }
    let resp = gw.post(oa, &chat("nope", false)).await;
    assert_eq!(resp.status(), 404);
    let v = resp.json().await.unwrap();
    assert_openai_error(&v, "invalid_request_error", Some("model_not_found"));

    assert_eq!(a.chat_calls(), 0, "no failed request reached the neuron");
}

/// Every field of a Messages / count_tokens body walked against
/// Anthropic's rules: each bad body is a 400 `invalid_request_error` in
/// Anthropic's envelope, on both routes where the field exists, and none
/// reaches the neuron.
#[tokio::test]
async fn bad_anthropic_bodies_are_400_field_by_field() {
    let a = FakeNeuron::serving("a", "m").await;
    let gw = TestGateway::start(settings(&[&a])).await;
    gw.wait_ready("m", "a").await;
    let user = json!([{"role": "user", "content": "hi"}]);
    let body = |extra: Value| {
        let mut b = json!({"model": "m", "max_tokens": 8, "messages": user.clone()});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    let tool_use =
        |id: &str, name: &str| json!({"type": "tool_use", "id": id, "name": name, "input": {}});
    // (what, body, also on count_tokens)
    let cases = [
        ("missing model", body(json!({"model": null})), true),
        ("model not a string", body(json!({"model": 5})), true),
        ("missing messages", body(json!({"messages": null})), true),
        ("empty messages", body(json!({"messages": []})), true),
        ("messages not a list", body(json!({"messages": "hi"})), true),
        (
            "missing max_tokens",
            body(json!({"max_tokens": null})),
            false,
        ),
        ("max_tokens 0", body(json!({"max_tokens": 0})), false),
        (
            "max_tokens a string",
            body(json!({"max_tokens": "8"})),
            false,
        ),
        (
            "message without content",
            body(json!({"messages": [{"role": "user"}]})),
            true,
        ),
        (
            "message without role",
            body(json!({"messages": [{"content": "x"}]})),
            true,
        ),
        (
            "unknown role",
            body(json!({"messages": [{"role": "tool", "content": "x"}]})),
            true,
        ),
        (
            "empty user content",
            body(json!({"messages": [{"role": "user", "content": ""}]})),
            true,
        ),
        (
            "empty block list",
            body(json!({"messages": [{"role": "user", "content": []}]})),
            true,
        ),
        (
            "content a number",
            body(json!({"messages": [{"role": "user", "content": 3}]})),
            true,
        ),
        (
            "block without type",
            body(json!({"messages": [{"role": "user", "content": [{"text": "x"}]}]})),
            true,
        ),
        (
            "tool_use without id",
            body(json!({"messages": [{"role": "user", "content": "q"},
            {"role": "assistant", "content": [tool_use("", "f")]}]})),
            true,
        ),
        (
            "tool_result without tool_use_id",
            body(
                json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]}),
            ),
            true,
        ),
        (
            "temperature above 1",
            body(json!({"temperature": 1.5})),
            false,
        ),
        (
            "temperature a string",
            body(json!({"temperature": "hot"})),
            false,
        ),
        ("top_p above 1", body(json!({"top_p": 2})), false),
        ("top_k negative", body(json!({"top_k": -1})), false),
        (
            "stop_sequences not a list",
            body(json!({"stop_sequences": "x"})),
            false,
        ),
        ("system a number", body(json!({"system": 5})), true),
        (
            "tool without name",
            body(json!({"tools": [{"input_schema": {"type": "object"}}]})),
            true,
        ),
    ];
    for (what, b, on_count) in cases {
        let mut routes = vec!["/v1/messages"];
        if on_count {
            routes.push("/v1/messages/count_tokens");
        }
        for path in routes {
            let (st, _, v) = gw.oneshot_post(path, b.to_string()).await;
            assert_eq!(st, 400, "{what} on {path}: {b} -> {v}");
            assert_anthropic_error(&v, "invalid_request_error");
        }
    }
    // A final assistant message may be empty (a prefill), and the good
    // body passes.
    let ok = body(
        json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}),
    );
    let (st, _, v) = gw.oneshot_post("/v1/messages", ok.to_string()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        a.chat_calls(),
        1,
        "only the good request reached the neuron"
    );
}
