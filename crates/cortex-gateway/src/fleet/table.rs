//! The routing table: an immutable snapshot of "which names exist, and
//! where each model is ready", published by the fleet actor after every
//! change and read lock-free(ish) on the request path. Request counters
//! live outside snapshots so that they survive republishing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};

use crate::metrics::{GatewayMetrics, ReplicaMetrics};

use crate::neuron_client::NodeInfo;

/// Counter slots per (model, node) pair: each API worker counts in its own
/// (worker id modulo this), so that workers do not write the same memory.
const SLOTS: usize = 8;

/// One worker's counts, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot {
    in_flight: AtomicU64,
    last_used_ms: AtomicU64,
}

/// Live counters of one (model, node) pair, shared by every snapshot.
#[derive(Default)]
pub struct Counters {
    slots: [Slot; SLOTS],
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
    /// Requests in flight, every worker's.
    pub fn in_flight(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    /// Unix ms of the last request start or end.
    pub fn last_used_ms(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.last_used_ms.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// Set the counts (tests of the rules that read them).
    #[cfg(test)]
    pub fn set(&self, in_flight: u64, last_used_ms: u64) {
        for (i, s) in self.slots.iter().enumerate() {
            let first = i == 0;
            s.in_flight
                .store(if first { in_flight } else { 0 }, Ordering::Relaxed);
            s.last_used_ms
                .store(if first { last_used_ms } else { 0 }, Ordering::Relaxed);
        }
    }
}

/// A model ready on a node. Cloning it is cheap and, on an API worker,
/// touches nothing another worker touches (see [`RoutingTable::thread_copy`]).
#[derive(Debug, Clone)]
pub struct Replica(Arc<ReplicaInner>);

pub struct ReplicaInner {
    pub model: Arc<str>,
    pub node: Arc<NodeInfo>,
    pub counters: Arc<Counters>,
    /// This copy's handles on the pair's metrics.
    metrics: OnceLock<Arc<ReplicaMetrics>>,
}

impl std::fmt::Debug for ReplicaInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("model", &self.model)
            .field("node", &self.node.name)
            .field("counters", &self.counters)
            .finish()
    }
}

impl Deref for Replica {
    type Target = ReplicaInner;

    fn deref(&self) -> &ReplicaInner {
        &self.0
    }
}

impl Replica {
    pub fn new(model: &str, node: Arc<NodeInfo>, counters: Arc<Counters>) -> Self {
        Self(Arc::new(ReplicaInner {
            model: model.into(),
            node,
            counters,
            metrics: OnceLock::new(),
        }))
    }

    /// A copy that shares only the counters.
    fn thread_copy(&self) -> Self {
        Self::new(
            &self.model,
            Arc::new(NodeInfo::clone(&self.node)),
            Arc::clone(&self.counters),
        )
    }

    /// Count a request on this replica until the guard drops. Last use is
    /// stamped then, at the end: while a request is in flight its model is
    /// neither idle nor evictable, so a stamp at the start would never be
    /// read.
    pub fn begin(&self) -> InFlightGuard {
        let slot = crate::workers::current() % SLOTS;
        self.counters.slots[slot]
            .in_flight
            .fetch_add(1, Ordering::AcqRel);
        InFlightGuard {
            replica: self.clone(),
            slot,
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.counters.in_flight()
    }

    /// This replica's metric handles.
    pub fn metrics(&self, all: &GatewayMetrics) -> Arc<ReplicaMetrics> {
        self.metrics
            .get_or_init(|| {
                let shared = self
                    .counters
                    .metrics
                    .get_or_init(|| Arc::new(all.replica(&self.model, &self.node.name)));
                Arc::new(ReplicaMetrics::clone(shared))
            })
            .clone()
    }
}

/// Decrements the replica's in-flight count and stamps last use on drop.
#[derive(Debug)]
pub struct InFlightGuard {
    replica: Replica,
    slot: usize,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let s = &self.replica.counters.slots[self.slot];
        s.last_used_ms
            .store(cortex_core::now_unix_ms(), Ordering::Relaxed);
        s.in_flight.fetch_sub(1, Ordering::AcqRel);
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

/// The request path's maps: hashed with foldhash, several times faster than
/// std's SipHash on short keys. Their keys come from the configuration and
/// the neurons, never from clients (whose names are only looked up).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One published snapshot.
#[derive(Debug, Default)]
pub struct RoutingTable {
    /// Every known name (ids and aliases) → canonical id.
    pub names: FastMap<String, Resolved>,
    /// Canonical id → replicas ready on up nodes (never poisoned ones).
    pub ready: FastMap<String, Vec<Replica>>,
    /// Neurons that are up.
    pub nodes_up: usize,
}

impl RoutingTable {
    /// A copy for one thread: every name, node and replica copied, only the
    /// counters shared. Cloning what a request takes from it (its model id,
    /// a replica) then writes nothing that another thread's copy uses.
    pub fn thread_copy(&self) -> Self {
        Self {
            names: self
                .names
                .iter()
                .map(|(k, r)| {
                    let r = Resolved {
                        id: Arc::from(&*r.id),
                        servable: r.servable,
                    };
                    (k.clone(), r)
                })
                .collect(),
            ready: self
                .ready
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().map(Replica::thread_copy).collect()))
                .collect(),
            nodes_up: self.nodes_up,
        }
    }

    pub fn resolve(&self, name: &str) -> Option<&Resolved> {
        self.names.get(name)
    }

    /// Rule 2: the ready replica with the fewest requests in flight, not on
    /// a node in `avoid`.
    pub fn pick(&self, id: &str, avoid: &[String]) -> Option<Replica> {
        // The hot path: the rule of `router::pick_ready`, without allocating.
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

/// The routing table as the fleet actor publishes it, with each thread's
/// copy of it.
#[derive(Debug, Default)]
pub struct Published {
    table: RwLock<Arc<RoutingTable>>,
    /// Bumped after every publication.
    version: AtomicU64,
}

/// A thread's copy of one [`Published`] table.
struct ThreadCopy {
    of: Weak<Published>,
    version: u64,
    table: Arc<RoutingTable>,
}

thread_local! {
    static COPIES: RefCell<Vec<ThreadCopy>> = const { RefCell::new(Vec::new()) };
}

impl Published {
    /// Publish `table`.
    pub fn store(&self, table: RoutingTable) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The table as published.
    pub fn current(&self) -> Arc<RoutingTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The table as published, in this thread's copy: the request path
    /// reads it without a lock, and what it clones from it is this
    /// thread's alone (on two cores, a write to memory that the other core
    /// writes too costs as much as parsing the request).
    pub fn local(self: &Arc<Self>) -> Arc<RoutingTable> {
        // Read the version first: the copy made below is then at least as
        // new as the version it is filed under.
        let version = self.version.load(Ordering::Acquire);
        COPIES.with_borrow_mut(|copies| {
            let mine = |c: &ThreadCopy| std::ptr::eq(c.of.as_ptr(), Arc::as_ptr(self));
            let at = match copies.iter().position(mine) {
                Some(i) => i,
                None => {
                    copies.retain(|c| c.of.strong_count() > 0);
                    copies.push(ThreadCopy {
                        of: Arc::downgrade(self),
                        version: version.wrapping_sub(1),
                        table: Arc::default(),
                    });
                    copies.len() - 1
                }
            };
            let c = &mut copies[at];
            if c.version != version {
                c.table = Arc::new(self.current().thread_copy());
                c.version = version;
            }
            Arc::clone(&c.table)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_with(node: &str, counters: &Arc<Counters>) -> RoutingTable {
        let info = Arc::new(NodeInfo::new(node, "http://127.0.0.1:9", None));
        let mut t = RoutingTable {
            nodes_up: 1,
            ..RoutingTable::default()
        };
        t.names.insert(
            "m".into(),
            Resolved {
                id: "m".into(),
                servable: true,
            },
        );
        t.ready
            .insert("m".into(), vec![Replica::new("m", info, counters.clone())]);
        t
    }

    #[test]
    fn each_thread_reads_its_own_copy_of_the_latest_table() {
        let published = Arc::new(Published::default());
        let counters = Arc::new(Counters::default());
        assert!(published.local().resolve("m").is_none());
        published.store(table_with("a", &counters));
        let here = published.local();
        assert_eq!(here.ready["m"][0].node.name, "a", "a new version is seen");
        assert!(Arc::ptr_eq(&here, &published.local()), "then reused");
        let p = published.clone();
        let there = std::thread::spawn(move || p.local()).join().unwrap();
        assert!(!Arc::ptr_eq(&here, &there));
        let (mine, theirs) = (&here.ready["m"][0], &there.ready["m"][0]);
        assert!(!Arc::ptr_eq(&mine.node, &theirs.node), "nodes are copied");
        assert!(!Arc::ptr_eq(&here.names["m"].id, &there.names["m"].id));
        assert!(
            Arc::ptr_eq(&mine.counters, &theirs.counters),
            "counters are shared"
        );
        published.store(table_with("b", &counters));
        assert_eq!(published.local().ready["m"][0].node.name, "b");
    }

    #[test]
    fn requests_counted_on_different_workers_add_up() {
        let counters = Arc::new(Counters::default());
        let t = Arc::new(table_with("a", &counters));
        // A guard taken on worker `id` (its own thread).
        let on = |id: usize| {
            let t = t.clone();
            crate::workers::on_worker(id, async move { t.ready["m"][0].begin() })
        };
        let (g1, g2) = (on(1), on(2));
        let g0 = t.ready["m"][0].begin();
        assert_eq!(counters.in_flight(), 3);
        assert_eq!(counters.last_used_ms(), 0, "stamped at the end");
        drop(g1);
        assert_eq!(counters.in_flight(), 2);
        assert!(counters.last_used_ms() > 0);
        drop((g0, g2));
        assert_eq!(counters.in_flight(), 0);
    }
}
