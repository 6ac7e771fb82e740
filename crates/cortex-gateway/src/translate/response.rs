//! Non-streamed OpenAI chat completion → Anthropic message, and the
//! finish-reason mapping shared with [`super::stream`].
//!
//! Decisions where CONFORMANCE.md is silent:
//! - only choice 0 is translated (Anthropic has no `n`);
//! - a `stop` finish that carries tool calls is `tool_use` (some servers say
//!   `stop` after a tool call; clients look at `stop_reason` to run tools);
//! - `content_filter` becomes `end_turn` (`cortex_core::anthropic::StopReason`
//!   has no `refusal`);
//! - tool-call arguments that are not a JSON object become `{}` (Anthropic's
//!   `input` is always an object), with a warning in the log;
//! - when there is no tool call, the content always has a text block, even an
//!   empty one, so that `content[0].text` works in clients.

use cortex_core::anthropic::{ContentBlock, MessagesResponse, Role, StopReason, Usage};
use cortex_core::openai::{ChatCompletion, Choice, FinishReason, ToolCall};
use serde_json::{Map, Value};

/// The Anthropic id for an upstream completion id: `msg_` prefixed, once.
pub fn message_id(upstream_id: &str) -> String {
    if upstream_id.starts_with("msg_") {
        upstream_id.to_string()
    } else {
        format!("msg_{upstream_id}")
    }
}

/// A fresh `toolu_…` id, for tool calls upstream left without one.
pub fn tool_use_id() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!("toolu_{}", Alphanumeric.sample_string(&mut rand::rng(), 24))
}

/// Non-streamed OpenAI answer → Anthropic message. `id` gets a `msg_`
/// prefix; `model` is the name the client asked for; usage is copied.
pub fn chat_to_message(resp: ChatCompletion, requested_model: &str) -> MessagesResponse {
    let usage = Usage::from_openai(&resp.usage);
    let choice = resp
        .choices
        .into_iter()
        .min_by_key(|c| c.index)
        .map(|c| (c.message, c.finish_reason, c.stop_reason));
    let mut content = Vec::new();
    let (mut stop_reason, mut stop_sequence) = (Some(StopReason::EndTurn), None);
    if let Some((message, finish, matched_stop)) = choice {
        let calls = message.tool_calls.unwrap_or_default();
        let text = message.content.unwrap_or_default();
        if !text.is_empty() || calls.is_empty() {
            content.push(ContentBlock::Text {
                text,
                extra: Map::new(),
            });
        }
        let had_calls = !calls.is_empty();
        content.extend(calls.into_iter().map(tool_call_to_block));
        (stop_reason, stop_sequence) = finish_to_stop_reason(finish, matched_stop.as_deref());
        let settled = settle_stop_reason(stop_reason, had_calls);
        if settled != StopReason::StopSequence {
            stop_sequence = None;
        }
        stop_reason = Some(settled);
    } else {
        content.push(ContentBlock::Text {
            text: String::new(),
            extra: Map::new(),
        });
    }
    MessagesResponse {
        id: message_id(&resp.id),
        kind: "message".into(),
        role: Role::Assistant,
        content,
        model: requested_model.to_string(),
        stop_reason,
        stop_sequence,
        usage,
    }
}

/// OpenAI `finish_reason` (+ vLLM's `stop_reason`, the stop string that
/// matched) → Anthropic `stop_reason` and `stop_sequence`.
///
/// `stop` is `end_turn`, or `stop_sequence` when a non-empty stop string is
/// reported; `length` is `max_tokens`; `tool_calls` is `tool_use`;
/// `content_filter` is `end_turn`. No finish reason gives `(None, None)`:
/// the caller decides (see [`settle_stop_reason`]).
pub fn finish_to_stop_reason(
    finish: Option<FinishReason>,
    stop_reason: Option<&str>,
) -> (Option<StopReason>, Option<String>) {
    match finish {
        None => (None, None),
        Some(FinishReason::Stop) => match stop_reason.filter(|s| !s.is_empty()) {
            Some(matched) => (Some(StopReason::StopSequence), Some(matched.to_string())),
            None => (Some(StopReason::EndTurn), None),
        },
        Some(FinishReason::Length) => (Some(StopReason::MaxTokens), None),
        Some(FinishReason::ToolCalls) => (Some(StopReason::ToolUse), None),
        Some(FinishReason::ContentFilter) => (Some(StopReason::EndTurn), None),
    }
}

/// The final `stop_reason`: unknown means `end_turn`, and a message that
/// ends with tool calls is `tool_use` unless it was cut by `max_tokens`.
pub fn settle_stop_reason(reason: Option<StopReason>, had_tool_calls: bool) -> StopReason {
    match (reason, had_tool_calls) {
        (Some(StopReason::MaxTokens), _) => StopReason::MaxTokens,
        (_, true) => StopReason::ToolUse,
        (Some(reason), false) => reason,
        (None, false) => StopReason::EndTurn,
    }
}

/// Choice 0 of a non-streamed answer (the lowest index; the other
/// dialects have no `n`): its text, tool calls and finish reason, all empty
/// when there is no choice.
pub fn first_choice(choices: Vec<Choice>) -> (String, Vec<ToolCall>, Option<FinishReason>) {
    match choices.into_iter().min_by_key(|c| c.index) {
        Some(c) => (
            c.message.content.unwrap_or_default(),
            c.message.tool_calls.unwrap_or_default(),
            c.finish_reason,
        ),
        None => (String::new(), Vec::new(), None),
    }
}

/// Tool-call arguments (a JSON string) → `tool_use.input` (an object).
pub fn arguments_to_input(name: &str, arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) | Err(_) => {
            tracing::warn!(
                tool = name,
                "tool-call arguments are not a JSON object; sending {{}}"
            );
            Value::Object(Map::new())
        }
    }
}

fn tool_call_to_block(call: ToolCall) -> ContentBlock {
    let input = arguments_to_input(&call.function.name, &call.function.arguments);
    let id = if call.id.is_empty() {
        tool_use_id()
    } else {
        call.id
    };
    ContentBlock::ToolUse {
        id,
        name: call.function.name,
        input,
    }
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
