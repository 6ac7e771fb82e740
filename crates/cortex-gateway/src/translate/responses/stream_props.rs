//! Property tests for [`super`]: whatever upstream sends, the Responses
//! event sequence is well formed, the streamed text equals the non-streamed
//! answer's, and sequential function calls arrive whole. Upstream behaviour
//! is generated as for the Anthropic stream (`translate::stream::props`).
#![allow(clippy::unwrap_used)]

use super::*;
use crate::translate::responses::response::chat_to_response;
use crate::translate::responses::response::tests::seed;
use crate::translate::stream::props::{end, op, to_chunk, End, Op};
use crate::translate::stream::tests::{finish, text, tool, usage};
use cortex_core::openai::ChatCompletion;
use proptest::prelude::*;
use serde_json::{json, Value};

/// Run `ops` through a stream the way the HTTP layer does.
fn run(ops: &[Op], end: End) -> (Vec<StreamEvent>, ResponsesStream) {
    let mut s = ResponsesStream::new(seed(), 7);
    let mut out = s.start();
    let fail_at = match end {
        End::Finish => None,
        End::FailAfter(n) => Some(n.min(ops.len())),
    };
    for (i, op) in ops.iter().enumerate() {
        if fail_at == Some(i) {
            break;
        }
        if let Some(c) = to_chunk(op) {
            out.extend(s.on_chunk(c));
        }
    }
    out.extend(match fail_at {
        Some(_) => s.fail("server_error", "boom"),
        None => s.finish(),
    });
    assert!(s.is_done());
    assert!(s.finish().is_empty() && s.fail("server_error", "again").is_empty());
    assert!(s.on_chunk(text("late")).is_empty());
    (out, s)
}

/// The item an event is about, if any.
fn index_of(ev: &StreamEvent) -> Option<u32> {
    match ev {
        StreamEvent::OutputItemAdded { output_index, .. }
        | StreamEvent::ContentPartAdded { output_index, .. }
        | StreamEvent::OutputTextDelta { output_index, .. }
        | StreamEvent::OutputTextDone { output_index, .. }
        | StreamEvent::ContentPartDone { output_index, .. }
        | StreamEvent::FunctionCallArgumentsDelta { output_index, .. }
        | StreamEvent::FunctionCallArgumentsDone { output_index, .. }
        | StreamEvent::OutputItemDone { output_index, .. } => Some(*output_index),
        _ => None,
    }
}

/// What is open: the index, whether it is a message, whether its content
/// part was added, the text or arguments so far, and whether `.done` came.
#[derive(Debug)]
struct OpenItem {
    index: u32,
    id: String,
    message: bool,
    part: bool,
    body: String,
    body_done: bool,
}

/// The grammar of a Responses stream; `Err` says what broke it.
fn check_well_formed(events: &[StreamEvent], failed: bool) -> Result<(), String> {
    let mut open: Option<OpenItem> = None;
    let mut done_items: Vec<OutputItem> = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        if ev.sequence_number() != i as u64 {
            return Err(format!(
                "event {i} has sequence_number {}",
                ev.sequence_number()
            ));
        }
        let want_first = match i {
            0 => Some("response.created"),
            1 => Some("response.in_progress"),
            _ => None,
        };
        if let Some(name) = want_first {
            if ev.name() != name {
                return Err(format!("event {i} is {}", ev.name()));
            }
            continue;
        }
        if ev.is_terminal() != (i + 1 == events.len()) {
            return Err(format!("terminal event misplaced at {i}: {}", ev.name()));
        }
        if let (Some(index), Some(o)) = (index_of(ev), &open) {
            if index != o.index {
                return Err(format!(
                    "event {i} for item {index} while {} is open",
                    o.index
                ));
            }
        }
        match ev {
            StreamEvent::OutputItemAdded {
                output_index, item, ..
            } => {
                if open.is_some() || *output_index as usize != done_items.len() {
                    return Err(format!("bad added {output_index} at {i}"));
                }
                let (message, empty) = match item {
                    OutputItem::Message { content, .. } => (true, content.is_empty()),
                    OutputItem::FunctionCall { arguments, .. } => (false, arguments.is_empty()),
                };
                if item.status() != ItemStatus::InProgress || !empty {
                    return Err(format!("added item not fresh: {item:?}"));
                }
                open = Some(OpenItem {
                    index: *output_index,
                    id: item.id().to_string(),
                    message,
                    part: false,
                    body: String::new(),
                    body_done: false,
                });
            }
            StreamEvent::ContentPartAdded {
                item_id,
                content_index,
                ..
            } => match &mut open {
                Some(o) if o.message && !o.part && *content_index == 0 && *item_id == o.id => {
                    o.part = true
                }
                _ => return Err(format!("bad content_part.added at {i}")),
            },
            StreamEvent::OutputTextDelta { item_id, delta, .. } => match &mut open {
                Some(o) if o.message && o.part && !o.body_done && *item_id == o.id => {
                    o.body.push_str(delta)
                }
                _ => return Err(format!("bad text delta at {i}")),
            },
            StreamEvent::OutputTextDone { text, .. } => match &mut open {
                Some(o) if o.message && o.part && !o.body_done && *text == o.body => {
                    o.body_done = true
                }
                _ => return Err(format!("bad output_text.done at {i}")),
            },
            StreamEvent::ContentPartDone { part, .. } => match &mut open {
                Some(o)
                    if o.body_done && o.part && *part == OutputContent::text(o.body.clone()) =>
                {
                    o.part = false
                }
                _ => return Err(format!("bad content_part.done at {i}")),
            },
            StreamEvent::FunctionCallArgumentsDelta { item_id, delta, .. } => match &mut open {
                Some(o) if !o.message && !o.body_done && *item_id == o.id => o.body.push_str(delta),
                _ => return Err(format!("bad arguments delta at {i}")),
            },
            StreamEvent::FunctionCallArgumentsDone { arguments, .. } => match &mut open {
                Some(o) if !o.message && !o.body_done && *arguments == o.body => o.body_done = true,
                _ => return Err(format!("bad arguments done at {i}")),
            },
            StreamEvent::OutputItemDone { item, .. } => {
                let Some(o) = open.take() else {
                    return Err(format!("done with nothing open at {i}"));
                };
                let body = match item {
                    OutputItem::Message { content, .. } => content
                        .iter()
                        .map(|OutputContent::OutputText { text, .. }| text.as_str())
                        .collect(),
                    OutputItem::FunctionCall { arguments, .. } => arguments.clone(),
                };
                if !o.body_done || (o.message && o.part) || body != o.body || item.id() != o.id {
                    return Err(format!("bad output_item.done at {i}: {item:?} vs {o:?}"));
                }
                if item.status() == ItemStatus::InProgress {
                    return Err(format!("done item still in progress at {i}"));
                }
                done_items.push(item.clone());
            }
            StreamEvent::Completed { response, .. } | StreamEvent::Incomplete { response, .. } => {
                if failed || open.is_some() || response.output != done_items {
                    return Err(format!("bad completion at {i}"));
                }
                let incomplete = matches!(ev, StreamEvent::Incomplete { .. });
                if incomplete != (response.status == ResponseStatus::Incomplete)
                    || response.usage.is_none()
                {
                    return Err(format!("bad final status at {i}"));
                }
            }
            StreamEvent::Failed { response, .. } => {
                let open_count = usize::from(open.is_some());
                if !failed
                    || response.status != ResponseStatus::Failed
                    || response.error.is_none()
                    || response.output.len() != done_items.len() + open_count
                    || response.output[..done_items.len()] != done_items[..]
                {
                    return Err(format!("bad failure at {i}"));
                }
            }
            StreamEvent::Created { .. }
            | StreamEvent::InProgress { .. }
            | StreamEvent::Error { .. } => return Err(format!("unexpected {} at {i}", ev.name())),
        }
    }
    match events.last() {
        Some(ev) if ev.is_terminal() => Ok(()),
        _ => Err("the stream does not end".into()),
    }
}

/// The non-streamed answer upstream would have given for `ops`: the text
/// and tool calls accumulated, choice 0, the last finish reason and usage.
pub(crate) fn aggregate(ops: &[Op]) -> ChatCompletion {
    let mut content = String::new();
    let mut calls: Vec<(u32, Option<String>, String, String)> = Vec::new();
    let (mut finish, mut usage_json) = (
        json!(null),
        json!({"prompt_tokens": 7, "completion_tokens": 0, "total_tokens": 7}),
    );
    for op in ops {
        match op {
            Op::Text(t) => content.push_str(t),
            Op::Tool {
                index,
                id,
                name,
                args,
            } => {
                let slot = match calls.iter_mut().position(|c| c.0 == *index) {
                    Some(p) => &mut calls[p],
                    None => {
                        calls.push((*index, None, String::new(), String::new()));
                        calls.last_mut().unwrap()
                    }
                };
                slot.1 = slot.1.take().or_else(|| id.clone());
                slot.2.push_str(name.as_deref().unwrap_or_default());
                slot.3.push_str(args);
            }
            Op::Finish(f, _) => finish = json!(f),
            Op::Usage(p, c) => {
                usage_json =
                    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
            }
            Op::RoleOnly | Op::Ping => {}
        }
    }
    let tool_calls: Vec<Value> = calls
        .into_iter()
        .map(|(_, id, name, args)| {
            json!({"id": id.unwrap_or_default(), "type": "function",
                                         "function": {"name": name, "arguments": args}})
        })
        .collect();
    serde_json::from_value(json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": finish, "logprobs": null,
                     "message": {"role": "assistant", "content": content,
                                 "tool_calls": if tool_calls.is_empty() { Value::Null } else { json!(tool_calls) }}}],
        "usage": usage_json
    }))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_upstream_gives_a_well_formed_stream(ops in prop::collection::vec(op(), 0..30), end in end()) {
        let failed = matches!(end, End::FailAfter(_));
        let (events, s) = run(&ops, end);
        if let Err(why) = check_well_formed(&events, failed) {
            return Err(TestCaseError::fail(format!("{why}\n{events:#?}")));
        }
        if failed {
            prop_assert_eq!(s.final_response().unwrap().status, ResponseStatus::Failed);
            return Ok(());
        }
        // The streamed answer says what the non-streamed one says.
        let streamed = s.final_response().unwrap();
        let whole = chat_to_response(aggregate(&ops), &seed());
        prop_assert_eq!(streamed.output_text(), whole.output_text());
        prop_assert_eq!(streamed.status, whole.status);
        prop_assert_eq!(&streamed.incomplete_details, &whole.incomplete_details);
        if ops.iter().any(|op| matches!(op, Op::Usage(..))) {
            prop_assert_eq!(streamed.usage, whole.usage);
        }
    }

    #[test]
    fn sequential_calls_arrive_whole(
        lead in "[a-z \n]{0,8}",
        calls in prop::collection::vec(
            ("call_[a-z0-9]{1,6}", "[a-z_]{1,8}", prop::collection::vec("[a-z0-9\":{}, ]{0,5}", 0..4)),
            1..4,
        ),
    ) {
        let mut ops = vec![Op::Text(lead.clone())];
        for (i, (id, name, frags)) in calls.iter().enumerate() {
            ops.push(Op::Tool { index: i as u32, id: Some(id.clone()), name: Some(name.clone()), args: String::new() });
            ops.extend(frags.iter().map(|f| Op::Tool { index: i as u32, id: None, name: None, args: f.clone() }));
        }
        ops.push(Op::Finish("tool_calls", None));
        ops.push(Op::Usage(1, 2));
        let (events, s) = run(&ops, End::Finish);
        prop_assert!(check_well_formed(&events, false).is_ok());
        let streamed = s.final_response().unwrap();
        let whole = chat_to_response(aggregate(&ops), &seed());
        let calls_of = |r: &Response| -> Vec<(String, String, String)> {
            r.output.iter().filter_map(|item| match item {
                OutputItem::FunctionCall { call_id, name, arguments, .. } =>
                    Some((call_id.clone(), name.clone(), arguments.clone())),
                OutputItem::Message { .. } => None,
            }).collect()
        };
        let want: Vec<_> = calls.iter().map(|(id, name, f)| (id.clone(), name.clone(), f.concat())).collect();
        prop_assert_eq!(calls_of(streamed), want.clone());
        prop_assert_eq!(calls_of(&whole), want);
        prop_assert_eq!(streamed.output.len(), whole.output.len());
        prop_assert_eq!(streamed.output_text(), whole.output_text());
    }
}

#[test]
fn the_props_see_a_broken_stream() {
    // The checker itself must be able to fail.
    let (mut events, _) = run(&[Op::Text("hi".into())], End::Finish);
    events.swap(3, 4);
    assert!(check_well_formed(&events, false).is_err());
    let (events, _) = run(&[Op::Text("hi".into())], End::Finish);
    assert!(check_well_formed(&events[..events.len() - 1], false).is_err());
    let calls = vec![
        tool(0, Some("a"), Some("f"), "{"),
        finish("tool_calls"),
        usage(1, 1),
    ];
    let mut s = ResponsesStream::new(seed(), 1);
    let mut events = s.start();
    for c in calls {
        events.extend(s.on_chunk(c));
    }
    events.extend(s.finish());
    assert!(check_well_formed(&events, false).is_ok());
    assert!(check_well_formed(&events, true).is_err());
}
