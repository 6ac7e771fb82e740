//! Which ready replica serves a request, and where a cold model is loaded.
//!
//! # Choosing a ready replica ([`pick_ready`])
//!
//! The replica with the fewest requests in flight wins. Ties go to the
//! least recently used one (the smallest `last_used_ms`), then to the node
//! whose name sorts first.
//!
//! # Planning a load ([`plan_load`])
//!
//! 1. **Candidates.** The devices of the nodes that are up, are listed in
//!    `eligible`, and do not already hold a copy of the model that is loading
//!    or ready (a node holds one copy of a model). Devices of nodes listed in
//!    `avoid` are candidates only when no other candidate device has a
//!    budget at least the footprint — that is, only when no other node could
//!    ever hold the model. No candidate at all gives `Impossible`.
//! 2. **Free room.** If some candidate device has free memory of at least the
//!    footprint, the model goes to the one with the most free memory (ties:
//!    node name, then device index) and nothing is evicted. A footprint of 0
//!    (unknown) fits every device, so an unknown model is never the cause of
//!    an eviction.
//! 3. **Eviction.** Otherwise, on every candidate device whose budget is at
//!    least the footprint, the evictable residents (not pinned, not busy, not
//!    loading) are put in eviction order: poisoned residents first (they
//!    serve nothing), then by strategy — `lru`: least recently used first;
//!    `priority`: lowest `priority` first, then least recently used — and
//!    finally by model id. Victims are taken in that order, skipping the too
//!    young, until the device's free memory reaches the footprint. Among the
//!    devices where that succeeds, the chosen one needs the fewest victims;
//!    ties: fewest bytes evicted, then most free memory after the eviction,
//!    then node name, then device index. The plan is `Load` on that device
//!    with `evict` listing the victims in the order they are to be unloaded.
//! 4. **Thrash guard.** If no device can make room without evicting a too
//!    young resident, but one could if the too young were evictable, the
//!    plan is `Wait`. Its `retry_after_ms` is, minimised over those devices,
//!    the time until enough too-young residents (taken the soonest-grown-up
//!    first) have reached `min_residency`: asked again after that long, with
//!    nothing else changed, the answer is a `Load`.
//! 5. **Impossible.** Otherwise the plan is `Impossible`, with a reason that
//!    names the footprint and the largest candidate budget (`TooLarge`), or
//!    says that the devices large enough are held: `Held` when on some such
//!    device room would be made with its busy and loading models idle (that
//!    passes once requests finish or loads end, so a request may wait for
//!    it), `Pinned` when only unpinning a model would make room (waiting
//!    cannot help).

use std::cmp::Ordering;

use super::{
    DeviceRoom, EvictionStrategy, Impossible, LoadPlan, NodeRoom, Policy, ReadyReplica, Resident,
    Wanted,
};

/// Rule 2 of DESIGN: the index of the replica with the fewest requests in
/// flight; ties go to the least recently used, then to the node name that
/// sorts first. `None` when `replicas` is empty.
pub fn pick_ready(replicas: &[ReadyReplica]) -> Option<usize> {
    replicas
        .iter()
        .enumerate()
        .min_by(|(_, a), (_, b)| {
            ready_order(
                (a.in_flight, a.last_used_ms, &a.node),
                (b.in_flight, b.last_used_ms, &b.node),
            )
        })
        .map(|(i, _)| i)
}

/// The order of [`pick_ready`] on `(in_flight, last_used_ms, node)`: the
/// first is preferred. Exposed so the request path can apply the same rule
/// without building [`ReadyReplica`]s.
pub fn ready_order(a: (u64, u64, &str), b: (u64, u64, &str)) -> std::cmp::Ordering {
    a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then_with(|| a.2.cmp(b.2))
}

/// Rule 3 of DESIGN: where to load `wanted`, and what to unload there first.
/// See the module documentation for the exact rules.
pub fn plan_load(wanted: &Wanted, nodes: &[NodeRoom], policy: &Policy) -> LoadPlan {
    let model = &wanted.model;
    let fp = wanted.footprint;
    let all: Vec<(&NodeRoom, &DeviceRoom)> = nodes
        .iter()
        .filter(|n| n.up && wanted.eligible.contains(&n.name) && !n.holds(model))
        .flat_map(|n| n.devices.iter().map(move |d| (n, d)))
        .collect();
    if all.is_empty() {
        return LoadPlan::Impossible(Impossible::NoNode {
            model: model.clone(),
        });
    }
    let preferred: Vec<(&NodeRoom, &DeviceRoom)> = all
        .iter()
        .copied()
        .filter(|(n, _)| !wanted.avoid.contains(&n.name))
        .collect();
    let candidates = if preferred.iter().any(|(_, d)| d.budget >= fp) {
        preferred
    } else {
        all
    };

    // Free room: the device with the most free memory.
    if let Some((n, d)) = candidates
        .iter()
        .filter(|(_, d)| d.free() >= fp)
        .min_by(|a, b| b.1.free().cmp(&a.1.free()).then_with(|| by_place(a, b)))
    {
        return load(n, d, Vec::new());
    }

    // Eviction on the device that needs the least of it.
    let mut best: Option<(EvictionCost, (&NodeRoom, &DeviceRoom), Vec<&Resident>)> = None;
    let mut wait: Option<u64> = None;
    let mut largest = 0u64;
    let mut any_fits = false;
    let mut any_held = false;
    for &(n, d) in &candidates {
        largest = largest.max(d.budget);
        if d.budget < fp {
            continue;
        }
        any_fits = true;
        match evict_on(d, fp, policy) {
            Eviction::Now(victims) => {
                let cost = EvictionCost::of(d, &victims);
                let better = match &best {
                    None => true,
                    Some((c, place, _)) => {
                        cost.cmp(c).then_with(|| by_place(&(n, d), place)).is_lt()
                    }
                };
                if better {
                    best = Some((cost, (n, d), victims));
                }
            }
            Eviction::After(ms) => wait = Some(wait.map_or(ms, |w| w.min(ms))),
            Eviction::Held => any_held = true,
            Eviction::Pinned => {}
        }
    }
    if let Some((_, (n, d), victims)) = best {
        return load(n, d, victims);
    }
    if let Some(retry_after_ms) = wait {
        return LoadPlan::Wait { retry_after_ms };
    }
    LoadPlan::Impossible(if any_held {
        Impossible::Held {
            model: model.clone(),
            needs: fp,
        }
    } else if any_fits {
        Impossible::Pinned {
            model: model.clone(),
            needs: fp,
        }
    } else {
        Impossible::TooLarge {
            model: model.clone(),
            needs: fp,
            largest,
        }
    })
}

/// The evictable residents of `device` (not pinned, not busy, not loading)
/// in the order they are to be evicted: poisoned first, then by strategy,
/// then by model id. Too-young residents are included; callers filter them.
pub fn eviction_order(device: &DeviceRoom, strategy: EvictionStrategy) -> Vec<&Resident> {
    let mut order: Vec<&Resident> = device
        .residents
        .iter()
        .filter(|r| !r.pinned && r.in_flight == 0 && !r.loading)
        .collect();
    order.sort_by(|a, b| {
        let by_strategy = match strategy {
            EvictionStrategy::Lru => Ordering::Equal,
            EvictionStrategy::Priority => a.priority.cmp(&b.priority),
        };
        b.poisoned
            .cmp(&a.poisoned)
            .then(by_strategy)
            .then(a.last_used_ms.cmp(&b.last_used_ms))
            .then_with(|| a.model.cmp(&b.model))
    });
    order
}

/// What eviction can do on one device.
enum Eviction<'a> {
    /// These victims, in order, make room now.
    Now(Vec<&'a Resident>),
    /// Room can be made once the too young have aged this many more ms.
    After(u64),
    /// Busy or loading residents hold too much; with them idle, room could
    /// be made.
    Held,
    /// Pinned residents hold too much, whatever the others do.
    Pinned,
}

fn evict_on<'a>(device: &'a DeviceRoom, fp: u64, policy: &Policy) -> Eviction<'a> {
    let order = eviction_order(device, policy.strategy);
    let fits = |used: u64| device.budget.saturating_sub(used) >= fp;
    let mut used = device.used();
    let mut victims = Vec::new();
    for r in order.iter().filter(|r| policy.young_for(r) == 0) {
        if fits(used) {
            break;
        }
        used = used.saturating_sub(r.footprint);
        victims.push(*r);
    }
    if fits(used) {
        return Eviction::Now(victims);
    }
    // Every grown-up victim is gone; add the young, soonest-grown-up first.
    let mut young: Vec<(u64, u64)> = order
        .iter()
        .map(|r| (policy.young_for(r), r.footprint))
        .filter(|(left, _)| *left > 0)
        .collect();
    young.sort_unstable();
    for (left, footprint) in young {
        used = used.saturating_sub(footprint);
        if fits(used) {
            return Eviction::After(left);
        }
    }
    let unpinned: u64 = device
        .residents
        .iter()
        .filter(|r| !r.pinned)
        .fold(0, |acc, r| acc.saturating_add(r.footprint));
    if fits(device.used().saturating_sub(unpinned)) {
        Eviction::Held
    } else {
        Eviction::Pinned
    }
}

/// Smaller is better: fewer victims, fewer bytes, more free memory after.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct EvictionCost {
    victims: usize,
    bytes: u64,
    free_after: std::cmp::Reverse<u64>,
}

impl EvictionCost {
    fn of(device: &DeviceRoom, victims: &[&Resident]) -> Self {
        let bytes = victims
            .iter()
            .fold(0u64, |acc, r| acc.saturating_add(r.footprint));
        let free_after = device
            .budget
            .saturating_sub(device.used().saturating_sub(bytes));
        Self {
            victims: victims.len(),
            bytes,
            free_after: std::cmp::Reverse(free_after),
        }
    }
}

/// Node name, then device index.
fn by_place(a: &(&NodeRoom, &DeviceRoom), b: &(&NodeRoom, &DeviceRoom)) -> Ordering {
    a.0.name.cmp(&b.0.name).then(a.1.index.cmp(&b.1.index))
}

fn load(node: &NodeRoom, device: &DeviceRoom, victims: Vec<&Resident>) -> LoadPlan {
    LoadPlan::Load {
        node: node.name.clone(),
        device: device.index,
        evict: victims.into_iter().map(|r| r.model.clone()).collect(),
    }
}

#[cfg(test)]
#[path = "place_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "place_props.rs"]
mod props;
