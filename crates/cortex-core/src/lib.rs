//! cortex-core: the types every cortex crate shares.
//!
//! - [`config`]: `cortex.toml`, `models.toml`, `neuron.toml` and their validation;
//! - [`units`]: durations and byte sizes as written in config files;
//! - [`openai`], [`anthropic`]: the two client dialects on the wire;
//! - [`responses`], [`ollama`]: OpenAI's Responses API and Ollama's API;
//! - [`neuron_api`]: what the gateway and a neuron say to each other;
//! - [`fleet`]: the gateway's view of nodes and models (`/admin/fleet`);
//! - [`model_id`]: what a model name may look like;
//! - [`metrics`]: metric names and histogram buckets;
//! - [`time`]: calendar dates and RFC 3339 timestamps.
//!
//! No I/O and no async runtime here.

pub mod anthropic;
pub mod config;
pub mod embeddings;
pub mod fleet;
pub mod metrics;
pub mod model_id;
pub mod neuron_api;
pub mod normalize;
pub mod ollama;
pub mod openai;
pub mod prefix;
pub mod responses;
pub mod time;
pub mod units;

pub use units::{ByteSize, HumanDuration};

/// Milliseconds since the unix epoch.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Now, in unix milliseconds.
pub fn now_unix_ms() -> u64 {
    unix_ms(std::time::SystemTime::now())
}
