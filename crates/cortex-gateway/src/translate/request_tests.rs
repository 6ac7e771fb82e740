//! Tests for [`super`]: Anthropic `json!` in, OpenAI struct out.
#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::json;

fn anthropic(v: Value) -> MessagesRequest {
    serde_json::from_value(v).unwrap()
}

fn openai(v: Value) -> ChatCompletionRequest {
    serde_json::from_value(v).unwrap()
}

#[test]
fn text_conversation_and_sampling_fields() {
    let got = messages_to_chat(anthropic(json!({
        "model": "qwen",
        "max_tokens": 256,
        "system": "be brief",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
        ],
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["\n\nHuman:", "END"],
        "metadata": {"user_id": "u-1"},
        "thinking": {"type": "enabled", "budget_tokens": 1024}
    })))
    .unwrap();
    let want = openai(json!({
        "model": "qwen",
        "clamp_max_tokens": true,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "a\nb"}
        ],
        "max_tokens": 256,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["\n\nHuman:", "END"],
        "user": "u-1"
    }));
    assert_eq!(got, want);
}

#[test]
fn system_blocks_become_one_system_message() {
    let got = messages_to_chat(anthropic(json!({
        "model": "m",
        "max_tokens": 1,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be careful."}
        ],
        "messages": [{"role": "user", "content": "hi"}]
    })))
    .unwrap();
    assert_eq!(
        got.messages[0],
        ChatMessage::text(Role::System, "You are Claude Code.\nBe careful.")
    );
    assert_eq!(got.messages.len(), 2);
}

#[test]
fn leading_system_messages_fold_into_one() {
    let folded = fold_leading_system(vec![
        ChatMessage::text(Role::System, "a"),
        ChatMessage::text(Role::Developer, "b"),
        ChatMessage::text(Role::User, "c"),
        ChatMessage::text(Role::System, "late"),
    ]);
    assert_eq!(
        folded,
        vec![
            ChatMessage::text(Role::System, "a\n\nb"),
            ChatMessage::text(Role::User, "c"),
            ChatMessage::text(Role::System, "late"),
        ]
    );
}

#[test]
fn tool_use_and_tool_results() {
    let got = messages_to_chat(anthropic(json!({
        "model": "m",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "two calls", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}}
            ]},
            {"role": "user", "content": [
                {"type": "text", "text": "here you go"},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                 "content": [{"type": "text", "text": "timeout"}, {"type": "text", "text": "retry later"}]}
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_3", "name": "noop", "input": {}}
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_3"}]}
        ],
        "tools": [
            {"name": "weather", "description": "Current weather", "input_schema":
                {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
            {"name": "noop"}
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
    })))
    .unwrap();
    let want = openai(json!({
        "model": "m",
        "clamp_max_tokens": true,
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: timeout\nretry later"},
            {"role": "user", "content": "here you go"},
            {"role": "assistant", "tool_calls": [
                {"id": "toolu_3", "type": "function", "function": {"name": "noop", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_3", "content": ""}
        ],
        "tools": [
            {"type": "function", "function": {"name": "weather", "description": "Current weather", "parameters":
                {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}}
        ],
        "tool_choice": "required",
        "parallel_tool_calls": false
    }));
    assert_eq!(got, want);
}

#[test]
fn tool_choice_variants() {
    let cases = [
        (json!({"type": "auto"}), Some(json!("auto")), None),
        (
            json!({"type": "auto", "disable_parallel_tool_use": false}),
            Some(json!("auto")),
            None,
        ),
        (json!({"type": "any"}), Some(json!("required")), None),
        (
            json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true}),
            Some(json!({"type": "function", "function": {"name": "f"}})),
            Some(false),
        ),
        (json!({"type": "none"}), Some(json!("none")), None),
    ];
    for (choice, want_choice, want_parallel) in cases {
        let req = |tools: Value| {
            anthropic(json!({
                "model": "m", "max_tokens": 1, "tools": tools, "tool_choice": choice,
                "messages": [{"role": "user", "content": "x"}]
            }))
        };
        let got = messages_to_chat(req(json!([{"name": "f"}]))).unwrap();
        assert_eq!(got.tool_choice, want_choice, "{choice}");
        assert_eq!(got.parallel_tool_calls, want_parallel, "{choice}");
        // Without tools, neither is sent.
        let got = messages_to_chat(req(json!([]))).unwrap();
        assert_eq!(
            (got.tools, got.tool_choice, got.parallel_tool_calls),
            (None, None, None)
        );
    }
}

#[test]
fn images_and_documents_become_text() {
    let got = messages_to_chat(anthropic(json!({
        "model": "m", "max_tokens": 1,
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}},
            {"type": "server_tool_use_from_the_future", "x": 1},
            {"type": "text", "text": "what is this?"}
        ]}]
    })))
    .unwrap();
    let want = [IMAGE_NOTE, "notes", DOCUMENT_NOTE, "what is this?"].join("\n");
    assert_eq!(got.messages, vec![ChatMessage::text(Role::User, want)]);
}

#[test]
fn streaming_asks_for_usage() {
    let req = |stream: Value| {
        anthropic(json!({"model": "m", "max_tokens": 5, "stream": stream,
            "messages": [{"role": "user", "content": "x"}]}))
    };
    let got = messages_to_chat(req(json!(true))).unwrap();
    assert!(got.is_stream() && got.include_usage());
    let got = messages_to_chat(req(json!(false))).unwrap();
    assert_eq!((got.stream, got.stream_options), (Some(false), None));
}

#[test]
fn invalid_requests_are_rejected() {
    let cases = [
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens",
        ),
        (
            json!({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens",
        ),
        (
            json!({"model": "m", "max_tokens": -3, "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens",
        ),
        (
            json!({"model": "m", "max_tokens": 8, "messages": []}),
            "messages",
        ),
    ];
    for (body, param) in cases {
        let TranslateError::Invalid {
            message,
            param: got,
        } = messages_to_chat(anthropic(body.clone())).unwrap_err();
        assert_eq!(got.as_deref(), Some(param), "{body}");
        assert!(message.starts_with(param), "{message}");
    }
}

#[test]
fn count_tokens_drops_sampling_but_keeps_the_prompt() {
    let body = json!({
        "model": "m",
        "system": "sys",
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"name": "f"}],
        "tool_choice": {"type": "auto"},
        "temperature": 1.0, "top_k": 3, "stop_sequences": ["s"], "stream": true,
        "metadata": {"user_id": "u"}
    });
    let got = messages_to_chat_for_count(anthropic(body)).unwrap();
    let want = openai(json!({
        "model": "m",
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": "auto"
    }));
    assert_eq!(got, want);
    let empty = anthropic(json!({"model": "m", "messages": []}));
    assert!(messages_to_chat_for_count(empty).is_err());
}

#[test]
fn odd_assistant_turns_keep_alternation() {
    let got = messages_to_chat(anthropic(json!({
        "model": "m", "max_tokens": 1,
        "messages": [
            {"role": "user", "content": [{"type": "thinking", "thinking": "x"}]},
            {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]},
            {"role": "user", "content": "go on"}
        ]
    })))
    .unwrap();
    let roles: Vec<_> = got
        .messages
        .iter()
        .map(|m| (m.role, m.text_content()))
        .collect();
    assert_eq!(
        roles,
        [
            (Role::User, String::new()),
            (Role::Assistant, String::new()),
            (Role::User, "go on".to_string())
        ]
    );
}

#[test]
fn system_messages_inside_messages_fold_into_the_system_prompt() {
    // Newer Claude Code sends system messages inside `messages`.
    let got = messages_to_chat(anthropic(json!({
        "model": "m",
        "max_tokens": 8,
        "system": "one",
        "messages": [
            {"role": "system", "content": "two"},
            {"role": "system", "content": [{"type": "text", "text": "three"}]},
            {"role": "user", "content": "hi"}
        ]
    })))
    .unwrap();
    assert_eq!(got.messages.len(), 2);
    assert_eq!(got.messages[0].role, Role::System);
    assert_eq!(got.messages[0].text_content(), "one\n\ntwo\n\nthree");
    assert_eq!(got.messages[1].text_content(), "hi");
}

#[test]
fn anthropic_ranges_and_the_clamp_extension() {
    let base =
        json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    let mut hot = base.clone();
    hot["temperature"] = json!(1.5);
    let e = messages_to_chat(anthropic(hot)).unwrap_err();
    assert!(e.to_string().contains("temperature"), "{e}");
    let mut one = base.clone();
    one["temperature"] = json!(1.0);
    assert!(messages_to_chat(anthropic(one)).is_ok());
    // Anthropic clients ask for more than small models hold: clamp, don't fail.
    assert_eq!(
        messages_to_chat(anthropic(base)).unwrap().clamp_max_tokens,
        Some(true)
    );
}
