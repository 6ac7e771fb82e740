//! Tests for [`super`]: request shapes as the SDK and Codex CLI send them,
//! and the JSON of what cortex answers.
#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::json;

#[test]
fn codex_style_request_parses_and_unknown_fields_are_ignored() {
    let r: ResponsesRequest = serde_json::from_value(json!({
        "model": "m",
        "instructions": "be brief",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "env"}]},
            {"role": "user", "content": "hi"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": "{\"cmd\":[\"ls\"]}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
            {"role": "user", "content": [{"type": "input_image", "image_url": "data:..."}, {"type": "future_part"}]}
        ],
        "tools": [
            {"type": "function", "name": "shell", "description": "run", "strict": false,
             "parameters": {"type": "object", "properties": {}}},
            {"type": "web_search"}
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "reasoning": {"effort": "low"},
        "store": false,
        "stream": true,
        "include": [],
        "prompt_cache_key": "abc",
        "some_future_field": 1
    }))
    .unwrap();
    assert!(r.is_stream() && !r.wants_store());
    let items = r.input_items();
    assert_eq!(items.len(), 7);
    assert!(matches!(&items[0], InputItem::Message(m) if m.role == InputRole::Developer));
    assert!(matches!(&items[2], InputItem::Other(v) if v["type"] == "reasoning"));
    assert!(matches!(&items[4], InputItem::FunctionCall(c) if c.name == "shell"));
    assert!(
        matches!(&items[5], InputItem::FunctionCallOutput(o) if o.output == ToolOutput::Text("a.txt".into()))
    );
    match &items[6] {
        InputItem::Message(m) => assert!(matches!(
            &m.content,
            InputContent::Parts(p) if matches!(p[0], InputPart::InputImage { .. }) && p[1] == InputPart::Other
        )),
        other => panic!("{other:?}"),
    }
    let tools = r.tools.unwrap();
    assert!(matches!(&tools[0], ResponsesTool::Function(f) if f.name == "shell"));
    assert!(matches!(&tools[1], ResponsesTool::Other(_)));
}

#[test]
fn string_input_is_one_user_message() {
    let r: ResponsesRequest =
        serde_json::from_value(json!({"model": "m", "input": "hello"})).unwrap();
    assert_eq!(
        r.input_items(),
        vec![InputItem::Message(InputMessage::text(
            InputRole::User,
            "hello"
        ))]
    );
    assert!(r.wants_store() && !r.is_stream());
}

#[test]
fn malformed_items_are_rejected_with_their_position() {
    for (bad, want) in [
        (json!({"model": "m", "input": 5}), "input: expected"),
        (
            json!({"model": "m", "input": [{"content": "x"}]}),
            "input[0]",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": "a"}, {"role": "wizard", "content": "x"}]}),
            "input[1]: input item of type `message`: unknown variant `wizard`",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": "a"}, {"type": "function_call_output", "output": "x"}]}),
            "input[1]: input item of type `function_call_output`: missing field `call_id`",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": 5}]}),
            "input[0]",
        ),
        (
            json!({"model": "m", "tools": [{"type": "function"}]}),
            "function tool: missing field `name`",
        ),
        (
            json!({"model": "m", "input": ["hi"]}),
            "input[0]: input item: expected",
        ),
        (json!({"model": "m", "temperature": "hot"}), "expected f64"),
    ] {
        let err = serde_json::from_value::<ResponsesRequest>(bad.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{bad} → {err}");
    }
}

fn sample_response() -> Response {
    Response {
        id: "resp_1".into(),
        object: "response".into(),
        created_at: 1_700_000_000,
        status: ResponseStatus::Completed,
        error: None,
        incomplete_details: None,
        instructions: None,
        max_output_tokens: None,
        model: "m".into(),
        output: vec![
            OutputItem::Message {
                id: "msg_1".into(),
                status: ItemStatus::Completed,
                role: "assistant".into(),
                content: vec![OutputContent::text("Hel"), OutputContent::text("lo")],
            },
            OutputItem::FunctionCall {
                id: "fc_1".into(),
                call_id: "call_1".into(),
                name: "f".into(),
                arguments: "{}".into(),
                status: ItemStatus::Completed,
            },
        ],
        parallel_tool_calls: true,
        previous_response_id: None,
        temperature: None,
        top_p: None,
        tool_choice: json!("auto"),
        tools: vec![],
        store: true,
        text: json!({"format": {"type": "text"}}),
        truncation: "disabled".into(),
        metadata: Map::new(),
        usage: Some(ResponseUsage::default()),
        user: None,
    }
}

#[test]
fn response_serialises_as_the_sdk_reads_it() {
    let r = sample_response();
    assert_eq!(r.output_text(), "Hello");
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert!(v["error"].is_null() && v["incomplete_details"].is_null());
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(v["output"][0]["content"][0]["annotations"], json!([]));
    assert_eq!(v["output"][1]["type"], "function_call");
    assert_eq!(v["output"][1]["call_id"], "call_1");
    assert_eq!(
        v["usage"]["input_tokens_details"],
        json!({"cached_tokens": 0, "cache_write_tokens": 0})
    );
    assert_eq!(
        v["usage"]["output_tokens_details"],
        json!({"reasoning_tokens": 0})
    );
    let back: Response = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}

#[test]
fn every_event_is_named_by_its_type() {
    let r = sample_response();
    let item = r.output[0].clone();
    let part = OutputContent::text("x");
    let events = vec![
        StreamEvent::Created {
            response: r.clone(),
            sequence_number: 0,
        },
        StreamEvent::InProgress {
            response: r.clone(),
            sequence_number: 1,
        },
        StreamEvent::OutputItemAdded {
            output_index: 0,
            item: item.clone(),
            sequence_number: 2,
        },
        StreamEvent::ContentPartAdded {
            item_id: "i".into(),
            output_index: 0,
            content_index: 0,
            part: part.clone(),
            sequence_number: 3,
        },
        StreamEvent::OutputTextDelta {
            item_id: "i".into(),
            output_index: 0,
            content_index: 0,
            delta: "x".into(),
            logprobs: vec![],
            sequence_number: 4,
        },
        StreamEvent::OutputTextDone {
            item_id: "i".into(),
            output_index: 0,
            content_index: 0,
            text: "x".into(),
            logprobs: vec![],
            sequence_number: 5,
        },
        StreamEvent::ContentPartDone {
            item_id: "i".into(),
            output_index: 0,
            content_index: 0,
            part,
            sequence_number: 6,
        },
        StreamEvent::FunctionCallArgumentsDelta {
            item_id: "i".into(),
            output_index: 1,
            delta: "{".into(),
            sequence_number: 7,
        },
        StreamEvent::FunctionCallArgumentsDone {
            item_id: "i".into(),
            output_index: 1,
            name: "f".into(),
            arguments: "{}".into(),
            sequence_number: 8,
        },
        StreamEvent::OutputItemDone {
            output_index: 0,
            item,
            sequence_number: 9,
        },
        StreamEvent::Completed {
            response: r.clone(),
            sequence_number: 10,
        },
        StreamEvent::Incomplete {
            response: r.clone(),
            sequence_number: 11,
        },
        StreamEvent::Failed {
            response: r,
            sequence_number: 12,
        },
        StreamEvent::Error {
            code: None,
            message: "boom".into(),
            param: None,
            sequence_number: 13,
        },
    ];
    for (i, ev) in events.iter().enumerate() {
        let v = serde_json::to_value(ev).unwrap();
        assert_eq!(v["type"], ev.name());
        assert_eq!(v["sequence_number"], i as u64);
        assert_eq!(ev.sequence_number(), i as u64);
        let back: StreamEvent = serde_json::from_value(v).unwrap();
        assert_eq!(&back, ev);
        assert_eq!(ev.is_terminal(), i >= 10);
    }
}
