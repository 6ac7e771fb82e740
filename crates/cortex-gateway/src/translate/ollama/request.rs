//! `/api/chat` and `/api/generate` bodies → an OpenAI chat request, or a
//! bare load / unload of the model ([`Intent`]), with the request's
//! `keep_alive` for the HTTP layer to apply.
//!
//! Decisions where CONFORMANCE.md is silent:
//! - an empty `messages` (chat) or `prompt` (generate) loads the model, or
//!   unloads it with `keep_alive: 0`, as Ollama does;
//! - Ollama tool calls carry no ids: assistant tool calls get `call_<n>`
//!   ids in conversation order, and each `tool` message answers the oldest
//!   unanswered call of the same `tool_name` (or, without a name, the
//!   oldest unanswered call);
//! - neurons are text-only: `images` of chat messages become a short note
//!   the model can see, as in the other translations; `/api/generate` with
//!   `images` (a one-shot vision request, nothing to note) is refused;
//! - `options.num_predict` `-1` (no limit) and `-2` (fill the context) send
//!   no `max_tokens`; other values below 1 are refused; a negative `seed`
//!   (Ollama's "random") sends none; `num_ctx` is ignored: a model's window
//!   is fixed when it is loaded;
//! - `format: "json"` or a schema becomes `response_format`;
//! - `/api/generate` with `raw`, `suffix` (fill-in-the-middle),
//!   `template` or `images` is refused: the neuron always applies the model's own chat
//!   template. The deprecated `context` is ignored (cortex never returns
//!   one);
//! - `think` is ignored.

use std::collections::VecDeque;

use cortex_core::ollama::{ChatRequest, GenerateRequest, Generation, KeepAlive, Message, Role};
use cortex_core::openai::{
    ChatCompletionRequest, ChatMessage, FunctionCall, MessageContent, Role as ORole, Stop,
    StreamOptions, ToolCall,
};
use serde_json::{json, Value};

use super::model_name;
use crate::translate::request::IMAGE_NOTE;
use crate::translate::TranslateError;

/// What a chat or generate request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    /// Generate: send this chat request upstream.
    Generate(Box<ChatCompletionRequest>),
    /// No input: make sure the model is loaded (`done_reason: "load"`).
    Load,
    /// No input and `keep_alive: 0`: unload it (`done_reason: "unload"`).
    Unload,
}

/// A translated Ollama request.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The model name, without a `:latest` tag.
    pub model: String,
    pub intent: Intent,
    /// How long the model should stay loaded afterwards, when the client
    /// said.
    pub keep_alive: Option<KeepAlive>,
    /// Answer with NDJSON chunks (Ollama's default) or one object.
    pub stream: bool,
}

/// `POST /api/chat` → what to do.
pub fn chat_request(req: ChatRequest) -> Result<Translated, TranslateError> {
    let g = req.generation;
    let stream = g.is_stream();
    let model = model_name(&req.model).to_string();
    if req.messages.is_empty() {
        return Ok(bare(model, g.keep_alive, stream));
    }
    let mut chat = sampling(&g)?;
    chat.model = model.clone();
    chat.messages = convert_messages(req.messages);
    chat.tools = req.tools.filter(|t| !t.is_empty());
    Ok(Translated {
        model,
        intent: Intent::Generate(Box::new(chat)),
        keep_alive: g.keep_alive,
        stream,
    })
}

/// `POST /api/generate` → what to do.
pub fn generate_request(req: GenerateRequest) -> Result<Translated, TranslateError> {
    let g = req.generation;
    let stream = g.is_stream();
    let model = model_name(&req.model).to_string();
    if req.raw == Some(true) {
        return Err(TranslateError::invalid(
            "raw",
            "raw: cortex always applies the model's own chat template; raw prompts are not supported",
        ));
    }
    let given = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    if given(&req.suffix) {
        return Err(TranslateError::invalid(
            "suffix",
            "suffix: fill-in-the-middle is not supported",
        ));
    }
    if given(&req.template) {
        return Err(TranslateError::invalid(
            "template",
            "template: cortex always applies the model's own chat template; it cannot be replaced per request",
        ));
    }
    if req.images.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(TranslateError::invalid(
            "images",
            "images: cortex serves text-only models; /api/generate cannot take images",
        ));
    }
    let prompt = req.prompt.unwrap_or_default();
    if prompt.is_empty() {
        return Ok(bare(model, g.keep_alive, stream));
    }
    let mut chat = sampling(&g)?;
    chat.model = model.clone();
    if let Some(system) = req.system.filter(|s| !s.is_empty()) {
        chat.messages.push(ChatMessage::text(ORole::System, system));
    }
    chat.messages.push(ChatMessage::text(ORole::User, prompt));
    Ok(Translated {
        model,
        intent: Intent::Generate(Box::new(chat)),
        keep_alive: g.keep_alive,
        stream,
    })
}

/// No input: a load, or an unload when `keep_alive` is 0.
fn bare(model: String, keep_alive: Option<KeepAlive>, stream: bool) -> Translated {
    let intent = match keep_alive {
        Some(KeepAlive::Unload) => Intent::Unload,
        _ => Intent::Load,
    };
    Translated {
        model,
        intent,
        keep_alive,
        stream,
    }
}

/// The sampling part of the chat request: options, format, streaming.
fn sampling(g: &Generation) -> Result<ChatCompletionRequest, TranslateError> {
    let stream = g.is_stream();
    let o = g.options.clone().unwrap_or_default();
    let max_tokens = match o.num_predict {
        None | Some(-1) | Some(-2) => None,
        Some(n) if n >= 1 => Some(n),
        Some(n) => {
            return Err(TranslateError::invalid(
                "options.num_predict",
                format!(
                    "options.num_predict: must be positive, -1 (no limit) or -2 (fill the context), got {n}"
                ),
            ))
        }
    };
    if o.num_ctx.is_some() {
        tracing::debug!("ignoring options.num_ctx: a model's window is fixed when it loads");
    }
    let stop = o
        .stop
        .map(|s| {
            s.into_vec()
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .map(Stop::Many);
    Ok(ChatCompletionRequest {
        max_tokens,
        temperature: o.temperature,
        top_p: o.top_p,
        top_k: o.top_k,
        seed: o.seed.and_then(|s| u64::try_from(s).ok()),
        stop,
        presence_penalty: o.presence_penalty,
        frequency_penalty: o.frequency_penalty,
        response_format: g.format.as_ref().and_then(response_format),
        stream: Some(stream),
        stream_options: stream.then_some(StreamOptions {
            include_usage: Some(true),
        }),
        clamp_max_tokens: Some(true),
        ..Default::default()
    })
}

/// `format` → `response_format`: `"json"` is a JSON object, an object is a
/// schema, `""` is none.
fn response_format(format: &Value) -> Option<Value> {
    match format {
        Value::String(s) if s == "json" => Some(json!({"type": "json_object"})),
        Value::Object(_) => Some(json!({"type": "json_schema", "json_schema": {
            "name": "response", "schema": format}})),
        _ => None,
    }
}

/// Ollama messages → chat messages, with tool-call ids made up (see the
/// module docs).
fn convert_messages(messages: Vec<Message>) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(messages.len());
    let mut next_call = 0usize;
    // (id, name) of calls not answered yet, oldest first.
    let mut unanswered: VecDeque<(String, String)> = VecDeque::new();
    for m in messages {
        let content = with_image_notes(m.content, m.images.as_deref());
        match m.role {
            Role::System => out.push(ChatMessage::text(ORole::System, content)),
            Role::User => out.push(ChatMessage::text(ORole::User, content)),
            Role::Assistant => {
                let calls: Vec<ToolCall> = m
                    .tool_calls
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| {
                        let id = format!("call_{next_call}");
                        next_call += 1;
                        unanswered.push_back((id.clone(), c.function.name.clone()));
                        ToolCall {
                            id,
                            kind: "function".into(),
                            function: FunctionCall {
                                name: c.function.name,
                                arguments: arguments_string(c.function.arguments),
                            },
                        }
                    })
                    .collect();
                let content = if content.is_empty() && !calls.is_empty() {
                    None
                } else {
                    Some(MessageContent::Text(content))
                };
                out.push(ChatMessage {
                    role: ORole::Assistant,
                    content,
                    name: None,
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    tool_call_id: None,
                });
            }
            Role::Tool => {
                let answered = match &m.tool_name {
                    Some(name) => unanswered.iter().position(|(_, n)| n == name),
                    None => (!unanswered.is_empty()).then_some(0),
                };
                let id = match answered.and_then(|i| unanswered.remove(i)) {
                    Some((id, _)) => id,
                    None => {
                        let id = format!("call_{next_call}");
                        next_call += 1;
                        id
                    }
                };
                out.push(ChatMessage {
                    tool_call_id: Some(id),
                    ..ChatMessage::text(ORole::Tool, content)
                });
            }
        }
    }
    out
}

/// Tool-call arguments as the JSON string chat wants: an object is
/// serialised, a string is taken as already serialised, nothing is `{}`.
fn arguments_string(arguments: Value) -> String {
    match arguments {
        Value::Null => "{}".to_string(),
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Text followed by one note per image it came with.
fn with_image_notes(text: String, images: Option<&[String]>) -> String {
    let n = images.map_or(0, <[String]>::len);
    if n == 0 {
        return text;
    }
    let mut parts: Vec<&str> = Vec::with_capacity(n + 1);
    if !text.is_empty() {
        parts.push(&text);
    }
    parts.extend(std::iter::repeat_n(IMAGE_NOTE, n));
    parts.join("\n")
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
