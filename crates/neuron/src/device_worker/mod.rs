//! Device workers: one dedicated OS thread per device (`cuda-dev-N`,
//! `cpu-dev`) that owns the device for the daemon's lifetime.
//!
//! Loads, generations and unloads are jobs sent over a channel; async
//! callers await a oneshot reply or read a stream of [`TokenEvent`]s.
//! Tensors never leave the thread. Each loaded model has its KV pool and a
//! continuous-batching scheduler (`engine::scheduler`); every turn of the
//! worker's loop runs one tick — one batched forward pass — for each model
//! with work, so concurrent requests share each pass instead of taking
//! turns. A client that goes away closes its event channel, and its
//! sequence is dropped (its blocks returned) at the model's next tick.
//!
//! Faults are classified here, on the thread where they happen (see
//! [`slot`]); a panic in a model's tick is caught and poisons that model
//! only.

mod injection;
mod slot;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

pub use crate::engine::scheduler::SchedulerConfig;
pub use injection::{FaultKind, Injection};

use crate::device::DeviceInfo;
use crate::engine::kv::{KvCache, KvGeometry};
use crate::engine::sampling::SamplingParams;
use crate::engine::scheduler::Scheduler;
use crate::engine::{Device, EngineError, ModelAssets};
use crate::fault::{ModelHealth, Site};
use slot::ModelSlot;

/// Identifies a loaded model inside a worker.
pub type ModelKey = u64;

/// What a generation reports, in order: tokens, then one `Finished` or
/// `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenEvent {
    /// Sent once, before the first token: prompt tokens whose K/V came from
    /// the prefix cache.
    Prefilled {
        cached_tokens: usize,
    },
    /// One generated token; the first one also marks the end of prefill.
    Token(u32),
    Finished(StopKind),
    Failed {
        site: Site,
        chain: String,
        device_fault: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// The model produced an end-of-sequence token.
    Eos,
    /// `max_new_tokens` were produced.
    Length,
}

/// One generation to run.
pub struct GenerateRequest {
    pub key: ModelKey,
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub max_new_tokens: usize,
    pub health: Arc<ModelHealth>,
    pub stream: bool,
    pub inject: Option<Injection>,
    pub events: mpsc::UnboundedSender<TokenEvent>,
    /// The conversation it continues (`cortex_core::prefix`), remembered
    /// with its KV blocks for cache-aware routing.
    pub conversation: Option<u64>,
}

/// What a successful load hands back to async code.
#[derive(Clone)]
pub struct Loaded {
    pub assets: Arc<ModelAssets>,
    pub weights_bytes: u64,
    /// Bytes of the model's KV pool (allocated at load).
    pub kv_bytes: u64,
    /// Token positions the pool holds.
    pub kv_tokens: usize,
    /// Its KV pool and prefix cache as last reported by the worker (read by
    /// `/status` and `/metrics`).
    pub cache: SharedCacheReport,
}

/// A model's KV pool as its worker last saw it.
#[derive(Clone, Debug, Default)]
pub struct CacheReport {
    /// The conversations whose KV the prefix cache holds, most recent first.
    pub prefixes: Vec<cortex_core::neuron_api::CachedPrefix>,
    /// Token positions the pool holds.
    pub capacity_tokens: u64,
    /// Positions in blocks that running sequences hold.
    pub used_tokens: u64,
    /// Positions in full blocks registered in the prefix cache (held by a
    /// running sequence or idle and reusable).
    pub cached_tokens: u64,
}

/// Written by a model's worker, read by `/status` and `/metrics`.
pub type SharedCacheReport = Arc<std::sync::Mutex<CacheReport>>;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the {0} worker thread has stopped")]
    Gone(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

enum Job {
    Load {
        key: ModelKey,
        path: PathBuf,
        kv_reserve: u64,
        reply: oneshot::Sender<Result<Loaded, EngineError>>,
    },
    Unload {
        key: ModelKey,
        reply: oneshot::Sender<bool>,
    },
    Generate(Box<GenerateRequest>),
    Shutdown,
}

/// Handle to a device's worker thread.
pub struct DeviceWorker {
    info: DeviceInfo,
    tx: std_mpsc::Sender<Job>,
    thread: Mutex<Option<JoinHandle<()>>>,
    active: Arc<AtomicUsize>,
}

impl std::fmt::Debug for DeviceWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceWorker")
            .field("device", &self.info.label())
            .finish()
    }
}

impl DeviceWorker {
    /// Start the thread and open the device on it. Fails when the thread
    /// cannot start or the device cannot be opened.
    pub fn spawn(info: DeviceInfo, batching: SchedulerConfig) -> Result<Arc<Self>, String> {
        let (tx, rx) = std_mpsc::channel();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let active = Arc::new(AtomicUsize::new(0));
        let label = info.label();
        let ordinal = info.ordinal;
        let thread_active = active.clone();
        let thread = std::thread::Builder::new()
            .name(info.thread_name())
            .spawn(move || {
                let device = match open_device(ordinal) {
                    Ok(d) => {
                        let _ = ready_tx.send(Ok(()));
                        d
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                Worker {
                    device,
                    label,
                    batching,
                    models: BTreeMap::new(),
                    active_count: thread_active,
                }
                .run(rx);
            })
            .map_err(|e| format!("cannot start the {} worker thread: {e}", info.thread_name()))?;
        ready_rx.recv().map_err(|_| {
            format!(
                "the {} worker thread died while opening its device",
                info.label()
            )
        })??;
        tracing::info!(device = %info.label(), name = %info.name, thread = %info.thread_name(), "device worker started");
        Ok(Arc::new(Self {
            info,
            tx,
            thread: Mutex::new(Some(thread)),
            active,
        }))
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Sequences currently running or queued on this device.
    pub fn active_sequences(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    fn gone(&self) -> WorkerError {
        WorkerError::Gone(self.info.label())
    }

    /// Load a GGUF file on this device, with a KV pool of at most
    /// `kv_reserve` bytes.
    pub async fn load(
        &self,
        key: ModelKey,
        path: PathBuf,
        kv_reserve: u64,
    ) -> Result<Loaded, WorkerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Load {
                key,
                path,
                kv_reserve,
                reply,
            })
            .map_err(|_| self.gone())?;
        Ok(rx.await.map_err(|_| self.gone())??)
    }

    /// Free a model. `false` when it was not loaded.
    pub async fn unload(&self, key: ModelKey) -> Result<bool, WorkerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Unload { key, reply })
            .map_err(|_| self.gone())?;
        rx.await.map_err(|_| self.gone())
    }

    /// Queue a generation; its events arrive on `req.events`.
    pub fn generate(&self, req: GenerateRequest) -> Result<(), WorkerError> {
        self.tx
            .send(Job::Generate(Box::new(req)))
            .map_err(|_| self.gone())
    }

    /// Stop the thread after the jobs already queued, and wait for it.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Job::Shutdown);
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

#[cfg(feature = "cuda")]
fn open_device(ordinal: Option<usize>) -> Result<Device, String> {
    match ordinal {
        Some(n) => Device::new_cuda(n).map_err(|e| format!("cannot open CUDA device {n}: {e}")),
        None => Ok(Device::Cpu),
    }
}

#[cfg(not(feature = "cuda"))]
fn open_device(ordinal: Option<usize>) -> Result<Device, String> {
    match ordinal {
        Some(n) => Err(format!(
            "CUDA device {n} requested, but this build has no `cuda` feature"
        )),
        None => Ok(Device::Cpu),
    }
}

/// The state owned by the worker thread.
struct Worker {
    device: Device,
    label: String,
    batching: SchedulerConfig,
    /// By key: ticks go round the models in key order.
    models: BTreeMap<ModelKey, ModelSlot>,
    active_count: Arc<AtomicUsize>,
}

impl Worker {
    fn run(mut self, rx: std_mpsc::Receiver<Job>) {
        'outer: loop {
            if !self.models.values().any(ModelSlot::has_work) {
                match rx.recv() {
                    Ok(job) => {
                        if !self.handle(job) {
                            break 'outer;
                        }
                    }
                    Err(_) => break 'outer,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(job) => {
                        if !self.handle(job) {
                            break 'outer;
                        }
                    }
                    Err(std_mpsc::TryRecvError::Empty) => break,
                    Err(std_mpsc::TryRecvError::Disconnected) => break 'outer,
                }
            }
            for slot in self.models.values_mut() {
                if slot.has_work() {
                    slot.tick();
                }
            }
            self.active_count.store(
                self.models.values().map(ModelSlot::sequences).sum(),
                Ordering::Relaxed,
            );
        }
        for slot in self.models.values_mut() {
            slot.fail_all(
                Site::Decode,
                &format!("missing handle: the {} worker stopped", self.label),
            );
        }
        self.active_count.store(0, Ordering::Relaxed);
        tracing::info!(device = %self.label, "device worker stopped");
    }

    /// Handle one job; `false` means stop.
    fn handle(&mut self, job: Job) -> bool {
        match job {
            Job::Load {
                key,
                path,
                kv_reserve,
                reply,
            } => {
                let started = std::time::Instant::now();
                let result = match catch_unwind(AssertUnwindSafe(|| self.load(&path, kv_reserve))) {
                    Ok(r) => r,
                    Err(_) => Err(EngineError::Unsupported(
                        "the loader panicked on this file".into(),
                    )),
                };
                let result = result.map(|slot| {
                    let geometry = slot.kv.geometry();
                    let loaded = Loaded {
                        assets: slot.loaded.assets.clone(),
                        weights_bytes: slot.loaded.weights_bytes,
                        kv_bytes: geometry.bytes(),
                        kv_tokens: geometry.tokens(),
                        cache: slot.cache.clone(),
                    };
                    self.models.insert(key, slot);
                    loaded
                });
                match &result {
                    Ok(l) => {
                        tracing::info!(device = %self.label, key, path = %path.display(), weights_bytes = l.weights_bytes, kv_bytes = l.kv_bytes, kv_tokens = l.kv_tokens, ms = started.elapsed().as_millis() as u64, "model loaded")
                    }
                    Err(e) => {
                        tracing::warn!(device = %self.label, key, path = %path.display(), error = %e.chain(), "model load failed")
                    }
                }
                // A failed load is an answer, never a dead worker.
                let _ = reply.send(result);
            }
            Job::Unload { key, reply } => {
                // Unload waits for in-flight requests, so nothing should still
                // run on this model; if something does, it fails cleanly.
                let existed = match self.models.remove(&key) {
                    Some(mut slot) => {
                        slot.fail_all(
                            Site::Decode,
                            &format!(
                                "missing handle: model {key} was unloaded from {}",
                                self.label
                            ),
                        );
                        true
                    }
                    None => false,
                };
                tracing::info!(device = %self.label, key, existed, "model unloaded");
                let _ = reply.send(existed);
            }
            Job::Generate(req) => match self.models.get_mut(&req.key) {
                Some(slot) => slot.admit(req),
                None => {
                    let chain = format!(
                        "missing handle: model {} is not loaded on {}",
                        req.key, self.label
                    );
                    slot::fail(&req, Site::Prefill, chain);
                }
            },
            Job::Shutdown => return false,
        }
        true
    }

    /// Loads a model and allocates its KV pool from `kv_reserve` bytes.
    fn load(&self, path: &std::path::Path, kv_reserve: u64) -> Result<ModelSlot, EngineError> {
        let loaded = crate::engine::gguf::load(path, &self.device)?;
        let config = loaded.model.config().clone();
        let geometry = KvGeometry::from_budget(config.layers, config.kv_dim(), kv_reserve);
        let kv = KvCache::new(geometry, &self.device)?;
        let max_positions = loaded
            .assets
            .meta
            .max_positions()
            .min(config.context_length);
        Ok(ModelSlot {
            loaded,
            kv,
            sched: Scheduler::new(self.batching, geometry.blocks, max_positions),
            poisoned: None,
            label: self.label.clone(),
            conversations: Default::default(),
            cache: Arc::new(std::sync::Mutex::new(CacheReport {
                capacity_tokens: geometry.tokens() as u64,
                ..CacheReport::default()
            })),
            ticks: 0,
        })
    }
}
