//! Ollama's API wired in front of fake neurons: the catalogue routes
//! (`/api/tags`, `/api/ps`, `/api/show`, `/api/version`), `/api/chat` and
//! `/api/generate` (NDJSON and not, options forwarded, refusals), bare loads
//! and unloads, `keep_alive` acting on the fleet, and errors as
//! `{"error": …}`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use cortex_core::neuron_api::ModelState;
use serde_json::{json, Value};

/// The NDJSON lines of a streamed answer.
async fn lines(resp: reqwest::Response) -> Vec<Value> {
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    assert!(text.ends_with('\n'), "{text:?}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn tags_ps_show_and_version_describe_the_fleet() {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .file_source("small", "SmolLM2-135M-Instruct.Q4_1.gguf", 50)
        .loaded("m")
        .start()
        .await;
    let gw = TestGateway::start(settings(&[&a])).await;
    gw.wait_ready("m", "a").await;
    let tags: Value = gw.get("/api/tags").await.json().await.unwrap();
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["m", "small"], "{tags}");
    let small = &tags["models"][1];
    assert_eq!(small["size"], 50, "the file's size: {small}");
    assert_eq!(small["details"]["quantization_level"], "Q4_1");
    assert_eq!(small["details"]["parameter_size"], "135M");
    assert_eq!(small["details"]["family"], "llama");
    assert_eq!(small["digest"].as_str().unwrap().len(), 64);

    let ps: Value = gw.get("/api/ps").await.json().await.unwrap();
    let running = ps["models"].as_array().unwrap();
    assert_eq!(running.len(), 1, "{ps}");
    assert_eq!(running[0]["name"], "m");
    assert_eq!(running[0]["size_vram"], 0, "on the CPU");
    assert_eq!(running[0]["context_length"], 2048);
    // Idle unloading is off in these settings: it never expires.
    assert!(running[0]["expires_at"]
        .as_str()
        .unwrap()
        .starts_with("9999-"));

    for name in ["small", "small:latest"] {
        let show: Value = gw
            .post("/api/show", &json!({"model": name}))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(show["model_info"]["general.architecture"], "llama");
        // Read from the file before any load (the neuron's `available`).
        assert_eq!(show["model_info"]["llama.context_length"], 2048, "{show}");
        assert_eq!(show["capabilities"], json!(["completion", "tools"]));
    }
    let unknown = gw.post("/api/show", &json!({"model": "nope"})).await;
    assert_eq!(unknown.status(), 404);
    let e: Value = unknown.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("nope"), "{e}");

    let v: Value = gw.get("/api/version").await.json().await.unwrap();
    assert!(v["version"].as_str().unwrap().contains('.'), "{v}");
}

#[tokio::test]
async fn chat_unstreamed_forwards_options_and_answers_one_object() {
    let (a, gw) = one_fake_with("m").await;
    let resp = gw
        .post(
            "/api/chat",
            &json!({"model": "m:latest", "stream": false,
                "messages": [{"role": "system", "content": "be brief"},
                             {"role": "user", "content": "Hi"}],
                "tools": [{"type": "function", "function": {"name": "get_time",
                    "parameters": {"type": "object", "properties": {}}}}],
                "options": {"temperature": 0.2, "top_p": 0.9, "top_k": 20,
                    "num_predict": 7, "stop": ["\n\n"], "seed": 42}}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "m");
    assert_eq!(v["message"]["role"], "assistant");
    assert_eq!(v["message"]["content"], "Hello from m on a");
    assert_eq!(v["done"], true);
    assert_eq!(v["done_reason"], "stop");
    // The fake counts 10 prompt tokens per message and one per piece.
    assert_eq!(v["prompt_eval_count"], 20);
    assert_eq!(v["eval_count"], 3);
    assert!(v["total_duration"].as_u64().unwrap() > 0, "{v}");
    let sent = &a.calls("/v1/chat/completions")[0].body;
    assert_eq!(sent["model"], "m");
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["top_p"], 0.9);
    assert_eq!(sent["top_k"], 20);
    assert_eq!(sent["max_tokens"], 7);
    assert_eq!(sent["stop"], json!(["\n\n"]));
    assert_eq!(sent["seed"], 42);
    assert_eq!(sent["tools"][0]["function"]["name"], "get_time");
    assert_eq!(sent["messages"][0]["role"], "system");
    let m = gw.metrics_text().await;
    assert!(m.contains("api=\"ollama\""), "{m}");
    // A translated answer's tokens are counted too.
    let labels = ["model=\"m\"", "node=\"a\""];
    assert_eq!(
        metric(&m, "cortex_prompt_tokens_total", &labels),
        Some(20.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "cortex_completion_tokens_total", &labels),
        Some(3.0),
        "{m}"
    );
}

#[tokio::test]
async fn chat_streams_ndjson_by_default_equal_to_the_unstreamed_answer() {
    let (a, gw) = one_fake_with("m").await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}]});
    let got = lines(gw.post("/api/chat", &body).await).await;
    let (last, fragments) = got.split_last().unwrap();
    assert!(!fragments.is_empty());
    for f in fragments {
        assert_eq!(f["done"], false, "{f}");
        assert_eq!(f["model"], "m");
    }
    let text: String = fragments
        .iter()
        .map(|f| f["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(last["done"], true, "{last}");
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["eval_count"], 3);
    assert_eq!(last["prompt_eval_count"], 10);
    let mut one = body.clone();
    one["stream"] = json!(false);
    let whole: Value = gw.post("/api/chat", &one).await.json().await.unwrap();
    assert_eq!(text, whole["message"]["content"].as_str().unwrap());
    // Upstream was asked for a stream with usage.
    let sent = &a.calls("/v1/chat/completions")[0].body;
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn generate_streamed_and_not() {
    let (a, gw) = one_fake_with("m").await;
    let v: Value = gw
        .post(
            "/api/generate",
            &json!({"model": "m", "prompt": "Why?", "system": "be brief", "stream": false}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["response"], "Hello from m on a");
    assert_eq!(v["done"], true);
    let sent = &a.calls("/v1/chat/completions")[0].body;
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "Why?"}])
    );
    let got = lines(
        gw.post("/api/generate", &json!({"model": "m", "prompt": "Why?"}))
            .await,
    )
    .await;
    let text: String = got
        .iter()
        .map(|l| l["response"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello from m on a");
    assert_eq!(got.last().unwrap()["done"], true);
}

#[tokio::test]
async fn bad_input_and_unknown_models_are_ollama_errors() {
    let (a, gw) = one_fake_with("m").await;
    for (path, body, status, says) in [
        (
            "/api/chat",
            json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
            404,
            "nope",
        ),
        (
            "/api/generate",
            json!({"model": "nope", "prompt": "x"}),
            404,
            "nope",
        ),
        (
            "/api/generate",
            json!({"model": "m", "prompt": "x", "raw": true}),
            400,
            "raw",
        ),
        (
            "/api/generate",
            json!({"model": "m", "prompt": "x", "suffix": "y"}),
            400,
            "suffix",
        ),
        (
            "/api/generate",
            json!({"model": "m", "prompt": "x", "template": "{{ .Prompt }}"}),
            400,
            "template",
        ),
        (
            "/api/generate",
            json!({"model": "m", "prompt": "x", "images": ["aGk="]}),
            400,
            "images",
        ),
        (
            "/api/chat",
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "keep_alive": "soon"}),
            400,
            "keep_alive",
        ),
        (
            "/api/chat",
            json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
            400,
            "wizard",
        ),
        ("/api/chat", json!({"messages": []}), 400, "model"),
    ] {
        let resp = gw.post(path, &body).await;
        assert_eq!(resp.status(), status, "{body}");
        let v: Value = resp.json().await.unwrap();
        let e = v["error"].as_str().unwrap_or_else(|| panic!("{body}: {v}"));
        assert!(e.contains(says), "{body}: {e}");
        assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    }
    // Unknown routes under /api/ answer in Ollama's shape too.
    let v: Value = gw.get("/api/pull").await.json().await.unwrap();
    assert!(v["error"].is_string(), "{v}");
    // Embeddings from a chat model: refused in Ollama's shape.
    let resp = gw
        .post("/api/embed", &json!({"model": "m", "input": "x"}))
        .await;
    assert_eq!(resp.status(), 400);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    assert!(a.calls("/v1/chat/completions").is_empty());
}

#[tokio::test]
async fn bare_requests_load_and_unload() {
    let a = FakeNeuron::builder("a").file("m", 100).start().await;
    let gw = TestGateway::start(settings(&[&a])).await;
    gw.wait_up(&["a"]).await;
    let v: Value = gw
        .post("/api/generate", &json!({"model": "m", "stream": false}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["done_reason"], "load", "{v}");
    assert_eq!(v["response"], "");
    assert_eq!(a.load_calls(), ["m"]);
    gw.wait_ready("m", "a").await;
    let got = lines(
        gw.post(
            "/api/chat",
            &json!({"model": "m", "messages": [], "keep_alive": 0}),
        )
        .await,
    )
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["done_reason"], "unload");
    assert_eq!(a.unload_calls(), ["m"]);
    gw.wait_for("m unloaded", |v| placement(v, "m", "a").is_none())
        .await;
    assert!(a.calls("/v1/chat/completions").is_empty());
}

#[tokio::test]
async fn keep_alive_zero_unloads_after_the_request() {
    let (a, gw) = one_fake_with("m").await;
    // Streamed: unloaded once the stream is over.
    let got = lines(
        gw.post(
            "/api/chat",
            &json!({"model": "m", "keep_alive": 0,
                "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(got.last().unwrap()["done"], true);
    eventually("m unloaded after the stream", || async {
        a.unload_calls() == ["m"]
    })
    .await;
    gw.wait_for("m gone from the fleet", |v| {
        placement(v, "m", "a").is_none()
    })
    .await;
    // Unstreamed: the next request loads it again, then it goes again.
    let v: Value = gw
        .post(
            "/api/generate",
            &json!({"model": "m", "prompt": "x", "stream": false, "keep_alive": "0s"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["response"], "Hello from m on a", "{v}");
    assert!(
        v["load_duration"].as_u64().unwrap() > 0,
        "a cold start: {v}"
    );
    eventually("m unloaded after the answer", || async {
        a.unload_calls() == ["m", "m"]
    })
    .await;
}

#[tokio::test]
async fn keep_alive_durations_override_the_idle_rule_until_the_unload() {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .loaded("m")
        .start()
        .await;
    let mut s = settings(&[&a]);
    // The default would unload within the test; -1 must keep it.
    s.config.eviction.idle_unload_after = ms(300);
    let gw = TestGateway::start(s).await;
    gw.wait_ready("m", "a").await;
    let chat = |keep: Value| {
        json!({"model": "m", "stream": false, "keep_alive": keep,
            "messages": [{"role": "user", "content": "Hi"}]})
    };
    assert_eq!(gw.post("/api/chat", &chat(json!(-1))).await.status(), 200);
    let ps: Value = gw.get("/api/ps").await.json().await.unwrap();
    eventually("keep_alive -1 shows as never expiring", || async {
        let ps: Value = gw.get("/api/ps").await.json().await.unwrap();
        ps["models"][0]["expires_at"]
            .as_str()
            .is_some_and(|e| e.starts_with("9999-"))
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert!(
        a.unload_calls().is_empty(),
        "kept loaded past idle_unload_after: {ps}"
    );
    assert_eq!(
        placement(&gw.view().await, "m", "a"),
        Some(ModelState::Ready)
    );
    // A duration replaces it: short enough to go during the test.
    assert_eq!(gw.post("/api/chat", &chat(json!("1s"))).await.status(), 200);
    eventually("unloaded after its own keep_alive", || async {
        a.unload_calls() == ["m"]
    })
    .await;
}
