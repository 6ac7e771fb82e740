//! The neuron HTTP API shared by the neuron (server) and the gateway
//! (client): `/status`, `/models/load`, `/models/unload`, `/tokenize`.
//! Times are unix milliseconds.

use serde::{Deserialize, Serialize};

use crate::openai::{ChatMessage, Tool};

/// The header in which a neuron's stream tells the prompt's size in
/// tokens, so that the gateway's Anthropic `message_start` can carry
/// `input_tokens` before the usage chunk comes.
pub const PROMPT_TOKENS_HEADER: &str = "x-cortex-prompt-tokens";

/// `GET /status`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub version: String,
    pub devices: Vec<DeviceStatus>,
    pub models: Vec<ModelStatus>,
    /// Files the neuron could load, with sizes.
    pub available: Vec<AvailableModel>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cuda,
    Cpu,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub index: u32,
    pub kind: DeviceKind,
    pub name: String,
    /// Physical memory of the device (RAM for the CPU).
    pub memory_total_bytes: u64,
    /// Free memory as the device reports it (available RAM for the CPU).
    pub memory_free_bytes: u64,
    /// What this device may give to models.
    pub memory_budget_bytes: u64,
    /// Footprints (weights + KV reserve) of the models on this device.
    pub memory_used_bytes: u64,
}

impl DeviceStatus {
    /// Budget left for more models.
    pub fn budget_free_bytes(&self) -> u64 {
        self.memory_budget_bytes
            .saturating_sub(self.memory_used_bytes)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    Loading,
    Ready,
    Poisoned,
}

impl ModelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Loading => "loading",
            ModelState::Ready => "ready",
            ModelState::Poisoned => "poisoned",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStatus {
    pub id: String,
    pub state: ModelState,
    /// What the model serves (chat when a neuron does not say).
    #[serde(default)]
    pub kind: ModelKind,
    pub device: u32,
    /// Weights as loaded.
    pub memory_bytes: u64,
    pub kv_reserve_bytes: u64,
    pub loaded_at: u64,
    pub last_used_at: u64,
    pub in_flight: u64,
    /// The file it was loaded from, relative to a models dir (or `hf:…`).
    pub source: String,
    #[serde(default)]
    pub context_length: u64,
    /// Why it is poisoned (the error chain), when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Conversations whose KV is in this model's prefix cache, most
    /// recently used first (see `cortex_core::prefix`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cached_prefixes: Vec<CachedPrefix>,
}

/// What a model serves: chat (`/v1/chat/completions` and the APIs
/// translated onto it) or embeddings (`/v1/embeddings`). A request of one
/// kind to a model of the other is a 400.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    #[default]
    Chat,
    Embedding,
}

impl ModelKind {
    /// `"chat"` or `"embedding"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Chat => "chat",
            ModelKind::Embedding => "embedding",
        }
    }

    /// What a client is told when it sends a request of the other kind to
    /// `model`, a model of this kind.
    pub fn wrong_api_message(self, model: &str) -> String {
        match self {
            ModelKind::Embedding => format!(
                "The model `{model}` is an embedding model: it serves /v1/embeddings, not chat or completions."
            ),
            ModelKind::Chat => format!(
                "The model `{model}` is a chat model: it does not serve embeddings; use an embedding model."
            ),
        }
    }
}

/// A conversation prefix a neuron holds KV for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPrefix {
    /// [`crate::prefix::conversation_hashes`] of its last message.
    pub hash: u64,
    /// Prompt tokens of it still cached (whole blocks).
    pub tokens: u64,
    /// When a request last used it (unix ms).
    pub last_used_ms: u64,
}

impl ModelStatus {
    /// What placement counts against the device budget.
    pub fn footprint_bytes(&self) -> u64 {
        self.memory_bytes + self.kv_reserve_bytes
    }
}

/// A model file a neuron can load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AvailableModel {
    /// The id it is served under by default (from its file name).
    pub id: String,
    /// What it serves once loaded (chat when a neuron does not say).
    #[serde(default)]
    pub kind: ModelKind,
    /// Path relative to the models dir.
    pub source: String,
    pub size_bytes: u64,
    /// Estimated footprint once loaded: weights as loaded + KV reserve.
    pub estimated_bytes: u64,
    /// `<arch>.context_length` from the file's header, when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    /// `general.architecture` (`llama`, `gemma3`), when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
}

/// `POST /models/load`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadRequest {
    pub model: String,
    /// File under a models dir or `hf:org/repo/file`; default: the file the
    /// id was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadResponse {
    pub model: ModelStatus,
    /// Milliseconds the load took (0 when it was already loaded).
    pub load_ms: u64,
}

/// `POST /models/unload`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnloadRequest {
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnloadResponse {
    pub model: String,
    pub unloaded: bool,
}

/// `POST /tokenize`: count the prompt tokens of a chat, with the model's own
/// chat template and tokenizer (as vLLM's `/tokenize`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizeRequest {
    pub model: String,
    /// A chat, rendered with the model's template…
    #[serde(default)]
    pub messages: Vec<ChatMessage>,
    /// …or plain text, tokenized as is (exactly one of the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// Also return the token ids.
    #[serde(default)]
    pub return_tokens: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizeResponse {
    pub count: u64,
    pub max_model_len: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<u32>>,
}
