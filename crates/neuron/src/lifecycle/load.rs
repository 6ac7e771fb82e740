//! Loading and unloading: coalesced loads in the background, device
//! choice against each device's budget, and unloads that wait for the
//! requests in flight.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use cortex_core::config::ModelSource;
use cortex_core::model_id::is_valid_model_id;
use cortex_core::neuron_api::ModelStatus;
use cortex_core::now_unix_ms;
use tokio::sync::{watch, Notify};

use super::{Estimate, LifecycleError, LoadResult, LoadingSlot, Model, Next, Registry, Slot};
use crate::device_worker::DeviceWorker;
use crate::fault::ModelHealth;
use crate::metrics::{LoadLabels, NeuronMetrics};
use crate::paths::{self, PathError};

impl Registry {
    /// Load `id`; returns its status and how long the load took (0 when it
    /// was already loaded). Concurrent calls for one model share one load.
    pub async fn load(
        self: &Arc<Self>,
        id: &str,
        source: Option<&str>,
        device: Option<u32>,
    ) -> Result<(ModelStatus, u64), LifecycleError> {
        if !is_valid_model_id(id) {
            return Err(LifecycleError::InvalidId(id.to_string()));
        }
        let started = Instant::now();
        let mut waited = false;
        loop {
            let next = match self.slots().get(id) {
                Some(Slot::Ready(m)) if m.health.poisoned().is_some() => {
                    Some(Next::Reload(m.clone()))
                }
                Some(Slot::Ready(m)) if !m.closing.load(Ordering::Acquire) => {
                    Some(Next::Done(m.status()))
                }
                Some(Slot::Ready(_)) => return Err(LifecycleError::Unloading(id.to_string())),
                Some(Slot::Loading(l)) => Some(Next::Wait(l.done.clone())),
                None => None,
            };
            let next = match next {
                Some(n) => n,
                None => Next::Wait(self.start_load(id, source, device).await?),
            };
            match next {
                Next::Done(status) => {
                    let ms = if waited {
                        started.elapsed().as_millis() as u64
                    } else {
                        0
                    };
                    return Ok((status, ms));
                }
                Next::Wait(mut rx) => {
                    waited = true;
                    let result = rx
                        .wait_for(|r| r.is_some())
                        .await
                        .map(|r| r.clone())
                        .unwrap_or(None);
                    if let Some(Err(e)) = result {
                        return Err(e);
                    }
                }
                Next::Reload(m) => {
                    tracing::warn!(model = id, "reloading a poisoned model");
                    self.unload_model(m).await;
                }
            }
        }
    }

    /// Resolve the source, reserve a device and start the load in the
    /// background (it completes even if the caller goes away).
    async fn start_load(
        self: &Arc<Self>,
        id: &str,
        source: Option<&str>,
        device: Option<u32>,
    ) -> Result<watch::Receiver<LoadResult>, LifecycleError> {
        let (source, path) = self.resolve_source(id, source).await?;
        let estimate = self.estimate(&path).await?;
        let weights_estimate = estimate.weights;
        let kv_reserve = estimate.kv_pool(self.config.kv_reserve(id).bytes());
        let needed = weights_estimate + kv_reserve;

        let mut slots = self.slots();
        if let Some(Slot::Loading(l)) = slots.get(id) {
            return Ok(l.done.clone());
        }
        if slots.contains_key(id) {
            // Became ready while we resolved: the caller's loop picks it up.
            let (tx, rx) = watch::channel(Some(Ok(())));
            drop(tx);
            return Ok(rx);
        }
        let worker = self.pick_device(&slots, id, device, needed)?;
        let (tx, rx) = watch::channel(None);
        slots.insert(
            id.to_string(),
            Slot::Loading(LoadingSlot {
                done: rx.clone(),
                device: worker.info().index,
                source: source.clone(),
                estimated_bytes: weights_estimate,
                kv_reserve,
                started: now_unix_ms(),
                kind: estimate.kind,
            }),
        );
        drop(slots);

        let this = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let result = this
                .finish_load(&id, source, path, worker, kv_reserve)
                .await;
            let _ = tx.send(Some(result));
        });
        Ok(rx)
    }

    async fn finish_load(
        &self,
        id: &str,
        source: String,
        path: PathBuf,
        worker: Arc<DeviceWorker>,
        kv_reserve: u64,
    ) -> Result<(), LifecycleError> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = worker.load(key, path, kv_reserve).await;
        let secs = started.elapsed().as_secs_f64();
        // Reading and repacking the weights leaves freed buffers between the
        // kept ones; give them back now rather than hold them while loaded.
        crate::sys::release_memory();
        let label = NeuronMetrics::model(id);
        let mut slots = self.slots();
        match result {
            Ok(loaded) => {
                self.metrics
                    .load_duration
                    .get_or_create(&label)
                    .observe(secs);
                self.metrics
                    .loads
                    .get_or_create(&LoadLabels {
                        model: id.to_string(),
                        result: "ok",
                    })
                    .inc();
                let now = now_unix_ms();
                let model = Arc::new(Model {
                    id: id.to_string(),
                    source,
                    key,
                    health: Arc::new(ModelHealth::new(
                        id,
                        worker.info().label(),
                        self.metrics.poisonings.get_or_create(&label).clone(),
                    )),
                    worker,
                    assets: loaded.assets,
                    weights_bytes: loaded.weights_bytes,
                    // What the pool really takes (whole blocks of the reserve).
                    kv_reserve: loaded.kv_bytes,
                    cache: loaded.cache,
                    loaded_at: now,
                    last_used: AtomicU64::new(now),
                    in_flight: AtomicU64::new(0),
                    closing: AtomicBool::new(false),
                    idle: Notify::new(),
                });
                tracing::info!(model = id, device = %model.worker.info().label(), weights_bytes = model.weights_bytes, kv_bytes = loaded.kv_bytes, kv_tokens = loaded.kv_tokens, secs, "model ready");
                slots.insert(id.to_string(), Slot::Ready(model));
                Ok(())
            }
            Err(e) => {
                slots.remove(id);
                self.metrics
                    .loads
                    .get_or_create(&LoadLabels {
                        model: id.to_string(),
                        result: "error",
                    })
                    .inc();
                let invalid_file = matches!(
                    &e,
                    crate::device_worker::WorkerError::Engine(
                        crate::engine::EngineError::Gguf(_)
                            | crate::engine::EngineError::Files(_)
                            | crate::engine::EngineError::Unsupported(_)
                    )
                );
                let message = match &e {
                    crate::device_worker::WorkerError::Engine(e) => e.chain(),
                    other => other.to_string(),
                };
                Err(LifecycleError::LoadFailed {
                    model: id.to_string(),
                    message,
                    invalid_file,
                })
            }
        }
    }

    /// Where the file for `id` is: the given source, else the file the id
    /// was derived from.
    async fn resolve_source(
        &self,
        id: &str,
        source: Option<&str>,
    ) -> Result<(String, PathBuf), LifecycleError> {
        let source = match source {
            Some(s) => s.to_string(),
            None => paths::scan(&self.models_dirs)
                .into_iter()
                .find(|m| m.id == id)
                .map(|m| m.source)
                .ok_or_else(|| LifecycleError::Unknown(id.to_string()))?,
        };
        let parsed = ModelSource::parse(&source).map_err(LifecycleError::BadSource)?;
        let path = match parsed {
            ModelSource::File(rel) => paths::resolve(&self.models_dirs, &rel)?,
            ModelSource::Hub {
                repo,
                file,
                revision,
            } => {
                let cache = self.hub_cache.clone();
                tokio::task::spawn_blocking(move || {
                    crate::hub::fetch(&cache, &repo, &file, revision.as_deref())
                })
                .await
                .map_err(|e| LifecycleError::BadSource(e.to_string()))?
                .map_err(|e| LifecycleError::LoadFailed {
                    model: id.to_string(),
                    message: e.to_string(),
                    invalid_file: false,
                })?
            }
        };
        Ok((source, path))
    }

    /// What a file takes once loaded (cached per file version).
    pub(super) async fn estimate(&self, path: &Path) -> Result<Estimate, LifecycleError> {
        let meta =
            std::fs::metadata(path).map_err(|_| PathError::NotFound(path.display().to_string()))?;
        let key = (
            path.to_path_buf(),
            meta.len(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        );
        let cached = self
            .estimates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let result = match cached {
            Some(r) => r,
            None => {
                // Remembered by the blocking task itself, failures too: a
                // `/status` poll that gives up (its client timed out) still
                // leaves the answer for the next poll, and an unloadable
                // file is not read again on every poll.
                let estimates = self.estimates.clone();
                let p = path.to_path_buf();
                tokio::task::spawn_blocking(move || {
                    let r = inspect(&p).map_err(|e| e.chain());
                    estimates
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, r.clone());
                    r
                })
                .await
                .map_err(|e| LifecycleError::BadSource(e.to_string()))?
            }
        };
        result.map_err(|message| LifecycleError::LoadFailed {
            model: path.display().to_string(),
            message,
            invalid_file: true,
        })
    }

    /// Footprints (weights + KV reserve) placed on each device index.
    pub(super) fn used_by_device(slots: &HashMap<String, Slot>) -> HashMap<u32, u64> {
        let mut used = HashMap::new();
        for s in slots.values() {
            let (dev, bytes) = match s {
                Slot::Ready(m) => (m.worker.info().index, m.weights_bytes + m.kv_reserve),
                Slot::Loading(l) => (l.device, l.estimated_bytes + l.kv_reserve),
            };
            *used.entry(dev).or_insert(0) += bytes;
        }
        used
    }

    /// The requested device, or the device (GPUs before the CPU) with the
    /// most budget left that fits `needed`.
    fn pick_device(
        &self,
        slots: &HashMap<String, Slot>,
        id: &str,
        requested: Option<u32>,
        needed: u64,
    ) -> Result<Arc<DeviceWorker>, LifecycleError> {
        let used = Self::used_by_device(slots);
        let free = |w: &Arc<DeviceWorker>| {
            w.info()
                .memory_budget
                .saturating_sub(used.get(&w.info().index).copied().unwrap_or(0))
        };
        let candidates: Vec<&Arc<DeviceWorker>> = match requested {
            Some(d) => vec![self
                .workers
                .iter()
                .find(|w| w.info().index == d)
                .ok_or(LifecycleError::NoDevice(d))?],
            None => self.workers.iter().collect(),
        };
        let best_free = candidates.iter().map(|w| free(w)).max().unwrap_or(0);
        candidates
            .into_iter()
            .filter(|w| free(w) >= needed)
            .max_by_key(|w| {
                (
                    w.info().kind == cortex_core::neuron_api::DeviceKind::Cuda,
                    free(w),
                )
            })
            .cloned()
            .ok_or(LifecycleError::InsufficientMemory {
                model: id.to_string(),
                needed,
                free: best_free,
            })
    }

    /// Unload `id` after its in-flight requests finish. `false` when it was
    /// not loaded.
    pub async fn unload(&self, id: &str) -> Result<bool, LifecycleError> {
        if !is_valid_model_id(id) {
            return Err(LifecycleError::InvalidId(id.to_string()));
        }
        loop {
            let next = match self.slots().get(id) {
                Some(Slot::Ready(m)) => Ok(m.clone()),
                Some(Slot::Loading(l)) => Err(l.done.clone()),
                None => return Ok(false),
            };
            match next {
                Ok(m) => return Ok(self.unload_model(m).await),
                Err(mut rx) => {
                    let _ = rx.wait_for(|r| r.is_some()).await;
                }
            }
        }
    }

    /// Wait for `m`'s requests, unload it from its device, forget it, and
    /// return the freed memory to the system once the last handle (with the
    /// tokenizer and template) is gone.
    async fn unload_model(&self, m: Arc<Model>) -> bool {
        m.closing.store(true, Ordering::Release);
        loop {
            let idle = m.idle.notified();
            if m.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            idle.await;
        }
        let existed = m.worker.unload(m.key).await.unwrap_or(false);
        {
            let mut slots = self.slots();
            if matches!(slots.get(&m.id), Some(Slot::Ready(cur)) if Arc::ptr_eq(cur, &m)) {
                slots.remove(&m.id);
            }
        }
        drop(m);
        crate::sys::release_memory();
        existed
    }

    /// Unload everything (shutdown).
    pub async fn unload_all(&self) {
        let ids: Vec<String> = self.slots().keys().cloned().collect();
        for id in ids {
            if let Err(e) = self.unload(&id).await {
                tracing::warn!(model = %id, error = %e, "unload at shutdown failed");
            }
        }
    }
}

/// What the model at `path` takes: an embedding model directory (or its
/// `model.safetensors`), else a GGUF file.
fn inspect(path: &Path) -> Result<Estimate, crate::engine::EngineError> {
    use crate::engine::{embed, gguf};
    if embed::model_dir(path).is_some() {
        return embed::inspect(path).map(|s| Estimate {
            weights: s.weights_bytes,
            kv_block: 0,
            kind: cortex_core::neuron_api::ModelKind::Embedding,
            context_length: s.max_positions as u64,
            architecture: "bert".to_string(),
        });
    }
    gguf::inspect(path).map(|s| Estimate {
        weights: s.weights_bytes,
        kv_block: s.kv_block_bytes,
        kind: cortex_core::neuron_api::ModelKind::Chat,
        context_length: s.meta.max_positions() as u64,
        architecture: s.meta.architecture.clone(),
    })
}
