//! Non-streamed OpenAI chat completion → one Ollama answer object
//! (`/api/chat` or `/api/generate`, `done: true`), the answers to a bare
//! load or unload, and `/api/embed`'s answer.
//!
//! Decisions where CONFORMANCE.md is silent:
//! - only choice 0 is translated;
//! - tool-call arguments are a JSON object, as Ollama sends them; arguments
//!   that are not one become `{}` (logged), as in the Anthropic translation;
//! - `/api/generate` has no tools: tool calls there are dropped;
//! - token counts come from upstream usage; durations from [`Timings`],
//!   which the HTTP layer measures (a non-streamed answer cannot tell
//!   prompt evaluation from generation, so it reports the whole upstream
//!   time as `eval_duration`).

use cortex_core::ollama::{
    ChatResponse, EmbedResponse, GenerateResponse, Message, ToolCall, ToolCallFunction,
};
use cortex_core::openai::{self, ChatCompletion};
use cortex_core::time::rfc3339;

use super::{done_reason, Now, Timings};
use crate::translate::response::{arguments_to_input, first_choice};

/// A non-streamed chat answer → `/api/chat`'s answer for `model` (the
/// name the client used).
pub fn chat_response(
    resp: ChatCompletion,
    model: &str,
    now: Now,
    timings: Timings,
) -> ChatResponse {
    let usage = resp.usage;
    let (text, calls, finish) = first_choice(resp.choices);
    let mut message = Message::assistant(text);
    if !calls.is_empty() {
        message.tool_calls = Some(tool_calls(calls));
    }
    ChatResponse {
        model: model.to_string(),
        created_at: rfc3339(now.unix_ms),
        message,
        done: true,
        done_reason: Some(done_reason(finish).into()),
        stats: Some(timings.stats(usage.prompt_tokens, usage.completion_tokens)),
    }
}

/// A non-streamed chat answer → `/api/generate`'s answer.
pub fn generate_response(
    resp: ChatCompletion,
    model: &str,
    now: Now,
    timings: Timings,
) -> GenerateResponse {
    let usage = resp.usage;
    let (text, _, finish) = first_choice(resp.choices);
    GenerateResponse {
        model: model.to_string(),
        created_at: rfc3339(now.unix_ms),
        response: text,
        done: true,
        done_reason: Some(done_reason(finish).into()),
        stats: Some(timings.stats(usage.prompt_tokens, usage.completion_tokens)),
    }
}

/// Chat tool calls → Ollama's, with object arguments.
pub fn tool_calls(calls: Vec<openai::ToolCall>) -> Vec<ToolCall> {
    calls
        .into_iter()
        .enumerate()
        .map(|(i, c)| ToolCall {
            function: ToolCallFunction {
                index: u32::try_from(i).ok(),
                arguments: arguments_to_input(&c.function.name, &c.function.arguments),
                name: c.function.name,
            },
        })
        .collect()
}

/// The answer to a bare load (`unloaded: false`, `done_reason: "load"`) or
/// unload (`"unload"`) on `/api/chat`.
pub fn chat_lifecycle(model: &str, now: Now, unloaded: bool) -> ChatResponse {
    ChatResponse {
        model: model.to_string(),
        created_at: rfc3339(now.unix_ms),
        message: Message::assistant(""),
        done: true,
        done_reason: Some(lifecycle_reason(unloaded).into()),
        stats: None,
    }
}

/// The same on `/api/generate`.
pub fn generate_lifecycle(model: &str, now: Now, unloaded: bool) -> GenerateResponse {
    GenerateResponse {
        model: model.to_string(),
        created_at: rfc3339(now.unix_ms),
        response: String::new(),
        done: true,
        done_reason: Some(lifecycle_reason(unloaded).into()),
        stats: None,
    }
}

fn lifecycle_reason(unloaded: bool) -> &'static str {
    if unloaded {
        "unload"
    } else {
        "load"
    }
}

/// `/api/embed`'s answer: the vectors in input order, the prompt tokens
/// they took, and the time spent.
pub fn embed_response(
    model: &str,
    embeddings: Vec<Vec<f32>>,
    prompt_tokens: u64,
    timings: Timings,
) -> EmbedResponse {
    let stats = timings.stats(prompt_tokens, 0);
    EmbedResponse {
        model: model.to_string(),
        embeddings,
        total_duration: stats.total_duration,
        load_duration: stats.load_duration,
        prompt_eval_count: prompt_tokens,
    }
}

#[cfg(test)]
#[path = "response_tests.rs"]
pub(crate) mod tests;
