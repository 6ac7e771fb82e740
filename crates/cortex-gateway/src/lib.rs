//! cortex-gateway: one OpenAI + Anthropic API in front of many neurons.
//!
//! - [`server`]: assembling and running it (hyper's HTTP/1.1 server);
//!   [`settings`]: reading config files; [`state`]: what handlers share;
//!   [`error`]: the error type and what it means in each dialect;
//! - [`api`]: the routes, the guard (paths, keys, body limit), and errors
//!   as HTTP answers;
//! - [`proxy`]: forwarding, the retry policy, the streams clients get, and
//!   metric taps;
//! - [`admission`]: caps on in-flight and queued requests;
//! - [`fleet`]: the actor that owns nodes and placements, and the routing
//!   table;
//! - [`router`]: placement and eviction policy (pure functions);
//! - [`poller`], [`evictor`]: the background clocks;
//! - [`catalog`]: profiles from models.toml and discovered models;
//! - [`neuron_client`]: the [`neuron_client::NeuronApi`] seam and its HTTP
//!   client;
//! - [`translate`]: OpenAI ⇄ Anthropic, OpenAI Responses and Ollama,
//!   requests, responses and streams;
//! - [`ui`]: the fleet page;
//! - [`sse`]: a bounded server-sent-events decoder for upstream streams;
//! - [`metrics`]: the Prometheus metrics.

pub mod admission;
pub mod api;
pub mod catalog;
pub mod error;
pub mod evictor;
pub mod fleet;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod json_strategy;
pub mod metrics;
pub mod neuron_client;
pub mod pins;
pub mod poller;
pub mod proxy;
pub mod router;
pub mod server;
pub mod settings;
pub mod sse;
pub mod state;
#[cfg(test)]
mod testing;
pub mod translate;
pub mod ui;

pub use server::Gateway;
pub use settings::GatewaySettings;
