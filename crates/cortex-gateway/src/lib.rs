//! cortex-gateway: one OpenAI + Anthropic API in front of many neurons.
//!
//! - [`translate`]: OpenAI ⇄ Anthropic, requests, responses and streams;
//! - [`sse`]: a bounded server-sent-events decoder for upstream streams;

pub mod sse;
pub mod translate;
