//! neuron: the per-host inference daemon of cortex.
//!
//! - [`device`]: which devices exist (NVML, CPU) and their memory;
//! - [`device_worker`]: one OS thread per device running loads and steps;
//! - [`engine`]: candle inference — GGUF loading, tokenizer, chat template,
//!   sampling, stop sequences, incremental detokenization;
//! - [`fault`]: is an error the device's fault, and poisoning;
//! - [`lifecycle`]: the model table — loads, unloads, admission;
//! - [`generate`]: one generation as text, stop sequences and finish reason;
//! - [`tool_calls`]: tool call syntaxes and the streaming parser that finds
//!   calls in generated text; [`normalize`]: per-request noise removed from
//!   prompts (Claude Code's billing header);
//! - [`paths`], [`hub`]: which files may be loaded, and hub downloads;
//! - [`api`]: the HTTP routes; [`metrics`]: Prometheus;
//! - [`server`]: putting it together and shutting it down; [`logging`];
//! - [`sys`]: the one place with foreign calls (allocator tuning).

pub mod api;
pub mod device;
pub mod device_worker;
pub mod engine;
pub mod fault;
pub mod generate;
pub mod hub;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub use cortex_core::normalize;
pub mod paths;
pub mod server;
pub mod sys;
pub mod tool_calls;

pub use server::{Neuron, RunOptions};
