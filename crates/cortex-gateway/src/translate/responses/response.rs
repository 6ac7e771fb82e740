//! Non-streamed OpenAI chat completion → Responses `response` object, and
//! the usage and status mappings shared with [`super::stream`].
//!
//! Decisions where CONFORMANCE.md is silent:
//! - only choice 0 is translated (the Responses API has no `n`);
//! - the message item comes first, then one `function_call` item per tool
//!   call; a message that is only whitespace next to tool calls is left out
//!   (models often emit `"\n\n"` before a call), and without tool calls
//!   there is always a message, even an empty one, so `output_text` works;
//! - `finish_reason: length` is `incomplete` with reason
//!   `max_output_tokens`, `content_filter` is `incomplete` with reason
//!   `content_filter`; the last output item is then `incomplete` too;
//! - a tool call without an id gets a `call_id` derived from the response
//!   id.

use cortex_core::openai::{self, ChatCompletion, FinishReason};
use cortex_core::responses::{
    IncompleteDetails, InputTokensDetails, ItemStatus, OutputContent, OutputItem,
    OutputTokensDetails, Response, ResponseStatus, ResponseUsage,
};

use super::ResponseSeed;
use crate::translate::response::first_choice;

/// A non-streamed chat answer → the `response` object for `seed`.
pub fn chat_to_response(resp: ChatCompletion, seed: &ResponseSeed) -> Response {
    let usage = usage(&resp.usage);
    let (text, calls, finish) = first_choice(resp.choices);
    let mut output = Vec::with_capacity(calls.len() + 1);
    if calls.is_empty() || !text.trim().is_empty() {
        output.push(OutputItem::Message {
            id: seed.item_id("msg", 0),
            status: ItemStatus::Completed,
            role: "assistant".into(),
            content: vec![OutputContent::text(text)],
        });
    }
    for call in calls {
        let index = output.len();
        let call_id = if call.id.is_empty() {
            seed.call_id(index)
        } else {
            call.id
        };
        output.push(OutputItem::FunctionCall {
            id: seed.item_id("fc", index),
            call_id,
            name: call.function.name,
            arguments: call.function.arguments,
            status: ItemStatus::Completed,
        });
    }
    let (status, details) = status_of(finish);
    if status == ResponseStatus::Incomplete {
        if let Some(last) = output.last_mut() {
            set_status(last, ItemStatus::Incomplete);
        }
    }
    let mut response = seed.response(status, output, Some(usage));
    response.incomplete_details = details;
    response
}

/// A chat finish reason → the response status and, when incomplete, why.
pub fn status_of(finish: Option<FinishReason>) -> (ResponseStatus, Option<IncompleteDetails>) {
    let reason = match finish {
        Some(FinishReason::Length) => "max_output_tokens",
        Some(FinishReason::ContentFilter) => "content_filter",
        Some(FinishReason::Stop | FinishReason::ToolCalls) | None => {
            return (ResponseStatus::Completed, None)
        }
    };
    (
        ResponseStatus::Incomplete,
        Some(IncompleteDetails {
            reason: reason.into(),
        }),
    )
}

/// Chat usage → Responses usage; cached prompt tokens are kept.
pub fn usage(u: &openai::Usage) -> ResponseUsage {
    ResponseUsage {
        input_tokens: u.prompt_tokens,
        input_tokens_details: InputTokensDetails {
            cached_tokens: u.cached_tokens(),
            cache_write_tokens: 0,
        },
        output_tokens: u.completion_tokens,
        output_tokens_details: OutputTokensDetails {
            reasoning_tokens: 0,
        },
        total_tokens: u.prompt_tokens + u.completion_tokens,
    }
}

fn set_status(item: &mut OutputItem, new: ItemStatus) {
    match item {
        OutputItem::Message { status, .. } | OutputItem::FunctionCall { status, .. } => {
            *status = new
        }
    }
}

#[cfg(test)]
#[path = "response_tests.rs"]
pub(crate) mod tests;
