//! Anthropic `/v1/messages` request → OpenAI chat-completions request.
//!
//! Owns the mapping of conversation structure (system prompt, tool calls and
//! tool results, content blocks) and of sampling parameters. It does not
//! pick a neuron, rewrite the model name or count tokens.
//!
//! Decisions where CONFORMANCE.md is silent:
//! - neurons are text-only, so `image` blocks (and non-text `document`
//!   blocks) become a short text note the model can see, instead of
//!   `image_url` parts that a text-only template would drop silently;
//! - several text blocks of one user turn are joined with `\n`, of one
//!   assistant turn with nothing (they are one continuous generation);
//! - `tool_result` with `is_error: true` is sent as `Error: <text>`;
//! - `tool_choice` and `parallel_tool_calls` are only sent with tools
//!   (OpenAI servers reject a tool choice without tools);
//! - `thinking`, `redacted_thinking` and unknown blocks are dropped, as are
//!   `tool_use` blocks in user turns and `tool_result` blocks in assistant
//!   turns (both are malformed and have no OpenAI equivalent).

use cortex_core::anthropic::{
    ContentBlock, Message, MessageContent, MessagesRequest, Role as ARole, SystemPrompt, Tool,
    ToolChoice, ToolResultContent,
};
use cortex_core::openai::{
    self, ChatCompletionRequest, ChatMessage, FunctionCall, FunctionDef, Role, Stop, StreamOptions,
    ToolCall,
};
use serde_json::{json, Value};

use super::TranslateError;

/// What the model sees in place of an image it cannot receive.
pub const IMAGE_NOTE: &str = "[image omitted: this model cannot see images]";
/// What the model sees in place of a document that is not plain text.
pub const DOCUMENT_NOTE: &str = "[document omitted: this model can only read plain-text documents]";

/// Anthropic `/v1/messages` body → OpenAI chat request for the neuron.
///
/// `stream` is copied; when streaming, `stream_options.include_usage` is
/// set, because the stream translator needs the usage chunk. Fails when
/// `max_tokens` is missing or below 1, or when `messages` is empty.
pub fn messages_to_chat(mut req: MessagesRequest) -> Result<ChatCompletionRequest, TranslateError> {
    match req.max_tokens {
        None => {
            return Err(TranslateError::invalid(
                "max_tokens",
                "max_tokens: field required",
            ))
        }
        Some(n) if n < 1 => {
            return Err(TranslateError::invalid(
                "max_tokens",
                format!("max_tokens: must be greater than or equal to 1, got {n}"),
            ))
        }
        Some(_) => {}
    }
    let (max_tokens, temperature, top_p, top_k, stream) = (
        req.max_tokens,
        req.temperature,
        req.top_p,
        req.top_k,
        req.stream,
    );
    super::checks::sampling(&req)?;
    let stop_sequences = req.stop_sequences.take();
    let metadata = req.metadata.take();
    let mut chat = convert(req)?;
    chat.max_tokens = max_tokens;
    chat.temperature = temperature;
    chat.top_p = top_p;
    chat.top_k = top_k;
    chat.stop = stop_sequences.filter(|s| !s.is_empty()).map(Stop::Many);
    chat.user = metadata.and_then(|m| m.user_id);
    chat.stream = stream;
    chat.clamp_max_tokens = Some(true);
    if stream == Some(true) {
        chat.stream_options = Some(StreamOptions {
            include_usage: Some(true),
        });
    }
    Ok(chat)
}

/// For `count_tokens`: the same conversion as [`messages_to_chat`] minus
/// the sampling fields (`max_tokens`, `temperature`, `top_p`, `top_k`,
/// `stop`, `stream`, `user`). Tools stay: they are part of the prompt.
pub fn messages_to_chat_for_count(
    req: MessagesRequest,
) -> Result<ChatCompletionRequest, TranslateError> {
    convert(req)
}

/// The prompt-shaping part shared by both entry points.
fn convert(req: MessagesRequest) -> Result<ChatCompletionRequest, TranslateError> {
    if req.messages.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "messages: at least one message is required",
        ));
    }
    super::checks::messages(&req.messages)?;
    let tools = req
        .tools
        .filter(|t| !t.is_empty())
        .map(|t| t.into_iter().map(tool_to_openai).collect::<Vec<_>>());
    let (tool_choice, parallel_tool_calls) = match (&tools, req.tool_choice) {
        (Some(_), Some(choice)) => tool_choice_to_openai(choice),
        _ => (None, None),
    };
    Ok(ChatCompletionRequest {
        model: req.model,
        messages: convert_messages(req.system, req.messages),
        tools,
        tool_choice,
        parallel_tool_calls,
        ..Default::default()
    })
}

/// The whole conversation, system prompt first.
fn convert_messages(system: Option<SystemPrompt>, messages: Vec<Message>) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = system {
        let text = system.to_text();
        if !text.is_empty() {
            out.push(ChatMessage::text(Role::System, text));
        }
    }
    for message in messages {
        match message.role {
            ARole::User => push_user(&mut out, message.content),
            ARole::Assistant => out.push(assistant_message(message.content)),
            ARole::System => {
                let text = match message.content {
                    MessageContent::Text(t) => t,
                    MessageContent::Blocks(b) => cortex_core::anthropic::blocks_text(&b, "\n"),
                };
                out.push(ChatMessage::text(Role::System, text));
            }
        }
    }
    fold_leading_system(out)
}

/// Chat templates take one system prompt: leading system/developer
/// messages are merged into one, separated by a blank line.
pub(crate) fn fold_leading_system(messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let leading = messages
        .iter()
        .take_while(|m| matches!(m.role, Role::System | Role::Developer))
        .count();
    if leading < 2 {
        return messages;
    }
    let mut rest = messages.into_iter();
    let system = rest
        .by_ref()
        .take(leading)
        .map(|m| m.text_content())
        .collect::<Vec<_>>()
        .join("\n\n");
    std::iter::once(ChatMessage::text(Role::System, system))
        .chain(rest)
        .collect()
}

/// A user turn: its tool results first (one `tool` message each, in order),
/// then the rest of its content as one user message.
fn push_user(out: &mut Vec<ChatMessage>, content: MessageContent) {
    let blocks = match content {
        MessageContent::Text(text) => {
            out.push(ChatMessage::text(Role::User, text));
            return;
        }
        MessageContent::Blocks(blocks) => blocks,
    };
    let mut texts = Vec::new();
    let mut had_tool_result = false;
    for block in blocks {
        match block {
            ContentBlock::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => {
                had_tool_result = true;
                out.push(ChatMessage {
                    tool_call_id: Some(tool_use_id),
                    ..ChatMessage::text(
                        Role::Tool,
                        tool_result_text(content, is_error.unwrap_or(false)),
                    )
                });
            }
            other => texts.extend(block_text(other)),
        }
    }
    if !texts.is_empty() || !had_tool_result {
        out.push(ChatMessage::text(Role::User, texts.join("\n")));
    }
}

/// An assistant turn: its text as content, its `tool_use` blocks as
/// `tool_calls`. Thinking is dropped.
fn assistant_message(content: MessageContent) -> ChatMessage {
    let blocks = match content {
        MessageContent::Text(text) => return ChatMessage::text(Role::Assistant, text),
        MessageContent::Blocks(blocks) => blocks,
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block {
            ContentBlock::Text { text: t, .. } => text.push_str(&t),
            ContentBlock::ToolUse { id, name, input } => calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall {
                    name,
                    arguments: input.to_string(),
                },
            }),
            _ => {}
        }
    }
    let content = if text.is_empty() && !calls.is_empty() {
        None
    } else {
        Some(openai::MessageContent::Text(text))
    };
    ChatMessage {
        role: Role::Assistant,
        content,
        name: None,
        tool_calls: (!calls.is_empty()).then_some(calls),
        tool_call_id: None,
    }
}

/// The text a user-side block contributes, if any.
fn block_text(block: ContentBlock) -> Option<String> {
    match block {
        ContentBlock::Text { text, .. } => Some(text),
        ContentBlock::Image { .. } => Some(IMAGE_NOTE.to_string()),
        ContentBlock::Document { source } => Some(document_text(&source)),
        ContentBlock::ToolUse { .. }
        | ContentBlock::ToolResult { .. }
        | ContentBlock::Thinking { .. }
        | ContentBlock::RedactedThinking { .. }
        | ContentBlock::Other => None,
    }
}

/// A plain-text document is inlined; anything else becomes a note.
fn document_text(source: &Value) -> String {
    match (
        source.get("type").and_then(Value::as_str),
        source.get("data").and_then(Value::as_str),
    ) {
        (Some("text"), Some(data)) => data.to_string(),
        _ => DOCUMENT_NOTE.to_string(),
    }
}

/// `tool_result` content (string or blocks) as text; errors stay visible.
fn tool_result_text(content: Option<ToolResultContent>, is_error: bool) -> String {
    let body = match content {
        None => String::new(),
        Some(ToolResultContent::Text(text)) => text,
        Some(ToolResultContent::Blocks(blocks)) => blocks
            .into_iter()
            .filter_map(block_text)
            .collect::<Vec<_>>()
            .join("\n"),
    };
    match (is_error, body.is_empty()) {
        (false, _) => body,
        (true, true) => "Error".to_string(),
        (true, false) => format!("Error: {body}"),
    }
}

/// `input_schema` ⇄ `parameters`.
fn tool_to_openai(tool: Tool) -> openai::Tool {
    openai::Tool {
        kind: "function".into(),
        function: FunctionDef {
            name: tool.name,
            description: tool.description,
            parameters: Some(tool.input_schema),
            strict: None,
        },
    }
}

/// `tool_choice` and `parallel_tool_calls` for the OpenAI request.
fn tool_choice_to_openai(choice: ToolChoice) -> (Option<Value>, Option<bool>) {
    let (value, disable_parallel) = match choice {
        ToolChoice::Auto {
            disable_parallel_tool_use,
        } => (json!("auto"), disable_parallel_tool_use),
        ToolChoice::Any {
            disable_parallel_tool_use,
        } => (json!("required"), disable_parallel_tool_use),
        ToolChoice::Tool {
            name,
            disable_parallel_tool_use,
        } => (
            json!({"type": "function", "function": {"name": name}}),
            disable_parallel_tool_use,
        ),
        ToolChoice::None => (json!("none"), None),
    };
    let parallel = (disable_parallel == Some(true)).then_some(false);
    (Some(value), parallel)
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "request_props.rs"]
mod props;
