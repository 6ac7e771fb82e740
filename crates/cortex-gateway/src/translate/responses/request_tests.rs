//! Tests for [`super`]: Responses `json!` in, chat struct out.
#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

fn responses(v: Value) -> ResponsesRequest {
    serde_json::from_value(v).unwrap()
}

fn chat(v: Value) -> ChatCompletionRequest {
    serde_json::from_value(v).unwrap()
}

fn items(v: Value) -> Vec<InputItem> {
    serde_json::from_value(v).unwrap()
}

#[test]
fn string_input_instructions_and_sampling() {
    let got = responses_to_chat(
        &responses(json!({
            "model": "m",
            "instructions": "be brief",
            "input": "hi",
            "max_output_tokens": 64,
            "temperature": 0.5,
            "top_p": 0.9,
            "user": "u-1",
            "store": false,
            "reasoning": {"effort": "low"}
        })),
        &[],
    )
    .unwrap();
    let want = chat(json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"}
        ],
        "max_tokens": 64,
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "u-1",
        "clamp_max_tokens": true
    }));
    assert_eq!(got, want);
}

#[test]
fn codex_style_conversation_with_tool_calls() {
    let got = responses_to_chat(
        &responses(json!({
            "model": "m",
            "instructions": "You are a coding agent.",
            "input": [
                {"type": "message", "role": "developer",
                 "content": [{"type": "input_text", "text": "<permissions>"}]},
                {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": "<env>"}, {"type": "input_text", "text": "list files"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Let me look."}]},
                {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": "{\"cmd\":\"ls\"}"},
                {"type": "function_call", "call_id": "call_2", "name": "shell", "arguments": "{\"cmd\":\"pwd\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
                {"type": "function_call_output", "call_id": "call_2",
                 "output": [{"type": "input_text", "text": "/src"}]},
                {"type": "function_call", "call_id": "call_3", "name": "shell", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_3", "output": ""}
            ],
            "tools": [
                {"type": "function", "name": "shell", "description": "run a command", "strict": false,
                 "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}},
                {"type": "web_search"},
                {"type": "local_shell"}
            ],
            "tool_choice": "auto",
            "parallel_tool_calls": false,
            "stream": true,
            "store": false
        })),
        &[],
    )
    .unwrap();
    let want = chat(json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are a coding agent.\n\n<permissions>"},
            {"role": "user", "content": "<env>\nlist files"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": "{\"cmd\":\"ls\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "shell", "arguments": "{\"cmd\":\"pwd\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
            {"role": "tool", "tool_call_id": "call_2", "content": "/src"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_3", "type": "function", "function": {"name": "shell", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_3", "content": ""}
        ],
        "tools": [{"type": "function", "function": {
            "name": "shell", "description": "run a command", "strict": false,
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}}],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "stream": true,
        "stream_options": {"include_usage": true},
        "clamp_max_tokens": true
    }));
    assert_eq!(got, want);
}

#[test]
fn history_comes_first_and_instructions_are_not_carried_over() {
    let history = items(json!([
        {"type": "message", "role": "user", "content": "My name is Ada."},
        {"type": "message", "role": "assistant", "id": "msg_1",
         "content": [{"type": "output_text", "text": "Hello Ada.", "annotations": []}]}
    ]));
    let got = responses_to_chat(
        &responses(json!({
            "model": "m", "instructions": "new rules", "previous_response_id": "resp_1",
            "input": [{"role": "user", "content": "What is my name?"}]
        })),
        &history,
    )
    .unwrap();
    let roles: Vec<(Role, String)> = got
        .messages
        .iter()
        .map(|m| (m.role, m.text_content()))
        .collect();
    assert_eq!(
        roles,
        vec![
            (Role::System, "new rules".to_string()),
            (Role::User, "My name is Ada.".to_string()),
            (Role::Assistant, "Hello Ada.".to_string()),
            (Role::User, "What is my name?".to_string()),
        ]
    );
}

#[test]
fn images_and_files_become_notes() {
    let got = responses_to_chat(
        &responses(json!({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
            {"type": "input_file", "file_data": "…", "filename": "a.pdf"},
            {"type": "some_future_part"}
        ]}]})),
        &[],
    )
    .unwrap();
    assert_eq!(
        got.messages[0].text_content(),
        format!("what is this?\n{IMAGE_NOTE}\n{DOCUMENT_NOTE}")
    );
}

#[test]
fn tool_choice_forms() {
    let tools = json!([{"type": "function", "name": "f", "parameters": {"type": "object"}}]);
    for (choice, want) in [
        (json!("none"), Some(json!("none"))),
        (json!("required"), Some(json!("required"))),
        (
            json!({"type": "function", "name": "f"}),
            Some(json!({"type": "function", "function": {"name": "f"}})),
        ),
        (
            json!({"type": "allowed_tools", "mode": "required", "tools": []}),
            Some(json!("required")),
        ),
        (json!({"type": "web_search_preview"}), None),
    ] {
        let got = responses_to_chat(
            &responses(json!({"model": "m", "input": "x", "tools": tools, "tool_choice": choice})),
            &[],
        )
        .unwrap();
        assert_eq!(got.tool_choice, want, "{choice}");
    }
    // Without (function) tools, no choice is sent: chat servers refuse one.
    let got = responses_to_chat(
        &responses(
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}],
                          "tool_choice": "required", "parallel_tool_calls": true}),
        ),
        &[],
    )
    .unwrap();
    assert_eq!(
        (got.tools, got.tool_choice, got.parallel_tool_calls),
        (None, None, None)
    );
}

#[test]
fn text_format_becomes_response_format() {
    for (text, want) in [
        (json!({"format": {"type": "text"}}), None),
        (
            json!({"format": {"type": "json_object"}}),
            Some(json!({"type": "json_object"})),
        ),
        (
            json!({"format": {"type": "json_schema", "name": "answer", "strict": true,
                              "schema": {"type": "object"}}}),
            Some(json!({"type": "json_schema", "json_schema": {
                "name": "answer", "strict": true, "schema": {"type": "object"}}})),
        ),
    ] {
        let got = responses_to_chat(
            &responses(json!({"model": "m", "input": "x", "text": text})),
            &[],
        )
        .unwrap();
        assert_eq!(got.response_format, want);
    }
}

#[test]
fn invalid_requests_name_the_field() {
    for (body, param) in [
        (json!({"model": "m"}), "input"),
        (json!({"model": "m", "input": []}), "input"),
        (
            json!({"model": "m", "input": "x", "instructions": "only"}),
            "x",
        ),
        (
            json!({"model": "m", "input": "x", "max_output_tokens": 0}),
            "max_output_tokens",
        ),
        (
            json!({"model": "m", "input": "x", "temperature": 2.5}),
            "temperature",
        ),
        (json!({"model": "m", "input": "x", "top_p": -0.1}), "top_p"),
        (
            json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}),
            "input",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}],
                   "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}],
                   "tool_choice": {"type": "function"}}),
            "tool_choice",
        ),
    ] {
        let got = responses_to_chat(&responses(body.clone()), &[]);
        if param == "x" {
            assert!(got.is_ok(), "{body}");
            continue;
        }
        match got {
            Err(TranslateError::Invalid { param: Some(p), .. }) => assert_eq!(p, param, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    // Only a system prompt is not a conversation.
    let only_system =
        responses(json!({"model": "m", "input": [{"role": "system", "content": "s"}]}));
    assert!(responses_to_chat(&only_system, &[]).is_err());
}

fn item() -> impl Strategy<Value = Value> {
    let text = "[a-z ]{0,8}";
    prop_oneof![
        (
            prop_oneof![
                Just("user"),
                Just("assistant"),
                Just("system"),
                Just("developer")
            ],
            text
        )
            .prop_map(|(role, t)| json!({"role": role, "content": t})),
        (text, text).prop_map(
            |(a, b)| json!({"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": a}, {"type": "input_image", "image_url": b}]})
        ),
        ("call_[0-9]", "[a-z]{1,4}", "[{}a-z:\"]{0,6}").prop_map(|(id, name, args)| json!({
            "type": "function_call", "call_id": id, "name": name, "arguments": args})),
        ("call_[0-9]", text).prop_map(|(id, out)| json!({
            "type": "function_call_output", "call_id": id, "output": out})),
        Just(json!({"type": "reasoning", "summary": []})),
    ]
}

proptest! {
    /// Any conversation of valid items translates, every function call and
    /// output survives once, and system messages only lead.
    #[test]
    fn conversations_translate_without_loss(
        list in prop::collection::vec(item(), 0..12),
        instructions in prop::option::of("[a-z]{1,5}"),
    ) {
        let req = responses(json!({"model": "m", "input": list, "instructions": instructions}));
        let calls = list.iter().filter(|i| i["type"] == "function_call").count();
        let outputs = list.iter().filter(|i| i["type"] == "function_call_output").count();
        match responses_to_chat(&req, &[]) {
            Ok(chat) => {
                let got_calls: usize = chat.messages.iter()
                    .map(|m| m.tool_calls.as_ref().map_or(0, Vec::len)).sum();
                let got_outputs = chat.messages.iter().filter(|m| m.role == Role::Tool).count();
                prop_assert_eq!(got_calls, calls);
                prop_assert_eq!(got_outputs, outputs);
                prop_assert!(chat.messages.iter().any(|m| m.role != Role::System));
                let first_other = chat.messages.iter().position(|m| m.role != Role::System);
                let leading = chat.messages.iter().take_while(|m| m.role == Role::System).count();
                prop_assert!(leading <= 1);
                prop_assert!(first_other.is_some());
                for m in &chat.messages {
                    if m.tool_calls.is_some() {
                        prop_assert_eq!(m.role, Role::Assistant);
                    }
                }
            }
            Err(TranslateError::Invalid { param, .. }) => {
                // Only a conversation with nothing but system text fails.
                prop_assert_eq!(param.as_deref(), Some("input"));
                let only_system = list.iter().all(|i| {
                    matches!(i["role"].as_str(), Some("system" | "developer")) || i["type"] == "reasoning"
                });
                prop_assert!(only_system);
            }
        }
    }

    /// Arbitrary JSON as input never panics the parser or the translator.
    #[test]
    fn arbitrary_input_never_panics(v in arbitrary_json()) {
        if let Ok(req) = serde_json::from_value::<ResponsesRequest>(json!({"model": "m", "input": v})) {
            let _ = responses_to_chat(&req, &[]);
        }
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just("message".to_string()),
            Just("function_call".to_string()),
            Just("function_call_output".to_string()),
            Just("user".to_string()),
            Just("input_text".to_string()),
            "[a-z_]{0,8}"
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_string()),
                    Just("role".to_string()),
                    Just("content".to_string()),
                    Just("text".to_string()),
                    Just("call_id".to_string()),
                    Just("output".to_string()),
                    Just("name".to_string()),
                    Just("arguments".to_string()),
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
