//! Tests for [`super`]: OpenAI `json!` in, Anthropic struct out.
#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::json;

fn completion(choices: Value) -> ChatCompletion {
    serde_json::from_value(json!({
        "id": "chatcmpl-42",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "qwen2.5-7b-instruct-q4_k_m",
        "choices": choices,
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    }))
    .unwrap()
}

fn message(v: Value) -> MessagesResponse {
    serde_json::from_value(v).unwrap()
}

#[test]
fn text_answer() {
    let got = chat_to_message(
        completion(json!([{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!"},
            "finish_reason": "stop",
            "logprobs": null
        }])),
        "claude-sonnet-4",
    );
    let want = message(json!({
        "id": "msg_chatcmpl-42",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "Hello!"}],
        "model": "claude-sonnet-4",
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 7,
                  "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
    }));
    assert_eq!(got, want);
    // The wire form, as the SDK reads it.
    let wire = serde_json::to_value(&got).unwrap();
    assert_eq!(wire["content"], json!([{"type": "text", "text": "Hello!"}]));
    assert_eq!(wire["stop_sequence"], Value::Null);
}

#[test]
fn tool_calls_answer() {
    let got = chat_to_message(
        completion(json!([{
            "index": 0,
            "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}},
                {"id": "", "type": "function", "function": {"name": "clock", "arguments": ""}},
                {"id": "call_3", "type": "function", "function": {"name": "bad", "arguments": "{\"trunc"}}
            ]},
            "finish_reason": "tool_calls",
            "logprobs": null
        }])),
        "m",
    );
    assert_eq!(got.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(
        got.content.len(),
        3,
        "no empty text block before tool calls"
    );
    assert_eq!(
        got.content[0],
        ContentBlock::ToolUse {
            id: "call_1".into(),
            name: "weather".into(),
            input: json!({"city": "Paris"})
        }
    );
    let ContentBlock::ToolUse { id, input, .. } = &got.content[1] else {
        panic!("{:?}", got.content[1]);
    };
    assert!(id.starts_with("toolu_") && id.len() == 30, "{id}");
    assert_eq!(input, &json!({}));
    let ContentBlock::ToolUse { input, .. } = &got.content[2] else {
        panic!("{:?}", got.content[2]);
    };
    assert_eq!(input, &json!({}));
}

#[test]
fn text_then_tool_call_with_a_stop_finish_is_tool_use() {
    let got = chat_to_message(
        completion(json!([{
            "index": 0,
            "message": {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
            ]},
            "finish_reason": "stop",
            "logprobs": null
        }])),
        "m",
    );
    assert_eq!(
        serde_json::to_value(&got.content).unwrap(),
        json!([
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "ls", "input": {}}
        ])
    );
    assert_eq!(got.stop_reason, Some(StopReason::ToolUse));
}

#[test]
fn stop_sequence_and_max_tokens() {
    let got = chat_to_message(
        completion(json!([{
            "index": 0,
            "message": {"role": "assistant", "content": "1, 2, 3"},
            "finish_reason": "stop",
            "stop_reason": "END",
            "logprobs": null
        }])),
        "m",
    );
    assert_eq!(got.stop_reason, Some(StopReason::StopSequence));
    assert_eq!(got.stop_sequence.as_deref(), Some("END"));

    let got = chat_to_message(
        completion(json!([{
            "index": 0,
            "message": {"role": "assistant", "content": "1, 2,"},
            "finish_reason": "length",
            "logprobs": null
        }])),
        "m",
    );
    assert_eq!(got.stop_reason, Some(StopReason::MaxTokens));
    assert_eq!(got.stop_sequence, None);
}

#[test]
fn empty_answers_still_have_a_text_block() {
    for choices in [
        json!([]),
        json!([{"index": 0, "message": {"role": "assistant", "content": null}, "finish_reason": null, "logprobs": null}]),
    ] {
        let got = chat_to_message(completion(choices), "m");
        assert_eq!(
            got.content,
            vec![ContentBlock::Text {
                text: String::new(),
                extra: Map::new()
            }]
        );
        assert_eq!(got.stop_reason, Some(StopReason::EndTurn));
    }
}

#[test]
fn message_ids_are_prefixed_once() {
    assert_eq!(message_id("chatcmpl-1"), "msg_chatcmpl-1");
    assert_eq!(message_id("msg_01"), "msg_01");
}

#[test]
fn finish_reason_table() {
    use FinishReason::*;
    let cases = [
        (None, None, (None, None)),
        (Some(Stop), None, (Some(StopReason::EndTurn), None)),
        (Some(Stop), Some(""), (Some(StopReason::EndTurn), None)),
        (
            Some(Stop),
            Some("###"),
            (Some(StopReason::StopSequence), Some("###".to_string())),
        ),
        (Some(Length), None, (Some(StopReason::MaxTokens), None)),
        (Some(ToolCalls), None, (Some(StopReason::ToolUse), None)),
        (Some(ContentFilter), None, (Some(StopReason::EndTurn), None)),
    ];
    for (finish, stop, want) in cases {
        assert_eq!(
            finish_to_stop_reason(finish, stop),
            want,
            "{finish:?} {stop:?}"
        );
    }
    assert_eq!(settle_stop_reason(None, false), StopReason::EndTurn);
    assert_eq!(
        settle_stop_reason(Some(StopReason::EndTurn), true),
        StopReason::ToolUse
    );
    assert_eq!(
        settle_stop_reason(Some(StopReason::MaxTokens), true),
        StopReason::MaxTokens
    );
}
