//! Builders and proptest strategies shared by the router's tests.

use proptest::prelude::*;

use super::*;

/// "Now" in the unit tests.
pub const NOW: u64 = 1_000_000;
/// `min_residency` in the unit tests.
pub const MIN_RES: u64 = 60_000;

/// An idle, unpinned, grown-up, ready resident used at time 0.
pub fn res(model: &str, footprint: u64) -> Resident {
    Resident {
        model: model.into(),
        footprint,
        pinned: false,
        priority: 0,
        in_flight: 0,
        last_used_ms: 0,
        loaded_at_ms: 0,
        loading: false,
        poisoned: false,
    }
}

pub fn dev(index: u32, budget: u64, residents: Vec<Resident>) -> DeviceRoom {
    DeviceRoom {
        index,
        budget,
        residents,
    }
}

/// An up node.
pub fn node(name: &str, devices: Vec<DeviceRoom>) -> NodeRoom {
    NodeRoom {
        name: name.into(),
        up: true,
        devices,
    }
}

pub fn wanted(model: &str, footprint: u64, eligible: &[&str]) -> Wanted {
    Wanted {
        model: model.into(),
        footprint,
        eligible: eligible.iter().map(|s| s.to_string()).collect(),
        avoid: Vec::new(),
    }
}

pub fn lru() -> Policy {
    Policy {
        strategy: EvictionStrategy::Lru,
        min_residency_ms: MIN_RES,
        now_ms: NOW,
    }
}

pub fn prio() -> Policy {
    Policy {
        strategy: EvictionStrategy::Priority,
        ..lru()
    }
}

/// `Load` with these fields.
pub fn load_on(node: &str, device: u32, evict: &[&str]) -> LoadPlan {
    LoadPlan::Load {
        node: node.into(),
        device,
        evict: evict.iter().map(|s| s.to_string()).collect(),
    }
}

/// "Now" in the property tests; load and use times lie before it.
pub const PROP_NOW: u64 = 10_000;
/// Node names used by [`arb_fleet`]: `n0`, `n1`, …
pub const PROP_NODES: usize = 4;

fn arb_resident() -> impl Strategy<Value = Resident> {
    (
        (1u64..60, prop::bool::weighted(0.2), -2i32..3),
        prop_oneof![3 => Just(0u64), 1 => 1u64..3],
        (0u64..PROP_NOW, 0u64..PROP_NOW),
        (prop::bool::weighted(0.1), prop::bool::weighted(0.15)),
    )
        .prop_map(
            |(
                (footprint, pinned, priority),
                in_flight,
                (last_used_ms, loaded_at_ms),
                (loading, poisoned),
            )| {
                Resident {
                    model: String::new(),
                    footprint,
                    pinned,
                    priority,
                    in_flight,
                    last_used_ms,
                    loaded_at_ms,
                    loading,
                    poisoned,
                }
            },
        )
}

fn arb_device() -> impl Strategy<Value = (u64, Vec<Resident>)> {
    (10u64..150, prop::collection::vec(arb_resident(), 0..4))
}

/// 2 to 4 nodes `n0`…, mostly up, each with 1 to 3 devices of budget below
/// 150 holding up to 3 residents (possibly over budget). Model ids are
/// unique on a node (`m0`, `m1`, … in device order) and shared across nodes.
pub fn arb_fleet() -> impl Strategy<Value = Vec<NodeRoom>> {
    let node = (
        prop::bool::weighted(0.85),
        prop::collection::vec(arb_device(), 1..4),
    );
    prop::collection::vec(node, 2..=PROP_NODES).prop_map(|nodes| {
        nodes
            .into_iter()
            .enumerate()
            .map(|(i, (up, devices))| {
                let mut k = 0;
                let devices = devices
                    .into_iter()
                    .enumerate()
                    .map(|(d, (budget, residents))| {
                        let residents = residents
                            .into_iter()
                            .map(|r| {
                                k += 1;
                                Resident {
                                    model: format!("m{}", k - 1),
                                    ..r
                                }
                            })
                            .collect();
                        dev(d as u32, budget, residents)
                    })
                    .collect();
                NodeRoom {
                    name: format!("n{i}"),
                    up,
                    devices,
                }
            })
            .collect()
    })
}

/// A policy at [`PROP_NOW`] with a random strategy and thrash guard.
pub fn arb_policy() -> impl Strategy<Value = Policy> {
    (any::<bool>(), 0u64..5_000).prop_map(|(priority, min_residency_ms)| Policy {
        strategy: if priority {
            EvictionStrategy::Priority
        } else {
            EvictionStrategy::Lru
        },
        min_residency_ms,
        now_ms: PROP_NOW,
    })
}
