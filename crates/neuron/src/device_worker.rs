//! Device workers: one dedicated OS thread per device (`cuda-dev-N`,
//! `cpu-dev`) that owns the device for the daemon's lifetime.
//!
//! Loads, forward steps and unloads are jobs sent over a channel; async
//! callers await a oneshot reply or read a stream of [`TokenEvent`]s.
//! Tensors never leave the thread. The worker steps its active sequences in
//! turn, one token each, so concurrent requests interleave fairly and each
//! keeps its own KV cache (see `engine::sequence`). A client that goes away
//! closes its event channel, and the worker drops that sequence — and its
//! cache — before its next step.
//!
//! Errors of prefill and decode steps are classified here, on the thread
//! where they happen, through the model's [`ModelHealth`], so that a device
//! fault poisons the model even when no client is listening any more.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::device::DeviceInfo;
use crate::engine::sampling::SamplingParams;
use crate::engine::sequence::Sequence;
use crate::engine::{Device, EngineError, LoadedWeights, ModelAssets};
use crate::fault::{ModelHealth, Site};

/// Identifies a loaded model inside a worker.
pub type ModelKey = u64;

/// What a generation reports, in order: tokens, then one `Finished` or
/// `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenEvent {
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

/// A test-only fault, injected at one inference site (see `--enable-fault-injection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injection {
    pub site: Site,
    pub device_fault: bool,
}

impl Injection {
    /// Parse `device@decode`, `host@prefill`, …
    pub fn parse(s: &str) -> Option<Self> {
        let (kind, site) = s.trim().split_once('@')?;
        let device_fault = match kind {
            "device" => true,
            "host" => false,
            _ => return None,
        };
        Some(Self {
            site: Site::parse(site)?,
            device_fault,
        })
    }

    /// The error text the fault produces: a real driver message or a real
    /// host-side one, so that classification is exercised for real.
    pub fn message(&self) -> String {
        if self.device_fault {
            "injected fault: DriverError(CUDA_ERROR_ILLEGAL_ADDRESS, \"an illegal memory access was encountered\")".into()
        } else {
            "injected fault: broadcast_add: shape mismatch, lhs: [1, 9, 3, 19], rhs: [3, 8]".into()
        }
    }
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
}

/// What a successful load hands back to async code.
#[derive(Clone)]
pub struct Loaded {
    pub assets: Arc<ModelAssets>,
    pub weights_bytes: u64,
}

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
    pub fn spawn(info: DeviceInfo, max_sequences: usize) -> Result<Arc<Self>, String> {
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
                    max_sequences: max_sequences.max(1),
                    models: HashMap::new(),
                    active: Vec::new(),
                    waiting: VecDeque::new(),
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

    /// Sequences currently being stepped.
    pub fn active_sequences(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    fn gone(&self) -> WorkerError {
        WorkerError::Gone(self.info.label())
    }

    /// Load a GGUF file on this device.
    pub async fn load(&self, key: ModelKey, path: PathBuf) -> Result<Loaded, WorkerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Load { key, path, reply })
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

/// A sequence being stepped.
struct Active {
    seq: Sequence,
    assets: Arc<ModelAssets>,
    req: Box<GenerateRequest>,
    emitted: usize,
}

/// The state owned by the worker thread.
struct Worker {
    device: Device,
    label: String,
    max_sequences: usize,
    models: HashMap<ModelKey, LoadedWeights>,
    active: Vec<Active>,
    waiting: VecDeque<Box<GenerateRequest>>,
    active_count: Arc<AtomicUsize>,
}

impl Worker {
    fn run(mut self, rx: std_mpsc::Receiver<Job>) {
        'outer: loop {
            if self.active.is_empty() && self.waiting.is_empty() {
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
            while self.active.len() < self.max_sequences {
                let Some(req) = self.waiting.pop_front() else {
                    break;
                };
                self.admit(req);
            }
            let mut active = std::mem::take(&mut self.active);
            active.retain_mut(|a| self.step(a));
            self.active = active;
            self.active_count
                .store(self.active.len(), Ordering::Relaxed);
        }
        self.active_count.store(0, Ordering::Relaxed);
        tracing::info!(device = %self.label, "device worker stopped");
    }

    /// Handle one job; `false` means stop.
    fn handle(&mut self, job: Job) -> bool {
        match job {
            Job::Load { key, path, reply } => {
                let started = std::time::Instant::now();
                let result = crate::engine::gguf::load(&path, &self.device).map(|w| {
                    let loaded = Loaded {
                        assets: w.assets.clone(),
                        weights_bytes: w.weights_bytes,
                    };
                    self.models.insert(key, w);
                    loaded
                });
                match &result {
                    Ok(l) => {
                        tracing::info!(device = %self.label, key, path = %path.display(), weights_bytes = l.weights_bytes, ms = started.elapsed().as_millis() as u64, "model loaded")
                    }
                    Err(e) => {
                        tracing::warn!(device = %self.label, key, path = %path.display(), error = %e.chain(), "model load failed")
                    }
                }
                // A failed load is an answer, never a dead worker.
                let _ = reply.send(result);
            }
            Job::Unload { key, reply } => {
                let existed = self.models.remove(&key).is_some();
                // Unload waits for in-flight requests, so nothing should still
                // run on this model; if something does, it fails cleanly.
                let label = self.label.clone();
                let fail = |req: &GenerateRequest| {
                    let _ = req.events.send(TokenEvent::Failed {
                        site: Site::Decode,
                        chain: format!("missing handle: model {key} was unloaded from {label}"),
                        device_fault: false,
                    });
                };
                self.active.retain(|a| {
                    if a.req.key == key {
                        fail(&a.req);
                        false
                    } else {
                        true
                    }
                });
                self.waiting.retain(|r| {
                    if r.key == key {
                        fail(r);
                        false
                    } else {
                        true
                    }
                });
                tracing::info!(device = %self.label, key, existed, "model unloaded");
                let _ = reply.send(existed);
            }
            Job::Generate(req) => self.waiting.push_back(req),
            Job::Shutdown => return false,
        }
        true
    }

    /// Start a queued generation (its prefill happens at its first step).
    fn admit(&mut self, req: Box<GenerateRequest>) {
        if req.events.is_closed() {
            return;
        }
        let Some(weights) = self.models.get(&req.key) else {
            let chain = format!(
                "missing handle: model {} is not loaded on {}",
                req.key, self.label
            );
            let device_fault = req.health.report(Site::Prefill, req.stream, &chain);
            let _ = req.events.send(TokenEvent::Failed {
                site: Site::Prefill,
                chain,
                device_fault,
            });
            return;
        };
        match Sequence::new(weights, req.prompt.clone(), &req.params) {
            Ok(seq) => self.active.push(Active {
                seq,
                assets: weights.assets.clone(),
                req,
                emitted: 0,
            }),
            Err(e) => {
                let chain = e.chain();
                let device_fault = req.health.report(Site::Prefill, req.stream, &chain);
                let _ = req.events.send(TokenEvent::Failed {
                    site: Site::Prefill,
                    chain,
                    device_fault,
                });
            }
        }
    }

    /// One token for one sequence; `false` when the sequence is over.
    fn step(&self, a: &mut Active) -> bool {
        if a.req.events.is_closed() {
            tracing::debug!(device = %self.label, key = a.req.key, "client went away; sequence dropped");
            return false;
        }
        let site = if a.seq.is_prefilled() {
            Site::Decode
        } else {
            Site::Prefill
        };
        let result = match a.req.inject.filter(|i| i.site == site) {
            Some(inj) => Err(inj.message()),
            None => a.seq.step().map_err(|e| e.chain()),
        };
        match result {
            Err(chain) => {
                let device_fault = a.req.health.report(site, a.req.stream, &chain);
                let _ = a.req.events.send(TokenEvent::Failed {
                    site,
                    chain,
                    device_fault,
                });
                false
            }
            Ok(tok) if a.assets.is_eos(tok) => {
                let _ = a.req.events.send(TokenEvent::Finished(StopKind::Eos));
                false
            }
            Ok(tok) => {
                a.emitted += 1;
                let _ = a.req.events.send(TokenEvent::Token(tok));
                if a.emitted >= a.req.max_new_tokens {
                    let _ = a.req.events.send(TokenEvent::Finished(StopKind::Length));
                    return false;
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_parses() {
        assert_eq!(
            Injection::parse("device@decode"),
            Some(Injection {
                site: Site::Decode,
                device_fault: true
            })
        );
        assert_eq!(
            Injection::parse("host@prefill").map(|i| i.device_fault),
            Some(false)
        );
        assert_eq!(Injection::parse("gpu@decode"), None);
        assert_eq!(Injection::parse("device@nowhere"), None);
        assert!(crate::fault::is_device_fault(
            &Injection::parse("device@decode").unwrap().message()
        ));
        assert!(!crate::fault::is_device_fault(
            &Injection::parse("host@decode").unwrap().message()
        ));
    }
}
