//! Properties of [`super`] over random fleets.

use proptest::prelude::*;

use super::super::fixtures::*;
use super::*;

fn arb_wanted() -> impl Strategy<Value = Wanted> {
    (
        prop_oneof![4 => Just("w"), 1 => Just("m2")],
        prop_oneof![1 => Just(0u64), 8 => 1u64..130],
        prop::collection::vec(prop::bool::weighted(0.75), PROP_NODES),
        prop::collection::vec(prop::bool::weighted(0.25), PROP_NODES),
    )
        .prop_map(|(model, footprint, eligible, avoid)| {
            let names = |mask: Vec<bool>| {
                mask.into_iter()
                    .enumerate()
                    .filter(|(_, on)| *on)
                    .map(|(i, _)| format!("n{i}"))
                    .collect()
            };
            Wanted {
                model: model.into(),
                footprint,
                eligible: names(eligible),
                avoid: names(avoid),
            }
        })
}

fn arb_replicas() -> impl Strategy<Value = Vec<ReadyReplica>> {
    prop::collection::vec(
        (0usize..PROP_NODES, 0u64..4, 0u64..4).prop_map(|(n, in_flight, last_used_ms)| {
            ReadyReplica {
                node: format!("n{n}"),
                in_flight,
                last_used_ms,
            }
        }),
        0..6,
    )
}

/// Up, eligible and not holding a live copy: what rule 1 starts from.
fn candidate(n: &NodeRoom, w: &Wanted) -> bool {
    n.up && w.eligible.contains(&n.name) && !n.holds(&w.model)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn load_plans_are_sound(
        nodes in arb_fleet(),
        w in arb_wanted(),
        policy in arb_policy(),
    ) {
        let plan = plan_load(&w, &nodes, &policy);
        match &plan {
            LoadPlan::Load { node, device, evict } => {
                let n = nodes.iter().find(|n| &n.name == node).unwrap();
                prop_assert!(candidate(n, &w), "{plan:?}");
                let d = n.devices.iter().find(|d| d.index == *device).unwrap();
                let mut after = d.clone();
                for m in evict {
                    let r = d.residents.iter().find(|r| &r.model == m).unwrap();
                    prop_assert!(!r.pinned, "evicts pinned {r:?}");
                    prop_assert_eq!(r.in_flight, 0, "evicts busy {:?}", r);
                    prop_assert!(!r.loading, "evicts loading {r:?}");
                    prop_assert_eq!(policy.young_for(r), 0, "evicts young {:?}", r);
                    after.residents.retain(|x| &x.model != m);
                }
                prop_assert!(after.free() >= w.footprint, "{plan:?} leaves {}", after.free());
                let room_now = nodes.iter().filter(|n| candidate(n, &w)).any(|n| {
                    !w.avoid.contains(&n.name)
                        && n.devices.iter().any(|d| d.free() >= w.footprint)
                });
                if room_now || w.footprint == 0 {
                    prop_assert!(evict.is_empty(), "{plan:?} evicts although room exists");
                }
            }
            LoadPlan::Wait { retry_after_ms } => {
                prop_assert!(*retry_after_ms > 0);
                prop_assert!(*retry_after_ms <= policy.min_residency_ms);
                // Exactly then, and not a millisecond earlier, a load is possible.
                let at = |now_ms| plan_load(&w, &nodes, &Policy { now_ms, ..policy.clone() });
                let later = at(policy.now_ms + retry_after_ms);
                prop_assert!(matches!(later, LoadPlan::Load { .. }), "{later:?}");
                let earlier = at(policy.now_ms + retry_after_ms - 1);
                prop_assert!(matches!(earlier, LoadPlan::Wait { .. }), "{earlier:?}");
            }
            LoadPlan::Impossible(_) => {
                // Time does not help, unlike Wait.
                let later = Policy { now_ms: policy.now_ms + policy.min_residency_ms, ..policy.clone() };
                let again = plan_load(&w, &nodes, &later);
                prop_assert!(matches!(again, LoadPlan::Impossible(_)), "{again:?}");
            }
        }
    }

    #[test]
    fn without_avoid_any_free_device_means_no_eviction(
        nodes in arb_fleet(),
        mut w in arb_wanted(),
        policy in arb_policy(),
    ) {
        w.avoid.clear();
        let room = nodes
            .iter()
            .filter(|n| candidate(n, &w))
            .any(|n| n.devices.iter().any(|d| d.free() >= w.footprint));
        let plan = plan_load(&w, &nodes, &policy);
        if room {
            prop_assert!(
                matches!(&plan, LoadPlan::Load { evict, .. } if evict.is_empty()),
                "{plan:?}"
            );
        }
    }

    #[test]
    fn pick_ready_returns_the_least_loaded(replicas in arb_replicas()) {
        match pick_ready(&replicas) {
            None => prop_assert!(replicas.is_empty()),
            Some(i) => {
                let got = &replicas[i];
                for r in &replicas {
                    prop_assert!(got.in_flight <= r.in_flight);
                    if r.in_flight == got.in_flight {
                        prop_assert!(got.last_used_ms <= r.last_used_ms);
                    }
                }
            }
        }
    }
}
