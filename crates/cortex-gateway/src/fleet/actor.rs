//! The fleet actor's loop: handles one command at a time, starts loads and
//! unloads as tasks, and republishes the routing table after each change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cortex_core::fleet::{AdminPinResponse, AdminUnloadResponse};
use cortex_core::neuron_api::{LoadRequest, LoadResponse};
use cortex_core::now_unix_ms;
use tokio::sync::mpsc;

use super::state::{FleetState, ModelInfo, PendingLoad, PollChange};
use super::table::{Published, Replica};
use super::{Command, FleetError, FleetSettings, Loaded, Reply};
use crate::metrics::{EvictionLabels, GatewayMetrics, LoadLabels, NodeLabel};
use crate::neuron_client::{NeuronClient, NodeInfo, UpstreamError};
use crate::router::{self, LoadPlan, Policy};

mod upkeep;

pub(super) struct Actor {
    state: FleetState,
    settings: FleetSettings,
    client: NeuronClient,
    metrics: GatewayMetrics,
    tx: mpsc::UnboundedSender<Command>,
    table: Arc<Published>,
    waiters: HashMap<String, Vec<Reply<Loaded>>>,
    load_started: HashMap<String, Instant>,
}

impl Actor {
    pub(super) fn new(
        state: FleetState,
        settings: FleetSettings,
        client: NeuronClient,
        metrics: GatewayMetrics,
        tx: mpsc::UnboundedSender<Command>,
        table: Arc<Published>,
    ) -> Self {
        Self {
            state,
            settings,
            client,
            metrics,
            tx,
            table,
            waiters: HashMap::new(),
            load_started: HashMap::new(),
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        for n in &self.state.nodes {
            self.metrics
                .neuron_up
                .get_or_create(&NodeLabel {
                    node: n.info.name.clone(),
                })
                .set(0);
        }
        self.publish();
        while let Some(cmd) = rx.recv().await {
            self.handle(cmd);
        }
    }

    fn publish(&mut self) {
        self.table.store(Arc::new(self.state.table()));
    }

    fn policy(&self) -> Policy {
        Policy {
            strategy: self.settings.strategy,
            min_residency_ms: self.settings.min_residency.as_millis() as u64,
            now_ms: now_unix_ms(),
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Poll {
                node,
                sent_ms,
                result,
            } => {
                let err = result.as_ref().err().cloned();
                match self.state.apply_poll(&node, sent_ms, result) {
                    PollChange::CameUp => {
                        tracing::info!(%node, "neuron is up (admitted to routing)");
                        self.set_up(&node, true);
                    }
                    PollChange::WentDown => {
                        tracing::warn!(%node, error = ?err, "neuron is down: it failed its status polls; its models leave routing");
                        self.set_up(&node, false);
                    }
                    PollChange::None => {
                        if let Some(e) = err {
                            tracing::debug!(%node, error = %e, "status poll failed");
                        }
                    }
                }
                self.ensure_pinned();
                self.publish();
            }
            Command::NodeFailed { node } => {
                if self.state.mark_down(&node) == PollChange::WentDown {
                    tracing::warn!(%node, "neuron is down: a request could not connect; it comes back at its next good poll");
                    self.set_up(&node, false);
                }
                self.publish();
            }
            Command::Poisoned { model, node } => {
                tracing::warn!(%model, %node, "neuron reports the model poisoned; it leaves routing on that node");
                self.state.mark_poisoned(&model, &node);
                self.publish();
            }
            Command::Gone { model, node } => {
                tracing::debug!(%model, %node, "model is no longer on the node; it leaves routing there");
                self.state.record_unloaded(&node, &model);
                self.publish();
            }
            Command::EnsureReady {
                model,
                avoid,
                node,
                reply,
            } => self.ensure(&model, avoid, node, Some(reply)),
            Command::LoadDone {
                model,
                node,
                result,
            } => self.load_done(&model, &node, result),
            Command::Unload { model, node, reply } => self.unload(&model, node, reply),
            Command::SetPin {
                model,
                pinned,
                reply,
            } => {
                let r = self.resolve(&model).and_then(|info| {
                    self.set_pin(&info.id, pinned)?;
                    Ok(AdminPinResponse {
                        model: info.id,
                        pinned,
                    })
                });
                let _ = reply.send(r);
                self.ensure_pinned();
                self.publish();
            }
            Command::View { reply } => {
                let _ = reply.send(self.state.view());
            }
            Command::EvictorTick { cycle } => self.evict(cycle),
            Command::KeepAlive { model, keep } => {
                let Ok(info) = self.resolve(&model) else {
                    return;
                };
                match keep {
                    None => {
                        self.state.keep_alive.remove(&info.id);
                    }
                    Some(k) => {
                        self.state.keep_alive.insert(info.id, k);
                    }
                }
                if keep == Some(cortex_core::ollama::KeepAlive::Unload) {
                    self.idle_unloads();
                    self.publish();
                }
            }
        }
    }

    /// Kept in the state file first, so a pin the gateway reports is a pin
    /// that survives its restart.
    fn set_pin(&mut self, id: &str, pinned: bool) -> Result<(), FleetError> {
        if let Some(file) = &self.settings.pin_file {
            let mut next = self.state.pins.clone();
            next.insert(id.to_string(), pinned);
            file.save(&next).map_err(|source| {
                tracing::error!(model = id, error = %crate::error::chain(&source), "pin not saved");
                FleetError::PinNotSaved {
                    model: id.to_string(),
                    source: Arc::new(source),
                }
            })?;
        }
        self.state.pins.insert(id.to_string(), pinned);
        tracing::info!(model = id, pinned, "pin changed");
        Ok(())
    }

    fn set_up(&self, node: &str, up: bool) {
        self.metrics
            .neuron_up
            .get_or_create(&NodeLabel {
                node: node.to_string(),
            })
            .set(i64::from(up));
    }

    fn resolve(&self, name: &str) -> Result<ModelInfo, FleetError> {
        self.state
            .models()
            .into_iter()
            .find(|m| m.id == name || m.aliases.iter().any(|a| a == name))
            .ok_or_else(|| FleetError::UnknownModel(name.to_string()))
    }

    fn replica(&mut self, model: &str, node: &str) -> Option<Replica> {
        let info = self.state.node(node)?.info.clone();
        Some(Replica::new(model, info, self.state.counters(model, node)))
    }

    /// Give `reply` a ready replica of `name`, loading it when needed.
    fn ensure(
        &mut self,
        name: &str,
        avoid: Vec<String>,
        only: Option<String>,
        reply: Option<Reply<Loaded>>,
    ) {
        let send = |reply: Option<Reply<Loaded>>, r: Result<Loaded, FleetError>| {
            if let Some(tx) = reply {
                let _ = tx.send(r);
            }
        };
        let info = match self.resolve(name) {
            Ok(i) => i,
            Err(e) => return send(reply, Err(e)),
        };
        let id = info.id.clone();
        if let Some(n) = &only {
            if self.state.node(n).is_none() {
                return send(reply, Err(FleetError::UnknownNode(n.clone())));
            }
        }
        // Ready somewhere acceptable?
        // The published snapshot is current: it is republished after every change.
        let table = self.table.load_full();
        let ready = match &only {
            Some(n) => table
                .ready
                .get(&id)
                .and_then(|rs| rs.iter().find(|r| &r.node.name == n).cloned()),
            // Nodes in `avoid` only as a last resort, as on the request path.
            None => table.pick(&id, &avoid).or_else(|| table.pick(&id, &[])),
        };
        if let Some(r) = ready {
            return send(
                reply,
                Ok(Loaded {
                    replica: r,
                    load_ms: 0,
                    evicted: Vec::new(),
                }),
            );
        }
        // Already loading: wait on that load.
        if let Some(p) = self.state.loads.get(&id) {
            if only.as_ref().is_none_or(|n| n == &p.node) {
                if let Some(r) = reply {
                    self.waiters.entry(id).or_default().push(r);
                }
                return;
            }
            return send(
                reply,
                Err(FleetError::Busy {
                    model: id,
                    reason: format!("it is being loaded on {}", p.node),
                    retry_after_ms: 1000,
                }),
            );
        }
        let Some((mut wanted, info)) = self.state.wanted(&id, &avoid) else {
            return send(reply, Err(FleetError::UnknownModel(name.to_string())));
        };
        if let Some(n) = &only {
            wanted.eligible.retain(|e| e == n);
            wanted.avoid.retain(|a| a != n);
        }
        if wanted.eligible.is_empty() {
            return send(reply, Err(FleetError::NotServable(id)));
        }
        match router::plan_load(&wanted, &self.state.rooms(), &self.policy()) {
            LoadPlan::Load {
                node,
                device,
                evict,
            } => {
                let source = info
                    .loadable
                    .iter()
                    .find(|(n, _, _)| n == &node)
                    .map(|(_, s, _)| s.clone())
                    .unwrap_or_default();
                tracing::info!(model = %id, %node, device, evict = ?evict, "loading model");
                for v in &evict {
                    self.state.record_unloaded(&node, v);
                    self.evicted(v, &node, "room");
                }
                self.state.loads.insert(
                    id.clone(),
                    PendingLoad {
                        node: node.clone(),
                        device,
                        footprint: wanted.footprint,
                        started_ms: now_unix_ms(),
                    },
                );
                self.load_started.insert(id.clone(), Instant::now());
                if let Some(r) = reply {
                    self.waiters.entry(id.clone()).or_default().push(r);
                }
                if let Some(n) = self.state.node(&node) {
                    self.spawn_load(n.info.clone(), id, source, device, evict);
                }
                self.publish();
            }
            LoadPlan::Wait { retry_after_ms } => send(
                reply,
                Err(FleetError::Guarded {
                    model: id,
                    retry_after_ms,
                }),
            ),
            // Devices big enough but full of pinned or busy models: that
            // passes, so it is worth retrying; anything else is not.
            LoadPlan::Impossible(why) if why.passes() => send(
                reply,
                Err(FleetError::Busy {
                    model: id,
                    reason: why.to_string(),
                    retry_after_ms: 5000,
                }),
            ),
            LoadPlan::Impossible(why) => send(
                reply,
                Err(FleetError::NoCapacity {
                    model: id,
                    reason: why.to_string(),
                }),
            ),
        }
    }

    fn evicted(&self, model: &str, node: &str, reason: &'static str) {
        self.metrics
            .evictions
            .get_or_create(&EvictionLabels {
                model: model.to_string(),
                node: node.to_string(),
                reason,
            })
            .inc();
    }

    fn spawn_load(
        &self,
        node: Arc<NodeInfo>,
        model: String,
        source: String,
        device: u32,
        evict: Vec<String>,
    ) {
        let client = self.client.clone();
        let tx = self.tx.clone();
        let timeout = self.settings.load_timeout;
        tokio::spawn(async move {
            let mut evicted = Vec::new();
            for v in evict {
                match client.unload(&node, &v, timeout).await {
                    Ok(_) => evicted.push(format!("{}/{v}", node.name)),
                    Err(e) => {
                        tracing::warn!(model = %v, node = %node.name, error = %crate::error::chain(&e), "eviction failed")
                    }
                }
            }
            let req = LoadRequest {
                model: model.clone(),
                source: Some(source).filter(|s| !s.is_empty()),
                device: Some(device),
            };
            let result = client
                .load(&node, &req, timeout)
                .await
                .map(|r| (r, evicted));
            let _ = tx.send(Command::LoadDone {
                model,
                node: node.name.clone(),
                result,
            });
        });
    }

    fn load_done(
        &mut self,
        model: &str,
        node: &str,
        result: Result<(LoadResponse, Vec<String>), UpstreamError>,
    ) {
        self.state.loads.remove(model);
        let secs = self
            .load_started
            .remove(model)
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        let ok = result.is_ok();
        self.metrics
            .loads
            .get_or_create(&LoadLabels {
                model: model.to_string(),
                node: node.to_string(),
                result: if ok { "ok" } else { "error" },
            })
            .inc();
        let waiters = self.waiters.remove(model).unwrap_or_default();
        match result {
            Ok((resp, evicted)) => {
                self.metrics
                    .load_duration
                    .get_or_create(&GatewayMetrics::model_node(model, node))
                    .observe(secs);
                tracing::info!(%model, %node, load_ms = resp.load_ms, "model loaded");
                self.state.record_loaded(node, resp.model.clone());
                self.publish();
                let Some(replica) = self.replica(model, node) else {
                    return;
                };
                for w in waiters {
                    let _ = w.send(Ok(Loaded {
                        replica: replica.clone(),
                        load_ms: resp.load_ms,
                        evicted: evicted.clone(),
                    }));
                }
            }
            Err(e) => {
                tracing::warn!(%model, %node, error = %crate::error::chain(&e), "model load failed");
                if e.nothing_sent() {
                    self.state.mark_down(node);
                    self.set_up(node, false);
                }
                self.publish();
                for w in waiters {
                    let _ = w.send(Err(FleetError::Load {
                        model: model.to_string(),
                        source: e.clone(),
                    }));
                }
            }
        }
    }

    fn unload(&mut self, name: &str, only: Option<String>, reply: Reply<AdminUnloadResponse>) {
        let info = match self.resolve(name) {
            Ok(i) => i,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if let Some(n) = &only {
            if self.state.node(n).is_none() {
                let _ = reply.send(Err(FleetError::UnknownNode(n.clone())));
                return;
            }
        }
        if self.state.is_pinned(&info.id) {
            let _ = reply.send(Err(FleetError::Pinned(info.id)));
            return;
        }
        let nodes: Vec<Arc<NodeInfo>> = self
            .state
            .nodes
            .iter()
            .filter(|n| only.as_ref().is_none_or(|o| o == &n.info.name))
            .filter(|n| {
                n.status
                    .as_ref()
                    .is_some_and(|s| s.models.iter().any(|m| m.id == info.id))
            })
            .map(|n| n.info.clone())
            .collect();
        for n in &nodes {
            self.state.record_unloaded(&n.name, &info.id);
            self.evicted(&info.id, &n.name, "admin");
        }
        self.publish();
        let client = self.client.clone();
        let tx = self.tx.clone();
        let timeout = self.settings.load_timeout;
        let id = info.id.clone();
        tokio::spawn(async move {
            let mut from = Vec::new();
            for n in nodes {
                match client.unload(&n, &id, timeout).await {
                    Ok(r) if r.unloaded => {
                        let _ = tx.send(Command::Gone {
                            model: id.clone(),
                            node: n.name.clone(),
                        });
                        from.push(n.name.clone());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(model = %id, node = %n.name, error = %crate::error::chain(&e), "unload failed")
                    }
                }
            }
            let _ = reply.send(Ok(AdminUnloadResponse {
                model: id,
                unloaded_from: from,
            }));
        });
    }
}
