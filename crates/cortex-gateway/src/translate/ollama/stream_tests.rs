//! Tests for [`super`]: golden NDJSON transcripts (insta), and properties:
//! whatever upstream sends, exactly one last line, and the stream says what
//! the non-streamed answer says.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::translate::ollama::response::chat_response;
use crate::translate::ollama::response::tests::at;
use crate::translate::responses::stream::props::aggregate;
use crate::translate::stream::props::{end, op, to_chunk, End, Op};
use crate::translate::stream::tests::{finish, role, text, tool, usage};
use proptest::prelude::*;

/// Run `chunks` through a stream, one millisecond apart from a fixed start,
/// ending with `finish` (or failing after `fail_after` chunks).
fn run(
    endpoint: Endpoint,
    chunks: Vec<ChatCompletionChunk>,
    fail_after: Option<usize>,
) -> Vec<Line> {
    let t0 = Instant::now();
    let now = |i: usize| Now {
        instant: t0 + Duration::from_millis(10 * (i as u64 + 1)),
        unix_ms: 1_700_000_000_000 + 10 * (i as u64 + 1),
    };
    let mut s = OllamaStream::new(endpoint, "smollm2".into(), t0, 9);
    let mut out = Vec::new();
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        if fail_after == Some(i) {
            break;
        }
        out.extend(s.on_chunk(c, now(i)));
    }
    out.extend(match fail_after {
        Some(_) => s.fail("neuron went away"),
        None => s.finish(now(n), Duration::from_millis(3)),
    });
    assert!(s.is_done());
    assert!(s.finish(now(n + 1), Duration::ZERO).is_empty() && s.fail("again").is_empty());
    assert!(s.on_chunk(text("late"), now(n + 2)).is_empty());
    out
}

fn transcript(lines: &[Line]) -> String {
    let bytes: Vec<u8> = lines.iter().flat_map(|l| encode_line(l).to_vec()).collect();
    let s = String::from_utf8(bytes).unwrap();
    // Every line is one JSON object.
    assert_eq!(s.lines().count(), lines.len());
    for l in s.lines() {
        assert!(serde_json::from_str::<serde_json::Value>(l)
            .unwrap()
            .is_object());
    }
    s
}

#[test]
fn golden_chat_text() {
    insta::assert_snapshot!(transcript(&run(
        Endpoint::Chat,
        vec![
            role(),
            text("Hello"),
            text(", world!"),
            finish("stop"),
            usage(11, 3)
        ],
        None,
    )));
}

#[test]
fn golden_chat_tool_call() {
    insta::assert_snapshot!(transcript(&run(
        Endpoint::Chat,
        vec![
            role(),
            tool(0, Some("call_1"), Some("get_weather"), ""),
            tool(0, None, None, "{\"city\":"),
            tool(0, None, None, "\"Paris\"}"),
            finish("tool_calls"),
            usage(20, 9),
        ],
        None,
    )));
}

#[test]
fn golden_generate_length() {
    insta::assert_snapshot!(transcript(&run(
        Endpoint::Generate,
        vec![text("The sky"), text(" is"), finish("length"), usage(5, 2)],
        None,
    )));
}

#[test]
fn golden_failure() {
    insta::assert_snapshot!(transcript(&run(
        Endpoint::Chat,
        vec![text("Hel"), text("lo")],
        Some(1),
    )));
}

#[test]
fn durations_follow_the_clock() {
    let lines = run(
        Endpoint::Chat,
        vec![role(), text("a"), text("b"), finish("stop")],
        None,
    );
    let Some(Line::Chat(last)) = lines.last() else {
        panic!("{lines:?}")
    };
    let stats = last.stats.unwrap();
    // Created at 0; content at 20 ms and 30 ms; load 3 ms.
    assert_eq!(stats.load_duration, 3_000_000);
    assert_eq!(stats.prompt_eval_duration, 20_000_000);
    assert_eq!(stats.eval_duration, 10_000_000);
    assert_eq!(stats.total_duration, 33_000_000);
    // No usage chunk: the hint and the content chunks.
    assert_eq!((stats.prompt_eval_count, stats.eval_count), (9, 2));
}

#[test]
fn generate_drops_tool_calls() {
    let lines = run(
        Endpoint::Generate,
        vec![
            text("x"),
            tool(0, Some("c"), Some("f"), "{}"),
            finish("tool_calls"),
        ],
        None,
    );
    assert_eq!(lines.len(), 2);
}

/// Text, tool calls, and the last line of a run.
fn summary(lines: &[Line]) -> (String, Vec<(String, serde_json::Value)>, &Line) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for l in lines {
        match l {
            Line::Chat(c) => {
                text.push_str(&c.message.content);
                for call in c.message.tool_calls.iter().flatten() {
                    calls.push((call.function.name.clone(), call.function.arguments.clone()));
                }
            }
            Line::Generate(g) => text.push_str(&g.response),
            Line::Error(_) => {}
        }
    }
    (text, calls, lines.last().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn exactly_one_last_line_and_the_same_answer(
        ops in prop::collection::vec(op(), 0..30),
        end in end(),
        generate in any::<bool>(),
    ) {
        let endpoint = if generate { Endpoint::Generate } else { Endpoint::Chat };
        let chunks: Vec<_> = ops.iter().filter_map(to_chunk).collect();
        let fail_after = match end {
            End::Finish => None,
            End::FailAfter(n) => Some(n.min(chunks.len())),
        };
        let lines = run(endpoint, chunks, fail_after);
        let lasts = lines.iter().filter(|l| l.is_last()).count();
        prop_assert_eq!(lasts, 1);
        prop_assert!(lines.last().unwrap().is_last());
        for l in &lines[..lines.len() - 1] {
            prop_assert!(!matches!(l, Line::Error(_)));
            if let Line::Chat(c) = l {
                prop_assert!(c.done_reason.is_none() && c.stats.is_none());
            }
        }
        if fail_after.is_some() {
            prop_assert!(matches!(lines.last(), Some(Line::Error(_))));
            return Ok(());
        }
        // The stream says what the non-streamed answer says.
        let whole = chat_response(aggregate(&ops), "smollm2", at(0), Timings::default());
        let (text, calls, last) = summary(&lines);
        prop_assert_eq!(&text, &whole.message.content);
        let want_calls: Vec<_> = whole.message.tool_calls.iter().flatten()
            .map(|c| (c.function.name.clone(), c.function.arguments.clone()))
            .collect();
        if endpoint == Endpoint::Chat {
            prop_assert_eq!(calls, want_calls);
        } else {
            prop_assert!(calls.is_empty());
        }
        let (reason, stats) = match last {
            Line::Chat(c) => (c.done_reason.clone(), c.stats),
            Line::Generate(g) => (g.done_reason.clone(), g.stats),
            Line::Error(_) => unreachable!(),
        };
        prop_assert_eq!(reason, whole.done_reason);
        if ops.iter().any(|op| matches!(op, Op::Usage(..))) {
            let (got, want) = (stats.unwrap(), whole.stats.unwrap());
            prop_assert_eq!((got.prompt_eval_count, got.eval_count), (want.prompt_eval_count, want.eval_count));
        }
    }
}
