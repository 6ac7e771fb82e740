//! Tool calls through the neuron API with the real default model: a named
//! `tool_choice` makes the model call the function (streamed and not), the
//! tool's result comes back and the model answers with text, and bad
//! `tool_choice` values are refused in the OpenAI dialect.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

fn tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "The city name"}
        }, "required": ["city"]}
    }}])
}

fn named() -> Value {
    json!({"type": "function", "function": {"name": "get_weather"}})
}

const QUESTION: &str = "What is the weather in Paris?";

fn call_request() -> Value {
    json!({"model": MODEL_ID, "messages": user(QUESTION), "tools": tools(),
           "tool_choice": named(), "temperature": 0, "max_tokens": 40})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_tool_choice_makes_the_model_call_it() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, false).await;
    let (status, body) = n.chat(call_request()).await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    assert!(choice["message"]["content"].is_null(), "{body}");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{body}");
    assert_eq!(calls[0]["type"], "function");
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    // The arguments are the model's: the city it was asked about.
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    let city = args["city"].as_str().unwrap_or_else(|| panic!("{args}"));
    assert!(city.contains("Paris"), "{args}");

    // The forced start of the call counts as completion, not prompt: the
    // prompt is what /tokenize (and count_tokens) says it is.
    let (_, tok) = n
        .post(
            "/tokenize",
            json!({"model": MODEL_ID, "messages": user(QUESTION), "tools": tools()}),
        )
        .await;
    let u = &body["usage"];
    assert_eq!(u["prompt_tokens"], tok["count"], "{body}");
    assert!(u["completion_tokens"].as_u64().unwrap() > 10, "{body}");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_call_arrives_as_tool_call_deltas() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, false).await;
    let (_, full) = n.chat(call_request()).await;
    let mut req = call_request();
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let (status, data) = n.chat_stream(req, &[]).await;
    assert_eq!(status, 200, "{data:?}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    // The role first, with no text at all before the call.
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant"})
    );
    assert!(chunks
        .iter()
        .all(|c| c["choices"][0]["delta"].get("content").is_none()));
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(deltas.len(), 2, "{chunks:?}");
    assert_eq!(deltas[0]["index"], 0);
    assert_eq!(deltas[0]["type"], "function");
    assert_eq!(deltas[0]["function"]["name"], "get_weather");
    assert_eq!(deltas[0]["function"]["arguments"], "");
    assert_eq!(deltas[1]["index"], 0);
    let full_call = &full["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(
        deltas[1]["function"]["arguments"],
        full_call["function"]["arguments"]
    );
    let finish = chunks
        .iter()
        .find(|c| !c["choices"][0]["finish_reason"].is_null())
        .unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    let usage = &chunks.last().unwrap()["usage"];
    for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(usage[k], full["usage"][k], "{k}");
    }
    // The same request again: its prompt comes from the prefix cache.
    let cached = usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(cached >= 16, "{usage}");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tool_result_comes_back_and_the_model_answers_with_text() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, false).await;
    let (_, first) = n.chat(call_request()).await;
    let call = first["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "get_weather", "{first}");
    let messages = json!([
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": null, "tool_calls": [call.clone()]},
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 C"},
    ]);
    for stream in [false, true] {
        let req = json!({"model": MODEL_ID, "messages": messages, "tools": tools(),
                         "temperature": 0, "max_tokens": 40, "stream": stream});
        let (text, finish) = if stream {
            let (status, data) = n.chat_stream(req, &[]).await;
            assert_eq!(status, 200);
            let (text, finish) = stream_text(&data);
            (text, finish.unwrap()["choices"][0]["finish_reason"].clone())
        } else {
            let (status, body) = n.chat(req).await;
            assert_eq!(status, 200, "{body}");
            assert!(
                body["choices"][0]["message"].get("tool_calls").is_none(),
                "{body}"
            );
            let text = body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string();
            (text, body["choices"][0]["finish_reason"].clone())
        };
        assert!(finish == "stop" || finish == "length", "{finish}");
        assert!(!text.trim().is_empty());
    }
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tool_choices_are_refused_in_the_openai_dialect() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, false).await;
    for (tools, choice) in [
        (
            tools(),
            json!({"type": "function", "function": {"name": "no_such_tool"}}),
        ),
        (tools(), json!("sometimes")),
        (tools(), json!({"type": "function"})),
        (json!(null), json!("required")),
        (json!(null), named()),
    ] {
        let (status, body) = n
            .chat(
                json!({"model": MODEL_ID, "messages": user("hi"), "tools": tools,
                         "tool_choice": choice, "max_tokens": 1}),
            )
            .await;
        assert_eq!(status, 400, "{choice}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(body["error"]["param"], "tool_choice", "{body}");
    }
    n.stop().await;
}
