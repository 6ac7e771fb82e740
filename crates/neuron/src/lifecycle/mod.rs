//! Model lifecycle: which models are loaded, loading or poisoned, on which
//! device, and who is using them.
//!
//! Loads of one model coalesce (later callers wait on the first load);
//! unloads wait for in-flight requests; a request holds an [`InFlight`]
//! guard for as long as it runs. The table is one mutex-protected map whose
//! critical sections never await. Inference itself belongs to the device
//! workers; this module only decides what may run. Loading and unloading
//! are in [`load`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use cortex_core::config::NeuronConfig;
use cortex_core::neuron_api::{
    AvailableModel, DeviceStatus, ModelKind, ModelState, ModelStatus, NodeStatus,
};
use cortex_core::now_unix_ms;
use tokio::sync::{watch, Notify};

use crate::device::memory_free;
use crate::device_worker::{DeviceWorker, ModelKey};
use crate::engine::Assets;
use crate::fault::ModelHealth;
use crate::metrics::NeuronMetrics;
use crate::paths::{self, PathError};

/// Why a lifecycle operation or a request admission failed. `Clone`, so
/// that every waiter of a shared load gets the load's own error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LifecycleError {
    #[error("invalid model id {0:?}: use letters, digits, '.', '_', '-' and ':'")]
    InvalidId(String),
    #[error("model {0:?} is not loaded on this neuron")]
    NotLoaded(String),
    #[error("model {0:?} is still loading")]
    Loading(String),
    #[error("no model file for {0:?} in the models directories")]
    Unknown(String),
    #[error("model {model:?} is poisoned after a device fault and must be reloaded: {why}")]
    Poisoned { model: String, why: String },
    #[error("model {0:?} is being unloaded")]
    Unloading(String),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("bad source: {0}")]
    BadSource(String),
    #[error("no device {0} on this neuron")]
    NoDevice(u32),
    #[error("not enough memory for {model:?}: needs {needed} bytes, {free} bytes of budget free on the best device")]
    InsufficientMemory {
        model: String,
        needed: u64,
        free: u64,
    },
    #[error("loading {model:?} failed: {message}")]
    LoadFailed {
        model: String,
        message: String,
        invalid_file: bool,
    },
}

/// A loaded model.
pub struct Model {
    pub id: String,
    pub source: String,
    pub key: ModelKey,
    pub worker: Arc<DeviceWorker>,
    /// Chat or embedding, with its tokenizer.
    pub assets: Assets,
    pub weights_bytes: u64,
    pub kv_reserve: u64,
    pub loaded_at: u64,
    pub health: Arc<ModelHealth>,
    /// Its KV pool and the conversations its prefix cache holds (written by
    /// its worker).
    pub cache: crate::device_worker::SharedCacheReport,
    last_used: AtomicU64,
    in_flight: AtomicU64,
    closing: AtomicBool,
    idle: Notify,
}

impl Model {
    fn status(&self) -> ModelStatus {
        let poisoned = self.health.poisoned();
        ModelStatus {
            id: self.id.clone(),
            kind: self.assets.kind(),
            state: if poisoned.is_some() {
                ModelState::Poisoned
            } else {
                ModelState::Ready
            },
            device: self.worker.info().index,
            memory_bytes: self.weights_bytes,
            kv_reserve_bytes: self.kv_reserve,
            loaded_at: self.loaded_at,
            last_used_at: self.last_used.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            source: self.source.clone(),
            context_length: self.assets.max_positions() as u64,
            error: poisoned,
            cached_prefixes: self.cache_report().prefixes,
        }
    }

    /// The worker's last report on the model's KV pool.
    pub fn cache_report(&self) -> crate::device_worker::CacheReport {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Held by a request while it uses a model; unload waits for all of them.
pub struct InFlight {
    model: Arc<Model>,
    metrics: NeuronMetrics,
}

impl InFlight {
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.model.last_used.store(now_unix_ms(), Ordering::Relaxed);
        self.metrics
            .in_flight
            .get_or_create(&NeuronMetrics::model(&self.model.id))
            .dec();
        if self.model.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.model.idle.notify_waiters();
        }
    }
}

type LoadResult = Option<Result<(), LifecycleError>>;

struct LoadingSlot {
    done: watch::Receiver<LoadResult>,
    device: u32,
    source: String,
    estimated_bytes: u64,
    kv_reserve: u64,
    started: u64,
    kind: ModelKind,
}

enum Slot {
    Loading(LoadingSlot),
    Ready(Arc<Model>),
}

/// What a model file takes once loaded, from its header.
#[derive(Debug, Clone)]
pub(crate) struct Estimate {
    /// The weights.
    weights: u64,
    /// One KV block.
    kv_block: u64,
    /// Chat or embedding.
    kind: ModelKind,
    /// `<arch>.context_length` (what the gateway advertises before a load).
    context_length: u64,
    /// `general.architecture`.
    architecture: String,
}

impl Estimate {
    /// The bytes of the KV pool a reserve of `reserve` bytes makes: whole
    /// blocks, as the device worker allocates it. An embedding model has no
    /// KV: it reserves its fixed working memory instead.
    fn kv_pool(&self, reserve: u64) -> u64 {
        match (self.kind, self.kv_block) {
            (ModelKind::Embedding, _) => crate::engine::embed::WORK_BYTES,
            (ModelKind::Chat, 0) => reserve,
            (ModelKind::Chat, b) => reserve / b * b,
        }
    }
}

/// `inspect()` results (what a file takes once loaded, or why it cannot be
/// loaded) by (path, size, mtime): the header read is not free.
type Estimates = Arc<Mutex<HashMap<(PathBuf, u64, SystemTime), Result<Estimate, String>>>>;

/// The model table of one neuron.
pub struct Registry {
    name: String,
    workers: Vec<Arc<DeviceWorker>>,
    models_dirs: Vec<PathBuf>,
    hub_cache: PathBuf,
    config: NeuronConfig,
    metrics: NeuronMetrics,
    slots: Mutex<HashMap<String, Slot>>,
    next_key: AtomicU64,
    /// What each model file takes (see [`Estimates`]).
    estimates: Estimates,
}

enum Next {
    Done(ModelStatus),
    Wait(watch::Receiver<LoadResult>),
    Reload(Arc<Model>),
}

impl Registry {
    pub fn new(
        name: String,
        workers: Vec<Arc<DeviceWorker>>,
        models_dirs: Vec<PathBuf>,
        hub_cache: PathBuf,
        config: NeuronConfig,
        metrics: NeuronMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            workers,
            models_dirs,
            hub_cache,
            config,
            metrics,
            slots: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(1),
            estimates: Default::default(),
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn workers(&self) -> &[Arc<DeviceWorker>] {
        &self.workers
    }

    /// Admit a request for `id`.
    pub fn acquire(&self, id: &str) -> Result<InFlight, LifecycleError> {
        let slots = self.slots();
        match slots.get(id) {
            Some(Slot::Ready(m)) => {
                if let Some(why) = m.health.poisoned() {
                    return Err(LifecycleError::Poisoned {
                        model: id.to_string(),
                        why,
                    });
                }
                if m.closing.load(Ordering::Acquire) {
                    return Err(LifecycleError::Unloading(id.to_string()));
                }
                m.in_flight.fetch_add(1, Ordering::AcqRel);
                m.last_used.store(now_unix_ms(), Ordering::Relaxed);
                self.metrics
                    .in_flight
                    .get_or_create(&NeuronMetrics::model(id))
                    .inc();
                Ok(InFlight {
                    model: m.clone(),
                    metrics: self.metrics.clone(),
                })
            }
            Some(Slot::Loading(_)) => Err(LifecycleError::Loading(id.to_string())),
            None => Err(LifecycleError::NotLoaded(id.to_string())),
        }
    }

    /// A loaded model (ready or poisoned), without admitting a request.
    pub fn get(&self, id: &str) -> Option<Arc<Model>> {
        match self.slots().get(id) {
            Some(Slot::Ready(m)) => Some(m.clone()),
            _ => None,
        }
    }

    /// Ids of loaded (ready) models.
    pub fn ready_ids(&self) -> Vec<(String, u64)> {
        let mut v: Vec<_> = self
            .slots()
            .iter()
            .filter_map(|(id, s)| match s {
                Slot::Ready(m) if m.health.poisoned().is_none() => Some((id.clone(), m.loaded_at)),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    /// The devices with their budgets and use, and the memory gauges
    /// refreshed (cheap: no file scan).
    pub fn devices(&self) -> Vec<DeviceStatus> {
        let used = Self::used_by_device(&self.slots());
        let infos: Vec<&crate::device::DeviceInfo> =
            self.workers.iter().map(|w| w.info()).collect();
        let free = memory_free(&infos);
        infos
            .into_iter()
            .zip(free)
            .map(|(i, free)| {
                let used = used.get(&i.index).copied().unwrap_or(0);
                let label = crate::metrics::DeviceLabel { device: i.label() };
                self.metrics
                    .memory_used
                    .get_or_create(&label)
                    .set(used as i64);
                self.metrics
                    .memory_budget
                    .get_or_create(&label)
                    .set(i.memory_budget as i64);
                self.metrics
                    .memory_total
                    .get_or_create(&label)
                    .set(i.memory_total as i64);
                DeviceStatus {
                    index: i.index,
                    kind: i.kind,
                    name: i.name.clone(),
                    memory_total_bytes: i.memory_total,
                    memory_free_bytes: free,
                    memory_budget_bytes: i.memory_budget,
                    memory_used_bytes: used,
                }
            })
            .collect()
    }

    /// Refreshes the KV pool and prefix-cache gauges from each ready model's
    /// last report (models gone since the last scrape drop out).
    pub fn refresh_cache_gauges(&self) {
        let m = &self.metrics;
        m.prefix_cache_tokens.clear();
        m.kv_capacity_tokens.clear();
        m.kv_used_tokens.clear();
        for (id, slot) in self.slots().iter() {
            if let Slot::Ready(model) = slot {
                let r = model.cache_report();
                let label = crate::metrics::NeuronMetrics::model(id);
                m.prefix_cache_tokens
                    .get_or_create(&label)
                    .set(r.cached_tokens as i64);
                m.kv_capacity_tokens
                    .get_or_create(&label)
                    .set(r.capacity_tokens as i64);
                m.kv_used_tokens
                    .get_or_create(&label)
                    .set(r.used_tokens as i64);
            }
        }
    }

    /// The node's `/status`.
    pub async fn status(&self) -> NodeStatus {
        let mut models: Vec<ModelStatus> = self
            .slots()
            .iter()
            .map(|(id, s)| match s {
                Slot::Ready(m) => m.status(),
                Slot::Loading(l) => ModelStatus {
                    id: id.clone(),
                    kind: l.kind,
                    state: ModelState::Loading,
                    device: l.device,
                    memory_bytes: l.estimated_bytes,
                    kv_reserve_bytes: l.kv_reserve,
                    loaded_at: l.started,
                    last_used_at: l.started,
                    in_flight: 0,
                    source: l.source.clone(),
                    context_length: 0,
                    error: None,
                    cached_prefixes: Vec::new(),
                },
            })
            .collect();
        models.sort_by(|a, b| a.id.cmp(&b.id));
        let devices = self.devices();
        let mut available = Vec::new();
        for f in paths::scan(&self.models_dirs) {
            let reserve = self.config.kv_reserve(&f.id).bytes();
            match self.estimate(&f.path).await {
                Ok(e) => available.push(AvailableModel {
                    id: f.id,
                    kind: e.kind,
                    source: f.source,
                    size_bytes: f.size,
                    estimated_bytes: e.weights + e.kv_pool(reserve),
                    context_length: Some(e.context_length),
                    architecture: Some(e.architecture),
                }),
                Err(e) => {
                    tracing::debug!(file = %f.path.display(), error = %e, "not a loadable model; skipped")
                }
            }
        }
        NodeStatus {
            name: self.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            devices,
            models,
            available,
        }
    }
}

mod load;
