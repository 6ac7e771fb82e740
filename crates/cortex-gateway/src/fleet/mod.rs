//! The fleet actor: one task owns the fleet state (nodes, placements,
//! loads in progress, pins); everything else talks to it through a
//! [`FleetHandle`] — commands in, oneshot replies out. After every change it
//! publishes a fresh [`RoutingTable`] that the request path reads without
//! a round trip. Loads and unloads run as spawned tasks that report back.

mod actor;
mod state;
pub mod table;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cortex_core::fleet::{AdminLoadResponse, AdminPinResponse, AdminUnloadResponse, FleetView};
use cortex_core::neuron_api::NodeStatus;
use tokio::sync::{mpsc, oneshot};

pub use state::{FleetState, ModelInfo, PollChange};
pub use table::{FileFacts, InFlightGuard, Published, Replica, Resolved, RoutingTable};

use crate::catalog::Catalog;
use crate::metrics::GatewayMetrics;
use crate::neuron_client::{NeuronClient, NodeInfo, UpstreamError};
use crate::pins::{PinFile, PinFileError};
use crate::router::EvictionStrategy;

/// Why the fleet could not give a model.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FleetError {
    #[error("the model `{0}` does not exist")]
    UnknownModel(String),
    #[error("no neuron named `{0}`")]
    UnknownNode(String),
    #[error("no healthy neuron can serve `{0}` right now")]
    NotServable(String),
    #[error("no room for `{model}`: {reason}")]
    NoCapacity { model: String, reason: String },
    #[error("`{model}` cannot be placed yet: {reason}")]
    Busy {
        model: String,
        reason: String,
        retry_after_ms: u64,
    },
    #[error("loading `{model}` failed")]
    Load {
        model: String,
        #[source]
        source: UpstreamError,
    },
    /// Making room would evict a model younger than `min_residency` (the
    /// swap-thrashing guard); it may after `retry_after_ms`.
    #[error(
        "making room for `{model}` would evict a model loaded moments ago (swap-thrashing guard)"
    )]
    Guarded { model: String, retry_after_ms: u64 },
    #[error("`{0}` is pinned; unpin it first")]
    Pinned(String),
    #[error("the fleet actor has stopped")]
    Stopped,
    /// A pin change that could not be kept (and so was not made).
    #[error("the pin of `{model}` was not changed")]
    PinNotSaved {
        model: String,
        #[source]
        source: Arc<PinFileError>,
    },
}

/// Placement and eviction settings the actor needs.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    pub strategy: EvictionStrategy,
    pub min_residency: Duration,
    pub idle_unload_after: Duration,
    pub defrag_after_cycles: u32,
    pub down_after_failures: u32,
    pub load_timeout: Duration,
    /// Where runtime pins are kept across restarts (none: memory only).
    pub pin_file: Option<PinFile>,
}

/// What a finished load gives its waiters.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub replica: Replica,
    pub load_ms: u64,
    pub evicted: Vec<String>,
}

type Reply<T> = oneshot::Sender<Result<T, FleetError>>;

pub(crate) enum Command {
    Poll {
        node: String,
        /// Unix ms at which the poll was sent.
        sent_ms: u64,
        result: Result<NodeStatus, String>,
    },
    NodeFailed {
        node: String,
    },
    Poisoned {
        model: String,
        node: String,
    },
    Gone {
        model: String,
        node: String,
    },
    EnsureReady {
        model: String,
        avoid: Vec<String>,
        node: Option<String>,
        reply: Reply<Loaded>,
    },
    LoadDone {
        model: String,
        node: String,
        result: Result<(cortex_core::neuron_api::LoadResponse, Vec<String>), UpstreamError>,
    },
    Unload {
        model: String,
        node: Option<String>,
        reply: Reply<AdminUnloadResponse>,
    },
    SetPin {
        model: String,
        pinned: bool,
        reply: Reply<AdminPinResponse>,
    },
    View {
        reply: oneshot::Sender<FleetView>,
    },
    EvictorTick {
        cycle: u64,
    },
    KeepAlive {
        model: String,
        keep: Option<cortex_core::ollama::KeepAlive>,
    },
}

/// Talks to the fleet actor; cheap to clone.
#[derive(Clone)]
pub struct FleetHandle {
    tx: mpsc::UnboundedSender<Command>,
    table: Arc<Published>,
    idle_unload_after: Duration,
}

impl std::fmt::Debug for FleetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetHandle")
    }
}

impl FleetHandle {
    /// Start the actor.
    pub fn spawn(
        nodes: Vec<NodeInfo>,
        catalog: Catalog,
        pins: HashMap<String, bool>,
        settings: FleetSettings,
        client: NeuronClient,
        metrics: GatewayMetrics,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = FleetState::new(nodes, catalog, settings.down_after_failures);
        state.pins = pins;
        let table = Arc::new(Published::from_pointee(RoutingTable::default()));
        let handle = Self {
            tx: tx.clone(),
            table: table.clone(),
            idle_unload_after: settings.idle_unload_after,
        };
        tokio::spawn(actor::Actor::new(state, settings, client, metrics, tx, table).run(rx));
        handle
    }

    /// The current routing snapshot.
    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    pub(crate) fn send(&self, c: Command) {
        let _ = self.tx.send(c);
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, FleetError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| FleetError::Stopped)?;
        rx.await.map_err(|_| FleetError::Stopped)?
    }

    /// A replica of `model` ready to serve: loads it when needed (evicting
    /// per strategy). `avoid`: nodes to use only as a last resort; `node`:
    /// only this node (admin loads).
    pub async fn ensure_ready(
        &self,
        model: &str,
        avoid: Vec<String>,
        node: Option<String>,
    ) -> Result<Loaded, FleetError> {
        self.ask(|reply| Command::EnsureReady {
            model: model.to_string(),
            avoid,
            node,
            reply,
        })
        .await
    }

    pub async fn admin_load(
        &self,
        model: &str,
        node: Option<String>,
    ) -> Result<AdminLoadResponse, FleetError> {
        let l = self.ensure_ready(model, Vec::new(), node).await?;
        Ok(AdminLoadResponse {
            model: l.replica.model.to_string(),
            node: l.replica.node.name.clone(),
            load_ms: l.load_ms,
            evicted: l.evicted,
        })
    }

    pub async fn unload(
        &self,
        model: &str,
        node: Option<String>,
    ) -> Result<AdminUnloadResponse, FleetError> {
        self.ask(|reply| Command::Unload {
            model: model.to_string(),
            node,
            reply,
        })
        .await
    }

    pub async fn set_pin(&self, model: &str, pinned: bool) -> Result<AdminPinResponse, FleetError> {
        self.ask(|reply| Command::SetPin {
            model: model.to_string(),
            pinned,
            reply,
        })
        .await
    }

    pub async fn view(&self) -> Result<FleetView, FleetError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::View { reply })
            .map_err(|_| FleetError::Stopped)?;
        rx.await.map_err(|_| FleetError::Stopped)
    }

    /// A poll sent at `sent_ms` (unix ms) answered (or failed).
    pub fn poll_result(&self, node: &str, sent_ms: u64, result: Result<NodeStatus, String>) {
        self.send(Command::Poll {
            node: node.to_string(),
            sent_ms,
            result,
        });
    }

    /// A request could not connect to `node`.
    pub fn node_failed(&self, node: &str) {
        self.send(Command::NodeFailed {
            node: node.to_string(),
        });
    }

    /// A neuron answered that `model` is poisoned.
    pub fn poisoned(&self, model: &str, node: &str) {
        self.send(Command::Poisoned {
            model: model.to_string(),
            node: node.to_string(),
        });
    }

    /// `model` is no longer on `node`: the neuron said so, or our unload
    /// finished.
    pub fn gone(&self, model: &str, node: &str) {
        self.send(Command::Gone {
            model: model.to_string(),
            node: node.to_string(),
        });
    }

    /// How long `id` may sit idle before the evictor unloads it: its
    /// keep-alive when a client set one, else `idle_unload_after`; `None`
    /// when idleness never unloads it (pins are not considered here).
    pub fn idle_limit(&self, id: &str) -> Option<Duration> {
        use cortex_core::ollama::KeepAlive;
        match self.table().keep_alive.get(id) {
            None => (!self.idle_unload_after.is_zero()).then_some(self.idle_unload_after),
            Some(KeepAlive::Unload) => Some(Duration::ZERO),
            Some(KeepAlive::Forever) => None,
            Some(KeepAlive::For(d)) => Some(*d),
        }
    }

    /// One evictor cycle.
    pub fn evictor_tick(&self, cycle: u64) {
        self.send(Command::EvictorTick { cycle });
    }

    /// How long `model` may now sit idle before it is unloaded (Ollama's
    /// `keep_alive`, set by each request): `None` is `idle_unload_after`
    /// again, `Unload` unloads it once nothing runs on it (at once if so),
    /// `Forever` never idles it out (it can still be evicted for room). The
    /// setting expires when the model is unloaded.
    pub fn keep_alive(&self, model: &str, keep: Option<cortex_core::ollama::KeepAlive>) {
        self.send(Command::KeepAlive {
            model: model.to_string(),
            keep,
        });
    }
}
