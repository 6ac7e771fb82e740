//! OpenAI embeddings wire types (`POST /v1/embeddings`), as the official
//! `openai` Python SDK sends and expects them, and the checks of a
//! request's `input`, `encoding_format` and `dimensions` that every server
//! of the API (the neuron, the gateway's Ollama route) shares.
//!
//! Only shapes and request checks live here: tokenizing, the model and
//! base64 encoding of vectors are the neuron's.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Inputs per request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// `POST /v1/embeddings` body. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    /// A string or an array of strings; token-id arrays are refused (see
    /// [`EmbeddingsRequest::texts`]). Kept as JSON so that each wrong shape
    /// gets its own message.
    pub input: Value,
    /// `"float"` (the default) or `"base64"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// Accepted only when equal to the model's width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Not OpenAI's: `true` cuts an input longer than the model's positions
    /// to its start instead of refusing it (Ollama's `truncate`, which
    /// `/api/embed` sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
}

/// How vectors are written in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    /// A JSON array of numbers.
    Float,
    /// Base64 of the little-endian f32 bytes, as OpenAI sends it.
    Base64,
}

/// A request whose values the API refuses (400, naming `param`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// The request field at fault.
    pub param: &'static str,
    pub message: String,
}

fn refuse(param: &'static str, message: impl Into<String>) -> RequestError {
    RequestError {
        param,
        message: message.into(),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl EmbeddingsRequest {
    /// The texts to embed, in order: `input` as one string or an array of
    /// 1 to [`MAX_INPUTS`] non-empty strings. Token-id arrays (what
    /// tiktoken-based clients send) are refused: the ids are of OpenAI's
    /// vocabulary, not the model's.
    pub fn texts(&self) -> Result<Vec<&str>, RequestError> {
        let token_ids = || {
            refuse(
                "input",
                "`input` holds token ids; this server embeds text only, so send the text \
                 as a string or an array of strings (LangChain: check_embedding_ctx_length=False)",
            )
        };
        let texts: Vec<&str> = match &self.input {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(refuse("input", "`input` must not be an empty array"));
                }
                if items.len() > MAX_INPUTS {
                    return Err(refuse(
                        "input",
                        format!(
                            "`input` holds {} items; at most {MAX_INPUTS} are allowed",
                            items.len()
                        ),
                    ));
                }
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.as_str()),
                        Value::Number(_) | Value::Array(_) => return Err(token_ids()),
                        other => {
                            return Err(refuse(
                                "input",
                                format!("`input[{i}]` must be a string, got {}", kind_of(other)),
                            ))
                        }
                    }
                }
                out
            }
            other => {
                return Err(refuse(
                    "input",
                    format!(
                        "`input` must be a string or an array of strings, got {}",
                        kind_of(other)
                    ),
                ))
            }
        };
        if let Some(i) = texts.iter().position(|t| t.is_empty()) {
            let at = if matches!(self.input, Value::Array(_)) {
                format!("`input[{i}]`")
            } else {
                "`input`".to_string()
            };
            return Err(refuse(
                "input",
                format!("{at} is an empty string; there is nothing to embed"),
            ));
        }
        Ok(texts)
    }

    /// The requested encoding (default float).
    pub fn format(&self) -> Result<EncodingFormat, RequestError> {
        match self.encoding_format.as_deref() {
            None | Some("float") => Ok(EncodingFormat::Float),
            Some("base64") => Ok(EncodingFormat::Base64),
            Some(other) => Err(refuse(
                "encoding_format",
                format!("`encoding_format` must be \"float\" or \"base64\", got {other:?}"),
            )),
        }
    }

    /// Checks `dimensions` against the model's width `dims`: the model
    /// cannot shorten its vectors, so only its own width is accepted.
    pub fn check_dimensions(&self, dims: usize) -> Result<(), RequestError> {
        match self.dimensions {
            None => Ok(()),
            Some(d) if usize::try_from(d).ok() == Some(dims) => Ok(()),
            Some(d) => Err(refuse(
                "dimensions",
                format!(
                    "`dimensions` {d} is not supported by model `{}`: its embeddings have \
                     {dims} dimensions and cannot be shortened (omit `dimensions`)",
                    self.model
                ),
            )),
        }
    }
}

/// `POST /v1/embeddings` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsResponse {
    /// `"list"`.
    pub object: String,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingsUsage,
}

/// One input's vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// `"embedding"`.
    pub object: String,
    pub index: usize,
    pub embedding: Vector,
}

/// A vector as numbers, or as base64 of its little-endian f32 bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

/// Tokens the inputs took (both fields count the same tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingsUsage {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn req(input: Value) -> EmbeddingsRequest {
        serde_json::from_value(json!({"model": "m", "input": input})).unwrap()
    }

    #[test]
    fn a_string_or_a_list_of_strings() {
        assert_eq!(req(json!("hi")).texts().unwrap(), vec!["hi"]);
        assert_eq!(req(json!(["a", "b"])).texts().unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn wrong_shapes_are_named() {
        let msg = |v: Value| req(v).texts().unwrap_err().message;
        assert!(msg(json!([])).contains("empty array"));
        assert!(msg(json!([1, 2])).contains("token ids"));
        assert!(msg(json!([[1, 2], [3]])).contains("token ids"));
        assert!(msg(json!(["a", null])).contains("`input[1]` must be a string, got null"));
        assert!(msg(json!({"a": 1})).contains("got an object"));
        assert!(msg(json!(7)).contains("got a number"));
        assert!(msg(json!("")).contains("`input` is an empty string"));
        assert!(msg(json!(["a", ""])).contains("`input[1]` is an empty string"));
        let many: Vec<&str> = vec!["x"; MAX_INPUTS + 1];
        assert!(msg(json!(many)).contains("at most 2048"));
        let max: Vec<&str> = vec!["x"; MAX_INPUTS];
        assert_eq!(req(json!(max)).texts().unwrap().len(), MAX_INPUTS);
    }

    #[test]
    fn encoding_format_and_dimensions() {
        let mut r = req(json!("x"));
        assert_eq!(r.format().unwrap(), EncodingFormat::Float);
        r.encoding_format = Some("base64".into());
        assert_eq!(r.format().unwrap(), EncodingFormat::Base64);
        r.encoding_format = Some("int8".into());
        assert_eq!(r.format().unwrap_err().param, "encoding_format");
        assert!(r.check_dimensions(384).is_ok());
        r.dimensions = Some(384);
        assert!(r.check_dimensions(384).is_ok());
        for d in [128, 0, -1] {
            r.dimensions = Some(d);
            let e = r.check_dimensions(384).unwrap_err();
            assert_eq!(e.param, "dimensions");
            assert!(e.message.contains("384 dimensions"), "{}", e.message);
        }
    }

    #[test]
    fn vectors_serialize_as_openai_sends_them() {
        let r = EmbeddingsResponse {
            object: "list".into(),
            data: vec![
                Embedding {
                    object: "embedding".into(),
                    index: 0,
                    embedding: Vector::Float(vec![0.5, -1.0]),
                },
                Embedding {
                    object: "embedding".into(),
                    index: 1,
                    embedding: Vector::Base64("AAAA".into()),
                },
            ],
            model: "m".into(),
            usage: EmbeddingsUsage {
                prompt_tokens: 3,
                total_tokens: 3,
            },
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([0.5, -1.0]));
        assert_eq!(v["data"][1]["embedding"], json!("AAAA"));
        assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
        let back: EmbeddingsResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any JSON `input` gets texts or a refusal naming `input`, never a panic.
        #[test]
        fn any_input_is_answered(input in any_json()) {
            let r = req(input.clone());
            match r.texts() {
                Ok(t) => {
                    prop_assert!(!t.is_empty() && t.iter().all(|s| !s.is_empty()));
                    match &input {
                        Value::String(s) => prop_assert_eq!(t, vec![s.as_str()]),
                        Value::Array(a) => prop_assert_eq!(t.len(), a.len()),
                        _ => prop_assert!(false, "accepted {input}"),
                    }
                }
                Err(e) => prop_assert_eq!(e.param, "input"),
            }
        }

        /// Lists of non-empty strings come back as they were sent.
        #[test]
        fn lists_of_strings_round_trip(v in prop::collection::vec(".{1,20}", 1..20)) {
            let r = req(json!(v));
            prop_assert_eq!(r.texts().unwrap(), v.iter().map(String::as_str).collect::<Vec<_>>());
        }

        /// Any whole request body parses or fails cleanly.
        #[test]
        fn any_body_parses_or_fails(body in any_json()) {
            if let Ok(r) = serde_json::from_value::<EmbeddingsRequest>(body) {
                let _ = r.texts();
                let _ = r.format();
                let _ = r.check_dimensions(384);
            }
        }
    }
}
