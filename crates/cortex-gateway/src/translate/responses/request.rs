//! Responses request (+ the stored conversation it continues) → OpenAI chat
//! request.
//!
//! Owns the mapping of the conversation (instructions, messages, function
//! calls and their outputs) and of sampling parameters. It does not look
//! `previous_response_id` up (the HTTP layer does, in [`super::store`]),
//! pick a neuron or rewrite the model name.
//!
//! Decisions where CONFORMANCE.md is silent:
//! - `instructions` becomes the first system message; `system` and
//!   `developer` messages become system messages, and leading ones fold into
//!   one system prompt (chat templates take one);
//! - text parts of a user or system message are joined with `\n`, of an
//!   assistant message with nothing (one continuous generation);
//! - neurons are text-only: `input_image` and `input_file` parts become a
//!   short note the model can see, as in the Anthropic translation;
//! - `function_call` items join the assistant message just before them (chat
//!   templates expect the calls on the message that made them); an output is
//!   a `tool` message;
//! - items of kinds with no chat equivalent (`reasoning`, hosted tool calls)
//!   and tools other than functions are dropped; `item_reference` is refused,
//!   since cortex stores whole conversations, not items;
//! - `tool_choice` and `parallel_tool_calls` are only sent with tools; an
//!   `allowed_tools` choice becomes its `mode`; hosted-tool choices are
//!   `auto`;
//! - `text.format` `json_object` / `json_schema` become `response_format`;
//! - `max_output_tokens` may exceed what fits after the prompt: the neuron
//!   generates what fits (`clamp_max_tokens`), as for Anthropic clients.

use cortex_core::openai::{
    self, ChatCompletionRequest, ChatMessage, FunctionCall, FunctionDef, MessageContent, Role,
    StreamOptions, ToolCall,
};
use cortex_core::responses::{
    FunctionCallItem, InputContent, InputItem, InputMessage, InputPart, InputRole,
    ResponsesRequest, ResponsesTool, ToolOutput,
};
use serde_json::{json, Value};

use crate::translate::request::{fold_leading_system, DOCUMENT_NOTE, IMAGE_NOTE};
use crate::translate::TranslateError;

/// A Responses request → the chat request for the neuron. `history` is the
/// stored conversation `previous_response_id` names (empty without one);
/// the request's own input follows it. When streaming,
/// `stream_options.include_usage` is set (the stream translator needs it).
pub fn responses_to_chat(
    req: &ResponsesRequest,
    history: &[InputItem],
) -> Result<ChatCompletionRequest, TranslateError> {
    check_sampling(req)?;
    let mut messages = Vec::new();
    if let Some(instructions) = req.instructions.as_deref().filter(|s| !s.is_empty()) {
        messages.push(ChatMessage::text(Role::System, instructions));
    }
    let input = req.input_items();
    push_items(&mut messages, history, "previous_response_id")?;
    push_items(&mut messages, &input, "input")?;
    let messages = fold_leading_system(messages);
    if !messages.iter().any(|m| m.role != Role::System) {
        return Err(TranslateError::invalid(
            "input",
            "input: at least one message or function call output is required",
        ));
    }
    let tools = function_tools(req.tools.as_deref().unwrap_or_default());
    let tool_choice = match (&tools, &req.tool_choice) {
        (Some(_), Some(choice)) => tool_choice_to_chat(choice)?,
        _ => None,
    };
    let stream = req.stream;
    Ok(ChatCompletionRequest {
        model: req.model.clone(),
        messages,
        parallel_tool_calls: tools.as_ref().and(req.parallel_tool_calls),
        tools,
        tool_choice,
        max_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        response_format: req.text.as_ref().and_then(response_format),
        user: req.user.clone(),
        stream,
        stream_options: (stream == Some(true)).then_some(StreamOptions {
            include_usage: Some(true),
        }),
        clamp_max_tokens: Some(true),
        ..Default::default()
    })
}

/// Ranges as OpenAI documents them.
fn check_sampling(req: &ResponsesRequest) -> Result<(), TranslateError> {
    if let Some(n) = req.max_output_tokens.filter(|n| *n < 1) {
        return Err(TranslateError::invalid(
            "max_output_tokens",
            format!("max_output_tokens: must be greater than or equal to 1, got {n}"),
        ));
    }
    if let Some(t) = req.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        return Err(TranslateError::invalid(
            "temperature",
            format!("temperature: must be between 0 and 2, got {t}"),
        ));
    }
    if let Some(p) = req.top_p.filter(|p| !(0.0..=1.0).contains(p)) {
        return Err(TranslateError::invalid(
            "top_p",
            format!("top_p: must be between 0 and 1, got {p}"),
        ));
    }
    Ok(())
}

/// Append `items` as chat messages; `param` names where they came from in
/// errors.
fn push_items(
    out: &mut Vec<ChatMessage>,
    items: &[InputItem],
    param: &str,
) -> Result<(), TranslateError> {
    for (i, item) in items.iter().enumerate() {
        match item {
            InputItem::Message(message) => out.push(message_to_chat(message)),
            InputItem::FunctionCall(call) => push_call(out, call),
            InputItem::FunctionCallOutput(output) => out.push(ChatMessage {
                tool_call_id: Some(output.call_id.clone()),
                ..ChatMessage::text(Role::Tool, tool_output_text(&output.output))
            }),
            InputItem::Other(value) => {
                let kind = value.get("type").and_then(Value::as_str).unwrap_or("?");
                if kind == "item_reference" {
                    return Err(TranslateError::invalid(
                        param,
                        format!(
                            "{param}[{i}]: item_reference is not supported; send the item itself, \
                             or continue a stored response with previous_response_id"
                        ),
                    ));
                }
                tracing::debug!(kind, "dropping an input item with no chat equivalent");
            }
        }
    }
    Ok(())
}

fn message_to_chat(message: &InputMessage) -> ChatMessage {
    let (role, separator) = match message.role {
        InputRole::User => (Role::User, "\n"),
        InputRole::Assistant => (Role::Assistant, ""),
        InputRole::System | InputRole::Developer => (Role::System, "\n"),
    };
    let text = match &message.content {
        InputContent::Text(text) => text.clone(),
        InputContent::Parts(parts) => parts_text(parts, separator),
    };
    ChatMessage::text(role, text)
}

/// The text of content parts; images and files become notes.
fn parts_text(parts: &[InputPart], separator: &str) -> String {
    parts
        .iter()
        .filter_map(|part| match part {
            InputPart::InputText { text } | InputPart::OutputText { text, .. } => {
                Some(text.as_str())
            }
            InputPart::Refusal { refusal } => Some(refusal.as_str()),
            InputPart::InputImage { .. } => Some(IMAGE_NOTE),
            InputPart::InputFile { .. } => Some(DOCUMENT_NOTE),
            InputPart::Other => None,
        })
        .collect::<Vec<_>>()
        .join(separator)
}

fn tool_output_text(output: &ToolOutput) -> String {
    match output {
        ToolOutput::Text(text) => text.clone(),
        ToolOutput::Parts(parts) => parts_text(parts, "\n"),
    }
}

/// A function call joins the assistant message just before it, or starts
/// one with no text.
fn push_call(out: &mut Vec<ChatMessage>, call: &FunctionCallItem) {
    let tool_call = ToolCall {
        id: call.call_id.clone(),
        kind: "function".into(),
        function: FunctionCall {
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        },
    };
    if let Some(last) = out.last_mut().filter(|m| m.role == Role::Assistant) {
        last.tool_calls.get_or_insert_with(Vec::new).push(tool_call);
        if matches!(&last.content, Some(MessageContent::Text(t)) if t.is_empty()) {
            last.content = None;
        }
        return;
    }
    out.push(ChatMessage {
        role: Role::Assistant,
        content: None,
        name: None,
        tool_calls: Some(vec![tool_call]),
        tool_call_id: None,
    });
}

/// Flat Responses function tools → chat tools; other kinds are dropped.
fn function_tools(tools: &[ResponsesTool]) -> Option<Vec<openai::Tool>> {
    let out: Vec<openai::Tool> = tools
        .iter()
        .filter_map(|tool| match tool {
            ResponsesTool::Function(f) => Some(openai::Tool {
                kind: "function".into(),
                function: FunctionDef {
                    name: f.name.clone(),
                    description: f.description.clone(),
                    parameters: f.parameters.clone(),
                    strict: f.strict,
                },
            }),
            ResponsesTool::Other(v) => {
                let kind = v.get("type").and_then(Value::as_str).unwrap_or("?");
                tracing::debug!(kind, "dropping a tool cortex cannot run");
                None
            }
        })
        .collect();
    (!out.is_empty()).then_some(out)
}

/// Responses `tool_choice` → chat `tool_choice`.
fn tool_choice_to_chat(choice: &Value) -> Result<Option<Value>, TranslateError> {
    let bad = || {
        TranslateError::invalid(
            "tool_choice",
            format!("tool_choice: expected \"none\", \"auto\", \"required\" or a function, got {choice}"),
        )
    };
    match choice {
        Value::String(mode) if matches!(mode.as_str(), "none" | "auto" | "required") => {
            Ok(Some(json!(mode)))
        }
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => match o.get("name").and_then(Value::as_str) {
                Some(name) => Ok(Some(
                    json!({"type": "function", "function": {"name": name}}),
                )),
                None => Err(bad()),
            },
            Some("allowed_tools") => Ok(o
                .get("mode")
                .and_then(Value::as_str)
                .filter(|m| matches!(*m, "auto" | "required"))
                .map(|m| json!(m))),
            Some(_) => Ok(None),
            None => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// `text.format` → `response_format`; plain text needs none.
fn response_format(text: &Value) -> Option<Value> {
    let format = text.get("format")?;
    match format.get("type").and_then(Value::as_str)? {
        "json_object" => Some(json!({"type": "json_object"})),
        "json_schema" => {
            let mut schema = serde_json::Map::new();
            for key in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(key) {
                    schema.insert(key.to_string(), v.clone());
                }
            }
            Some(json!({"type": "json_schema", "json_schema": schema}))
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
