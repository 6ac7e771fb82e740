//! Unit tests for [`super`]: the idle rule and defragmentation.

use super::super::fixtures::*;
use super::*;

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(n, m)| (n.to_string(), m.to_string()))
        .collect()
}

fn used_at(model: &str, footprint: u64, last_used_ms: u64) -> Resident {
    Resident {
        last_used_ms,
        ..res(model, footprint)
    }
}

fn mv(model: &str, from: &str, to: &str, to_device: u32) -> Move {
    Move {
        model: model.into(),
        from_node: from.into(),
        to_node: to.into(),
        to_device,
    }
}

// ---- idle_victims ---------------------------------------------------------

#[test]
fn idle_longer_than_threshold_is_a_victim() {
    let nodes = [node(
        "a",
        vec![dev(
            0,
            100,
            vec![
                used_at("stale", 10, NOW - 1001),
                used_at("exactly", 10, NOW - 1000),
                used_at("fresh", 10, NOW - 10),
            ],
        )],
    )];
    assert_eq!(idle_victims(&nodes, 1000, NOW), pairs(&[("a", "stale")]));
}

#[test]
fn a_model_s_own_threshold_replaces_the_default() {
    let busy = Resident {
        in_flight: 1,
        ..used_at("zero_busy", 10, NOW - 5000)
    };
    let nodes = [node(
        "a",
        vec![dev(
            0,
            100,
            vec![
                used_at("zero", 10, NOW),
                busy,
                used_at("never", 10, NOW - 1_000_000),
                used_at("short", 10, NOW - 101),
                used_at("default", 10, NOW - 1001),
            ],
        )],
    )];
    let of = |m: &str| match m {
        "zero" | "zero_busy" => Some(0),
        "never" => None,
        "short" => Some(100),
        _ => Some(5000),
    };
    // `0` goes at once unless busy; none never idles out; the others by
    // their own threshold (`default` is 1001 ms idle, under its 5000).
    assert_eq!(
        idle_victims_with(&nodes, of, NOW),
        pairs(&[("a", "short"), ("a", "zero")])
    );
}

#[test]
fn idle_counts_from_the_load_when_never_used() {
    let just_loaded = Resident {
        loaded_at_ms: NOW - 10,
        ..used_at("new", 10, 0)
    };
    let nodes = [node("a", vec![dev(0, 100, vec![just_loaded])])];
    assert!(idle_victims(&nodes, 1000, NOW).is_empty());
    assert_eq!(
        idle_victims(&nodes, 1000, NOW + 1000),
        pairs(&[("a", "new")])
    );
}

#[test]
fn zero_idle_ms_disables_the_rule_but_not_poisoned() {
    let poisoned = Resident {
        poisoned: true,
        ..used_at("bad", 10, NOW)
    };
    let nodes = [node(
        "a",
        vec![dev(0, 100, vec![used_at("stale", 10, 0), poisoned])],
    )];
    assert_eq!(idle_victims(&nodes, 0, NOW), pairs(&[("a", "bad")]));
    // With the rule on, a poisoned model goes however fresh it is.
    assert_eq!(
        idle_victims(&nodes, 1000, NOW),
        pairs(&[("a", "bad"), ("a", "stale")])
    );
}

#[test]
fn pinned_loading_and_busy_are_never_idle_victims() {
    let stale = |m: &str| Resident {
        poisoned: true,
        ..used_at(m, 10, 0)
    };
    let nodes = [node(
        "a",
        vec![dev(
            0,
            100,
            vec![
                Resident {
                    pinned: true,
                    ..stale("pinned")
                },
                Resident {
                    loading: true,
                    ..stale("loading")
                },
                Resident {
                    in_flight: 2,
                    ..stale("busy")
                },
            ],
        )],
    )];
    assert!(idle_victims(&nodes, 1000, NOW).is_empty());
    assert!(idle_victims(&nodes, 0, NOW).is_empty());
}

#[test]
fn idle_ignores_min_residency_and_skips_down_nodes() {
    let mut down = node("down", vec![dev(0, 100, vec![used_at("x", 10, 0)])]);
    down.up = false;
    // Loaded 2s ago, used at load time, idle threshold 1s.
    let young = Resident {
        loaded_at_ms: NOW - 2000,
        ..used_at("young", 10, NOW - 2000)
    };
    let nodes = [down, node("up", vec![dev(0, 100, vec![young])])];
    assert_eq!(idle_victims(&nodes, 1000, NOW), pairs(&[("up", "young")]));
}

#[test]
fn idle_victims_sorted_by_node_then_model_without_duplicates() {
    let nodes = [
        node(
            "b",
            vec![
                dev(0, 100, vec![used_at("z", 1, 0), used_at("a", 1, 0)]),
                dev(1, 100, vec![used_at("a", 1, 0)]),
            ],
        ),
        node("a", vec![dev(0, 100, vec![used_at("q", 1, 0)])]),
    ];
    assert_eq!(
        idle_victims(&nodes, 10, NOW),
        pairs(&[("a", "q"), ("b", "a"), ("b", "z")])
    );
}

// ---- defrag_plan ----------------------------------------------------------

/// `a` has 40 of 100 bytes free and idle models of 10, 20 and 30; `b` has
/// 55 free on device 0 (behind a 45-byte model) and 50 on device 1.
fn fragmented_pair() -> Vec<NodeRoom> {
    vec![
        node(
            "a",
            vec![dev(0, 100, vec![res("x", 20), res("y", 30), res("p", 10)])],
        ),
        node(
            "b",
            vec![dev(0, 100, vec![res("big", 45)]), dev(1, 50, vec![])],
        ),
    ]
}

#[test]
fn defrag_makes_room_for_the_largest_waiting_model() {
    let nodes = fragmented_pair();
    // 60 needed on a: moving x (20) alone is enough; it goes to the target
    // with the most free memory. b/0 is tried first (55 free) but its model
    // fits nowhere else.
    let moves = defrag_plan(&nodes, &[10, 60], &lru());
    assert_eq!(moves, vec![mv("x", "a", "b", 0)]);
    // 85 needed: x and y (the only pair that is enough), largest first.
    let moves = defrag_plan(&nodes, &[85], &lru());
    assert_eq!(moves, vec![mv("y", "a", "b", 0), mv("x", "a", "b", 1)]);
}

#[test]
fn room_counts_only_where_the_waiting_model_can_load() {
    // a: 80 of 200 free behind two idle models; b: 200 free, but the
    // waiting model (150) has no file on b. Room on b does not help it, so
    // a's models move to b.
    let nodes = vec![
        node("a", vec![dev(0, 200, vec![res("s1", 60), res("s2", 60)])]),
        node("b", vec![dev(0, 200, vec![])]),
    ];
    assert!(
        defrag_plan(&nodes, &[150], &lru()).is_empty(),
        "room on b counts when b can load it"
    );
    let moves = defrag_plan_for(&nodes, 150, |n| n == "a", &lru(), |_, _| true);
    assert_eq!(moves, vec![mv("s1", "a", "b", 0), mv("s2", "a", "b", 0)]);
}

#[test]
fn defrag_only_targets_nodes_that_may_load_the_model() {
    let nodes = fragmented_pair();
    // x may not go to b: y (30) is the next smallest single move.
    let moves = defrag_plan_with(&nodes, &[60], &lru(), |m, n| !(m == "x" && n == "b"));
    assert_eq!(moves, vec![mv("y", "a", "b", 0)]);
    // Nothing may go to b: nothing is planned.
    assert!(defrag_plan_with(&nodes, &[60], &lru(), |_, n| n != "b").is_empty());
}

#[test]
fn defrag_plans_nothing_without_waiting_models_or_when_room_exists() {
    let nodes = fragmented_pair();
    assert!(defrag_plan(&nodes, &[], &lru()).is_empty());
    assert!(defrag_plan(&nodes, &[0], &lru()).is_empty());
    // b's device 1 can take 50 already.
    assert!(defrag_plan(&nodes, &[50], &lru()).is_empty());
}

#[test]
fn defrag_plans_nothing_when_it_cannot_make_enough_room() {
    // a would need 70 moved out but b can take only one 30-byte model.
    let nodes = [
        node(
            "a",
            vec![dev(0, 100, vec![res("x", 30), res("y", 30), res("z", 30)])],
        ),
        node("b", vec![dev(0, 60, vec![res("q", 25)])]),
    ];
    assert!(defrag_plan(&nodes, &[80], &lru()).is_empty());
    // A larger waiting model than any budget: nothing to do either.
    assert!(defrag_plan(&nodes, &[101], &lru()).is_empty());
}

#[test]
fn defrag_never_moves_pinned_busy_loading_poisoned_or_young_models() {
    let blockers = [
        Resident {
            pinned: true,
            ..res("m", 50)
        },
        Resident {
            in_flight: 1,
            ..res("m", 50)
        },
        Resident {
            loading: true,
            ..res("m", 50)
        },
        Resident {
            poisoned: true,
            ..res("m", 50)
        },
        Resident {
            loaded_at_ms: NOW - MIN_RES + 1,
            ..res("m", 50)
        },
    ];
    for blocker in blockers {
        let nodes = [
            node("a", vec![dev(0, 100, vec![res("x", 20), blocker.clone()])]),
            node("b", vec![dev(0, 90, vec![res("q", 40)])]),
        ];
        // 70 needs the blocker moved: nothing is planned.
        assert!(defrag_plan(&nodes, &[70], &lru()).is_empty(), "{blocker:?}");
    }
    // A grown-up idle model of the same size does move, alone.
    let grown_up = Resident {
        loaded_at_ms: NOW - MIN_RES,
        ..res("m", 50)
    };
    let nodes = [
        node("a", vec![dev(0, 100, vec![res("x", 20), grown_up])]),
        node("b", vec![dev(0, 90, vec![res("q", 40)])]),
    ];
    assert_eq!(
        defrag_plan(&nodes, &[70], &lru()),
        vec![mv("m", "a", "b", 0)]
    );
}

#[test]
fn defrag_does_not_overfill_targets() {
    // a needs 60 moved; b's devices have 35 and 30 free: the two 30-byte
    // models cannot both go to the device with the most free memory.
    let nodes = [
        node(
            "a",
            vec![dev(0, 100, vec![res("x", 30), res("y", 30), res("z", 40)])],
        ),
        node(
            "b",
            vec![
                dev(0, 100, vec![res("q", 65)]),
                dev(1, 100, vec![res("r", 70)]),
            ],
        ),
    ];
    let moves = defrag_plan(&nodes, &[60], &lru());
    assert_eq!(moves, vec![mv("x", "a", "b", 0), mv("y", "a", "b", 1)]);
}

#[test]
fn defrag_uses_the_fewest_moves() {
    // 50 must leave a. Smallest first would send s1, s2, s3 to b/0 and then
    // find no room for l or k; the fewest moves are k (45) and s1 (5).
    let nodes = [
        node(
            "a",
            vec![dev(
                0,
                100,
                vec![
                    res("s1", 5),
                    res("s2", 5),
                    res("s3", 5),
                    res("l", 40),
                    res("k", 45),
                ],
            )],
        ),
        node(
            "b",
            vec![dev(0, 100, vec![res("q", 52)]), dev(1, 10, vec![])],
        ),
    ];
    let moves = defrag_plan(&nodes, &[50], &lru());
    assert_eq!(moves, vec![mv("k", "a", "b", 0), mv("s1", "a", "b", 1)]);
}

#[test]
fn defrag_frees_one_device_trying_the_closest_to_fitting_first() {
    let nodes = [
        node("a", vec![dev(0, 100, vec![res("x", 50), res("y", 30)])]), // 20 free
        node("b", vec![dev(0, 100, vec![res("z", 40), res("w", 30)])]), // 30 free
        node("c", vec![dev(0, 100, vec![res("u", 50)])]),               // 50 free
    ];
    // 60 needed. c is closest but its 50-byte model fits nowhere else; b is
    // next, and moving w there is enough. a is left alone.
    let moves = defrag_plan(&nodes, &[60], &lru());
    assert_eq!(moves, vec![mv("w", "b", "c", 0)]);
}

#[test]
fn defrag_targets_other_nodes_that_do_not_hold_the_model() {
    let poisoned_x = Resident {
        poisoned: true,
        ..res("x", 10)
    };
    let pinned_g = Resident {
        pinned: true,
        ..res("g", 40)
    };
    let nodes = [
        node(
            "a",
            vec![
                dev(0, 100, vec![res("x", 30), res("y", 40)]),
                dev(1, 59, vec![res("f", 4)]),
            ],
        ),
        node("b", vec![dev(0, 100, vec![poisoned_x, pinned_g])]),
        node("c", vec![dev(0, 100, vec![res("h", 57)])]),
    ];
    // 60 needed. c (43 free) is tried first but h fits nowhere else. On a/0
    // (30 free), x cannot go to a/1 (same node, 55 free) nor to b (50 free,
    // holds a poisoned copy of x), so it goes to c.
    let moves = defrag_plan(&nodes, &[60], &lru());
    assert_eq!(moves, vec![mv("x", "a", "c", 0)]);
}
