//! Tests for [`super`]: golden SSE transcripts (insta) and unit tests of the
//! Responses stream state machine. Chunks are written as the neuron sends
//! them (helpers shared with the Anthropic stream tests).
#![allow(clippy::unwrap_used)]

use super::*;
use crate::sse::SseDecoder;
use crate::translate::responses::response::tests::seed;
use crate::translate::stream::tests::{finish, role, text, tool, usage};
use serde_json::json;

/// How a transcript ends.
pub(crate) enum End {
    Done,
    Fail(&'static str),
}

/// The events of a whole stream, and the stream.
pub(crate) fn events(
    chunks: Vec<ChatCompletionChunk>,
    end: End,
) -> (Vec<StreamEvent>, ResponsesStream) {
    let mut s = ResponsesStream::new(seed(), 11);
    let mut out = s.start();
    for c in chunks {
        out.extend(s.on_chunk(c));
    }
    out.extend(match end {
        End::Done => s.finish(),
        End::Fail(message) => s.fail("server_error", message),
    });
    assert!(s.is_done());
    (out, s)
}

/// The SSE bytes of a whole stream, checked to decode back to its events.
fn transcript(chunks: Vec<ChatCompletionChunk>, end: End) -> String {
    let (events, _) = events(chunks, end);
    let bytes: Vec<u8> = events
        .iter()
        .flat_map(|e| encode_event(e).to_vec())
        .collect();
    let mut decoder = SseDecoder::new(1 << 20);
    let decoded = decoder.push(&bytes).unwrap();
    assert_eq!(decoder.finish().unwrap(), None);
    assert_eq!(decoded.len(), events.len());
    for (sse, ev) in decoded.iter().zip(&events) {
        assert_eq!(sse.event.as_deref(), Some(ev.name()));
        assert_eq!(&serde_json::from_str::<StreamEvent>(&sse.data).unwrap(), ev);
    }
    String::from_utf8(bytes).unwrap()
}

/// The event types of a stream, in order.
fn names(events: &[StreamEvent]) -> Vec<&'static str> {
    events.iter().map(StreamEvent::name).collect()
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
            text("\n\n"),
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
fn golden_text_then_parallel_calls() {
    insta::assert_snapshot!(transcript(
        vec![
            role(),
            text("Checking both."),
            tool(
                0,
                Some("call_1"),
                Some("get_weather"),
                "{\"city\":\"Paris\"}"
            ),
            tool(1, Some("call_2"), None, "{\"city\":"),
            tool(1, None, Some("get_weather"), "\"Rome\"}"),
            finish("tool_calls"),
            usage(30, 20),
        ],
        End::Done,
    ));
}

#[test]
fn golden_max_output_tokens() {
    insta::assert_snapshot!(transcript(
        vec![
            role(),
            text("The capital of"),
            finish("length"),
            usage(11, 3)
        ],
        End::Done,
    ));
}

#[test]
fn golden_mid_stream_failure() {
    insta::assert_snapshot!(transcript(
        vec![role(), tool(0, Some("call_1"), Some("f"), "{\"a\":")],
        End::Fail("neuron went away"),
    ));
}

#[test]
fn documented_order_for_text() {
    let (ev, s) = events(vec![text("Hi"), finish("stop"), usage(3, 1)], End::Done);
    assert_eq!(
        names(&ev),
        vec![
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let r = s.final_response().unwrap();
    assert_eq!(r.status, ResponseStatus::Completed);
    assert_eq!(r.output_text(), "Hi");
    let u = r.usage.unwrap();
    assert_eq!((u.input_tokens, u.output_tokens, u.total_tokens), (3, 1, 4));
}

#[test]
fn cached_tokens_reach_the_final_usage() {
    let mut with_cache = usage(20, 2);
    with_cache.usage = Some(
        serde_json::from_value(json!({"prompt_tokens": 20, "completion_tokens": 2,
            "total_tokens": 22, "prompt_tokens_details": {"cached_tokens": 16}}))
        .unwrap(),
    );
    let (_, s) = events(vec![text("Hi"), finish("stop"), with_cache], End::Done);
    let u = s.final_response().unwrap().usage.unwrap();
    assert_eq!(u.input_tokens_details.cached_tokens, 16);
}

#[test]
fn without_usage_the_hint_and_chunk_count_are_reported() {
    let (_, s) = events(vec![text("a"), text("b"), finish("stop")], End::Done);
    let u = s.final_response().unwrap().usage.unwrap();
    assert_eq!((u.input_tokens, u.output_tokens), (11, 2));
}

#[test]
fn an_empty_answer_has_one_empty_message() {
    let (ev, s) = events(vec![role(), finish("stop")], End::Done);
    assert_eq!(
        names(&ev)[2..],
        [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(s.final_response().unwrap().output.len(), 1);
}

#[test]
fn whitespace_after_a_call_is_kept_when_there_was_text() {
    let (_, s) = events(
        vec![
            text("Sure."),
            tool(0, Some("c"), Some("f"), "{}"),
            text("  "),
            finish("tool_calls"),
        ],
        End::Done,
    );
    let r = s.final_response().unwrap();
    assert_eq!(r.output_text(), "Sure.  ");
    assert_eq!(r.output.len(), 3);
}

#[test]
fn a_nameless_call_waits_for_its_name() {
    let (ev, _) = events(
        vec![
            tool(0, Some("call_9"), None, "{\"x\""),
            tool(0, None, Some("late_name"), ":1}"),
            finish("tool_calls"),
        ],
        End::Done,
    );
    let added = ev
        .iter()
        .find_map(|e| match e {
            StreamEvent::OutputItemAdded { item, .. } => Some(item.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        matches!(added, OutputItem::FunctionCall { ref name, ref call_id, .. }
        if name == "late_name" && call_id == "call_9")
    );
    let done_args = ev.iter().find_map(|e| match e {
        StreamEvent::FunctionCallArgumentsDone { arguments, .. } => Some(arguments.clone()),
        _ => None,
    });
    assert_eq!(done_args.as_deref(), Some("{\"x\":1}"));
}

#[test]
fn nothing_after_the_end() {
    let (_, mut s) = events(vec![text("a")], End::Done);
    assert!(s.on_chunk(text("b")).is_empty());
    assert!(s.finish().is_empty());
    assert!(s.fail("server_error", "x").is_empty());
    assert!(s.start().is_empty());
}

#[test]
fn failure_before_any_chunk_still_starts_the_stream() {
    let mut s = ResponsesStream::new(seed(), 1);
    let ev = s.fail("server_error", "no neuron");
    assert_eq!(
        names(&ev),
        vec![
            "response.created",
            "response.in_progress",
            "response.failed"
        ]
    );
    let r = s.final_response().unwrap();
    assert_eq!(r.status, ResponseStatus::Failed);
    assert_eq!(r.error.as_ref().unwrap().message, "no neuron");
}
