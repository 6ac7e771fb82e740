//! Ollama API (`/api/*`) ⇄ OpenAI chat completions: the gateway speaks
//! Ollama's API on its own port (Open WebUI, Continue, Zed and editor
//! plugins try it first) in front of neurons that speak only OpenAI.
//!
//! - [`request`]: `/api/chat` and `/api/generate` bodies become a chat
//!   request, or a bare load / unload ([`Intent`]), with their `keep_alive`;
//! - [`response`]: a non-streamed chat completion becomes one Ollama answer
//!   object;
//! - [`stream`]: a per-stream state machine turning chat chunks into NDJSON
//!   answer objects, and their encoding;
//! - [`catalog`]: what cortex knows of its models → `/api/tags`, `/api/ps`
//!   and `/api/show`.
//!
//! Everything here is pure: no I/O and no clock of its own (callers pass
//! [`Now`]). Routes, model resolution, acting on `keep_alive` and turning
//! errors into `{"error": …}` answers belong to the HTTP layer. The rules
//! implemented are the "Ollama" section of `CONFORMANCE.md`.

pub mod catalog;
pub mod request;
pub mod response;
pub mod stream;

use std::time::{Duration, Instant};

use cortex_core::ollama::Stats;
use cortex_core::openai::FinishReason;

/// A moment, as the monotonic clock (for durations) and as wall time (for
/// `created_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub instant: Instant,
    pub unix_ms: u64,
}

impl Now {
    /// The current moment.
    pub fn system() -> Self {
        Self {
            instant: Instant::now(),
            unix_ms: cortex_core::now_unix_ms(),
        }
    }
}

/// Where the time of one request went, for the final answer's durations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Waiting for the model to load (0 when it was ready).
    pub load: Duration,
    /// From sending the request upstream to the first token.
    pub prompt_eval: Duration,
    /// From the first token to the last.
    pub eval: Duration,
}

impl Timings {
    /// The `done: true` statistics: durations in nanoseconds, with token
    /// counts. `total_duration` is the sum of the three parts.
    pub fn stats(&self, prompt_eval_count: u64, eval_count: u64) -> Stats {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Stats {
            total_duration: ns(self.load)
                .saturating_add(ns(self.prompt_eval))
                .saturating_add(ns(self.eval)),
            load_duration: ns(self.load),
            prompt_eval_count,
            prompt_eval_duration: ns(self.prompt_eval),
            eval_count,
            eval_duration: ns(self.eval),
        }
    }
}

/// Ollama's `done_reason` for a chat finish reason: `length` when cut by
/// `num_predict`, else `stop` (Ollama also says `stop` after tool calls).
pub fn done_reason(finish: Option<FinishReason>) -> &'static str {
    match finish {
        Some(FinishReason::Length) => "length",
        _ => "stop",
    }
}

/// The model name a client sent, without Ollama's default `:latest` tag
/// (cortex ids carry no tag).
pub fn model_name(requested: &str) -> &str {
    requested.strip_suffix(":latest").unwrap_or(requested)
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
