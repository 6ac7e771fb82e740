//! Tests for [`super`]: timings, done reasons and model names.
#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn stats_sum_the_parts_in_nanoseconds() {
    let t = Timings {
        load: Duration::from_millis(1),
        prompt_eval: Duration::from_micros(2),
        eval: Duration::from_nanos(3),
    };
    let s = t.stats(4, 5);
    assert_eq!(
        (
            s.total_duration,
            s.load_duration,
            s.prompt_eval_duration,
            s.eval_duration
        ),
        (1_002_003, 1_000_000, 2_000, 3)
    );
    assert_eq!((s.prompt_eval_count, s.eval_count), (4, 5));
    let huge = Timings {
        load: Duration::MAX,
        ..t
    };
    assert_eq!(huge.stats(0, 0).total_duration, u64::MAX);
}

#[test]
fn done_reasons_and_names() {
    assert_eq!(done_reason(Some(FinishReason::Length)), "length");
    for f in [
        None,
        Some(FinishReason::Stop),
        Some(FinishReason::ToolCalls),
    ] {
        assert_eq!(done_reason(f), "stop");
    }
    assert_eq!(model_name("smollm2:latest"), "smollm2");
    assert_eq!(model_name("smollm2:7b"), "smollm2:7b");
    assert_eq!(model_name("smollm2"), "smollm2");
}
