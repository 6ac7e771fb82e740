//! The fleet's state and the pure logic over it: poll results, up/down,
//! the merged catalogue, the routing snapshot, the rooms the placement
//! policy sees, and the admin view. Owned by the fleet actor; no I/O here,
//! so every rule is unit-tested directly.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use cortex_core::config::ModelSource;
use cortex_core::fleet::{CatalogEntry, FleetView, NodeView, Placement};
use cortex_core::neuron_api::{ModelKind, ModelState, ModelStatus, NodeStatus};
use cortex_core::now_unix_ms;

use super::table::{Counters, FileFacts, Replica, Resolved, RoutingTable};
use crate::catalog::Catalog;
use crate::neuron_client::NodeInfo;
use crate::router::{DeviceRoom, NodeRoom, Resident, Wanted};

/// One neuron as the gateway knows it.
#[derive(Debug)]
pub struct NodeState {
    pub info: Arc<NodeInfo>,
    pub up: bool,
    /// Failed polls (or connections) in a row.
    pub failures: u32,
    pub last_ok: Option<Instant>,
    /// The last good `/status`, updated by our own loads and unloads.
    pub status: Option<NodeStatus>,
    /// Unix ms at which the poll that gave `status` was sent.
    pub status_sent_ms: u64,
    /// Unix ms of our own latest load or unload on this node.
    pub changed_ms: u64,
}

/// A load the gateway has started and not yet seen finish.
#[derive(Debug, Clone)]
pub struct PendingLoad {
    pub node: String,
    pub device: u32,
    pub footprint: u64,
    pub started_ms: u64,
}

/// A model of the merged catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub id: String,
    pub aliases: Vec<String>,
    pub configured: bool,
    pub pinned: bool,
    pub priority: i32,
    /// Profile affinity (empty = any).
    pub affinity: Vec<String>,
    /// Up nodes that can load it, with the `source` to ask for and the
    /// estimated footprint (0 = unknown, e.g. a hub file not yet fetched).
    pub loadable: Vec<(String, String, u64)>,
}

/// Everything the actor owns.
#[derive(Debug)]
pub struct FleetState {
    pub nodes: Vec<NodeState>,
    pub catalog: Catalog,
    /// Runtime pins and unpins (`cortex pin|unpin`); they override
    /// `pinned` of models.toml.
    pub pins: HashMap<String, bool>,
    pub loads: HashMap<String, PendingLoad>,
    /// Idle-unload overrides by model id (Ollama's `keep_alive`); each one
    /// expires when its model is resident nowhere.
    pub keep_alive: HashMap<String, cortex_core::ollama::KeepAlive>,
    counters: HashMap<(String, String), Arc<Counters>>,
    down_after: u32,
}

/// What a poll changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollChange {
    None,
    WentDown,
    CameUp,
}

impl FleetState {
    pub fn new(nodes: Vec<NodeInfo>, catalog: Catalog, down_after: u32) -> Self {
        Self {
            nodes: nodes
                .into_iter()
                .map(|info| NodeState {
                    info: Arc::new(info),
                    up: false,
                    failures: 0,
                    last_ok: None,
                    status: None,
                    status_sent_ms: 0,
                    changed_ms: 0,
                })
                .collect(),
            catalog,
            pins: HashMap::new(),
            loads: HashMap::new(),
            keep_alive: HashMap::new(),
            counters: HashMap::new(),
            down_after: down_after.max(1),
        }
    }

    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.info.name == name)
    }

    fn node_mut(&mut self, name: &str) -> Option<&mut NodeState> {
        self.nodes.iter_mut().find(|n| n.info.name == name)
    }

    /// Record a poll sent at `sent_ms` (unix ms). A node is down after
    /// `down_after` failures in a row and up again at its next good poll.
    pub fn apply_poll(
        &mut self,
        node: &str,
        sent_ms: u64,
        result: Result<NodeStatus, String>,
    ) -> PollChange {
        let down_after = self.down_after;
        let Some(n) = self.node_mut(node) else {
            return PollChange::None;
        };
        match result {
            Ok(status) => {
                n.failures = 0;
                n.last_ok = Some(Instant::now());
                // A poll sent before our own latest load/unload there would
                // undo it until the next poll: keep what we know instead.
                if n.status.is_none() || sent_ms > n.changed_ms {
                    n.status = Some(status);
                    n.status_sent_ms = sent_ms;
                }
                if !n.up {
                    n.up = true;
                    return PollChange::CameUp;
                }
            }
            Err(_) => {
                n.failures = n.failures.saturating_add(1);
                if n.up && n.failures >= down_after {
                    n.up = false;
                    return PollChange::WentDown;
                }
            }
        }
        PollChange::None
    }

    /// A request could not even connect: down at once.
    pub fn mark_down(&mut self, node: &str) -> PollChange {
        let down_after = self.down_after;
        let Some(n) = self.node_mut(node) else {
            return PollChange::None;
        };
        n.failures = n.failures.max(down_after);
        if n.up {
            n.up = false;
            return PollChange::WentDown;
        }
        PollChange::None
    }

    /// A neuron said this model is poisoned: it leaves routing there now.
    pub fn mark_poisoned(&mut self, model: &str, node: &str) {
        if let Some(m) = self.status_model_mut(node, model) {
            m.state = ModelState::Poisoned;
        }
    }

    fn status_model_mut(&mut self, node: &str, model: &str) -> Option<&mut ModelStatus> {
        self.node_mut(node)?
            .status
            .as_mut()?
            .models
            .iter_mut()
            .find(|m| m.id == model)
    }

    /// Our own load finished: the model is resident there.
    pub fn record_loaded(&mut self, node: &str, status: ModelStatus) {
        if let Some(n) = self.node_mut(node) {
            n.changed_ms = now_unix_ms();
            if let Some(s) = n.status.as_mut() {
                s.models.retain(|m| m.id != status.id);
                s.models.push(status);
            }
        }
    }

    /// We unloaded (or are unloading) it: it leaves routing there now.
    pub fn record_unloaded(&mut self, node: &str, model: &str) {
        if let Some(n) = self.node_mut(node) {
            n.changed_ms = now_unix_ms();
            if let Some(s) = n.status.as_mut() {
                s.models.retain(|m| m.id != model);
            }
        }
    }

    pub fn counters(&mut self, model: &str, node: &str) -> Arc<Counters> {
        self.counters
            .entry((model.to_string(), node.to_string()))
            .or_default()
            .clone()
    }

    fn counter_values(&self, model: &str, node: &str) -> (u64, u64) {
        self.counters
            .get(&(model.to_string(), node.to_string()))
            .map_or((0, 0), |c| (c.in_flight(), c.last_used_ms()))
    }

    /// Requests in flight on `m` at `n`. The neuron's count is as old as
    /// the last poll: once a request through the gateway has started or
    /// ended after that poll was sent, the gateway's own counter is the
    /// truth (requests that bypass the gateway show again at the next poll).
    fn in_flight(&self, n: &NodeState, m: &ModelStatus) -> u64 {
        let (gw, gw_last) = self.counter_values(&m.id, &n.info.name);
        if gw_last >= n.status_sent_ms {
            gw
        } else {
            m.in_flight.max(gw)
        }
    }

    pub fn is_pinned(&self, id: &str) -> bool {
        match self.pins.get(id) {
            Some(p) => *p,
            None => self
                .catalog
                .profile(id)
                .is_some_and(|p| p.pinned && p.id == id),
        }
    }

    /// The merged catalogue (see `catalog`): profiles first, then models
    /// found on up neurons that no profile covers, by id.
    pub fn models(&self) -> Vec<ModelInfo> {
        let up: Vec<&NodeState> = self.nodes.iter().filter(|n| n.up).collect();
        let mut out: Vec<ModelInfo> = Vec::new();
        for p in self.catalog.profiles() {
            let hub = matches!(ModelSource::parse(&p.source), Ok(ModelSource::Hub { .. }));
            let mut loadable = Vec::new();
            for n in &up {
                if !p.neurons.is_empty() && !p.neurons.contains(&n.info.name) {
                    continue;
                }
                let Some(st) = &n.status else { continue };
                if let Some(a) = st.available.iter().find(|a| a.source == p.source) {
                    loadable.push((n.info.name.clone(), p.source.clone(), a.estimated_bytes));
                } else if hub {
                    loadable.push((n.info.name.clone(), p.source.clone(), 0));
                }
            }
            out.push(ModelInfo {
                id: p.id.clone(),
                aliases: p.aliases.clone(),
                configured: true,
                pinned: self.is_pinned(&p.id),
                priority: p.priority,
                affinity: p.neurons.clone(),
                loadable,
            });
        }
        let mut discovered: BTreeMap<String, ModelInfo> = BTreeMap::new();
        for n in &up {
            let Some(st) = &n.status else { continue };
            for a in &st.available {
                if self.catalog.covering(&a.source).is_some()
                    || self.catalog.profile(&a.id).is_some()
                {
                    continue;
                }
                discovered
                    .entry(a.id.clone())
                    .or_insert_with(|| self.discovered(&a.id))
                    .loadable
                    .push((n.info.name.clone(), a.source.clone(), a.estimated_bytes));
            }
        }
        // Loaded models that match neither a profile nor a file (loaded by
        // hand on the neuron) are still servable where they are.
        for n in &self.nodes {
            let Some(st) = &n.status else { continue };
            for m in &st.models {
                if self.catalog.profile(&m.id).is_none() && !discovered.contains_key(&m.id) {
                    discovered.insert(m.id.clone(), self.discovered(&m.id));
                }
            }
        }
        out.extend(discovered.into_values());
        out
    }

    fn discovered(&self, id: &str) -> ModelInfo {
        ModelInfo {
            id: id.to_string(),
            aliases: Vec::new(),
            configured: false,
            pinned: self.is_pinned(id),
            priority: 0,
            affinity: Vec::new(),
            loadable: Vec::new(),
        }
    }

    /// Replicas of `id` on up nodes, with their neuron-side state.
    fn residents_of(&self, id: &str) -> Vec<(&NodeState, &ModelStatus)> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let m = n.status.as_ref()?.models.iter().find(|m| m.id == id)?;
                Some((n, m))
            })
            .collect()
    }

    /// What `m` serves: what a neuron holding it says, else what the file
    /// a neuron could load it from is (chat when no neuron says).
    fn kind_of(&self, m: &ModelInfo) -> ModelKind {
        if let Some((_, s)) = self.residents_of(&m.id).first() {
            return s.kind;
        }
        m.loadable
            .iter()
            .find_map(|(node, source, _)| {
                let st = self.node(node)?.status.as_ref()?;
                st.available
                    .iter()
                    .find(|a| &a.source == source)
                    .map(|a| a.kind)
            })
            .unwrap_or_default()
    }

    /// What the neurons say of `m`'s file: a loaded replica's source and
    /// context length first, then the `available` entry of that source (or
    /// of a source it is loadable from).
    fn file_facts(&self, m: &ModelInfo) -> FileFacts {
        let resident = self.residents_of(&m.id);
        let loaded = resident
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.context_length > 0)
            .or(resident.first().map(|(_, s)| s));
        let mut sources: Vec<&str> = loaded.map(|s| s.source.as_str()).into_iter().collect();
        sources.extend(m.loadable.iter().map(|(_, src, _)| src.as_str()));
        let file = sources.iter().find_map(|src| {
            self.nodes
                .iter()
                .filter_map(|n| n.status.as_ref())
                .flat_map(|st| &st.available)
                .find(|a| a.source == *src)
        });
        FileFacts {
            source: sources.first().map(|s| s.to_string()),
            size_bytes: file.map_or(0, |a| a.size_bytes),
            context_length: loaded
                .map(|s| s.context_length)
                .filter(|n| *n > 0)
                .or(file.and_then(|a| a.context_length)),
            architecture: file.and_then(|a| a.architecture.clone()),
        }
    }

    /// The snapshot the request path reads.
    pub fn table(&mut self) -> RoutingTable {
        let models = self.models();
        let mut t = RoutingTable {
            nodes_up: self.nodes.iter().filter(|n| n.up).count(),
            keep_alive: self.keep_alive.clone(),
            ..RoutingTable::default()
        };
        let mut ready_pairs = Vec::new();
        for m in &models {
            let ready: Vec<(String, super::table::Prefixes)> = self
                .residents_of(&m.id)
                .into_iter()
                .filter(|(n, s)| n.up && s.state == ModelState::Ready)
                .map(|(n, s)| {
                    let prefixes = s
                        .cached_prefixes
                        .iter()
                        .map(|p| (p.hash, (p.tokens, p.last_used_ms)))
                        .collect();
                    (n.info.name.clone(), prefixes)
                })
                .collect();
            let resolved = Resolved {
                id: m.id.as_str().into(),
                servable: !ready.is_empty() || !m.loadable.is_empty(),
                kind: self.kind_of(m),
            };
            for name in std::iter::once(&m.id).chain(&m.aliases) {
                t.names.insert(name.clone(), resolved.clone());
            }
            t.files.insert(m.id.clone(), self.file_facts(m));
            ready_pairs.push((m.id.clone(), ready));
        }
        for (id, nodes) in ready_pairs {
            let replicas: Vec<Replica> = nodes
                .into_iter()
                .filter_map(|(node, prefixes)| {
                    let info = self.node(&node)?.info.clone();
                    let counters = self.counters(&id, &node);
                    Some(Replica::with_prefixes(&id, info, counters, prefixes))
                })
                .collect();
            if !replicas.is_empty() {
                t.ready.insert(id, replicas);
            }
        }
        t
    }

    /// What the placement policy sees: up nodes, their devices and the
    /// models on them (pending loads included).
    pub fn rooms(&self) -> Vec<NodeRoom> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let st = n.status.as_ref()?;
                let mut devices: Vec<DeviceRoom> = st
                    .devices
                    .iter()
                    .map(|d| DeviceRoom {
                        index: d.index,
                        budget: d.memory_budget_bytes,
                        residents: Vec::new(),
                    })
                    .collect();
                for m in &st.models {
                    let (_, gw_last) = self.counter_values(&m.id, &n.info.name);
                    let r = Resident {
                        model: m.id.clone(),
                        footprint: m.footprint_bytes(),
                        pinned: self.is_pinned(&m.id),
                        priority: self.catalog.profile(&m.id).map_or(0, |p| p.priority),
                        in_flight: self.in_flight(n, m),
                        last_used_ms: m.last_used_at.max(gw_last),
                        loaded_at_ms: m.loaded_at,
                        loading: m.state == ModelState::Loading,
                        poisoned: m.state == ModelState::Poisoned,
                    };
                    if let Some(d) = devices.iter_mut().find(|d| d.index == m.device) {
                        d.residents.push(r);
                    }
                }
                for (model, l) in &self.loads {
                    if l.node != n.info.name || st.models.iter().any(|m| &m.id == model) {
                        continue;
                    }
                    if let Some(d) = devices.iter_mut().find(|d| d.index == l.device) {
                        d.residents.push(Resident {
                            model: model.clone(),
                            footprint: l.footprint,
                            pinned: false,
                            priority: 0,
                            in_flight: 0,
                            last_used_ms: l.started_ms,
                            loaded_at_ms: l.started_ms,
                            loading: true,
                            poisoned: false,
                        });
                    }
                }
                Some(NodeRoom {
                    name: n.info.name.clone(),
                    up: n.up,
                    devices,
                })
            })
            .collect()
    }

    /// The placement request for `id`, or `None` when it is unknown.
    /// Nodes where it is poisoned, or listed in `avoid`, are last resorts.
    pub fn wanted(&self, id: &str, avoid: &[String]) -> Option<(Wanted, ModelInfo)> {
        let info = self.models().into_iter().find(|m| m.id == id)?;
        let mut avoid: Vec<String> = avoid.to_vec();
        for (n, s) in self.residents_of(id) {
            if s.state == ModelState::Poisoned && !avoid.contains(&n.info.name) {
                avoid.push(n.info.name.clone());
            }
        }
        let footprint = info.loadable.iter().map(|(_, _, f)| *f).max().unwrap_or(0);
        Some((
            Wanted {
                model: id.to_string(),
                footprint,
                eligible: info.loadable.iter().map(|(n, _, _)| n.clone()).collect(),
                avoid,
            },
            info,
        ))
    }

    /// The admin view (`/admin/fleet`, `cortex status`).
    pub fn view(&self) -> FleetView {
        let nodes = self
            .nodes
            .iter()
            .map(|n| NodeView {
                name: n.info.name.clone(),
                endpoint: n.info.base.clone(),
                up: n.up,
                consecutive_failures: n.failures,
                last_seen_ms_ago: n.last_ok.map(|t| t.elapsed().as_millis() as u64),
                version: n.status.as_ref().map(|s| s.version.clone()),
                devices: n
                    .status
                    .as_ref()
                    .map(|s| s.devices.clone())
                    .unwrap_or_default(),
            })
            .collect();
        let models = self
            .models()
            .into_iter()
            .map(|m| {
                let placements = self
                    .residents_of(&m.id)
                    .into_iter()
                    .map(|(n, s)| Placement {
                        node: n.info.name.clone(),
                        state: s.state,
                        device: s.device,
                        memory_bytes: s.memory_bytes,
                        kv_reserve_bytes: s.kv_reserve_bytes,
                        loaded_at: s.loaded_at,
                        last_used_at: s
                            .last_used_at
                            .max(self.counter_values(&m.id, &n.info.name).1),
                        in_flight: self.in_flight(n, s),
                        cached_conversations: s.cached_prefixes.len() as u64,
                        cached_tokens: s.cached_prefixes.iter().map(|p| p.tokens).sum(),
                    })
                    .collect();
                CatalogEntry {
                    id: m.id.clone(),
                    aliases: m.aliases.clone(),
                    pinned: m.pinned,
                    priority: m.priority,
                    configured: m.configured,
                    placements,
                    loadable_on: m.loadable.iter().map(|(n, _, _)| n.clone()).collect(),
                    kind: self.kind_of(&m),
                    context_length: self.file_facts(&m).context_length,
                }
            })
            .collect();
        FleetView { nodes, models }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
