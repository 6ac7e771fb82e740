//! The gateway's view of the fleet, as `GET /admin/fleet` serves it and
//! `cortex status` shows it.

use serde::{Deserialize, Serialize};

use crate::neuron_api::{DeviceStatus, ModelState};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetView {
    pub nodes: Vec<NodeView>,
    pub models: Vec<CatalogEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub endpoint: String,
    pub up: bool,
    pub consecutive_failures: u32,
    /// Milliseconds since the last good poll (None: never answered).
    pub last_seen_ms_ago: Option<u64>,
    pub version: Option<String>,
    pub devices: Vec<DeviceStatus>,
}

/// One model of the catalogue and where it lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub id: String,
    pub aliases: Vec<String>,
    pub pinned: bool,
    pub priority: i32,
    /// Profile from models.toml, or discovered on a neuron.
    pub configured: bool,
    pub placements: Vec<Placement>,
    /// Healthy nodes that could load it.
    pub loadable_on: Vec<String>,
    /// Chat or embedding, as its neurons report it.
    #[serde(default)]
    pub kind: crate::neuron_api::ModelKind,
    /// Its context window in tokens, when a neuron reported it (loaded, or
    /// read from the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub node: String,
    pub state: ModelState,
    pub device: u32,
    pub memory_bytes: u64,
    pub kv_reserve_bytes: u64,
    pub loaded_at: u64,
    pub last_used_at: u64,
    /// Requests in flight through the gateway.
    pub in_flight: u64,
    /// Conversations whose KV the neuron holds for it (cache-aware
    /// routing), and their cached prompt tokens in all.
    #[serde(default)]
    pub cached_conversations: u64,
    #[serde(default)]
    pub cached_tokens: u64,
}

/// Optional body of `POST /admin/models/{id}/{load,unload}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdminTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Answer of `POST /admin/models/{id}/load`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminLoadResponse {
    pub model: String,
    pub node: String,
    /// Milliseconds the load took (0 when it was already loaded there).
    pub load_ms: u64,
    /// Models unloaded to make room, as `node/model`.
    #[serde(default)]
    pub evicted: Vec<String>,
}

/// Answer of `POST /admin/models/{id}/unload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminUnloadResponse {
    pub model: String,
    /// Nodes it was unloaded from (empty when it was loaded nowhere).
    pub unloaded_from: Vec<String>,
}

/// Answer of `POST /admin/models/{id}/{pin,unpin}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminPinResponse {
    pub model: String,
    pub pinned: bool,
}
