//! Recorded model outputs through the answer and the SSE stream path: what
//! an OpenAI client receives.

use std::time::Instant;

use cortex_core::openai::{ChatCompletionChunk, FinishReason, Tool};
use serde_json::{json, Value};

use super::response;
use crate::api::answer::{recorded, Answer};
use crate::api::chat::{Meta, Recorder};
use crate::metrics::NeuronMetrics;
use crate::tool_calls::fixtures::{Want, FIXTURES};
use crate::tool_calls::prompt::{Forced, ToolPlan};
use crate::tool_calls::ToolFormat;

/// Special-token markers come as one token; other text in pieces of three
/// characters (what a detokenizer that keeps the markers emits).
fn tokens(text: &str) -> Vec<String> {
    const MARKERS: [&str; 8] = [
        "<tool_call>",
        "</tool_call>",
        "<|python_tag|>",
        "[TOOL_CALLS]",
        "[ARGS]",
        "[CALL_ID]",
        "<start_function_call>",
        "<end_function_call>",
    ];
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(m) = MARKERS.iter().find(|m| rest.starts_with(*m)) {
            out.push(m.to_string());
            rest = &rest[m.len()..];
            continue;
        }
        let cut = rest
            .char_indices()
            .map(|(i, _)| i)
            .chain([rest.len()])
            .take(4)
            .last()
            .unwrap_or(rest.len());
        let cut = MARKERS
            .iter()
            .filter_map(|m| rest[1..].find(m).map(|i| i + 1))
            .filter(|i| *i < cut)
            .min()
            .unwrap_or(cut);
        out.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    out
}

fn plan(format: ToolFormat) -> ToolPlan {
    ToolPlan {
        format,
        forced: None,
        one_call: false,
    }
}

/// The `data:` payloads of the streamed answer (`[DONE]` as a string).
async fn stream(answer: Answer) -> Vec<Value> {
    let meta = Meta {
        id: "chatcmpl-test".into(),
        created: 1,
        model: "m".into(),
    };
    let metrics = NeuronMetrics::new(&mut prometheus_client::registry::Registry::default());
    let rec = Recorder::new(metrics, "m", true, Instant::now());
    let body = response(answer, meta, true, rec).into_body();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e.strip_prefix("data: ").unwrap();
            if data == "[DONE]" {
                return Value::from("[DONE]");
            }
            // Every chunk is an OpenAI chunk.
            serde_json::from_str::<ChatCompletionChunk>(data).unwrap();
            serde_json::from_str(data).unwrap()
        })
        .collect()
}

/// Content and calls as a client assembles them from the deltas.
fn assemble(chunks: &[Value]) -> (String, Vec<(String, String, String)>, Value) {
    let mut text = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = Value::Null;
    for c in chunks.iter().filter(|c| c.is_object()) {
        let Some(choice) = c["choices"].get(0) else {
            continue;
        };
        if let Some(t) = choice["delta"]["content"].as_str() {
            text.push_str(t);
        }
        for d in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = d["index"].as_u64().unwrap() as usize;
            if let Some(id) = d["id"].as_str() {
                assert_eq!(i, calls.len(), "a new call takes the next index");
                assert_eq!(d["type"], "function");
                let name = d["function"]["name"].as_str().unwrap().to_string();
                calls.push((id.to_string(), name, String::new()));
            }
            calls[i]
                .2
                .push_str(d["function"]["arguments"].as_str().unwrap());
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
    }
    (text, calls, finish)
}

#[tokio::test]
async fn recorded_outputs_stream_as_openai_deltas() {
    for f in FIXTURES {
        let pieces = tokens(f.output);
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let answer = recorded::answer(&refs, FinishReason::Stop, Some(&plan(f.format)), 20, 0);
        let chunks = stream(answer).await;
        // The role comes first, without content: nothing looks like text.
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant"}),
            "{}",
            f.name
        );
        assert_eq!(chunks.last().unwrap(), "[DONE]");
        let (text, calls, finish) = assemble(&chunks);
        let want_text: String = f
            .want
            .iter()
            .filter_map(|w| match w {
                Want::Text(t) => Some(*t),
                Want::Call(..) => None,
            })
            .collect();
        let want_calls: Vec<(String, Value)> = f
            .want
            .iter()
            .filter_map(|w| match w {
                Want::Call(n, a) => Some((n.to_string(), serde_json::from_str(a).unwrap())),
                Want::Text(_) => None,
            })
            .collect();
        assert_eq!(text, want_text, "{}", f.name);
        let got: Vec<(String, Value)> = calls
            .iter()
            .map(|(_, n, a)| (n.clone(), serde_json::from_str(a).unwrap()))
            .collect();
        assert_eq!(got, want_calls, "{}", f.name);
        let expected_finish = if want_calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        assert_eq!(finish, expected_finish, "{}", f.name);
        for (id, _, _) in &calls {
            let short = matches!(f.format, ToolFormat::Mistral { .. });
            assert_eq!(id.len(), if short { 9 } else { 29 }, "{}: {id}", f.name);
        }
        let usage = &chunks[chunks.len() - 2]["usage"];
        assert_eq!(usage["prompt_tokens"], 20);
        assert_eq!(usage["completion_tokens"], pieces.len());
    }
}

#[tokio::test]
async fn each_call_is_a_header_delta_then_an_arguments_delta() {
    let text = "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call>";
    let pieces = tokens(text);
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let answer = recorded::answer(
        &refs,
        FinishReason::Stop,
        Some(&plan(ToolFormat::Hermes)),
        5,
        0,
    );
    let chunks = stream(answer).await;
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .map(|c| &c["delta"])
        .collect();
    assert_eq!(deltas[0], &json!({"role": "assistant"}));
    let a_id = deltas[1]["tool_calls"][0]["id"].clone();
    let b_id = deltas[3]["tool_calls"][0]["id"].clone();
    assert_ne!(a_id, b_id);
    assert_eq!(
        deltas[1..5]
            .iter()
            .map(|d| d["tool_calls"][0].clone())
            .collect::<Vec<_>>(),
        [
            json!({"index": 0, "id": a_id, "type": "function", "function": {"name": "a", "arguments": ""}}),
            json!({"index": 0, "function": {"arguments": "{\"x\": 1}"}}),
            json!({"index": 1, "id": b_id, "type": "function", "function": {"name": "b", "arguments": ""}}),
            json!({"index": 1, "function": {"arguments": "{}"}}),
        ]
    );
    assert!(deltas[1..5].iter().all(|d| d.get("content").is_none()));
    assert_eq!(deltas[5], &json!({}));
}

#[tokio::test]
async fn a_forced_call_ends_at_the_call_and_counts_as_completion() {
    let tool: Tool = serde_json::from_value(json!({"type": "function", "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    }}))
    .unwrap();
    let plan = ToolPlan {
        format: ToolFormat::Hermes,
        forced: Some(Forced::named(ToolFormat::Hermes, &tool)),
        one_call: true,
    };
    // After the forced `{"city": "`, the model writes the value, closes
    // the object, and would go on rambling: the object's end ends the call.
    let pieces = [
        "Par",
        "is\"}",
        "\n</tool",
        "_call>",
        "\nI hope",
        " that helps",
    ];
    let answer = recorded::answer(&pieces, FinishReason::Length, Some(&plan), 30, 12);
    let chunks = stream(answer).await;
    let (text, calls, finish) = assemble(&chunks);
    assert_eq!(text, "");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1, "get_weather");
    assert_eq!(calls[0].2, "{\"city\": \"Paris\"}");
    assert_eq!(finish, "tool_calls");
    let usage = &chunks[chunks.len() - 2]["usage"];
    // 12 of the 30 prompt tokens were the forced start; 2 pieces were read.
    assert_eq!(usage["prompt_tokens"], 18);
    assert_eq!(usage["completion_tokens"], 12 + 2);
}

#[tokio::test]
async fn forced_arguments_that_are_not_json_come_back_as_text() {
    let tool: Tool =
        serde_json::from_value(json!({"type": "function", "function": {"name": "f"}})).unwrap();
    let plan = ToolPlan {
        format: ToolFormat::Llama3,
        forced: Some(Forced::named(ToolFormat::Llama3, &tool)),
        one_call: true,
    };
    let answer = recorded::answer(
        &["\"a\": tru", "th}", " and more"],
        FinishReason::Stop,
        Some(&plan),
        9,
        4,
    );
    let (text, calls, finish) = assemble(&stream(answer).await);
    assert_eq!(calls.len(), 0);
    // Exactly the forced start and what the model wrote.
    assert_eq!(
        text,
        "{\"name\": \"f\", \"parameters\": {\"a\": truth} and more"
    );
    assert_eq!(finish, "stop");
}

#[tokio::test]
async fn without_tools_the_text_passes_through() {
    let answer = recorded::answer(
        &["Hello", " <tool_call>", " world"],
        FinishReason::Stop,
        None,
        3,
        0,
    );
    let chunks = stream(answer).await;
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let (text, calls, finish) = assemble(&chunks);
    assert_eq!(
        (text.as_str(), calls.len(), finish),
        ("Hello <tool_call> world", 0, json!("stop"))
    );
}

#[tokio::test]
async fn a_call_that_never_closes_ends_as_text() {
    let out = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": \"long";
    let pieces = tokens(out);
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let answer = recorded::answer(
        &refs,
        FinishReason::Length,
        Some(&plan(ToolFormat::Hermes)),
        3,
        0,
    );
    let (text, calls, finish) = assemble(&stream(answer).await);
    assert_eq!(
        (text.as_str(), calls.len(), finish),
        (out, 0, json!("length"))
    );
}
