//! Unit tests for [`super`]: one test per sentence of the placement rules.

use super::super::fixtures::*;
use super::*;

fn replica(node: &str, in_flight: u64, last_used_ms: u64) -> ReadyReplica {
    ReadyReplica {
        node: node.into(),
        in_flight,
        last_used_ms,
    }
}

fn impossible_reason(plan: LoadPlan) -> String {
    match plan {
        LoadPlan::Impossible(why) => why.to_string(),
        other => panic!("expected Impossible, got {other:?}"),
    }
}

// ---- pick_ready -----------------------------------------------------------

#[test]
fn pick_ready_empty_is_none() {
    assert_eq!(pick_ready(&[]), None);
}

#[test]
fn pick_ready_fewest_in_flight_wins() {
    let r = [replica("a", 3, 0), replica("b", 1, 900), replica("c", 2, 0)];
    assert_eq!(pick_ready(&r), Some(1));
}

#[test]
fn pick_ready_tie_goes_to_least_recently_used() {
    let r = [
        replica("a", 1, 500),
        replica("b", 1, 100),
        replica("c", 1, 300),
    ];
    assert_eq!(pick_ready(&r), Some(1));
}

#[test]
fn pick_ready_full_tie_goes_to_node_name() {
    let r = [replica("c", 0, 7), replica("a", 0, 7), replica("b", 0, 7)];
    assert_eq!(pick_ready(&r), Some(1));
}

// ---- plan_load: free room -------------------------------------------------

#[test]
fn most_free_device_wins_without_eviction() {
    let nodes = [
        node(
            "a",
            vec![dev(0, 100, vec![res("x", 70)]), dev(1, 100, vec![])],
        ),
        node("b", vec![dev(0, 80, vec![res("y", 10)])]),
    ];
    let plan = plan_load(&wanted("w", 20, &["a", "b"]), &nodes, &lru());
    assert_eq!(plan, load_on("a", 1, &[]));
}

#[test]
fn free_room_ties_go_to_node_name_then_device_index() {
    let nodes = [
        node("b", vec![dev(0, 50, vec![])]),
        node("a", vec![dev(1, 50, vec![]), dev(0, 50, vec![])]),
    ];
    let plan = plan_load(&wanted("w", 20, &["a", "b"]), &nodes, &lru());
    assert_eq!(plan, load_on("a", 0, &[]));
}

#[test]
fn only_eligible_up_nodes_are_candidates() {
    let mut down = node("down", vec![dev(0, 1000, vec![])]);
    down.up = false;
    let nodes = [
        down,
        node("other", vec![dev(0, 1000, vec![])]),
        node("ok", vec![dev(0, 30, vec![])]),
    ];
    let plan = plan_load(&wanted("w", 20, &["down", "ok"]), &nodes, &lru());
    assert_eq!(plan, load_on("ok", 0, &[]));
}

#[test]
fn no_eligible_node_is_impossible() {
    let nodes = [node("a", vec![dev(0, 1000, vec![])])];
    let reason = impossible_reason(plan_load(&wanted("w", 20, &[]), &nodes, &lru()));
    assert!(reason.contains("no eligible neuron"), "{reason}");
}

#[test]
fn node_holding_a_live_copy_is_skipped_but_a_poisoned_copy_is_not() {
    let loading = Resident {
        loading: true,
        ..res("w", 10)
    };
    let poisoned = Resident {
        poisoned: true,
        ..res("w", 10)
    };
    let nodes = [
        node("a", vec![dev(0, 1000, vec![loading])]),
        node("b", vec![dev(0, 100, vec![poisoned])]),
    ];
    let plan = plan_load(&wanted("w", 20, &["a", "b"]), &nodes, &lru());
    assert_eq!(plan, load_on("b", 0, &[]));
}

// ---- plan_load: avoided nodes ---------------------------------------------

#[test]
fn avoided_node_unused_while_another_node_has_room() {
    let nodes = [
        node("bad", vec![dev(0, 1000, vec![])]),
        node("good", vec![dev(0, 30, vec![])]),
    ];
    let mut w = wanted("w", 20, &["bad", "good"]);
    w.avoid = vec!["bad".into()];
    assert_eq!(plan_load(&w, &nodes, &lru()), load_on("good", 0, &[]));
}

#[test]
fn avoided_node_unused_while_another_node_can_evict() {
    let nodes = [
        node("bad", vec![dev(0, 1000, vec![])]),
        node("good", vec![dev(0, 30, vec![res("old", 30)])]),
    ];
    let mut w = wanted("w", 20, &["bad", "good"]);
    w.avoid = vec!["bad".into()];
    assert_eq!(plan_load(&w, &nodes, &lru()), load_on("good", 0, &["old"]));
}

#[test]
fn avoided_node_used_when_no_other_node_could_ever_hold_it() {
    let nodes = [
        node("bad", vec![dev(0, 1000, vec![])]),
        node("good", vec![dev(0, 19, vec![])]),
    ];
    let mut w = wanted("w", 20, &["bad", "good"]);
    w.avoid = vec!["bad".into()];
    assert_eq!(plan_load(&w, &nodes, &lru()), load_on("bad", 0, &[]));
}

// ---- plan_load: eviction order --------------------------------------------

fn used_at(model: &str, footprint: u64, last_used_ms: u64, priority: i32) -> Resident {
    Resident {
        last_used_ms,
        priority,
        ..res(model, footprint)
    }
}

#[test]
fn lru_evicts_least_recently_used_first() {
    let d = dev(
        0,
        100,
        vec![
            used_at("recent", 40, 900, 0),
            used_at("oldest", 30, 100, 0),
            used_at("older", 30, 200, 0),
        ],
    );
    let nodes = [node("a", vec![d])];
    let plan = plan_load(&wanted("w", 50, &["a"]), &nodes, &lru());
    assert_eq!(plan, load_on("a", 0, &["oldest", "older"]));
}

#[test]
fn lru_ties_go_to_model_id() {
    let d = dev(0, 60, vec![used_at("b", 30, 5, 0), used_at("a", 30, 5, 0)]);
    let plan = plan_load(&wanted("w", 30, &["n"]), &[node("n", vec![d])], &lru());
    assert_eq!(plan, load_on("n", 0, &["a"]));
}

#[test]
fn priority_evicts_lowest_priority_first_then_lru() {
    let d = dev(
        0,
        90,
        vec![
            used_at("important", 30, 1, 10),
            used_at("low-recent", 30, 900, -1),
            used_at("low-old", 30, 100, -1),
        ],
    );
    let nodes = [node("a", vec![d])];
    let plan = plan_load(&wanted("w", 30, &["a"]), &nodes, &prio());
    assert_eq!(plan, load_on("a", 0, &["low-old"]));
    let plan = plan_load(&wanted("w", 60, &["a"]), &nodes, &prio());
    assert_eq!(plan, load_on("a", 0, &["low-old", "low-recent"]));
    // The same fleet under lru evicts the least recently used instead.
    let plan = plan_load(&wanted("w", 30, &["a"]), &nodes, &lru());
    assert_eq!(plan, load_on("a", 0, &["important"]));
}

/// Room beyond the idle model needs the blocker: `Held` (passes) for a busy
/// or loading one, `Pinned` (does not) for a pinned one.
fn only_blocker_kept(blocker: Resident, passes: bool) {
    let d = dev(0, 100, vec![used_at("idle", 40, 900, 5), blocker]);
    let nodes = [node("a", vec![d])];
    for policy in [lru(), prio()] {
        // Room for 40 comes from the idle model only.
        let plan = plan_load(&wanted("w", 40, &["a"]), &nodes, &policy);
        assert_eq!(plan, load_on("a", 0, &["idle"]));
        // Room for 50 would need the blocker too.
        let plan = plan_load(&wanted("w", 50, &["a"]), &nodes, &policy);
        let LoadPlan::Impossible(why) = plan else {
            panic!("expected Impossible, got {plan:?}");
        };
        assert_eq!(why.passes(), passes, "{why}");
        let reason = why.to_string();
        let says = if passes { "busy or loading" } else { "pinned" };
        assert!(reason.contains(says), "{reason}");
    }
}

#[test]
fn busy_beside_pinned_passes_only_where_the_busy_one_makes_room() {
    // A pinned 60 and a busy 30 on one device of 100: a 40 fits once the
    // busy one is idle (Held), a 50 never while the pin lasts (Pinned).
    let d = dev(
        0,
        100,
        vec![
            Resident {
                pinned: true,
                ..used_at("pinned", 60, 0, 0)
            },
            Resident {
                in_flight: 2,
                ..used_at("busy", 30, 0, 0)
            },
        ],
    );
    let nodes = [node("a", vec![d])];
    let why = |fp| match plan_load(&wanted("w", fp, &["a"]), &nodes, &lru()) {
        LoadPlan::Impossible(why) => why,
        other => panic!("expected Impossible, got {other:?}"),
    };
    assert!(why(40).passes(), "{}", why(40));
    assert!(!why(50).passes(), "{}", why(50));
    assert!(matches!(why(50), Impossible::Pinned { .. }), "{}", why(50));
}

#[test]
fn pinned_never_evicted() {
    only_blocker_kept(
        Resident {
            pinned: true,
            poisoned: true,
            ..used_at("pinned", 60, 0, -9)
        },
        false,
    );
}

#[test]
fn in_flight_never_evicted() {
    only_blocker_kept(
        Resident {
            in_flight: 1,
            ..used_at("busy", 60, 0, -9)
        },
        true,
    );
}

#[test]
fn loading_never_evicted() {
    only_blocker_kept(
        Resident {
            loading: true,
            ..used_at("loading", 60, 0, -9)
        },
        true,
    );
}

#[test]
fn poisoned_evicted_first_even_if_young() {
    let poisoned = Resident {
        poisoned: true,
        loaded_at_ms: NOW,
        ..used_at("poisoned", 30, NOW, 99)
    };
    let d = dev(0, 60, vec![used_at("cold", 30, 0, -5), poisoned]);
    let nodes = [node("a", vec![d])];
    for policy in [lru(), prio()] {
        let plan = plan_load(&wanted("w", 30, &["a"]), &nodes, &policy);
        assert_eq!(plan, load_on("a", 0, &["poisoned"]));
    }
}

// ---- plan_load: choosing the device ---------------------------------------

#[test]
fn best_device_needs_fewest_victims() {
    let nodes = [
        node("a", vec![dev(0, 100, vec![res("a1", 50), res("a2", 50)])]),
        node("b", vec![dev(0, 100, vec![res("b1", 80), res("b2", 20)])]),
    ];
    // a needs two victims for 60 bytes; b needs one (b1, chosen by id).
    let plan = plan_load(&wanted("w", 60, &["a", "b"]), &nodes, &lru());
    assert_eq!(plan, load_on("b", 0, &["b1"]));
}

#[test]
fn best_device_tie_fewest_bytes_then_most_free_then_place() {
    let nodes = [
        node("a", vec![dev(0, 100, vec![res("a1", 70), res("a2", 30)])]),
        node("b", vec![dev(0, 100, vec![res("b1", 40), res("b2", 60)])]),
    ];
    // One victim each: a evicts 70 (a1), b evicts 40 (b1): fewer bytes wins.
    let plan = plan_load(&wanted("w", 40, &["a", "b"]), &nodes, &lru());
    assert_eq!(plan, load_on("b", 0, &["b1"]));

    // Same victim size, b's device is larger: more free after wins.
    let nodes = [
        node("a", vec![dev(0, 100, vec![res("a1", 50), res("a2", 50)])]),
        node("b", vec![dev(0, 110, vec![res("b1", 50), res("b2", 50)])]),
    ];
    let plan = plan_load(&wanted("w", 50, &["a", "b"]), &nodes, &lru());
    assert_eq!(plan, load_on("b", 0, &["b1"]));

    // A full tie goes to the node name, then the device index.
    let nodes = [
        node("b", vec![dev(0, 100, vec![res("x", 100)])]),
        node(
            "a",
            vec![
                dev(1, 100, vec![res("y", 100)]),
                dev(0, 100, vec![res("z", 100)]),
            ],
        ),
    ];
    let plan = plan_load(&wanted("w", 50, &["a", "b"]), &nodes, &lru());
    assert_eq!(plan, load_on("a", 0, &["z"]));
}

// ---- plan_load: thrash guard, impossible, unknown footprint ---------------

fn loaded(model: &str, footprint: u64, ago_ms: u64) -> Resident {
    Resident {
        loaded_at_ms: NOW - ago_ms,
        ..res(model, footprint)
    }
}

#[test]
fn thrash_guard_waits_until_the_needed_victim_grows_up() {
    // 40 bytes must go; the grown-up 20 is not enough, so the young are
    // needed. 30 was loaded 50s ago (10s left), 25 was loaded 20s ago (40s
    // left): only the first is needed.
    let d = dev(
        0,
        100,
        vec![
            res("old", 20),
            loaded("y1", 30, 50_000),
            loaded("y2", 25, 20_000),
        ],
    );
    let nodes = [node("a", vec![d])];
    let plan = plan_load(&wanted("w", 65, &["a"]), &nodes, &lru());
    assert_eq!(
        plan,
        LoadPlan::Wait {
            retry_after_ms: 10_000
        }
    );
    // Asked again once it has grown up, the answer is a load.
    let later = Policy {
        now_ms: NOW + 10_000,
        ..lru()
    };
    assert_eq!(
        plan_load(&wanted("w", 65, &["a"]), &nodes, &later),
        load_on("a", 0, &["old", "y1"])
    );
    // Needing both young ones waits for the younger.
    let plan = plan_load(&wanted("w", 90, &["a"]), &nodes, &lru());
    assert_eq!(
        plan,
        LoadPlan::Wait {
            retry_after_ms: 40_000
        }
    );
}

#[test]
fn thrash_guard_wait_is_the_minimum_over_devices() {
    let nodes = [
        node("a", vec![dev(0, 50, vec![loaded("ya", 50, 1_000)])]),
        node("b", vec![dev(0, 50, vec![loaded("yb", 50, 30_000)])]),
    ];
    let plan = plan_load(&wanted("w", 50, &["a", "b"]), &nodes, &lru());
    assert_eq!(
        plan,
        LoadPlan::Wait {
            retry_after_ms: 30_000
        }
    );
}

#[test]
fn a_device_that_can_evict_now_beats_waiting() {
    let nodes = [
        node("a", vec![dev(0, 50, vec![loaded("young", 50, 1_000)])]),
        node("b", vec![dev(0, 50, vec![res("x", 25), res("y", 25)])]),
    ];
    let plan = plan_load(&wanted("w", 50, &["a", "b"]), &nodes, &lru());
    assert_eq!(plan, load_on("b", 0, &["x", "y"]));
}

#[test]
fn impossible_names_footprint_and_largest_budget() {
    let nodes = [
        node("a", vec![dev(0, 2048, vec![]), dev(1, 4096, vec![])]),
        node("b", vec![dev(0, 1000, vec![])]),
    ];
    let reason = impossible_reason(plan_load(&wanted("big", 8192, &["a", "b"]), &nodes, &lru()));
    assert!(
        reason.contains("big needs 8192 bytes (8.0 KiB)"),
        "{reason}"
    );
    assert!(
        reason.contains("largest device budget on an eligible neuron is 4096 bytes"),
        "{reason}"
    );
}

#[test]
fn unknown_footprint_fits_anywhere_and_evicts_nothing() {
    let nodes = [
        node("a", vec![dev(0, 100, vec![res("x", 100)])]),
        node("b", vec![dev(0, 100, vec![res("y", 150)])]),
    ];
    let plan = plan_load(&wanted("w", 0, &["a", "b"]), &nodes, &lru());
    assert_eq!(plan, load_on("a", 0, &[]));
    let nodes = [
        node("a", vec![dev(0, 100, vec![res("x", 60)])]),
        node("b", vec![dev(0, 100, vec![res("y", 10)])]),
    ];
    let plan = plan_load(&wanted("w", 0, &["a", "b"]), &nodes, &lru());
    assert_eq!(plan, load_on("b", 0, &[]));
}

#[test]
fn over_budget_device_counts_as_full() {
    let d = dev(0, 100, vec![res("x", 90), res("y", 40)]);
    assert_eq!(d.used(), 130);
    assert_eq!(d.free(), 0);
    // Evicting x (90) leaves 40 used: 60 free.
    let plan = plan_load(&wanted("w", 60, &["a"]), &[node("a", vec![d])], &lru());
    assert_eq!(plan, load_on("a", 0, &["x"]));
}
