//! Tests for [`super`]: chat completion `json!` in, Ollama object out.
#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub(crate) fn at(unix_ms: u64) -> Now {
    Now {
        instant: Instant::now(),
        unix_ms,
    }
}

pub(crate) fn completion(message: Value, finish: &str, p: u64, c: u64) -> ChatCompletion {
    serde_json::from_value(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "neuron-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
    }))
    .unwrap()
}

fn timings() -> Timings {
    Timings {
        load: Duration::from_millis(5),
        prompt_eval: Duration::from_millis(20),
        eval: Duration::from_millis(100),
    }
}

#[test]
fn chat_answer_with_stats() {
    let got = chat_response(
        completion(
            json!({"role": "assistant", "content": "Paris."}),
            "stop",
            26,
            3,
        ),
        "smollm2",
        at(1_717_537_111_837),
        timings(),
    );
    assert_eq!(
        serde_json::to_value(&got).unwrap(),
        json!({
            "model": "smollm2", "created_at": "2024-06-04T21:38:31.837Z",
            "message": {"role": "assistant", "content": "Paris."},
            "done": true, "done_reason": "stop",
            "total_duration": 125_000_000u64, "load_duration": 5_000_000u64,
            "prompt_eval_count": 26, "prompt_eval_duration": 20_000_000u64,
            "eval_count": 3, "eval_duration": 100_000_000u64
        })
    );
}

#[test]
fn tool_calls_have_object_arguments() {
    let got = chat_response(
        completion(
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "broken", "arguments": "[1"}}
            ]}),
            "tool_calls",
            10,
            8,
        ),
        "m",
        at(0),
        Timings::default(),
    );
    assert_eq!(got.done_reason.as_deref(), Some("stop"));
    assert_eq!(
        serde_json::to_value(&got.message).unwrap(),
        json!({"role": "assistant", "content": "", "tool_calls": [
            {"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}},
            {"function": {"index": 1, "name": "broken", "arguments": {}}}
        ]})
    );
}

#[test]
fn generate_answer_and_length() {
    let got = generate_response(
        completion(
            json!({"role": "assistant", "content": "The sky"}),
            "length",
            5,
            2,
        ),
        "m",
        at(0),
        timings(),
    );
    assert_eq!(got.response, "The sky");
    assert_eq!(got.done_reason.as_deref(), Some("length"));
    assert_eq!(got.stats.unwrap().eval_count, 2);
}

#[test]
fn load_and_unload_answers() {
    let v = serde_json::to_value(chat_lifecycle("m", at(0), false)).unwrap();
    assert_eq!(
        v,
        json!({"model": "m", "created_at": "1970-01-01T00:00:00.000Z",
               "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "load"})
    );
    let v = serde_json::to_value(generate_lifecycle("m", at(0), true)).unwrap();
    assert_eq!(
        v,
        json!({"model": "m", "created_at": "1970-01-01T00:00:00.000Z",
               "response": "", "done": true, "done_reason": "unload"})
    );
}

#[test]
fn embed_answer() {
    let got = embed_response(
        "minilm",
        vec![vec![0.5, -0.5], vec![1.0, 0.0]],
        7,
        timings(),
    );
    assert_eq!(
        serde_json::to_value(&got).unwrap(),
        json!({"model": "minilm", "embeddings": [[0.5, -0.5], [1.0, 0.0]],
               "total_duration": 125_000_000u64, "load_duration": 5_000_000u64,
               "prompt_eval_count": 7})
    );
}
