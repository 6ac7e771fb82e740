//! `/v1/embeddings` through the gateway in front of fake neurons: routed
//! like chat (cold load, eviction, metrics, the canonical id upstream),
//! listed by `/v1/models`, and a request of the wrong kind refused with a
//! 400 in the caller's dialect before anything is loaded.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

/// One fake neuron with a chat model `m` and an embedding model `e`, none
/// loaded, behind a gateway that lists both.
async fn chat_and_embedding_models() -> (FakeNeuron, TestGateway) {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .embedding_model("e", 100)
        .start()
        .await;
    let gw = TestGateway::start(settings(&[&a])).await;
    gw.wait_for("both listed", |v| v.models.len() == 2).await;
    (a, gw)
}

#[tokio::test]
async fn embeddings_cold_load_and_pass_through() {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .embedding_model("e", 100)
        .loaded("m")
        .start()
        .await;
    let gw = TestGateway::start(with_models(
        settings(&[&a]),
        "[[models]]\nid = \"e\"\nsource = \"e\"\naliases = [\"minilm\"]\n",
    ))
    .await;
    gw.wait_ready("m", "a").await;

    let v: Value = gw.get("/v1/models").await.json().await.unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e", "m"], "{v}");

    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "minilm", "input": ["ab", "c"]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["embedding"], json!([2.0, 0.0, 1.0]));
    assert_eq!(v["data"][1]["embedding"], json!([1.0, 1.0, 1.0]));
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    assert_eq!(a.load_calls(), ["e"]);
    // The neuron hears the canonical id, and the rest of the body as sent.
    let sent = &a.calls("/v1/embeddings")[0].body;
    assert_eq!(sent, &json!({"model": "e", "input": ["ab", "c"]}));

    let m = gw.metrics_text().await;
    assert!(m.contains("api=\"embeddings\""), "{m}");
    assert_eq!(
        metric(&m, "cortex_prompt_tokens_total", &["model=\"e\""]),
        Some(3.0),
        "{m}"
    );
}

#[tokio::test]
async fn a_request_of_the_other_kind_is_a_400_in_dialect() {
    let (a, gw) = chat_and_embedding_models().await;

    let resp = gw.post("/v1/chat/completions", &chat("e", false)).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert_eq!(v["error"]["param"], "model", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`e` is an embedding model"));

    let resp = gw.post("/v1/messages", &messages("e", false)).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("embedding model"));

    let resp = gw
        .post("/v1/responses", &json!({"model": "e", "input": "hi"}))
        .await;
    assert_eq!(resp.status(), 400);

    let resp = gw
        .post("/v1/embeddings", &json!({"model": "m", "input": "hi"}))
        .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`m` is a chat model"),
        "{v}"
    );
    let resp = gw
        .post("/v1/embeddings", &json!({"model": "nope", "input": "hi"}))
        .await;
    assert_eq!(resp.status(), 404);
    let resp = gw.post("/v1/embeddings", &json!({"input": "hi"})).await;
    assert_eq!(resp.status(), 400);

    // Nothing was loaded or sent for the refused requests.
    assert!(a.load_calls().is_empty());
    assert_eq!(a.chat_calls(), 0);
    assert!(a.calls("/v1/embeddings").is_empty());
}

#[tokio::test]
async fn an_embedding_model_evicts_and_is_evicted_like_any_model() {
    let a = FakeNeuron::builder("a")
        .budget(150)
        .file("m", 100)
        .embedding_model("e", 100)
        .loaded("m")
        .start()
        .await;
    let gw = TestGateway::start(settings(&[&a])).await;
    gw.wait_ready("m", "a").await;

    let resp = gw
        .post("/v1/embeddings", &json!({"model": "e", "input": "x"}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(a.unload_calls(), ["m"]);
    assert_eq!(a.loaded(), ["e"]);

    let resp = gw.post("/v1/chat/completions", &chat("m", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(a.unload_calls(), ["m", "e"]);
    assert_eq!(a.loaded(), ["m"]);
    assert_eq!(a.over_budget(), 0);
}

#[tokio::test]
async fn ollama_embed_goes_the_embeddings_way() {
    let (a, gw) = chat_and_embedding_models().await;

    let resp = gw
        .post(
            "/api/embed",
            &json!({"model": "e:latest", "input": ["ab", "c"]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "e");
    assert_eq!(v["embeddings"], json!([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]]));
    assert_eq!(v["prompt_eval_count"], 3);
    assert!(v["total_duration"].as_u64().unwrap() > 0, "{v}");
    let v: Value = gw
        .post(
            "/api/embed",
            &json!({"model": "e", "input": "abc", "truncate": false}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["embeddings"], json!([[3.0, 0.0, 1.0]]));
    // Ollama truncates unless told not to; the neuron hears which.
    let sent = a.calls("/v1/embeddings");
    assert_eq!(
        sent[0].body,
        json!({"model": "e", "input": ["ab", "c"], "truncate": true})
    );
    assert_eq!(
        sent[1].body,
        json!({"model": "e", "input": ["abc"], "truncate": false})
    );
    let m = gw.metrics_text().await;
    assert!(m.contains("api=\"ollama\""), "{m}");

    // Ollama's error shape: {"error": message} with the status.
    for (body, status, says) in [
        (json!({"model": "m", "input": "x"}), 400, "chat model"),
        (json!({"model": "nope", "input": "x"}), 404, "nope"),
        (json!({"model": "e", "input": 5}), 400, "input"),
    ] {
        let resp = gw.post("/api/embed", &body).await;
        assert_eq!(resp.status(), status, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
        let error = v["error"].as_str().unwrap().to_lowercase();
        assert!(error.contains(says), "{v}");
    }
}

#[tokio::test]
async fn ollama_legacy_embeddings_and_keep_alive() {
    let (a, gw) = chat_and_embedding_models().await;

    // No prompt: a bare load, as Ollama answers it.
    let resp = gw.post("/api/embeddings", &json!({"model": "e"})).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v, json!({"embedding": []}));
    assert_eq!(a.load_calls(), ["e"]);
    assert!(a.calls("/v1/embeddings").is_empty());

    // One prompt, one vector; always truncated (the route has no switch).
    let v: Value = gw
        .post(
            "/api/embeddings",
            &json!({"model": "e:latest", "prompt": "abc"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"embedding": [3.0, 0.0, 1.0]}));
    assert_eq!(
        a.calls("/v1/embeddings")[0].body,
        json!({"model": "e", "input": "abc", "truncate": true})
    );

    // keep_alive applies on both routes: 0 unloads after the answer.
    let resp = gw
        .post(
            "/api/embed",
            &json!({"model": "e", "input": "x", "keep_alive": 0}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    eventually("e unloaded after /api/embed", || async {
        a.unload_calls() == ["e"]
    })
    .await;
    let resp = gw
        .post(
            "/api/embeddings",
            &json!({"model": "e", "prompt": "x", "keep_alive": "0s"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    eventually("e unloaded after /api/embeddings", || async {
        a.unload_calls() == ["e", "e"]
    })
    .await;

    // Errors in Ollama's shape.
    for (body, status) in [
        (json!({"model": "m", "prompt": "x"}), 400),
        (json!({"model": "nope", "prompt": "x"}), 404),
        (json!({"model": "e", "prompt": 5}), 400),
    ] {
        let resp = gw.post("/api/embeddings", &body).await;
        assert_eq!(resp.status(), status, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"].is_string(), "{v}");
    }
}

#[tokio::test]
async fn ollama_embeddings_errors_carry_retry_after() {
    let (mut a, gw) = chat_and_embedding_models().await;
    let resp = gw
        .post("/api/embed", &json!({"model": "e", "input": "x"}))
        .await;
    assert_eq!(resp.status(), 200);
    a.kill().await;
    // With its only neuron gone: a 503 in Ollama's shape that says when
    // to come back, as on the chat routes.
    for (path, body) in [
        ("/api/embed", json!({"model": "e", "input": "x"})),
        ("/api/embeddings", json!({"model": "e", "prompt": "x"})),
    ] {
        let resp = no_hang(gw.post(path, &body)).await;
        assert_eq!(resp.status(), 503, "{path}");
        assert!(resp.headers().contains_key("retry-after"), "{path}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"].is_string(), "{path}: {v}");
    }
}
