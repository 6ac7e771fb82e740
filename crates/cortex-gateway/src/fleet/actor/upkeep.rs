//! Upkeep done by the fleet actor: pinned models kept loaded, the
//! evictor's cycle (idle and poisoned unloads, with per-model keep-alives)
//! and defragmentation moves.

use std::sync::Arc;
use std::time::Instant;

use cortex_core::neuron_api::{LoadRequest, ModelState};
use cortex_core::now_unix_ms;
use cortex_core::ollama::KeepAlive;

use super::super::state::PendingLoad;
use super::super::Command;
use super::Actor;
use crate::neuron_client::NodeInfo;
use crate::router;

impl Actor {
    fn spawn_unload(&self, node: Arc<NodeInfo>, model: String) {
        let client = self.client.clone();
        let timeout = self.settings.load_timeout;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            match client.unload(&node, &model, timeout).await {
                // Polls sent before now may still show it: not after this.
                Ok(_) => {
                    let _ = tx.send(Command::Gone {
                        model,
                        node: node.name.clone(),
                    });
                }
                Err(e) => {
                    tracing::warn!(%model, node = %node.name, error = %crate::error::chain(&e), "unload failed")
                }
            }
        });
    }

    /// Pinned models are kept loaded: start a load for any that is not
    /// resident (or loading) on an up node.
    pub(super) fn ensure_pinned(&mut self) {
        let models = self.state.models();
        for m in models.into_iter().filter(|m| m.pinned) {
            let resident = self.state.nodes.iter().any(|n| {
                n.up && n.status.as_ref().is_some_and(|s| {
                    s.models
                        .iter()
                        .any(|r| r.id == m.id && r.state != ModelState::Poisoned)
                })
            });
            if !resident && !self.state.loads.contains_key(&m.id) && !m.loadable.is_empty() {
                tracing::info!(model = %m.id, "loading pinned model");
                self.ensure(&m.id, Vec::new(), None, None);
            }
        }
    }

    /// One evictor cycle: idle and poisoned unloads, then every
    /// `defrag_after_cycles` cycles a defragmentation pass.
    pub(super) fn evict(&mut self, cycle: u64) {
        self.idle_unloads();
        let every = u64::from(self.settings.defrag_after_cycles);
        if every > 0 && cycle > 0 && cycle % every == 0 {
            self.defrag();
        }
        self.ensure_pinned();
        self.publish();
    }

    /// Unload what the idle rule picks: each model by its `keep_alive`
    /// when a client set one, else by `idle_unload_after`. Keep-alives of
    /// models resident nowhere expire here.
    pub(super) fn idle_unloads(&mut self) {
        let now = now_unix_ms();
        let default_ms = self.settings.idle_unload_after.as_millis() as u64;
        let rooms = self.state.rooms();
        let keep = &self.state.keep_alive;
        let idle_ms_of = |model: &str| match keep.get(model) {
            None => (default_ms > 0).then_some(default_ms),
            Some(KeepAlive::Unload) => Some(0),
            Some(KeepAlive::Forever) => None,
            Some(KeepAlive::For(d)) => Some(d.as_millis().try_into().unwrap_or(u64::MAX)),
        };
        for (node, model) in router::idle_victims_with(&rooms, idle_ms_of, now) {
            let poisoned = self.state.node(&node).is_some_and(|n| {
                n.status.as_ref().is_some_and(|s| {
                    s.models
                        .iter()
                        .any(|m| m.id == model && m.state == ModelState::Poisoned)
                })
            });
            tracing::info!(%model, %node, poisoned, "evictor unloads model");
            self.state.record_unloaded(&node, &model);
            self.evicted(&model, &node, if poisoned { "poisoned" } else { "idle" });
            if let Some(n) = self.state.node(&node) {
                self.spawn_unload(n.info.clone(), model);
            }
        }
        let rooms = self.state.rooms();
        self.state.keep_alive.retain(|model, _| {
            rooms
                .iter()
                .flat_map(|n| n.devices.iter().flat_map(|d| &d.residents))
                .any(|r| &r.model == model)
        });
    }

    fn defrag(&mut self) {
        let rooms = self.state.rooms();
        let resident: std::collections::HashSet<&str> = rooms
            .iter()
            .flat_map(|n| {
                n.devices
                    .iter()
                    .flat_map(|d| d.residents.iter().map(|r| r.model.as_str()))
            })
            .collect();
        let models = self.state.models();
        // Models loaded nowhere, largest first, with the nodes that can load them.
        let mut waiting: Vec<(u64, Vec<&str>)> = models
            .iter()
            .filter(|m| !resident.contains(m.id.as_str()) && !self.state.loads.contains_key(&m.id))
            .filter_map(|m| {
                let fp = m.loadable.iter().map(|(_, _, f)| *f).max()?;
                let on = m.loadable.iter().map(|(n, _, _)| n.as_str()).collect();
                Some((fp, on))
            })
            .filter(|(f, _)| *f > 0)
            .collect();
        waiting.sort_unstable_by_key(|w| std::cmp::Reverse(w.0));
        let can_load = |model: &str, node: &str| {
            models
                .iter()
                .any(|m| m.id == model && m.loadable.iter().any(|(n, _, _)| n == node))
        };
        // The largest waiting model that a move can make room for.
        let moves = waiting
            .iter()
            .map(|(w, on)| {
                router::defrag_plan_for(&rooms, *w, |n| on.contains(&n), &self.policy(), can_load)
            })
            .find(|m| !m.is_empty())
            .unwrap_or_default();
        for mv in moves {
            let Some(info) = models.iter().find(|m| m.id == mv.model) else {
                continue;
            };
            let Some((_, source, footprint)) = info
                .loadable
                .iter()
                .find(|(n, _, _)| n == &mv.to_node)
                .cloned()
            else {
                continue;
            };
            let (Some(to), Some(from)) =
                (self.state.node(&mv.to_node), self.state.node(&mv.from_node))
            else {
                continue;
            };
            let (to, from) = (to.info.clone(), from.info.clone());
            tracing::info!(model = %mv.model, from = %mv.from_node, to = %mv.to_node, "defragmentation: moving model");
            // Requests for it now wait on the load at its new place.
            self.state.record_unloaded(&mv.from_node, &mv.model);
            self.evicted(&mv.model, &mv.from_node, "defrag");
            self.state.loads.insert(
                mv.model.clone(),
                PendingLoad {
                    node: mv.to_node.clone(),
                    device: mv.to_device,
                    footprint,
                    started_ms: now_unix_ms(),
                },
            );
            self.load_started.insert(mv.model.clone(), Instant::now());
            let client = self.client.clone();
            let tx = self.tx.clone();
            let timeout = self.settings.load_timeout;
            let model = mv.model.clone();
            let device = mv.to_device;
            tokio::spawn(async move {
                let req = LoadRequest {
                    model: model.clone(),
                    source: Some(source),
                    device: Some(device),
                };
                let result = client.load(&to, &req, timeout).await;
                let loaded = result.is_ok();
                let _ = tx.send(Command::LoadDone {
                    model: model.clone(),
                    node: to.name.clone(),
                    result: result.map(|r| (r, Vec::new())),
                });
                if loaded {
                    match client.unload(&from, &model, timeout).await {
                        Ok(_) => {
                            let _ = tx.send(Command::Gone {
                                model,
                                node: from.name.clone(),
                            });
                        }
                        Err(e) => {
                            tracing::warn!(%model, node = %from.name, error = %crate::error::chain(&e), "defragmentation unload failed")
                        }
                    }
                }
            });
        }
    }
}
