//! Tests for [`super`]: Ollama `json!` in, chat struct (or intent) out.
#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;
use std::time::Duration;

fn chat(v: Value) -> Translated {
    chat_request(serde_json::from_value(v).unwrap()).unwrap()
}

fn generate(v: Value) -> Translated {
    generate_request(serde_json::from_value(v).unwrap()).unwrap()
}

fn openai(v: Value) -> ChatCompletionRequest {
    serde_json::from_value(v).unwrap()
}

fn generated(t: Translated) -> ChatCompletionRequest {
    match t.intent {
        Intent::Generate(chat) => *chat,
        other => panic!("{other:?}"),
    }
}

#[test]
fn chat_with_options_tools_and_history() {
    let t = chat(json!({
        "model": "smollm2:latest",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
                {"function": {"name": "get_time", "arguments": "{\"tz\":\"CET\"}"}}
            ]},
            {"role": "tool", "content": "12:00", "tool_name": "get_time"},
            {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
            {"role": "tool", "content": "rainy"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "options": {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "num_predict": 128,
                    "stop": ["\n\n"], "seed": 42, "num_ctx": 8192, "presence_penalty": 0.5},
        "stream": false,
        "keep_alive": "10m",
        "think": false
    }));
    assert_eq!(t.model, "smollm2");
    assert!(!t.stream);
    assert_eq!(t.keep_alive, Some(KeepAlive::For(Duration::from_secs(600))));
    let want = openai(json!({
        "model": "smollm2",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\":\"CET\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
            {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_1", "content": "rainy"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "max_tokens": 128,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["\n\n"],
        "seed": 42,
        "presence_penalty": 0.5,
        "stream": false,
        "clamp_max_tokens": true
    }));
    assert_eq!(generated(t), want);
}

#[test]
fn chat_streams_by_default_and_asks_for_usage() {
    let got = generated(chat(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                     "tools": []}),
    ));
    assert_eq!(got.stream, Some(true));
    assert!(got.include_usage());
    assert_eq!(got.tools, None);
}

#[test]
fn empty_input_loads_or_unloads() {
    for (body, want) in [
        (json!({"model": "m"}), Intent::Load),
        (json!({"model": "m", "messages": []}), Intent::Load),
        (
            json!({"model": "m", "messages": [], "keep_alive": "5m"}),
            Intent::Load,
        ),
        (
            json!({"model": "m", "messages": [], "keep_alive": 0}),
            Intent::Unload,
        ),
        (json!({"model": "m", "keep_alive": "0s"}), Intent::Unload),
    ] {
        assert_eq!(chat(body.clone()).intent, want, "{body}");
        assert_eq!(generate(body.clone()).intent, want, "{body}");
    }
    assert_eq!(
        generate(json!({"model": "m", "prompt": "", "keep_alive": -1})).keep_alive,
        Some(KeepAlive::Forever)
    );
}

#[test]
fn generate_prompt_and_system() {
    let t = generate(json!({
        "model": "m", "prompt": "Why is the sky blue?", "system": "be brief", "suffix": "",
        "template": "", "context": [1, 2, 3], "images": [],
        "options": {"num_predict": -1, "seed": -1}, "format": "json"
    }));
    assert!(t.stream);
    let got = generated(t);
    assert_eq!(
        got.messages,
        vec![
            ChatMessage::text(ORole::System, "be brief"),
            ChatMessage::text(ORole::User, "Why is the sky blue?"),
        ]
    );
    assert_eq!((got.max_tokens, got.seed), (None, None));
    assert_eq!(got.response_format, Some(json!({"type": "json_object"})));
}

#[test]
fn a_schema_format_is_a_json_schema() {
    let schema = json!({"type": "object", "properties": {"age": {"type": "integer"}}});
    let got = generated(chat(json!({"model": "m", "format": schema,
                                     "messages": [{"role": "user", "content": "x"}]})));
    assert_eq!(
        got.response_format,
        Some(json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}))
    );
    let none = generated(chat(json!({"model": "m", "format": "",
                                      "messages": [{"role": "user", "content": "x"}]})));
    assert_eq!(none.response_format, None);
}

#[test]
fn unsupported_generate_modes_are_refused_by_name() {
    for (body, param) in [
        (
            json!({"model": "m", "prompt": "[INST] hi [/INST]", "raw": true}),
            "raw",
        ),
        (
            json!({"model": "m", "prompt": "def f(", "suffix": "return x"}),
            "suffix",
        ),
        (
            json!({"model": "m", "prompt": "x", "template": "{{ .Prompt }}"}),
            "template",
        ),
        (
            json!({"model": "m", "prompt": "what is this?", "images": ["aGk="]}),
            "images",
        ),
        (json!({"model": "m", "images": ["aGk="]}), "images"),
        (
            json!({"model": "m", "prompt": "x", "options": {"num_predict": 0}}),
            "options.num_predict",
        ),
        (
            json!({"model": "m", "prompt": "x", "options": {"num_predict": -3}}),
            "options.num_predict",
        ),
    ] {
        match generate_request(serde_json::from_value(body.clone()).unwrap()) {
            Err(TranslateError::Invalid { param: Some(p), .. }) => assert_eq!(p, param, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }
}

fn message() -> impl Strategy<Value = Value> {
    prop_oneof![
        ("system|user|assistant", "[a-z ]{0,6}")
            .prop_map(|(role, c)| json!({"role": role, "content": c})),
        prop::collection::vec("[a-c]", 1..3).prop_map(|names| json!({
            "role": "assistant",
            "tool_calls": names.iter().map(|n| json!({"function": {"name": n, "arguments": {"x": 1}}})).collect::<Vec<_>>()
        })),
        (prop::option::of("[a-c]"), "[a-z]{0,4}").prop_map(|(name, c)| match name {
            Some(n) => json!({"role": "tool", "content": c, "tool_name": n}),
            None => json!({"role": "tool", "content": c}),
        }),
    ]
}

proptest! {
    /// Every tool message answers a distinct id, and an id that a call made
    /// is answered at most once.
    #[test]
    fn tool_results_answer_distinct_calls(messages in prop::collection::vec(message(), 1..12)) {
        let got = generated(chat(json!({"model": "m", "messages": messages})));
        prop_assert_eq!(got.messages.len(), messages.len());
        let call_ids: Vec<String> = got.messages.iter()
            .flat_map(|m| m.tool_calls.iter().flatten().map(|c| c.id.clone()))
            .collect();
        let answered: Vec<String> = got.messages.iter()
            .filter_map(|m| m.tool_call_id.clone())
            .collect();
        let mut dedup = answered.clone();
        dedup.sort();
        dedup.dedup();
        prop_assert_eq!(dedup.len(), answered.len());
        let mut ids = call_ids.clone();
        ids.sort();
        ids.dedup();
        prop_assert_eq!(ids.len(), call_ids.len());
    }

    /// Arbitrary option values never panic; out-of-range ones are refused
    /// by name.
    #[test]
    fn options_never_panic(num_predict in any::<i64>(), seed in any::<i64>(), temp in -5.0f64..5.0) {
        let body = json!({"model": "m", "prompt": "x",
                          "options": {"num_predict": num_predict, "seed": seed, "temperature": temp}});
        match generate_request(serde_json::from_value(body).unwrap()) {
            Ok(t) => {
                let chat = generated(t);
                prop_assert!(chat.max_tokens.is_none_or(|n| n >= 1));
                prop_assert_eq!(chat.seed.is_some(), seed >= 0);
            }
            Err(TranslateError::Invalid { param, .. }) => {
                prop_assert_eq!(param.as_deref(), Some("options.num_predict"));
                prop_assert!(num_predict < -2 || num_predict == 0);
            }
        }
    }
}
