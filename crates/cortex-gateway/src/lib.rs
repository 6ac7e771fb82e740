//! cortex-gateway: one OpenAI + Anthropic API in front of many neurons.
//!
//! - [`server`]: assembling and running it; [`workers`]: the API's
//!   thread-per-core workers; [`settings`]: reading config files;
//! - [`api`]: the routes, auth, and errors in each dialect;
//! - [`proxy`]: forwarding, retries, stream pass-through and metric taps;
//! - [`admission`]: caps on in-flight and queued requests;
//! - [`fleet`]: the actor that owns nodes and placements, and the routing table;
//! - [`router`]: placement and eviction policy (pure functions);
//! - [`poller`], [`evictor`]: the background clocks;
//! - [`catalog`]: profiles from models.toml and discovered models;
//! - [`neuron_client`]: HTTP to neurons;
//! - [`translate`]: OpenAI ⇄ Anthropic, OpenAI Responses and Ollama,
//!   requests, responses and streams;
//! - [`ui`]: the fleet page;
//! - [`sse`]: a bounded server-sent-events decoder for upstream streams;
//! - [`metrics`]: the Prometheus metrics.

pub mod admission;
pub mod api;
mod ascii;
pub mod catalog;
mod deadline;
pub mod evictor;
pub mod fleet;
pub mod h1;
pub mod http_server;
mod json_scan;
#[cfg(test)]
mod json_strategy;
pub mod metrics;
pub mod neuron_client;
pub mod poller;
pub mod proxy;
pub mod router;
pub mod server;
pub mod settings;
pub mod sse;
pub mod translate;
pub mod ui;
pub mod workers;

pub use server::Gateway;
pub use settings::GatewaySettings;
