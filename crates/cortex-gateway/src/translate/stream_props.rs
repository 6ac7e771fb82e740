//! Property tests for [`super`]: whatever upstream sends, the Anthropic
//! event sequence is well formed (CONFORMANCE.md, promise 13), text is never
//! lost, and sequential tool calls arrive whole.
#![allow(clippy::unwrap_used)]

use super::tests::{chunk, finish, text, tool, usage};
use super::*;
use proptest::prelude::*;
use serde_json::json;

/// One thing upstream may do.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Text(String),
    Tool {
        index: u32,
        id: Option<String>,
        name: Option<String>,
        args: String,
    },
    Finish(&'static str, Option<String>),
    Usage(u64, u64),
    RoleOnly,
    Ping,
}

/// How the stream ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum End {
    Finish,
    /// `fail` after this many ops (clamped to the number of ops).
    FailAfter(usize),
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => "[a-z \n]{0,6}".prop_map(Op::Text),
        4 => (
            0u32..3,
            prop::option::of("call_[a-z0-9]{1,4}"),
            prop::option::of("[a-z_]{0,6}"),
            "[{}\":a-z0-9 ]{0,6}",
        )
            .prop_map(|(index, id, name, args)| Op::Tool { index, id, name, args }),
        1 => (
            prop_oneof![Just("stop"), Just("length"), Just("tool_calls"), Just("content_filter")],
            prop::option::of("[A-Z]{0,3}"),
        )
            .prop_map(|(f, s)| Op::Finish(f, s)),
        1 => (0u64..1000, 0u64..1000).prop_map(|(p, c)| Op::Usage(p, c)),
        1 => Just(Op::RoleOnly),
        1 => Just(Op::Ping),
    ]
}

pub(crate) fn end() -> impl Strategy<Value = End> {
    prop_oneof![Just(End::Finish), (0usize..40).prop_map(End::FailAfter)]
}

pub(crate) fn to_chunk(op: &Op) -> Option<ChatCompletionChunk> {
    Some(match op {
        Op::Text(t) => text(t),
        Op::Tool {
            index,
            id,
            name,
            args,
        } => tool(*index, id.as_deref(), name.as_deref(), args),
        Op::Finish(f, s) => chunk(json!({}), Some(f), s.as_deref()),
        Op::Usage(p, c) => usage(*p, *c),
        Op::RoleOnly => chunk(json!({"role": "assistant"}), None, None),
        Op::Ping => return None,
    })
}

/// Run `ops` through a stream the way the HTTP layer does.
fn run(ops: &[Op], end: End) -> Vec<StreamEvent> {
    let mut s = AnthropicStream::new("x".into(), "m".into(), 7);
    let mut out = s.start();
    let fail_at = match end {
        End::Finish => None,
        End::FailAfter(n) => Some(n.min(ops.len())),
    };
    for (i, op) in ops.iter().enumerate() {
        if fail_at == Some(i) {
            break;
        }
        match to_chunk(op) {
            Some(c) => out.extend(s.on_chunk(c)),
            None => out.extend(s.ping()),
        }
    }
    out.extend(match fail_at {
        Some(_) => s.fail("api_error", "boom"),
        None => s.finish(),
    });
    // Nothing, ever, after the end.
    assert!(s.is_done());
    assert!(s.finish().is_empty() && s.fail("api_error", "again").is_empty());
    assert!(s.on_chunk(text("late")).is_empty() && s.ping().is_none());
    out
}

/// The grammar of an Anthropic stream; `Err` says what broke it.
pub(crate) fn check_well_formed(events: &[StreamEvent], failed: bool) -> Result<(), String> {
    // (index, is_text) of the open block.
    let mut open: Option<(u32, bool)> = None;
    let (mut next_index, mut delta_seen, mut ended) = (0u32, false, false);
    for (i, ev) in events.iter().enumerate() {
        if ended {
            return Err(format!("event {i} after the end: {ev:?}"));
        }
        if i == 0 && !matches!(ev, StreamEvent::MessageStart { .. }) {
            return Err(format!("first event is {ev:?}"));
        }
        match ev {
            StreamEvent::MessageStart { .. } if i > 0 => return Err("second message_start".into()),
            StreamEvent::MessageStart { .. } | StreamEvent::Ping => {}
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                if open.is_some() || delta_seen || *index != next_index {
                    return Err(format!("bad start {index} at {i} (open {open:?})"));
                }
                let is_text = match content_block {
                    ContentBlock::Text { text, .. } if text.is_empty() => true,
                    ContentBlock::ToolUse { input, .. } if *input == json!({}) => false,
                    other => return Err(format!("bad block {other:?}")),
                };
                open = Some((*index, is_text));
                next_index += 1;
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                let is_text = matches!(delta, BlockDelta::TextDelta { .. });
                if open != Some((*index, is_text)) {
                    return Err(format!("delta {index} at {i} with open {open:?}"));
                }
            }
            StreamEvent::ContentBlockStop { index } => {
                if open.map(|o| o.0) != Some(*index) {
                    return Err(format!("stop {index} at {i} with open {open:?}"));
                }
                open = None;
            }
            StreamEvent::MessageDelta { delta, .. } => {
                if open.is_some() || delta_seen || delta.stop_reason.is_none() {
                    return Err(format!("bad message_delta at {i}"));
                }
                delta_seen = true;
            }
            StreamEvent::MessageStop if delta_seen => ended = true,
            StreamEvent::MessageStop => return Err("message_stop without message_delta".into()),
            StreamEvent::Error { .. } if failed && !delta_seen => ended = true,
            StreamEvent::Error { .. } => return Err(format!("unexpected error at {i}")),
        }
    }
    match (ended, events.last(), failed) {
        (true, Some(StreamEvent::MessageStop), false)
        | (true, Some(StreamEvent::Error { .. }), true) => Ok(()),
        _ => Err("the stream does not end properly".into()),
    }
}

fn without_whitespace(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_upstream_gives_a_well_formed_stream(ops in prop::collection::vec(op(), 0..30), end in end()) {
        let events = run(&ops, end);
        let failed = matches!(end, End::FailAfter(_));
        if let Err(why) = check_well_formed(&events, failed) {
            return Err(TestCaseError::fail(format!("{why}\n{events:#?}")));
        }
        // Only whitespace may be dropped (see the module docs of `stream`).
        let sent: String = ops
            .iter()
            .take(match end { End::Finish => ops.len(), End::FailAfter(n) => n })
            .filter_map(|op| match op { Op::Text(t) => Some(t.as_str()), _ => None })
            .collect();
        let got: String = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ContentBlockDelta { delta: BlockDelta::TextDelta { text }, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        prop_assert_eq!(without_whitespace(&got), without_whitespace(&sent));
        // Full usage, from the last usage chunk when there was one.
        if let Some(StreamEvent::MessageDelta { usage, .. }) = events.iter().rev().nth(1) {
            let last = ops.iter().rev().find_map(|op| match op {
                Op::Usage(p, c) => Some(DeltaUsage { input_tokens: *p, output_tokens: *c, cache_read_input_tokens: Some(0), cache_creation_input_tokens: Some(0) }),
                _ => None,
            });
            if let Some(last) = last {
                prop_assert_eq!(*usage, last);
            } else {
                prop_assert_eq!(usage.input_tokens, 7);
            }
        }
    }

    #[test]
    fn sequential_tool_calls_arrive_whole(
        lead in "[a-z ]{0,8}",
        calls in prop::collection::vec(
            ("call_[a-z0-9]{1,6}", "[a-z_]{1,8}", prop::collection::vec("[a-z0-9\":{}, ]{0,5}", 0..4)),
            1..4,
        ),
    ) {
        let mut chunks = vec![text(&lead)];
        for (i, (id, name, frags)) in calls.iter().enumerate() {
            chunks.push(tool(i as u32, Some(id), Some(name), ""));
            chunks.extend(frags.iter().map(|f| tool(i as u32, None, None, f)));
        }
        chunks.push(finish("tool_calls"));
        chunks.push(usage(1, 2));
        let mut s = AnthropicStream::new("x".into(), "m".into(), 7);
        let mut events = s.start();
        for c in chunks {
            events.extend(s.on_chunk(c));
        }
        events.extend(s.finish());
        prop_assert!(check_well_formed(&events, false).is_ok());
        // (id, name, accumulated input) of each tool block, in order.
        let mut got: Vec<(String, String, String)> = Vec::new();
        let mut text_blocks = 0;
        for ev in &events {
            match ev {
                StreamEvent::ContentBlockStart { content_block: ContentBlock::ToolUse { id, name, .. }, .. } => {
                    got.push((id.clone(), name.clone(), String::new()));
                }
                StreamEvent::ContentBlockStart { .. } => text_blocks += 1,
                StreamEvent::ContentBlockDelta { delta: BlockDelta::InputJsonDelta { partial_json }, .. } => {
                    got.last_mut().unwrap().2.push_str(partial_json);
                }
                _ => {}
            }
        }
        let want: Vec<_> = calls.iter().map(|(id, name, f)| (id.clone(), name.clone(), f.concat())).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(text_blocks, usize::from(!lead.trim().is_empty()));
        let Some(StreamEvent::MessageDelta { delta, .. }) = events.iter().rev().nth(1) else {
            return Err(TestCaseError::fail("no message_delta"));
        };
        prop_assert_eq!(delta.stop_reason, Some(StopReason::ToolUse));
    }
}
