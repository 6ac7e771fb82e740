//! Ollama API wire types (`/api/chat`, `/api/generate`, `/api/tags`,
//! `/api/ps`, `/api/show`, `/api/embed`, `/api/version`), as the official
//! `ollama` Python package and Ollama's `docs/api.md` define them, plus
//! `keep_alive` ([`KeepAlive`]). Timestamps are RFC 3339
//! ([`crate::time::rfc3339`]).
//!
//! Unknown fields are ignored. Durations in answers are nanoseconds. Only
//! shapes live here; what a field means for cortex is the translator's job.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::openai::{Stop, Tool};
use crate::units::HumanDuration;

/// `POST /api/chat` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    /// Empty: load the model (or unload it, with `keep_alive: 0`).
    #[serde(default)]
    pub messages: Vec<Message>,
    /// Same shape as OpenAI's: `{"type":"function","function":{…}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(flatten)]
    pub generation: Generation,
}

/// What `/api/chat` and `/api/generate` bodies share: how to generate and
/// answer, and how long to keep the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// `"json"`, a JSON schema, or `""` (none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    /// Ollama streams unless told `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<KeepAlive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<Value>,
}

impl Generation {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(true)
    }
}

/// `POST /api/generate` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub model: String,
    /// Empty or absent: load the model (or unload it, with `keep_alive: 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Text after the answer (fill-in-the-middle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Deprecated token context of an earlier answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<i64>>,
    /// The prompt is already templated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[serde(flatten)]
    pub generation: Generation,
}

/// Model options (Ollama's Modelfile parameters). Those cortex does not use
/// (`num_gpu`, `mirostat`, …) are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Options {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    /// Tokens to generate; `-1` unlimited, `-2` until the context is full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_predict: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Context window to allocate (cortex's window is the model's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_ctx: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// A chat message, in a request or an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    /// The Python client leaves an empty content out.
    #[serde(default)]
    pub content: String,
    /// Base64 images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// On `tool` messages: which tool produced this result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
}

impl Message {
    /// An assistant message with `content` and no tool calls.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
            images: None,
            tool_calls: None,
            tool_name: None,
            thinking: None,
        }
    }
}

/// `message.tool_calls[i]`: arguments are a JSON object, not a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub function: ToolCallFunction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallFunction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    pub name: String,
    /// An object; some clients send a JSON string instead.
    #[serde(default)]
    pub arguments: Value,
}

/// Generation statistics of a final (`done: true`) answer; durations in
/// nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: u64,
    pub prompt_eval_duration: u64,
    pub eval_count: u64,
    pub eval_duration: u64,
}

/// One `/api/chat` answer object (a stream chunk or the whole answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub model: String,
    pub created_at: String,
    pub message: Message,
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    #[serde(flatten, default)]
    pub stats: Option<Stats>,
}

/// One `/api/generate` answer object (a stream chunk or the whole answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateResponse {
    pub model: String,
    pub created_at: String,
    pub response: String,
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    #[serde(flatten, default)]
    pub stats: Option<Stats>,
}

/// `details` of a model in `/api/tags`, `/api/ps` and `/api/show`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDetails {
    pub parent_model: String,
    pub format: String,
    pub family: String,
    pub families: Option<Vec<String>>,
    pub parameter_size: String,
    pub quantization_level: String,
}

/// `GET /api/tags`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagsResponse {
    pub models: Vec<ModelTag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelTag {
    pub name: String,
    pub model: String,
    pub modified_at: String,
    pub size: u64,
    pub digest: String,
    pub details: ModelDetails,
}

/// `GET /api/ps`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsResponse {
    pub models: Vec<RunningModel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningModel {
    pub name: String,
    pub model: String,
    pub size: u64,
    pub digest: String,
    pub details: ModelDetails,
    /// When the model will be unloaded if it stays idle.
    pub expires_at: String,
    /// The part of `size` in GPU memory.
    pub size_vram: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
}

/// `POST /api/show` body (older clients say `name`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowRequest {
    #[serde(alias = "name")]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbose: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShowResponse {
    pub modelfile: String,
    pub parameters: String,
    pub template: String,
    pub details: ModelDetails,
    /// GGUF-style keys: `general.architecture`, `<arch>.context_length`, …
    pub model_info: Map<String, Value>,
    /// `completion`, `tools`, `embedding`, …
    pub capabilities: Vec<String>,
    pub modified_at: String,
}

/// `POST /api/embed` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedRequest {
    pub model: String,
    pub input: EmbedInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<KeepAlive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
}

/// `input`: one text or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

impl EmbedInput {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            EmbedInput::One(s) => vec![s],
            EmbedInput::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedResponse {
    pub model: String,
    pub embeddings: Vec<Vec<f32>>,
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: u64,
}

/// `POST /api/embeddings` body: Ollama's older route, one `prompt` (none, or
/// an empty one, only loads the model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyEmbeddingsRequest {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<KeepAlive>,
}

/// `POST /api/embeddings` answer: one vector (empty for a bare load).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyEmbeddingsResponse {
    pub embedding: Vec<f32>,
}

/// `GET /api/version`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionResponse {
    pub version: String,
}

/// `{"error": "message"}`, with the HTTP status; also a mid-stream failure
/// line of an NDJSON stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: String,
}

/// `keep_alive`: how long the model stays loaded after the request. A
/// number is seconds, a string a Go-style duration (`"5m"`, `"1h30m"`);
/// `0` unloads at once, a negative value keeps it loaded for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// `0`: unload once the request is done (at once for a bare load).
    Unload,
    /// Unload after this long idle.
    For(Duration),
    /// Negative: never unload for idleness.
    Forever,
}

impl KeepAlive {
    /// `keep_alive` as seconds (a JSON number).
    pub fn from_secs_f64(secs: f64) -> Result<Self, String> {
        if !secs.is_finite() {
            return Err(format!("keep_alive: {secs} is not a number of seconds"));
        }
        // Ollama truncates to whole seconds, so under one second unloads.
        let whole = secs.min(u64::MAX as f64) as u64;
        Ok(if secs < 0.0 {
            KeepAlive::Forever
        } else if whole == 0 {
            KeepAlive::Unload
        } else {
            KeepAlive::For(Duration::from_secs(whole))
        })
    }

    /// `keep_alive` as a string: a duration (`"5m"`), or a bare number of
    /// seconds (`"300"`, `"-1"`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Ok(secs) = t.parse::<f64>() {
            return Self::from_secs_f64(secs);
        }
        let (negative, body) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let d = body
            .parse::<HumanDuration>()
            .map_err(|e| format!("keep_alive: {e}"))?
            .get();
        Ok(match (negative, d.is_zero()) {
            (_, true) => KeepAlive::Unload,
            (true, false) => KeepAlive::Forever,
            (false, false) => KeepAlive::For(d),
        })
    }
}

impl Serialize for KeepAlive {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            KeepAlive::Unload => s.serialize_u64(0),
            KeepAlive::Forever => s.serialize_i64(-1),
            KeepAlive::For(d) => s.collect_str(&HumanDuration(*d)),
        }
    }
}

impl<'de> Deserialize<'de> for KeepAlive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeepAlive;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of seconds or a duration such as \"5m\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeepAlive, E> {
                KeepAlive::from_secs_f64(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeepAlive, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeepAlive, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeepAlive, E> {
                KeepAlive::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
#[path = "ollama_tests.rs"]
mod tests;
