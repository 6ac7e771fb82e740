//! Tests for [`super`]: chat completion `json!` in, `response` object out.
#![allow(clippy::unwrap_used)]

use super::*;
use cortex_core::responses::ResponsesRequest;
use serde_json::{json, Value};

pub(crate) fn seed() -> ResponseSeed {
    let req: ResponsesRequest = serde_json::from_value(json!({
        "model": "smollm2", "input": "x", "instructions": "be brief", "max_output_tokens": 50,
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "metadata": {"k": "v"}
    }))
    .unwrap();
    ResponseSeed::new(&req, "resp_abc".into(), 1_700_000_000)
}

fn completion(message: Value, finish: &str, usage: Value) -> ChatCompletion {
    serde_json::from_value(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "neuron-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": usage
    }))
    .unwrap()
}

fn usage_json(p: u64, c: u64) -> Value {
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

#[test]
fn text_answer() {
    let got = chat_to_response(
        completion(
            json!({"role": "assistant", "content": "Paris."}),
            "stop",
            json!({"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23,
                   "prompt_tokens_details": {"cached_tokens": 16}}),
        ),
        &seed(),
    );
    let v = serde_json::to_value(&got).unwrap();
    assert_eq!(
        v,
        json!({
            "id": "resp_abc", "object": "response", "created_at": 1_700_000_000u64,
            "status": "completed", "error": null, "incomplete_details": null,
            "instructions": "be brief", "max_output_tokens": 50, "model": "smollm2",
            "output": [{"type": "message", "id": "msg_abc_0", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": "Paris.", "annotations": []}]}],
            "parallel_tool_calls": true, "previous_response_id": null,
            "temperature": null, "top_p": null, "tool_choice": "auto",
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
            "store": true, "text": {"format": {"type": "text"}}, "truncation": "disabled",
            "metadata": {"k": "v"},
            "usage": {"input_tokens": 20,
                      "input_tokens_details": {"cached_tokens": 16, "cache_write_tokens": 0},
                      "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": 23},
            "user": null
        })
    );
    assert_eq!(got.output_text(), "Paris.");
}

#[test]
fn tool_calls_become_function_call_items() {
    let got = chat_to_response(
        completion(
            json!({"role": "assistant", "content": "\n\n", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
            ]}),
            "tool_calls",
            usage_json(30, 12),
        ),
        &seed(),
    );
    assert_eq!(got.status, ResponseStatus::Completed);
    assert_eq!(
        serde_json::to_value(&got.output).unwrap(),
        json!([
            {"type": "function_call", "id": "fc_abc_0", "call_id": "call_1", "name": "get_weather",
             "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
            {"type": "function_call", "id": "fc_abc_1", "call_id": "call_abc_1", "name": "get_time",
             "arguments": "{}", "status": "completed"}
        ])
    );
    assert_eq!(got.usage.unwrap().input_tokens_details.cached_tokens, 0);
}

#[test]
fn text_before_a_tool_call_is_kept() {
    let got = chat_to_response(
        completion(
            json!({"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
            "tool_calls",
            usage_json(1, 1),
        ),
        &seed(),
    );
    assert_eq!(got.output.len(), 2);
    assert_eq!(got.output_text(), "Let me check.");
    assert_eq!(got.output[1].id(), "fc_abc_1");
}

#[test]
fn length_is_incomplete_max_output_tokens() {
    let got = chat_to_response(
        completion(
            json!({"role": "assistant", "content": "The capital"}),
            "length",
            usage_json(5, 50),
        ),
        &seed(),
    );
    assert_eq!(got.status, ResponseStatus::Incomplete);
    assert_eq!(
        got.incomplete_details,
        Some(IncompleteDetails {
            reason: "max_output_tokens".into()
        })
    );
    assert_eq!(got.output[0].status(), ItemStatus::Incomplete);
    let filtered = chat_to_response(
        completion(
            json!({"role": "assistant", "content": ""}),
            "content_filter",
            usage_json(5, 0),
        ),
        &seed(),
    );
    assert_eq!(
        filtered.incomplete_details.unwrap().reason,
        "content_filter"
    );
}

#[test]
fn empty_answers_still_have_a_message() {
    let got = chat_to_response(
        completion(
            json!({"role": "assistant", "content": null}),
            "stop",
            usage_json(5, 0),
        ),
        &seed(),
    );
    assert_eq!(got.output.len(), 1);
    assert_eq!(got.output_text(), "");
    let mut none = completion(
        json!({"role": "assistant", "content": "x"}),
        "stop",
        usage_json(1, 1),
    );
    none.choices.clear();
    let got = chat_to_response(none, &seed());
    assert_eq!(
        (got.output.len(), got.status),
        (1, ResponseStatus::Completed)
    );
}
