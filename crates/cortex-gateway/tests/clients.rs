//! The client dialects wired in front of fake neurons: the Responses API
//! (streamed and not, `previous_response_id`, `store: false`, unknown ids)
//! and the fleet page (served without a key, `/` redirecting to it).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn responses_unstreamed_answers_a_response_object() {
    let (a, gw) = one_fake_with("m").await;
    let resp = gw
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "Hi", "instructions": "Be brief."}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"), "{v}");
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["text"], "Hello from m on a");
    // The fake counts 10 prompt tokens per message: system + user.
    assert_eq!(v["usage"]["input_tokens"], 20);
    assert_eq!(v["usage"]["output_tokens"], 3);
    let sent = &a.calls("/v1/chat/completions")[0].body;
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(sent["messages"][1]["role"], "user");
    // The request went through the chat path's metrics, labelled.
    let m = gw.metrics_text().await;
    assert!(m.contains("api=\"responses\""), "{m}");
}

#[tokio::test]
async fn previous_response_id_continues_the_conversation() {
    let (a, gw) = one_fake_with("m").await;
    let first: Value = gw
        .post("/v1/responses", &json!({"model": "m", "input": "first"}))
        .await
        .json()
        .await
        .unwrap();
    let id = first["id"].as_str().unwrap();
    let second = gw
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "second", "previous_response_id": id}),
        )
        .await;
    assert_eq!(second.status(), 200);
    let v: Value = second.json().await.unwrap();
    assert_eq!(v["previous_response_id"], id);
    let sent = &a.calls("/v1/chat/completions")[1].body;
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"], "{sent}");
    assert_eq!(sent["messages"][1]["content"], "Hello from m on a");
    assert_eq!(sent["messages"][2]["content"], "second");
}

#[tokio::test]
async fn unknown_or_unstored_previous_ids_are_404_in_openais_envelope() {
    let (a, gw) = one_fake_with("m").await;
    let unstored: Value = gw
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "x", "store": false}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unstored["store"], false);
    for id in ["resp_nope", unstored["id"].as_str().unwrap()] {
        let resp = gw
            .post(
                "/v1/responses",
                &json!({"model": "m", "input": "y", "previous_response_id": id}),
            )
            .await;
        assert_eq!(resp.status(), 404);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert_eq!(v["error"]["param"], "previous_response_id", "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(id), "{v}");
    }
    // Refused before any neuron was asked.
    assert_eq!(a.calls("/v1/chat/completions").len(), 1);
}

#[tokio::test]
async fn responses_stream_is_well_formed_and_equals_the_unstreamed_text() {
    let (_a, gw) = one_fake_with("m").await;
    let resp = gw
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "Hi", "stream": true}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = parse_sse(&resp.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        names[..2],
        ["response.created", "response.in_progress"],
        "{names:?}"
    );
    assert_eq!(names.last(), Some(&"response.completed"), "{names:?}");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.json()["type"], e.event.as_deref().unwrap(), "{e:?}");
        assert_eq!(e.json()["sequence_number"], i, "{e:?}");
    }
    let text: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("response.output_text.delta"))
        .map(|e| e.json()["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "Hello from m on a");
    let done = events.last().unwrap().json();
    assert_eq!(done["response"]["output"][0]["content"][0]["text"], text);
    assert_eq!(done["response"]["usage"]["output_tokens"], 3);
    // A streamed response is stored too.
    let id = done["response"]["id"].as_str().unwrap();
    let next = gw
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "more", "previous_response_id": id}),
        )
        .await;
    assert_eq!(next.status(), 200);
}

#[tokio::test]
async fn responses_errors_are_openais() {
    let (_a, gw) = one_fake_with("m").await;
    for (body, status) in [
        (json!({"model": "nope", "input": "x"}), 404),
        (json!({"model": "m"}), 400),
        (
            json!({"model": "m", "input": "x", "temperature": "hot"}),
            400,
        ),
    ] {
        let resp = gw.post("/v1/responses", &body).await;
        assert_eq!(resp.status(), status, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"]["message"].is_string(), "{v}");
    }
}

#[tokio::test]
async fn the_fleet_page_is_served_without_a_key() {
    let a = FakeNeuron::builder("a").file("m", 100).start().await;
    let mut s = settings(&[&a]);
    s.config.gateway.api_keys = vec!["sk-api".into()];
    s.config.gateway.admin_keys = vec!["sk-admin".into()];
    let gw = TestGateway::start(s).await;
    let page = gw.get("/ui").await;
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(page.text().await.unwrap(), cortex_gateway::ui::FLEET_HTML);
    let root = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(gw.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), 307);
    assert_eq!(root.headers()["location"], "/ui");
    // What the page reads stays guarded.
    assert_eq!(gw.get("/admin/fleet").await.status(), 401);
}

#[tokio::test]
async fn model_entries_carry_the_context_length() {
    // `m` is loaded (the neuron reports its window); `cold` is a file only
    // (its header's window, from the neuron's `available` list).
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .file("cold", 100)
        .loaded("m")
        .start()
        .await;
    let gw = TestGateway::start(settings(&[&a])).await;
    gw.wait_ready("m", "a").await;
    let list: Value = gw.get("/v1/models").await.json().await.unwrap();
    let by_id = |id: &str| {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id("m")["context_length"], 2048, "{list}");
    assert_eq!(by_id("cold")["context_length"], 2048, "{list}");
    let one: Value = gw.get("/v1/models/cold").await.json().await.unwrap();
    assert_eq!(one["context_length"], 2048, "{one}");
    // The admin view (what `cortex models` prints) has it too.
    let view = gw.view().await;
    assert!(view.models.iter().all(|m| m.context_length == Some(2048)));
}
