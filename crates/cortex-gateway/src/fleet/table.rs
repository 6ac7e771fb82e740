//! The routing table: an immutable snapshot of "which names exist, and
//! where each model is ready", published by the fleet actor after every
//! change (behind an `ArcSwap`) and read without a lock on the request
//! path. Request counters live outside snapshots so that they survive
//! republishing.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::metrics::{GatewayMetrics, ReplicaMetrics};
use crate::neuron_client::NodeInfo;
use crate::router::affinity::{pick_with_affinity, Candidate, Reason};

/// Live counters of one (model, node) pair, shared by every snapshot.
#[derive(Default)]
pub struct Counters {
    in_flight: AtomicU64,
    last_used_ms: AtomicU64,
    /// Its metric handles, made on first use.
    metrics: OnceLock<Arc<ReplicaMetrics>>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("in_flight", &self.in_flight())
            .field("last_used_ms", &self.last_used_ms())
            .finish()
    }
}

impl Counters {
    /// Requests in flight.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Unix ms at which the last request ended.
    pub fn last_used_ms(&self) -> u64 {
        self.last_used_ms.load(Ordering::Relaxed)
    }

    /// Set the counts (tests of the rules that read them).
    #[cfg(test)]
    pub fn set(&self, in_flight: u64, last_used_ms: u64) {
        self.in_flight.store(in_flight, Ordering::Relaxed);
        self.last_used_ms.store(last_used_ms, Ordering::Relaxed);
    }
}

/// Conversation hash → (cached tokens, last used in unix ms), as a
/// neuron reports them.
pub type Prefixes = HashMap<u64, (u64, u64)>;

/// A model ready on a node; cheap to clone.
#[derive(Debug, Clone)]
pub struct Replica(Arc<ReplicaInner>);

#[derive(Debug)]
pub struct ReplicaInner {
    pub model: Arc<str>,
    pub node: Arc<NodeInfo>,
    pub counters: Arc<Counters>,
    /// Conversations its neuron holds KV for, as of the last poll.
    pub prefixes: Prefixes,
}

impl Deref for Replica {
    type Target = ReplicaInner;

    fn deref(&self) -> &ReplicaInner {
        &self.0
    }
}

impl Replica {
    pub fn new(model: &str, node: Arc<NodeInfo>, counters: Arc<Counters>) -> Self {
        Self::with_prefixes(model, node, counters, HashMap::new())
    }

    pub fn with_prefixes(
        model: &str,
        node: Arc<NodeInfo>,
        counters: Arc<Counters>,
        prefixes: Prefixes,
    ) -> Self {
        Self(Arc::new(ReplicaInner {
            model: model.into(),
            node,
            counters,
            prefixes,
        }))
    }

    /// Tokens cached here of the longest prefix among `hashes` (a
    /// conversation's, shortest first) used since `since_ms`.
    pub fn cached_tokens(&self, hashes: &[u64], since_ms: u64) -> u64 {
        hashes
            .iter()
            .rev()
            .find_map(|h| {
                self.prefixes
                    .get(h)
                    .filter(|(_, used)| *used >= since_ms)
                    .map(|(tokens, _)| *tokens)
            })
            .unwrap_or(0)
    }

    /// Count a request on this replica until the guard drops. Last use is
    /// stamped then, at the end: while a request is in flight its model is
    /// neither idle nor evictable, so a stamp at the start would never be
    /// read.
    pub fn begin(&self) -> InFlightGuard {
        self.counters.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlightGuard {
            replica: self.clone(),
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.counters.in_flight()
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
    replica: Replica,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let c = &self.replica.counters;
        c.last_used_ms
            .store(cortex_core::now_unix_ms(), Ordering::Relaxed);
        c.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a client name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The canonical id (what neurons know it as).
    pub id: Arc<str>,
    /// Some healthy neuron can serve it (ready or loadable).
    pub servable: bool,
    /// Chat or embedding, as its neurons report it.
    pub kind: cortex_core::neuron_api::ModelKind,
}

/// What is known of a model's file, from the neurons: for `/v1/models`
/// and Ollama's catalogue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileFacts {
    /// The file it loads from, relative to a models dir (or `hf:…`).
    pub source: Option<String>,
    /// File size; 0 when unknown.
    pub size_bytes: u64,
    /// The context window, when a neuron reported it (loaded, or read from
    /// the file's header).
    pub context_length: Option<u64>,
    /// `general.architecture`, when a neuron reported it.
    pub architecture: Option<String>,
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
    /// Canonical id → what is known of its file.
    pub files: HashMap<String, FileFacts>,
    /// Idle-unload overrides in force (Ollama's `keep_alive`), by id.
    pub keep_alive: HashMap<String, cortex_core::ollama::KeepAlive>,
}

impl RoutingTable {
    pub fn resolve(&self, name: &str) -> Option<&Resolved> {
        self.names.get(name)
    }

    /// Rule 2: the ready replica with the fewest requests in flight, not on
    /// a node in `avoid` (the rule of [`crate::router::pick_ready`]).
    pub fn pick(&self, id: &str, avoid: &[String]) -> Option<Replica> {
        let key = |r: &Replica| (r.in_flight(), r.counters.last_used_ms());
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

impl RoutingTable {
    /// Rule 2 for a chat request whose conversation has `hashes`
    /// ([`cortex_core::prefix::conversation_hashes`]): the rule of
    /// [`crate::router::affinity`], with prefixes last used before
    /// `since_ms` not counted.
    pub fn pick_chat(
        &self,
        id: &str,
        avoid: &[String],
        hashes: &[u64],
        since_ms: u64,
        slack: u64,
    ) -> Option<(Replica, Reason)> {
        let replicas: Vec<&Replica> = self
            .ready
            .get(id)?
            .iter()
            .filter(|r| !avoid.contains(&r.node.name))
            .collect();
        let cands: Vec<Candidate> = replicas
            .iter()
            .map(|r| Candidate {
                node: r.node.name.clone(),
                in_flight: r.in_flight(),
                last_used_ms: r.counters.last_used_ms(),
                cached_tokens: r.cached_tokens(hashes, since_ms),
            })
            .collect();
        let (i, reason) = pick_with_affinity(&cands, slack)?;
        Some((replicas[i].clone(), reason))
    }
}

/// The routing table as the fleet actor publishes it.
pub type Published = arc_swap::ArcSwap<RoutingTable>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_counts_until_its_guard_drops_and_stamps_last_use_then() {
        let counters = Arc::new(Counters::default());
        let info = Arc::new(NodeInfo::new("a", "http://127.0.0.1:9", None));
        let r = Replica::new("m", info, counters.clone());
        let (g1, g2) = (r.begin(), r.clone().begin());
        assert_eq!(counters.in_flight(), 2);
        assert_eq!(counters.last_used_ms(), 0, "stamped at the end");
        drop(g1);
        assert_eq!(counters.in_flight(), 1);
        assert!(counters.last_used_ms() > 0);
        drop(g2);
        assert_eq!(counters.in_flight(), 0);
    }
}
