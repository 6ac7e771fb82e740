//! The routing table: an immutable snapshot of "which names exist, and
//! where each model is ready", published by the fleet actor after every
//! change and read lock-free(ish) on the request path. Request counters
//! live outside snapshots so that they survive republishing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::metrics::{GatewayMetrics, ReplicaMetrics};

use crate::neuron_client::NodeInfo;

/// Live counters of one (model, node) pair, shared by every snapshot.
#[derive(Default)]
pub struct Counters {
    pub in_flight: AtomicU64,
    /// Unix ms of the last request start or end.
    pub last_used_ms: AtomicU64,
    /// Its metric handles, made on first use.
    pub metrics: OnceLock<Arc<ReplicaMetrics>>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("in_flight", &self.in_flight)
            .field("last_used_ms", &self.last_used_ms)
            .finish()
    }
}

/// A model ready on a node.
#[derive(Debug, Clone)]
pub struct Replica {
    pub model: String,
    pub node: Arc<NodeInfo>,
    pub counters: Arc<Counters>,
}

impl Replica {
    /// Count a request on this replica until the guard drops.
    pub fn begin(&self) -> InFlightGuard {
        self.counters.in_flight.fetch_add(1, Ordering::AcqRel);
        self.counters
            .last_used_ms
            .store(cortex_core::now_unix_ms(), Ordering::Relaxed);
        InFlightGuard {
            counters: self.counters.clone(),
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.counters.in_flight.load(Ordering::Relaxed)
    }

    /// This replica's metric handles.
    pub fn metrics(&self, all: &GatewayMetrics) -> Arc<ReplicaMetrics> {
        self.counters
            .metrics
            .get_or_init(|| Arc::new(all.replica(&self.model, &self.node.name)))
            .clone()
    }
}

/// Decrements the replica's in-flight count and stamps last use on drop.
#[derive(Debug)]
pub struct InFlightGuard {
    counters: Arc<Counters>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.counters
            .last_used_ms
            .store(cortex_core::now_unix_ms(), Ordering::Relaxed);
        self.counters.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a client name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The canonical id (what neurons know it as); shared, as every request
    /// takes a copy.
    pub id: Arc<str>,
    /// Some healthy neuron can serve it (ready or loadable).
    pub servable: bool,
}

/// One published snapshot.
#[derive(Debug, Default)]
pub struct RoutingTable {
    /// Every known name (ids and aliases) → canonical id.
    pub names: HashMap<String, Resolved>,
    /// Canonical id → replicas ready on up nodes (never poisoned ones).
    pub ready: HashMap<String, Vec<Replica>>,
    /// Neurons that are up.
    pub nodes_up: usize,
}

impl RoutingTable {
    pub fn resolve(&self, name: &str) -> Option<&Resolved> {
        self.names.get(name)
    }

    /// Rule 2: the ready replica with the fewest requests in flight, not on
    /// a node in `avoid`.
    pub fn pick(&self, id: &str, avoid: &[String]) -> Option<Replica> {
        // The hot path: the rule of `router::pick_ready`, without allocating.
        let key = |r: &Replica| {
            (
                r.in_flight(),
                r.counters.last_used_ms.load(Ordering::Relaxed),
            )
        };
        self.ready
            .get(id)?
            .iter()
            .filter(|r| !avoid.contains(&r.node.name))
            .min_by(|a, b| {
                let (ka, kb) = (key(a), key(b));
                crate::router::ready_order((ka.0, ka.1, &a.node.name), (kb.0, kb.1, &b.node.name))
            })
            .cloned()
    }
}
