//! OpenAI Responses API wire types (`POST /v1/responses`): the request, the
//! `response` object with its output items and usage, and the stream
//! events ([`StreamEvent`], in `events.rs`), as the official `openai`
//! Python SDK (`openai/types/responses/`) and OpenAI's Codex CLI send and
//! expect them.
//!
//! Unknown request fields are ignored; input items and tools of kinds cortex
//! cannot serve (reasoning, web search, …) are kept as raw JSON
//! ([`InputItem::Other`], [`ResponsesTool::Other`]) so the translator can
//! decide what to do with them. Only shapes live here; checking values is
//! the server's job.

mod events;

pub use events::StreamEvent;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/responses` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    /// A string (one user message) or a list of items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Input>,
    /// A system prompt for this response only (not carried over by
    /// `previous_response_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ResponsesTool>>,
    /// `"none" | "auto" | "required"`, `{"type":"function","name"}`, or a
    /// kind cortex treats as `auto` (kept raw so it can be echoed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    /// Keep the response for a later `previous_response_id` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", …}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl ResponsesRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }
    /// `store` defaults to true, as in OpenAI's API.
    pub fn wants_store(&self) -> bool {
        self.store.unwrap_or(true)
    }
    /// The request's input as items (a string is one user message).
    pub fn input_items(&self) -> Vec<InputItem> {
        match &self.input {
            None => Vec::new(),
            Some(Input::Text(text)) => vec![InputItem::Message(InputMessage::text(
                InputRole::User,
                text.clone(),
            ))],
            Some(Input::Items(items)) => items.clone(),
        }
    }
}

/// `input`: a string or items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, try_from = "Value")]
pub enum Input {
    Text(String),
    Items(Vec<InputItem>),
}

impl TryFrom<Value> for Input {
    type Error = String;

    /// Item by item, so that an error names the offending item.
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        match value {
            Value::String(text) => Ok(Input::Text(text)),
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| InputItem::try_from(item).map_err(|e| format!("input[{i}]: {e}")))
                .collect::<Result<Vec<_>, _>>()
                .map(Input::Items),
            _ => Err("input: expected a string or a list of items".to_string()),
        }
    }
}

/// One input item. A message may omit `type`; kinds cortex does not know
/// are kept whole as [`InputItem::Other`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, try_from = "Value")]
pub enum InputItem {
    Message(InputMessage),
    FunctionCall(FunctionCallItem),
    FunctionCallOutput(FunctionCallOutputItem),
    Other(Value),
}

impl TryFrom<Value> for InputItem {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_string);
        let parsed = match kind.as_deref() {
            Some("message") => serde_json::from_value(value).map(InputItem::Message),
            None if value.get("role").is_some() => {
                serde_json::from_value(value).map(InputItem::Message)
            }
            Some("function_call") => serde_json::from_value(value).map(InputItem::FunctionCall),
            Some("function_call_output") => {
                serde_json::from_value(value).map(InputItem::FunctionCallOutput)
            }
            Some(_) => return Ok(InputItem::Other(value)),
            None => return Err("input item: expected a `type` or a `role`".to_string()),
        };
        parsed.map_err(|e| {
            format!(
                "input item of type `{}`: {e}",
                kind.as_deref().unwrap_or("message")
            )
        })
    }
}

/// A message item: `{"role", "content"}` (`type: "message"` optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputMessage {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<MessageTag>,
    pub role: InputRole,
    pub content: InputContent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl InputMessage {
    pub fn text(role: InputRole, text: impl Into<String>) -> Self {
        Self {
            kind: Some(MessageTag::Message),
            role,
            content: InputContent::Text(text.into()),
            id: None,
        }
    }
}

/// The one allowed value of a message item's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageTag {
    Message,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputRole {
    User,
    Assistant,
    System,
    Developer,
}

/// Message content: a string or parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InputContent {
    Text(String),
    Parts(Vec<InputPart>),
}

/// One content part of an input message. `output_text` and `refusal` come
/// back in assistant messages of a replayed conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InputPart {
    InputText {
        text: String,
    },
    OutputText {
        text: String,
        #[serde(default)]
        annotations: Vec<Value>,
    },
    Refusal {
        refusal: String,
    },
    InputImage {
        #[serde(flatten)]
        rest: Map<String, Value>,
    },
    InputFile {
        #[serde(flatten)]
        rest: Map<String, Value>,
    },
    #[serde(other)]
    Other,
}

/// A tool call the model made earlier (`type: "function_call"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallItem {
    #[serde(rename = "type")]
    pub kind: FunctionCallTag,
    pub call_id: String,
    pub name: String,
    /// A JSON document, as a string.
    pub arguments: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ItemStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionCallTag {
    FunctionCall,
}

/// The result of a tool call (`type: "function_call_output"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallOutputItem {
    #[serde(rename = "type")]
    pub kind: FunctionCallOutputTag,
    pub call_id: String,
    /// A string, or content parts (`input_text`, …).
    pub output: ToolOutput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionCallOutputTag {
    FunctionCallOutput,
}

/// `function_call_output.output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolOutput {
    Text(String),
    Parts(Vec<InputPart>),
}

/// A tool the model may call. Responses function tools are flat:
/// `{"type":"function","name","description","parameters","strict"}`.
/// Other kinds (web search, MCP, local shell, custom) are kept raw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, try_from = "Value")]
pub enum ResponsesTool {
    Function(FunctionTool),
    Other(Value),
}

impl TryFrom<Value> for ResponsesTool {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        match value.get("type").and_then(Value::as_str) {
            Some("function") => serde_json::from_value(value)
                .map(ResponsesTool::Function)
                .map_err(|e| format!("function tool: {e}")),
            Some(_) => Ok(ResponsesTool::Other(value)),
            None => Err("tool: expected a `type`".to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionTool {
    #[serde(rename = "type")]
    pub kind: FunctionToolTag,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionToolTag {
    Function,
}

/// The `response` object, returned whole when not streaming and carried by
/// `response.created`, `response.in_progress`, `response.completed`,
/// `response.incomplete` and `response.failed` events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: String,
    /// Always `"response"`.
    pub object: String,
    /// Unix seconds.
    pub created_at: u64,
    pub status: ResponseStatus,
    pub error: Option<ResponseError>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub model: String,
    pub output: Vec<OutputItem>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub tool_choice: Value,
    pub tools: Vec<ResponsesTool>,
    pub store: bool,
    pub text: Value,
    pub truncation: String,
    pub metadata: Map<String, Value>,
    pub usage: Option<ResponseUsage>,
    pub user: Option<String>,
}

impl Response {
    /// The text of every `output_text` part, joined (the SDK's
    /// `response.output_text`).
    pub fn output_text(&self) -> String {
        self.output
            .iter()
            .filter_map(|item| match item {
                OutputItem::Message { content, .. } => Some(content),
                OutputItem::FunctionCall { .. } => None,
            })
            .flatten()
            .map(|OutputContent::OutputText { text, .. }| text.as_str())
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    InProgress,
    Completed,
    Incomplete,
    Failed,
}

/// `response.error` of a failed response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseError {
    /// `server_error`, `rate_limit_exceeded`, …
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    /// `max_output_tokens` or `content_filter`.
    pub reason: String,
}

/// One output item: an assistant message or a function call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Message {
        id: String,
        status: ItemStatus,
        /// Always `"assistant"`.
        role: String,
        content: Vec<OutputContent>,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        /// A JSON document, as a string.
        arguments: String,
        status: ItemStatus,
    },
}

impl OutputItem {
    pub fn id(&self) -> &str {
        match self {
            OutputItem::Message { id, .. } | OutputItem::FunctionCall { id, .. } => id,
        }
    }
    pub fn status(&self) -> ItemStatus {
        match self {
            OutputItem::Message { status, .. } | OutputItem::FunctionCall { status, .. } => *status,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    InProgress,
    Completed,
    Incomplete,
}

/// A content part of an output message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputContent {
    OutputText {
        text: String,
        annotations: Vec<Value>,
    },
}

impl OutputContent {
    pub fn text(text: impl Into<String>) -> Self {
        OutputContent::OutputText {
            text: text.into(),
            annotations: Vec::new(),
        }
    }
}

/// `response.usage`. `input_tokens` counts every prompt token, cached or
/// not; `input_tokens_details.cached_tokens` says how many were cached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseUsage {
    pub input_tokens: u64,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: u64,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    pub cached_tokens: u64,
    /// Prompt tokens written to a cache; cortex does not report it (0).
    #[serde(default)]
    pub cache_write_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: u64,
}

#[cfg(test)]
mod tests;
