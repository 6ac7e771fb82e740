//! What the evictor unloads when models sit idle, and what it moves to undo
//! fragmentation.
//!
//! # Idle unloads ([`idle_victims`])
//!
//! On every node that is up, a resident is unloaded when it is not pinned,
//! not loading, has no request in flight, and has been idle longer than
//! `idle_unload_after`: `now - max(last_used, loaded_at) > idle_unload_after`
//! (a model that was loaded but never used counts as idle from its load).
//! Poisoned residents (not pinned, not loading, not busy) are unloaded
//! whatever their idleness, since they serve nothing. `idle_unload_after = 0`
//! turns the idle rule off; poisoned residents are still returned. A model
//! may carry its own threshold instead ([`idle_victims_with`]; Ollama's
//! `keep_alive`): none never idles out, `0` goes as soon as it is idle (no
//! request in flight), others as above. The thrash
//! guard (`min_residency`) does not apply to idle unloads. Down nodes are
//! skipped: they cannot be told to unload anything. The answer is sorted by
//! node name, then model id, without duplicates.
//!
//! # Defragmentation ([`defrag_plan`])
//!
//! Free memory is fragmented when no device can take a model that is waiting
//! to be loaded although one could if idle models on it lived elsewhere.
//! Defragmentation moves such idle models to other nodes so that the largest
//! waiting model can later be loaded without evicting anything.
//!
//! - `waiting` holds the footprints of catalogue models that are loadable
//!   but resident nowhere; `W` is the largest. With none (or `W = 0`),
//!   nothing is planned.
//! - If a device of an up node already has free memory of at least `W`,
//!   nothing is planned: the room exists (and a device freed by an earlier
//!   call stays the answer, so models do not move back and forth).
//! - A resident is **movable** when it is not pinned, not busy, not loading,
//!   not poisoned and not too young (`now - loaded_at >= min_residency`).
//! - A device is **fragmented** when its node is up, its budget is at least
//!   `W`, its free memory is less than `W`, and it holds a movable resident.
//! - A **move** loads a resident on a device of another up node that may
//!   load it (see [`defrag_plan_with`]), does not hold that model in any
//!   state, and has free memory of at least the resident's footprint after
//!   the other moves of the same plan (nothing is evicted there); then it
//!   unloads it from its device.
//! - Fragmented devices are tried most free memory first (the closest to
//!   fitting `W`; ties: node name, device index). For a device, the plan is
//!   the set of its movable residents with the fewest models, then the
//!   fewest bytes (remaining ties are broken by footprint, then model id),
//!   whose departure brings the device's free memory to at least `W` and
//!   which can all be placed: largest first (ties: model id), each on the
//!   target device with the most free memory left (ties: node name, device
//!   index). Only the 16 smallest movable residents of a device are
//!   considered. If no such set exists, nothing is planned for that device
//!   (moving without making room is churn) and the next one is tried. The moves are returned in placement
//!   order and are independent of each other.
//! - At most one device is freed per call, which keeps the churn of one
//!   evictor cycle small; the evictor runs this every `defrag_after_cycles`
//!   cycles.

use super::{DeviceRoom, NodeRoom, Policy, Resident};

/// Move `model` from `from_node` to device `to_device` of `to_node`: load it
/// there first, then unload it from `from_node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The model id.
    pub model: String,
    /// The node it leaves.
    pub from_node: String,
    /// The node it goes to.
    pub to_node: String,
    /// The device it goes to on `to_node`.
    pub to_device: u32,
}

/// The evictor's idle rule: `(node, model)` pairs to unload, sorted by node
/// then model. See the module documentation for the exact rule.
pub fn idle_victims(nodes: &[NodeRoom], idle_ms: u64, now_ms: u64) -> Vec<(String, String)> {
    idle_victims_with(nodes, |_| (idle_ms > 0).then_some(idle_ms), now_ms)
}

/// The idle rule with a threshold per model: `idle_ms_of(model)` is `None`
/// (never unloaded for idleness), `Some(0)` (unloaded as soon as nothing
/// runs on it) or `Some(ms)` (idle longer than `ms`).
pub fn idle_victims_with(
    nodes: &[NodeRoom],
    idle_ms_of: impl Fn(&str) -> Option<u64>,
    now_ms: u64,
) -> Vec<(String, String)> {
    let idle_ms_of = &idle_ms_of;
    let mut out: Vec<(String, String)> = nodes
        .iter()
        .filter(|n| n.up)
        .flat_map(|n| {
            n.devices
                .iter()
                .flat_map(|d| &d.residents)
                .filter(move |r| {
                    let idle_since = r.last_used_ms.max(r.loaded_at_ms);
                    let idle = idle_ms_of(&r.model)
                        .is_some_and(|ms| ms == 0 || now_ms.saturating_sub(idle_since) > ms);
                    !r.pinned && !r.loading && r.in_flight == 0 && (r.poisoned || idle)
                })
                .map(move |r| (n.name.clone(), r.model.clone()))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Moves that free one fragmented device for the largest of `waiting`
/// (footprints of loadable models resident nowhere); empty when there is
/// nothing worth doing. Any up node is assumed able to load any model; see
/// [`defrag_plan_with`] when that is not so. See the module documentation
/// for the exact rule.
pub fn defrag_plan(nodes: &[NodeRoom], waiting: &[u64], policy: &Policy) -> Vec<Move> {
    defrag_plan_with(nodes, waiting, policy, |_, _| true)
}

/// [`defrag_plan`], where a move of `model` to `node` is considered only
/// when `can_load(model, node)` (the node has the file, affinity allows it).
/// Filtering the moves of a plan afterwards would leave a plan that no
/// longer makes room; this filters targets while planning.
pub fn defrag_plan_with(
    nodes: &[NodeRoom],
    waiting: &[u64],
    policy: &Policy,
    can_load: impl Fn(&str, &str) -> bool,
) -> Vec<Move> {
    let w = waiting.iter().copied().max().unwrap_or(0);
    defrag_plan_for(nodes, w, |_| true, policy, can_load)
}

/// [`defrag_plan_with`] for one waiting model of footprint `w` (the fleet
/// actor calls this for each model loaded nowhere, largest first) that only
/// the nodes for which `w_on(node)` holds can load: only room on those
/// nodes counts as room for it, and only their devices are freed.
pub fn defrag_plan_for(
    nodes: &[NodeRoom],
    w: u64,
    w_on: impl Fn(&str) -> bool,
    policy: &Policy,
    can_load: impl Fn(&str, &str) -> bool,
) -> Vec<Move> {
    if w == 0 {
        return Vec::new();
    }
    let up: Vec<&NodeRoom> = nodes.iter().filter(|n| n.up).collect();
    let devices = || {
        up.iter()
            .filter(|n| w_on(&n.name))
            .flat_map(|n| n.devices.iter().map(move |d| (*n, d)))
    };
    if devices().any(|(_, d)| d.free() >= w) {
        return Vec::new();
    }
    let mut fragmented: Vec<(&NodeRoom, &DeviceRoom)> = devices()
        .filter(|(_, d)| {
            d.budget >= w && d.free() < w && d.residents.iter().any(|r| movable(r, policy))
        })
        .collect();
    fragmented.sort_by(|a, b| {
        b.1.free()
            .cmp(&a.1.free())
            .then_with(|| a.0.name.cmp(&b.0.name))
            .then(a.1.index.cmp(&b.1.index))
    });
    for (node, device) in fragmented {
        if let Some(moves) = free_device(node, device, &up, w, policy, &can_load) {
            return moves;
        }
    }
    Vec::new()
}

/// Not pinned, busy, loading, poisoned or too young.
fn movable(r: &Resident, policy: &Policy) -> bool {
    !r.pinned
        && r.in_flight == 0
        && !r.loading
        && !r.poisoned
        && policy.now_ms.saturating_sub(r.loaded_at_ms) >= policy.min_residency_ms
}

/// At most this many movable residents of a device (the smallest) are
/// considered, which bounds the search to 2^16 subsets.
const MAX_CONSIDERED: usize = 16;

/// How good a set of residents to move is; smaller is better: the number
/// of moves, the bytes moved, then the indices of the (sorted) residents.
type SetKey = (usize, u64, Vec<usize>);

/// A device a resident may move to.
struct Target<'a> {
    node: &'a NodeRoom,
    index: u32,
    free: u64,
}

/// The moves that bring `device` to free >= `w`, or `None` if none can.
fn free_device(
    node: &NodeRoom,
    device: &DeviceRoom,
    up: &[&NodeRoom],
    w: u64,
    policy: &Policy,
    can_load: &dyn Fn(&str, &str) -> bool,
) -> Option<Vec<Move>> {
    let mut residents: Vec<&Resident> = device
        .residents
        .iter()
        .filter(|r| movable(r, policy))
        .collect();
    residents.sort_by(|a, b| a.footprint.cmp(&b.footprint).then(a.model.cmp(&b.model)));
    residents.truncate(MAX_CONSIDERED);
    let targets: Vec<Target> = up
        .iter()
        .filter(|n| n.name != node.name)
        .flat_map(|n| {
            n.devices.iter().map(move |d| Target {
                node: n,
                index: d.index,
                free: d.free(),
            })
        })
        .collect();

    let used = device.used();
    // Best so far: (moves, bytes, chosen indices) and its placement.
    let mut best: Option<(SetKey, Vec<Move>)> = None;
    for mask in 1u32..(1u32 << residents.len()) {
        let chosen: Vec<usize> = (0..residents.len())
            .filter(|i| mask & (1 << i) != 0)
            .collect();
        let bytes = chosen.iter().fold(0u64, |acc, &i| {
            acc.saturating_add(residents.get(i).map_or(0, |r| r.footprint))
        });
        if device.budget.saturating_sub(used.saturating_sub(bytes)) < w {
            continue;
        }
        let key = (chosen.len(), bytes, chosen);
        if best.as_ref().is_some_and(|(k, _)| key >= *k) {
            continue;
        }
        let set: Vec<&Resident> = key
            .2
            .iter()
            .filter_map(|&i| residents.get(i).copied())
            .collect();
        if let Some(moves) = place(node, &set, &targets, can_load) {
            best = Some((key, moves));
        }
    }
    best.map(|(_, moves)| moves)
}

/// Places `set` largest first (ties: model id), each on the target with the
/// most free memory left (ties: node name, device index) that can take it,
/// does not hold the model and may load it; `None` if one cannot be placed.
fn place(
    from: &NodeRoom,
    set: &[&Resident],
    targets: &[Target],
    can_load: &dyn Fn(&str, &str) -> bool,
) -> Option<Vec<Move>> {
    let mut set = set.to_vec();
    set.sort_by(|a, b| b.footprint.cmp(&a.footprint).then(a.model.cmp(&b.model)));
    let mut free: Vec<u64> = targets.iter().map(|t| t.free).collect();
    let mut moves = Vec::with_capacity(set.len());
    for r in set {
        let (i, t) = targets
            .iter()
            .enumerate()
            .filter(|(i, t)| {
                free.get(*i).is_some_and(|f| *f >= r.footprint)
                    && !hosts_any(t.node, &r.model)
                    && can_load(&r.model, &t.node.name)
            })
            .min_by(|(i, a), (j, b)| {
                free.get(*j)
                    .cmp(&free.get(*i))
                    .then_with(|| a.node.name.cmp(&b.node.name))
                    .then(a.index.cmp(&b.index))
            })?;
        if let Some(f) = free.get_mut(i) {
            *f -= r.footprint;
        }
        moves.push(Move {
            model: r.model.clone(),
            from_node: from.name.clone(),
            to_node: t.node.name.clone(),
            to_device: t.index,
        });
    }
    Some(moves)
}

/// Whether any copy of `model` (even poisoned or loading) is on `node`.
fn hosts_any(node: &NodeRoom, model: &str) -> bool {
    node.devices
        .iter()
        .flat_map(|d| &d.residents)
        .any(|r| r.model == model)
}

#[cfg(test)]
#[path = "evict_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "evict_props.rs"]
mod props;
