//! Properties of [`super`] over random fleets.

use std::collections::HashMap;

use proptest::prelude::*;

use super::super::fixtures::*;
use super::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn defrag_moves_are_sound(
        nodes in arb_fleet(),
        waiting in prop::collection::vec(0u64..150, 0..4),
        policy in arb_policy(),
        forbidden in prop::collection::hash_set((0usize..8, 0usize..PROP_NODES), 0..6),
    ) {
        let can_load = |model: &str, node: &str| {
            !forbidden.iter().any(|(m, n)| model == format!("m{m}") && node == format!("n{n}"))
        };
        let moves = if forbidden.is_empty() {
            defrag_plan(&nodes, &waiting, &policy)
        } else {
            defrag_plan_with(&nodes, &waiting, &policy, can_load)
        };
        if moves.is_empty() {
            return Ok(());
        }
        let w = waiting.iter().copied().max().unwrap_or(0);
        let find = |name: &str| nodes.iter().find(|n| n.name == name).unwrap();
        // One source device; every moved resident is movable and leaves it.
        let from = find(&moves[0].from_node);
        prop_assert!(from.up);
        let mut source: Option<&DeviceRoom> = None;
        let mut received: HashMap<(String, u32), u64> = HashMap::new();
        let mut moved = 0u64;
        for m in &moves {
            prop_assert_eq!(&m.from_node, &from.name);
            let d = from
                .devices
                .iter()
                .find(|d| d.residents.iter().any(|r| r.model == m.model))
                .unwrap();
            prop_assert!(source.is_none_or(|s| s.index == d.index), "{moves:?}");
            source = Some(d);
            let r = d.residents.iter().find(|r| r.model == m.model).unwrap();
            prop_assert!(!r.pinned && !r.loading && !r.poisoned && r.in_flight == 0, "{r:?}");
            prop_assert_eq!(policy.young_for(r), 0);
            moved += r.footprint;

            prop_assert!(can_load(&m.model, &m.to_node), "{m:?} is not allowed");
            let to = find(&m.to_node);
            prop_assert!(to.up && to.name != from.name, "{m:?}");
            prop_assert!(
                to.devices.iter().flat_map(|d| &d.residents).all(|x| x.model != m.model),
                "{m:?} goes to a node that holds it"
            );
            *received.entry((m.to_node.clone(), m.to_device)).or_default() += r.footprint;
        }
        // Targets are never overfilled.
        for ((node, device), bytes) in &received {
            let d = find(node).devices.iter().find(|d| d.index == *device).unwrap();
            prop_assert!(*bytes <= d.free(), "{node}/{device} gets {bytes} with {} free", d.free());
        }
        // The source device ends with room for the largest waiting model.
        let d = source.unwrap();
        let free_after = d.budget.saturating_sub(d.used() - moved);
        prop_assert!(free_after >= w, "{moves:?} leaves {free_after} < {w}");
        // And defrag only ran because no device had that room already.
        let room = nodes.iter().filter(|n| n.up).flat_map(|n| &n.devices).any(|d| d.free() >= w);
        prop_assert!(!room);
    }

    #[test]
    fn idle_victims_are_sound(
        nodes in arb_fleet(),
        idle_ms in prop_oneof![Just(0u64), 1u64..PROP_NOW],
    ) {
        let victims = idle_victims(&nodes, idle_ms, PROP_NOW);
        let mut sorted = victims.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(&sorted, &victims);
        for n in &nodes {
            for r in n.devices.iter().flat_map(|d| &d.residents) {
                let idle = idle_ms > 0
                    && PROP_NOW - r.last_used_ms.max(r.loaded_at_ms) > idle_ms;
                let expected =
                    n.up && !r.pinned && !r.loading && r.in_flight == 0 && (r.poisoned || idle);
                let got = victims.contains(&(n.name.clone(), r.model.clone()));
                prop_assert_eq!(got, expected, "{} {:?}", n.name, r);
            }
        }
    }
}
