//! Tests for [`super`]: golden SSE transcripts (insta) and unit tests of
//! the stream state machine. Chunks are written as the neuron sends them.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::sse::SseDecoder;
use serde_json::json;

/// One upstream chunk with choice 0 carrying `delta` and `finish`.
pub(crate) fn chunk(
    delta: Value,
    finish: Option<&str>,
    stop_reason: Option<&str>,
) -> ChatCompletionChunk {
    serde_json::from_value(json!({
        "id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1700000000,
        "model": "qwen2.5-7b",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null,
                     "stop_reason": stop_reason}],
        "usage": null
    }))
    .unwrap()
}

pub(crate) fn role() -> ChatCompletionChunk {
    chunk(json!({"role": "assistant", "content": ""}), None, None)
}

pub(crate) fn text(t: &str) -> ChatCompletionChunk {
    chunk(json!({"content": t}), None, None)
}

pub(crate) fn tool(
    index: u32,
    id: Option<&str>,
    name: Option<&str>,
    args: &str,
) -> ChatCompletionChunk {
    let mut call = json!({"index": index, "function": {"arguments": args}});
    if let Some(id) = id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    if let Some(name) = name {
        call["function"]["name"] = json!(name);
    }
    chunk(json!({"tool_calls": [call]}), None, None)
}

pub(crate) fn finish(reason: &str) -> ChatCompletionChunk {
    chunk(json!({}), Some(reason), None)
}

pub(crate) fn usage(prompt: u64, completion: u64) -> ChatCompletionChunk {
    serde_json::from_value(json!({
        "id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1700000000,
        "model": "qwen2.5-7b", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion}
    }))
    .unwrap()
}

fn new_stream() -> AnthropicStream {
    AnthropicStream::new("chatcmpl-abc".into(), "claude-sonnet-4-5".into(), 11)
}

/// How a transcript ends.
enum End {
    Done,
    Fail(&'static str, &'static str),
}

/// The events of a whole stream.
fn events(chunks: Vec<ChatCompletionChunk>, end: End) -> Vec<StreamEvent> {
    let mut s = new_stream();
    let mut out = s.start();
    for c in chunks {
        out.extend(s.on_chunk(c));
    }
    out.extend(match end {
        End::Done => s.finish(),
        End::Fail(kind, message) => s.fail(kind, message),
    });
    assert!(s.is_done());
    out
}

/// The SSE bytes of a whole stream, checked to decode back to its events.
fn transcript(chunks: Vec<ChatCompletionChunk>, end: End) -> String {
    let events = events(chunks, end);
    let bytes: Vec<u8> = events
        .iter()
        .flat_map(|e| encode_event(e).to_vec())
        .collect();
    let mut decoder = SseDecoder::new(1 << 16);
    let decoded = decoder.push(&bytes).unwrap();
    assert_eq!(decoder.finish().unwrap(), None);
    assert_eq!(decoded.len(), events.len());
    for (sse, ev) in decoded.iter().zip(&events) {
        assert_eq!(sse.event.as_deref(), Some(ev.name()));
        assert_eq!(&serde_json::from_str::<StreamEvent>(&sse.data).unwrap(), ev);
    }
    String::from_utf8(bytes).unwrap()
}

#[test]
fn golden_plain_text() {
    insta::assert_snapshot!(transcript(
        vec![
            role(),
            text("Hello"),
            text(", world"),
            text("!"),
            finish("stop"),
            usage(11, 4)
        ],
        End::Done,
    ));
}

#[test]
fn golden_tool_call() {
    insta::assert_snapshot!(transcript(
        vec![
            role(),
            tool(0, Some("call_1"), Some("get_weather"), ""),
            tool(0, None, None, "{\"city\":"),
            tool(0, None, None, " \"Paris\"}"),
            finish("tool_calls"),
            usage(11, 9),
        ],
        End::Done,
    ));
}

#[test]
fn golden_text_then_tool() {
    insta::assert_snapshot!(transcript(
        vec![
            role(),
            text("Let me check"),
            text("."),
            tool(
                0,
                Some("call_1"),
                Some("get_weather"),
                "{\"city\": \"Paris\"}"
            ),
            finish("tool_calls"),
            usage(11, 12),
        ],
        End::Done,
    ));
}

#[test]
fn golden_parallel_tool_calls() {
    insta::assert_snapshot!(transcript(
        vec![
            role(),
            tool(0, Some("call_1"), Some("get_weather"), ""),
            tool(0, None, None, "{\"city\": \"Paris\"}"),
            tool(1, Some("call_2"), Some("get_weather"), ""),
            tool(1, None, None, "{\"city\": \"Rome\"}"),
            finish("tool_calls"),
            usage(11, 20),
        ],
        End::Done,
    ));
}

#[test]
fn golden_stop_sequence() {
    insta::assert_snapshot!(transcript(
        vec![
            role(),
            text("1, 2, 3"),
            chunk(json!({}), Some("stop"), Some("END")),
            usage(11, 6),
        ],
        End::Done,
    ));
}

#[test]
fn golden_max_tokens() {
    insta::assert_snapshot!(transcript(
        vec![
            role(),
            text("Once upon"),
            text(" a"),
            finish("length"),
            usage(11, 3)
        ],
        End::Done,
    ));
}

#[test]
fn golden_mid_stream_failure() {
    insta::assert_snapshot!(transcript(
        vec![
            role(),
            text("Hello"),
            tool(0, Some("call_1"), Some("f"), "{\"a\":")
        ],
        End::Fail("api_error", "the neuron stopped answering mid-stream"),
    ));
}

#[test]
fn whitespace_before_a_tool_call_opens_no_block() {
    let evs = events(
        vec![
            role(),
            text("\n\n"),
            tool(0, Some("c"), Some("f"), "{}"),
            finish("stop"),
            usage(1, 2),
        ],
        End::Done,
    );
    assert!(matches!(
        &evs[1],
        StreamEvent::ContentBlockStart {
            index: 0,
            content_block: ContentBlock::ToolUse { .. }
        }
    ));
    // `stop` after a tool call is still `tool_use`.
    assert!(matches!(
        &evs[evs.len() - 2],
        StreamEvent::MessageDelta {
            delta: MessageDeltaBody {
                stop_reason: Some(StopReason::ToolUse),
                ..
            },
            ..
        }
    ));
    // Leading whitespace before text is kept, in the text block.
    let evs = events(vec![text(" "), text("\n"), text("hi")], End::Done);
    assert_eq!(
        evs[2],
        StreamEvent::ContentBlockDelta {
            index: 0,
            delta: BlockDelta::TextDelta {
                text: " \nhi".into()
            }
        }
    );
}

#[test]
fn message_start_is_sent_once_and_first() {
    let mut s = new_stream();
    // on_chunk before start still starts the stream.
    let evs = s.on_chunk(text("a"));
    let StreamEvent::MessageStart { message } = &evs[0] else {
        panic!("{evs:?}");
    };
    assert_eq!(message.id, "msg_chatcmpl-abc");
    assert_eq!(message.model, "claude-sonnet-4-5");
    assert_eq!(
        message.usage,
        Usage {
            input_tokens: 11,
            ..Usage::default()
        }
    );
    assert!(message.content.is_empty() && message.stop_reason.is_none());
    assert!(s.start().is_empty());
    let wire = serde_json::to_value(&evs[0]).unwrap();
    assert_eq!(
        wire["message"]["usage"],
        json!({"input_tokens": 11, "output_tokens": 0})
    );
    assert_eq!(wire["message"]["stop_reason"], Value::Null);
}

#[test]
fn nothing_after_the_end() {
    let mut s = new_stream();
    s.start();
    assert_eq!(s.ping(), Some(StreamEvent::Ping));
    assert!(!s.finish().is_empty());
    assert!(s.is_done() && s.ping().is_none());
    assert!(s.on_chunk(text("late")).is_empty());
    assert!(s.finish().is_empty());
    assert!(s.fail("api_error", "x").is_empty());

    let mut s = new_stream();
    s.start();
    assert_eq!(s.fail("overloaded_error", "busy").len(), 1);
    assert!(s.finish().is_empty() && s.on_chunk(text("x")).is_empty());
}

#[test]
fn without_usage_the_counts_are_estimated() {
    let evs = events(
        vec![role(), text("a"), text("b"), finish("stop")],
        End::Done,
    );
    let StreamEvent::MessageDelta { usage, .. } = &evs[evs.len() - 2] else {
        panic!("{evs:?}");
    };
    assert_eq!(
        *usage,
        DeltaUsage {
            input_tokens: 11,
            output_tokens: 2,
            ..DeltaUsage::default()
        }
    );
}

#[test]
fn usage_on_the_finish_chunk_is_used() {
    let mut last = finish("stop");
    last.usage = Some(cortex_core::openai::Usage::new(5, 6));
    let evs = events(vec![text("a"), last], End::Done);
    let wire = serde_json::to_value(&evs[evs.len() - 2]).unwrap();
    assert_eq!(
        wire["usage"],
        json!({"input_tokens": 5, "output_tokens": 6,
               "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0})
    );
}

/// Prompt tokens the neuron found in its prefix cache are Anthropic cache
/// reads, and `input_tokens` the rest, so their sum is the prompt.
#[test]
fn cached_prompt_tokens_are_cache_reads() {
    let mut last = finish("stop");
    last.usage = Some(cortex_core::openai::Usage::new(50, 6).with_cached(32));
    let evs = events(vec![text("a"), last], End::Done);
    let wire = serde_json::to_value(&evs[evs.len() - 2]).unwrap();
    assert_eq!(
        wire["usage"],
        json!({"input_tokens": 18, "output_tokens": 6,
               "cache_read_input_tokens": 32, "cache_creation_input_tokens": 0})
    );
}

#[test]
fn an_empty_stream_gets_one_empty_text_block() {
    let evs = events(vec![role(), finish("stop"), usage(3, 0)], End::Done);
    let names: Vec<_> = evs.iter().map(StreamEvent::name).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
}

#[test]
fn a_tool_name_arriving_late_is_waited_for() {
    let evs = events(
        vec![
            tool(0, Some("call_9"), None, "{\"x\""),
            tool(0, None, Some("late_name"), ":1}"),
            finish("tool_calls"),
        ],
        End::Done,
    );
    assert_eq!(
        evs[1],
        StreamEvent::ContentBlockStart {
            index: 0,
            content_block: ContentBlock::ToolUse {
                id: "call_9".into(),
                name: "late_name".into(),
                input: json!({})
            }
        }
    );
    assert_eq!(
        evs[2],
        StreamEvent::ContentBlockDelta {
            index: 0,
            delta: BlockDelta::InputJsonDelta {
                partial_json: "{\"x\":1}".into()
            }
        }
    );
    // A call that never gets an id gets a generated one.
    let evs = events(vec![tool(0, None, Some("f"), "")], End::Done);
    let StreamEvent::ContentBlockStart {
        content_block: ContentBlock::ToolUse { id, .. },
        ..
    } = &evs[1]
    else {
        panic!("{evs:?}");
    };
    assert!(id.starts_with("toolu_"));
}

#[test]
fn interleaved_tool_deltas_never_reopen_a_block() {
    let evs = events(
        vec![
            tool(0, Some("a"), Some("f"), "{"),
            tool(1, Some("b"), Some("g"), "{"),
            tool(0, None, None, "}"),
            tool(1, None, None, "}"),
        ],
        End::Done,
    );
    let starts = evs
        .iter()
        .filter(|e| matches!(e, StreamEvent::ContentBlockStart { .. }))
        .count();
    assert_eq!(starts, 2);
    assert_eq!(
        evs[6],
        StreamEvent::ContentBlockDelta {
            index: 1,
            delta: BlockDelta::InputJsonDelta {
                partial_json: "}".into()
            }
        }
    );
}

#[test]
fn other_choices_are_ignored() {
    let mut c = text("zero");
    let mut other = c.choices[0].clone();
    other.index = 1;
    other.delta.content = Some("one".into());
    c.choices.insert(0, other);
    let evs = events(vec![c], End::Done);
    let texts: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ContentBlockDelta {
                delta: BlockDelta::TextDelta { text },
                ..
            } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["zero"]);
}

#[test]
fn encode_event_is_sse() {
    assert_eq!(
        &encode_event(&StreamEvent::Ping)[..],
        b"event: ping\ndata: {\"type\":\"ping\"}\n\n"
    );
    assert_eq!(
        &encode_event(&StreamEvent::MessageStop)[..],
        b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    );
}
