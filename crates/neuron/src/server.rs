//! Assembling and running a neuron: devices, workers, the model registry,
//! metrics and the HTTP server, with graceful shutdown. Used by the
//! `neuron` binary and by `cortex serve`'s embedded mode.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cortex_core::config::NeuronConfig;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::device::{self, DeviceInfo};
use crate::device_worker::{DeviceWorker, SchedulerConfig};
use crate::lifecycle::Registry;
use crate::metrics::NeuronMetrics;

/// Options that are not part of `neuron.toml`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Honour the test-only fault-injection header.
    pub fault_injection: bool,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            fault_injection: false,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// A neuron, built and ready to serve.
pub struct Neuron {
    state: Arc<AppState>,
    options: RunOptions,
}

/// The node name: configured, else the host name.
pub fn node_name(config: &NeuronConfig) -> String {
    config.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| cortex_core::model_id::is_valid_model_id(s))
            .unwrap_or_else(|| "neuron".into())
    })
}

impl Neuron {
    /// Discover devices and start one worker thread per device. A process
    /// that hosts a neuron calls [`crate::sys::tune_allocator`] first, before
    /// its runtime starts threads (both binaries do), so that unloads return
    /// memory.
    pub fn build(config: NeuronConfig, options: RunOptions) -> Result<Self, String> {
        let devices: Vec<DeviceInfo> = device::discover(config.memory_budget.map(|b| b.bytes()));
        let batching = SchedulerConfig {
            max_sequences: config.max_sequences,
            max_batch_tokens: config.max_batch_tokens,
            prefill_chunk: config.prefill_chunk,
        };
        let mut workers = Vec::new();
        for d in devices {
            match DeviceWorker::spawn(d.clone(), batching) {
                Ok(w) => workers.push(w),
                Err(e) if d.kind == cortex_core::neuron_api::DeviceKind::Cuda => {
                    tracing::error!(device = %d.label(), error = %e, "GPU unusable; skipping it");
                }
                Err(e) => return Err(e),
            }
        }
        let mut prometheus = prometheus_client::registry::Registry::default();
        let metrics = NeuronMetrics::new(&mut prometheus);
        let name = node_name(&config);
        let dirs: Vec<PathBuf> = config.models_dirs.iter().map(PathBuf::from).collect();
        for d in &dirs {
            if !d.is_dir() {
                tracing::warn!(dir = %d.display(), "models directory does not exist");
            }
        }
        let hub_cache = crate::hub::default_cache_dir(config.hf_cache.as_deref());
        let mut all_dirs = dirs;
        all_dirs.push(hub_cache.clone());
        let registry = Registry::new(
            name.clone(),
            workers,
            all_dirs,
            hub_cache,
            config.clone(),
            metrics.clone(),
        );
        let state = Arc::new(AppState {
            node_name: name,
            registry,
            metrics,
            prometheus,
            admin_token: config.admin_token.clone(),
            fault_injection: options.fault_injection,
            max_body: config.max_body.bytes() as usize,
            prompt: api::prompt::PromptOptions {
                keep_billing_header: config.keep_billing_header,
            },
        });
        if options.fault_injection {
            tracing::warn!("fault injection is ENABLED (x-neuron-inject-fault header); never do this in production");
        }
        Ok(Self { state, options })
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.state.registry
    }

    /// The HTTP routes (for tests with `oneshot`).
    pub fn router(&self) -> axum::Router {
        api::app(self.state.clone())
    }

    /// Serve until `shutdown` resolves; then stop accepting, let in-flight
    /// requests finish, unload every model and stop the device workers, all
    /// within the grace period: requests get all of it but the last
    /// [`cleanup_budget`], unloading and stopping the workers that. A
    /// worker still inside a forward pass by then is abandoned (the process
    /// exits without waiting for it) and `run` fails, so the exit status
    /// says so.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, node = %self.state.node_name, "neuron listening");
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, self.router()).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        let grace = self.options.shutdown_grace;
        let cleanup = cleanup_budget(grace);
        let drain = grace - cleanup;
        tokio::select! {
            r = server => r?,
            _ = async move {
                let _ = rx.wait_for(|v| *v).await;
                tokio::time::sleep(drain).await;
            } => tracing::warn!(?drain, "grace period over; ending the remaining requests"),
        }
        // The requests' connections are closed now: their sequences leave
        // the batch at the next tick (a prompt chunk at most).
        let deadline = tokio::time::Instant::now() + cleanup;
        tracing::info!("shutting down: unloading models");
        let registry = self.state.registry.clone();
        if tokio::time::timeout_at(deadline, registry.unload_all())
            .await
            .is_err()
        {
            tracing::warn!("some models were still busy at shutdown");
        }
        // Joined on a plain thread: a worker stuck in a forward pass must
        // not hold the runtime (or the process) with it.
        let workers = registry.workers().to_vec();
        let (tx, done) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            workers.iter().for_each(|w| w.shutdown());
            let _ = tx.send(());
        });
        if tokio::time::timeout_at(deadline, done).await.is_err() {
            tracing::error!(
                ?grace,
                "a device worker did not stop within the grace period (a forward pass still running); abandoning it"
            );
            return Err(std::io::Error::other(
                "a device worker was abandoned at shutdown",
            ));
        }
        tracing::info!("neuron stopped");
        Ok(())
    }
}

/// The part of the shutdown grace kept for unloading models and stopping
/// the workers after the requests' part: a fifth of it, between 1 and 5 s
/// (never more than the whole).
pub fn cleanup_budget(grace: Duration) -> Duration {
    (grace / 5)
        .clamp(Duration::from_secs(1), Duration::from_secs(5))
        .min(grace)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
