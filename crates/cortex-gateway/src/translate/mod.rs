//! Anthropic ⇄ OpenAI translation: the gateway speaks Anthropic Messages to
//! clients in front of neurons that speak only OpenAI chat completions.
//!
//! - [`request`]: an Anthropic `/v1/messages` body becomes an OpenAI chat
//!   request (also for `count_tokens`);
//! - [`response`]: a non-streamed OpenAI answer becomes an Anthropic message;
//! - [`stream`]: a per-stream state machine turning OpenAI chunks into
//!   Anthropic stream events, and their SSE encoding;
//! - [`responses`]: the same for OpenAI's Responses API (plus the store
//!   behind `previous_response_id`), and [`ollama`] for Ollama's API.
//!
//! Everything here is pure: no I/O, no clock, no shared state. What a
//! translated body is sent to, and how errors reach the client, belongs to
//! the HTTP layer. The rules implemented are the "Translation" section of
//! `CONFORMANCE.md`.

mod checks;
pub mod ollama;
pub mod request;
pub mod response;
pub mod responses;
pub mod stream;
pub mod tool_deltas;

/// A client request that cannot be translated; the HTTP layer answers it
/// with a 400 `invalid_request_error` in the caller's dialect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The request is malformed; `param` names the offending field, when one
    /// does.
    #[error("{message}")]
    Invalid {
        /// Human-readable reason, safe to echo to the client.
        message: String,
        /// The offending request field (`max_tokens`, `messages`, …).
        param: Option<String>,
    },
}

impl TranslateError {
    /// An [`TranslateError::Invalid`] about the request field `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        TranslateError::Invalid {
            message: message.into(),
            param: Some(param.to_string()),
        }
    }
}
