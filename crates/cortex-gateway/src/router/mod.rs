//! Placement and eviction policy: which replica serves a request, where a
//! model is loaded, what is unloaded to make room, what the evictor unloads
//! when idle and what it moves to undo fragmentation.
//!
//! Everything here is a pure function of a snapshot of the fleet: no I/O, no
//! async, no clock, no shared state. Time comes in as unix milliseconds
//! ([`Policy::now_ms`]), so every rule is tested with fixed numbers. Acting on
//! a decision (calling a neuron, waiting on a load, updating the fleet table)
//! belongs to the fleet actor and the evictor; this module must not learn
//! about either.
//!
//! - [`affinity`]: rule 2 for chat requests when neurons report cached
//!   conversation prefixes ([`affinity::pick_with_affinity`]);
//! - [`place`]: [`pick_ready`] (rule 2 of "Routing, loading and eviction":
//!   which ready replica gets a request) and [`plan_load`] (rule 3: where a
//!   cold model is loaded and what is evicted first);
//! - [`evict`]: [`idle_victims`] (rule 6: idle unloads) and [`defrag_plan`]
//!   (rule 6: consolidating fragmented devices).
//!
//! # Vocabulary
//!
//! - A model's **footprint** is its weights as loaded plus its KV reserve, in
//!   bytes. A device's **used** memory is the sum of its residents'
//!   footprints and its **free** memory is `budget - used` (never below 0).
//! - A resident is **busy** when requests are in flight on it
//!   (`in_flight > 0`) and **loading** while a load is in progress.
//! - A resident is **too young** when it became resident less than
//!   `min_residency` ago (`now - loaded_at < min_residency`). The guard stops
//!   two models from evicting each other in turn (swap thrashing). It does
//!   not apply to poisoned residents, which serve nothing, nor to idle
//!   unloads.
//! - A resident is **evictable** when it is not pinned, not busy and not
//!   loading. Pinned models are never unloaded by this policy, whatever their
//!   state.
//!
//! The detailed rules are in the documentation of [`place`] and [`evict`].

pub mod affinity;
pub mod evict;
pub mod place;

pub use cortex_core::config::EvictionStrategy;
use cortex_core::ByteSize;
pub use evict::{
    defrag_plan, defrag_plan_for, defrag_plan_with, idle_victims, idle_victims_with, Move,
};
pub use place::{pick_ready, plan_load, ready_order};

/// A model resident on a device of a node (loading, ready or poisoned).
#[derive(Debug, Clone, PartialEq)]
pub struct Resident {
    /// The model id.
    pub model: String,
    /// Weights plus KV reserve, in bytes.
    pub footprint: u64,
    /// Pinned models are never evicted, moved or unloaded when idle.
    pub pinned: bool,
    /// Higher survives longer under [`EvictionStrategy::Priority`].
    pub priority: i32,
    /// Requests running on it now (the larger of the gateway's and the
    /// neuron's count).
    pub in_flight: u64,
    /// When it last served a request, unix ms.
    pub last_used_ms: u64,
    /// When it became resident, unix ms.
    pub loaded_at_ms: u64,
    /// A load is in progress.
    pub loading: bool,
    /// The neuron marked it unusable; it serves nothing.
    pub poisoned: bool,
}

/// One device of a node: its memory budget and what lives on it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRoom {
    /// The device index on its node.
    pub index: u32,
    /// Bytes the neuron may use on this device.
    pub budget: u64,
    /// Models on this device.
    pub residents: Vec<Resident>,
}

impl DeviceRoom {
    /// The sum of the residents' footprints (saturating).
    pub fn used(&self) -> u64 {
        self.residents
            .iter()
            .fold(0u64, |acc, r| acc.saturating_add(r.footprint))
    }

    /// `budget - used`, or 0 when the device is over its budget.
    pub fn free(&self) -> u64 {
        self.budget.saturating_sub(self.used())
    }
}

/// One neuron as the policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRoom {
    /// The neuron's name (unique in the fleet).
    pub name: String,
    /// Whether the neuron answers its status polls; down nodes are never
    /// chosen for anything.
    pub up: bool,
    /// Its devices.
    pub devices: Vec<DeviceRoom>,
}

impl NodeRoom {
    /// Whether a copy of `model` that is not poisoned (loading or ready)
    /// lives on any device of this node.
    pub fn holds(&self, model: &str) -> bool {
        self.devices
            .iter()
            .flat_map(|d| &d.residents)
            .any(|r| r.model == model && !r.poisoned)
    }
}

/// What the policy needs to know about the model to place.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// The model id.
    pub model: String,
    /// Weights plus KV reserve in bytes; 0 = unknown (then any device fits
    /// and no eviction is planned for it).
    pub footprint: u64,
    /// Nodes that can load it at all (has the file / may download it),
    /// already filtered by affinity and up-ness by the caller.
    pub eligible: Vec<String>,
    /// Nodes to use only when no other eligible node could ever hold it
    /// (e.g. where it is poisoned).
    pub avoid: Vec<String>,
}

/// The knobs and the moment a decision is made at.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `lru` or `priority` (the `[eviction] strategy` setting).
    pub strategy: EvictionStrategy,
    /// The thrash guard (`[eviction] min_residency`), in ms.
    pub min_residency_ms: u64,
    /// Now, unix ms.
    pub now_ms: u64,
}

impl Policy {
    /// Milliseconds until `r` stops being too young; 0 when it is not too
    /// young (or is poisoned, to which the guard does not apply).
    pub fn young_for(&self, r: &Resident) -> u64 {
        if r.poisoned {
            return 0;
        }
        let age = self.now_ms.saturating_sub(r.loaded_at_ms);
        self.min_residency_ms.saturating_sub(age)
    }
}

/// A ready replica candidate for routing.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyReplica {
    /// The node it lives on.
    pub node: String,
    /// Requests in flight on it now.
    pub in_flight: u64,
    /// When it last served a request, unix ms.
    pub last_used_ms: u64,
}

/// Where to load a model, as decided by [`plan_load`].
#[derive(Debug, Clone, PartialEq)]
pub enum LoadPlan {
    /// Load on this node/device after unloading `evict` (model ids on that
    /// same device, in order).
    Load {
        node: String,
        device: u32,
        evict: Vec<String>,
    },
    /// Eviction could make room but only by evicting models younger than
    /// `min_residency` (the thrash guard); retry after this many ms.
    Wait { retry_after_ms: u64 },
    /// No eligible node can hold it now.
    Impossible(Impossible),
}

/// Why no load can be planned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Impossible {
    /// No eligible neuron is up (or each holds a copy already).
    #[error("no eligible neuron is up to load {model}")]
    NoNode { model: String },
    /// The footprint is larger than every candidate device's budget.
    #[error("{model} needs {} but the largest device budget on an eligible neuron is {}", bytes(*.needs), bytes(*.largest))]
    TooLarge {
        model: String,
        needs: u64,
        largest: u64,
    },
    /// Some device large enough would have room once its busy or loading
    /// models are idle (this passes once requests finish or loads end).
    #[error("every device that could hold {model} ({}) is held by busy or loading models", bytes(*.needs))]
    Held { model: String, needs: u64 },
    /// Every device large enough is held by pinned models: this lasts until
    /// one is unpinned.
    #[error("every device that could hold {model} ({}) is held by pinned models; unpin one (`cortex unpin`) to make room", bytes(*.needs))]
    Pinned { model: String, needs: u64 },
}

/// A size for people: bytes, and KiB/MiB/GiB from 1 KiB on.
fn bytes(n: u64) -> String {
    if n < 1024 {
        format!("{n} bytes")
    } else {
        format!("{n} bytes ({})", ByteSize(n).human())
    }
}

impl Impossible {
    /// Will it pass by itself (requests end, loads finish)?
    pub fn passes(&self) -> bool {
        matches!(self, Impossible::Held { .. })
    }
}

#[cfg(test)]
mod fixtures;
