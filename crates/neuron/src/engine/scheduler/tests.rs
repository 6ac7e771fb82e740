#![allow(clippy::unwrap_used)]

use super::*;

fn config(max_sequences: usize, max_batch_tokens: usize, prefill_chunk: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_sequences,
        max_batch_tokens,
        prefill_chunk,
    }
}

fn prompt(len: usize, seed: u32) -> Vec<u32> {
    (0..len as u32).map(|i| seed * 1000 + i).collect()
}

/// Runs a planned tick as a model would, sampling token `7` for every row
/// that wants logits; returns the tick.
fn step(s: &mut Scheduler<&'static str>) -> Option<Tick> {
    let plan = s.plan();
    assert!(plan.failed.is_empty(), "{:?}", plan.failed);
    let tick = plan.tick?;
    tick.batch.validate(s.pool().capacity(), 10_000).unwrap();
    s.complete(&tick);
    let mut logits = vec![0f32; 10];
    logits[7] = 1.0;
    for e in tick.entries.iter().filter(|e| e.logits) {
        s.get_mut(e.id).unwrap().sample(&logits).unwrap();
    }
    Some(tick)
}

fn rows(t: &Tick) -> Vec<(SeqId, usize, bool)> {
    t.entries.iter().map(|e| (e.id, e.rows, e.logits)).collect()
}

#[test]
fn decode_tokens_run_beside_prompt_chunks() {
    let mut s = Scheduler::new(config(4, 10, 4), 100, 10_000);
    let a = s
        .add("a", prompt(3, 1), &SamplingParams::default())
        .unwrap();
    assert_eq!(rows(&step(&mut s).unwrap()), vec![(a, 3, true)]);
    let b = s
        .add("b", prompt(10, 2), &SamplingParams::default())
        .unwrap();
    // a decodes every tick while b's prompt goes through in chunks of 4.
    let t = step(&mut s).unwrap();
    assert_eq!(rows(&t), vec![(a, 1, true), (b, 4, false)]);
    assert_eq!(t.batch.positions(), vec![3, 0, 1, 2, 3]);
    assert_eq!(
        rows(&step(&mut s).unwrap()),
        vec![(a, 1, true), (b, 4, false)]
    );
    assert_eq!(
        rows(&step(&mut s).unwrap()),
        vec![(a, 1, true), (b, 2, true)]
    );
    let t = step(&mut s).unwrap();
    assert_eq!(rows(&t), vec![(a, 1, true), (b, 1, true)]);
    assert_eq!(t.batch.positions(), vec![6, 10]);
    assert_eq!(s.get_mut(a).unwrap().generated(), 5);
    assert_eq!(s.get_mut(b).unwrap().generated(), 2);
    assert!(!s.get_mut(b).unwrap().in_prefill());
}

#[test]
fn prompt_chunks_share_the_budget_oldest_first() {
    let mut s = Scheduler::new(config(8, 6, 4), 100, 10_000);
    let a = s
        .add("a", prompt(9, 1), &SamplingParams::default())
        .unwrap();
    let b = s
        .add("b", prompt(9, 2), &SamplingParams::default())
        .unwrap();
    assert_eq!(
        rows(&step(&mut s).unwrap()),
        vec![(a, 4, false), (b, 2, false)]
    );
    assert_eq!(
        rows(&step(&mut s).unwrap()),
        vec![(a, 4, false), (b, 2, false)]
    );
    assert_eq!(
        rows(&step(&mut s).unwrap()),
        vec![(a, 1, true), (b, 4, false)]
    );
    // a decodes (1 token); b's last token fits the rest.
    assert_eq!(
        rows(&step(&mut s).unwrap()),
        vec![(a, 1, true), (b, 1, true)]
    );
}

#[test]
fn a_prompt_alone_fills_the_pass_and_is_chunked_when_others_arrive() {
    let mut s = Scheduler::new(config(8, 10, 4), 100, 10_000);
    let a = s
        .add("a", prompt(30, 1), &SamplingParams::default())
        .unwrap();
    assert_eq!(rows(&step(&mut s).unwrap()), vec![(a, 10, false)]);
    let b = s
        .add("b", prompt(3, 2), &SamplingParams::default())
        .unwrap();
    // Another prompt waits: chunks again, b is not starved.
    assert_eq!(
        rows(&step(&mut s).unwrap()),
        vec![(a, 4, false), (b, 3, true)]
    );
    // b generates: a stays chunked beside its decode token.
    assert_eq!(
        rows(&step(&mut s).unwrap()),
        vec![(b, 1, true), (a, 4, false)]
    );
}

#[test]
fn max_sequences_limits_the_batch() {
    let mut s = Scheduler::new(config(2, 100, 100), 100, 10_000);
    let ids: Vec<SeqId> = (0..3)
        .map(|i| {
            s.add("x", prompt(5, i), &SamplingParams::default())
                .unwrap()
        })
        .collect();
    let t = step(&mut s).unwrap();
    assert_eq!(rows(&t), vec![(ids[0], 5, true), (ids[1], 5, true)]);
    assert_eq!((s.running(), s.waiting()), (2, 1));
    s.remove(ids[0]).unwrap();
    let t = step(&mut s).unwrap();
    assert_eq!(rows(&t), vec![(ids[1], 1, true), (ids[2], 5, true)]);
}

#[test]
fn admission_waits_for_blocks_and_removal_returns_them() {
    // 4 blocks: a 40-token prompt (+1) takes 3, a second one cannot start.
    let mut s = Scheduler::new(config(8, 100, 100), 4, 10_000);
    let a = s
        .add("a", prompt(40, 1), &SamplingParams::default())
        .unwrap();
    let b = s
        .add("b", prompt(40, 2), &SamplingParams::default())
        .unwrap();
    assert_eq!(rows(&step(&mut s).unwrap()), vec![(a, 40, true)]);
    assert_eq!((s.running(), s.waiting(), s.pool().used()), (1, 1, 3));
    s.remove(a).unwrap();
    assert_eq!(s.pool().used(), 0);
    assert_eq!(rows(&step(&mut s).unwrap()), vec![(b, 40, true)]);
}

#[test]
fn a_full_pool_preempts_the_youngest_which_recomputes_from_the_prefix_cache() {
    // 5 blocks. a and b each hold 2 after a 20-token prompt; decoding to
    // position 32 needs a third block each: b is preempted.
    let mut s = Scheduler::new(config(8, 100, 100), 5, 10_000);
    let a = s
        .add("a", prompt(20, 1), &SamplingParams::default())
        .unwrap();
    let b = s
        .add("b", prompt(20, 2), &SamplingParams::default())
        .unwrap();
    step(&mut s).unwrap();
    for _ in 0..12 {
        let t = step(&mut s).unwrap();
        assert_eq!(rows(&t), vec![(a, 1, true), (b, 1, true)]);
    }
    // Both have 32 tokens in the cache and want position 32: 2 blocks, 1 free.
    let t = step(&mut s).unwrap();
    assert_eq!(rows(&t), vec![(a, 1, true)]);
    assert_eq!((s.running(), s.waiting()), (1, 1));
    s.remove(a).unwrap();
    // b comes back: its first two full blocks are still cached.
    let t = step(&mut s).unwrap();
    assert_eq!(
        rows(&t),
        vec![(b, 1, true)],
        "only the one token after the cached 32"
    );
    assert_eq!(t.batch.chunks[0].pos, 32);
    let seq = s.get_mut(b).unwrap();
    assert_eq!(seq.generated(), 14);
    assert_eq!(seq.cached_tokens(), 0, "counted at first admission only");
}

#[test]
fn a_lone_sequence_that_outgrows_the_pool_fails_cleanly() {
    let mut s = Scheduler::new(config(8, 100, 100), 2, 10_000);
    let a = s
        .add("a", prompt(20, 1), &SamplingParams::default())
        .unwrap();
    for _ in 0..13 {
        step(&mut s).unwrap();
    }
    let plan = s.plan();
    assert!(plan.tick.is_none());
    let (seq, err) = plan.failed.into_iter().next().unwrap();
    assert_eq!(seq.id(), a);
    assert!(matches!(err, EngineError::KvCacheTooSmall(_)), "{err}");
    assert!(!crate::fault::is_device_fault(&err.chain()), "{err}");
    assert_eq!(s.pool().used(), 0);
    assert!(s.is_idle());
}

#[test]
fn a_shared_prompt_prefix_is_computed_once() {
    let mut s = Scheduler::new(config(8, 100, 100), 20, 10_000);
    let system = prompt(40, 9);
    let a = s
        .add("a", system.clone(), &SamplingParams::default())
        .unwrap();
    step(&mut s).unwrap();
    let mut longer = system.clone();
    longer.extend([1, 2, 3]);
    let b = s.add("b", longer, &SamplingParams::default()).unwrap();
    let t = step(&mut s).unwrap();
    // a decodes; b starts after the two full blocks a sealed.
    assert_eq!(rows(&t), vec![(a, 1, true), (b, 11, true)]);
    assert_eq!(t.batch.chunks[1].pos, 32);
    assert_eq!(s.get_mut(b).unwrap().cached_tokens(), 32);
    assert_eq!(t.batch.chunks[0].blocks[..2], t.batch.chunks[1].blocks[..2]);
    // The same prompt exactly: everything but the last token is reusable,
    // so at least one token is computed.
    let c = s.add("c", system, &SamplingParams::default()).unwrap();
    let t = step(&mut s).unwrap();
    let e = t.entries.iter().find(|e| e.id == c).unwrap();
    assert_eq!((e.rows, e.logits), (8, true));
}

#[test]
fn bad_prompts_are_refused_with_their_payload() {
    let mut s: Scheduler<&str> = Scheduler::new(config(8, 100, 100), 2, 100);
    let (p, e) = s.add("a", vec![], &SamplingParams::default()).unwrap_err();
    assert_eq!((p, matches!(e, EngineError::EmptyPrompt)), ("a", true));
    let (_, e) = s
        .add("b", prompt(100, 1), &SamplingParams::default())
        .unwrap_err();
    assert!(
        matches!(
            e,
            EngineError::ContextOverflow {
                needed: 101,
                max: 100
            }
        ),
        "{e}"
    );
    let (_, e) = s
        .add("c", prompt(32, 1), &SamplingParams::default())
        .unwrap_err();
    assert!(matches!(e, EngineError::KvCacheTooSmall(_)), "{e}");
    assert!(s
        .add("d", prompt(31, 1), &SamplingParams::default())
        .is_ok());
}

#[test]
fn removing_and_draining_return_every_block() {
    let mut s = Scheduler::new(config(8, 100, 8), 30, 10_000);
    let ids: Vec<SeqId> = (0..4)
        .map(|i| {
            s.add(
                if i % 2 == 0 { "keep" } else { "drop" },
                prompt(30, i),
                &SamplingParams::default(),
            )
            .unwrap()
        })
        .collect();
    step(&mut s).unwrap();
    let gone = s.remove_where(|q| q.payload == "drop");
    assert_eq!(
        gone.iter().map(|q| q.id()).collect::<Vec<_>>(),
        vec![ids[1], ids[3]]
    );
    assert_eq!(s.running(), 2);
    let all = s.drain();
    assert_eq!(all.len(), 2);
    assert_eq!((s.pool().used(), s.pool().cached_idle()), (0, 0));
}
