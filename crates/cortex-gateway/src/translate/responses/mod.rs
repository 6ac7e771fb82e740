//! OpenAI Responses API (`POST /v1/responses`) ⇄ OpenAI chat completions:
//! the gateway serves the Responses API (Codex CLI speaks nothing else) in
//! front of neurons that speak only chat completions.
//!
//! - [`request`]: a Responses request, after the stored conversation it
//!   continues, becomes a chat request;
//! - [`response`]: a non-streamed chat completion becomes a `response`
//!   object;
//! - [`stream`]: a per-stream state machine turning chat chunks into
//!   Responses stream events, and their SSE encoding;
//! - [`store`]: the bounded, expiring in-memory store behind
//!   `previous_response_id`.
//!
//! Everything here is pure: no I/O and no clock of its own (the store is
//! told the time). Routes, locking the store and turning errors into HTTP
//! answers belong to the HTTP layer. The rules implemented are the "OpenAI
//! Responses" section of `CONFORMANCE.md`; [`ResponseSeed`] holds what every
//! `response` object of one request echoes back.

pub mod request;
pub mod response;
pub mod store;
pub mod stream;

use cortex_core::responses::{
    OutputItem, Response, ResponseStatus, ResponseUsage, ResponsesRequest, ResponsesTool,
};
use serde_json::{json, Map, Value};

/// What the `response` objects of one request share: its id, creation time,
/// and the request fields OpenAI echoes back.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseSeed {
    /// `resp_…`
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The model name the client asked for.
    pub model: String,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub previous_response_id: Option<String>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub tool_choice: Value,
    pub tools: Vec<ResponsesTool>,
    pub parallel_tool_calls: bool,
    pub store: bool,
    pub text: Value,
    pub metadata: Map<String, Value>,
    pub user: Option<String>,
}

impl ResponseSeed {
    /// The seed of `req`, answered as `id`, created at `created_at` (unix
    /// seconds). Unset fields take OpenAI's defaults.
    pub fn new(req: &ResponsesRequest, id: String, created_at: u64) -> Self {
        Self {
            id,
            created_at,
            model: req.model.clone(),
            instructions: req.instructions.clone(),
            max_output_tokens: req.max_output_tokens,
            previous_response_id: req.previous_response_id.clone(),
            temperature: req.temperature,
            top_p: req.top_p,
            tool_choice: req.tool_choice.clone().unwrap_or_else(|| json!("auto")),
            tools: req.tools.clone().unwrap_or_default(),
            parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
            store: req.wants_store(),
            text: req
                .text
                .clone()
                .unwrap_or_else(|| json!({"format": {"type": "text"}})),
            metadata: req.metadata.clone().unwrap_or_default(),
            user: req.user.clone(),
        }
    }

    /// A `response` object of this request.
    pub fn response(
        &self,
        status: ResponseStatus,
        output: Vec<OutputItem>,
        usage: Option<ResponseUsage>,
    ) -> Response {
        Response {
            id: self.id.clone(),
            object: "response".into(),
            created_at: self.created_at,
            status,
            error: None,
            incomplete_details: None,
            instructions: self.instructions.clone(),
            max_output_tokens: self.max_output_tokens,
            model: self.model.clone(),
            output,
            parallel_tool_calls: self.parallel_tool_calls,
            previous_response_id: self.previous_response_id.clone(),
            temperature: self.temperature,
            top_p: self.top_p,
            tool_choice: self.tool_choice.clone(),
            tools: self.tools.clone(),
            store: self.store,
            text: self.text.clone(),
            truncation: "disabled".into(),
            metadata: self.metadata.clone(),
            usage,
            user: self.user.clone(),
        }
    }

    /// The id of output item `index`: `msg_…` or `fc_…`, derived from the
    /// response id so that it is unique and stable.
    pub fn item_id(&self, prefix: &str, index: usize) -> String {
        let body = self.id.strip_prefix("resp_").unwrap_or(&self.id);
        format!("{prefix}_{body}_{index}")
    }

    /// A `call_id` for a tool call upstream left without an id.
    pub fn call_id(&self, index: usize) -> String {
        self.item_id("call", index)
    }
}

/// A fresh `resp_…` id.
pub fn new_response_id() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!("resp_{}", Alphanumeric.sample_string(&mut rand::rng(), 32))
}
