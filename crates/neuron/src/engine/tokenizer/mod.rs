//! The tokenizer, rebuilt from a GGUF file's `tokenizer.ggml.*` metadata so
//! that it gives the same token ids as llama.cpp.
//!
//! Owns what the two supported tokenizer models share: reading the
//! vocabulary metadata, the special and user-defined tokens (split out of the
//! text before the model sees it, as llama.cpp's `tokenizer_st_partition`
//! does), and the BOS/EOS policy (`add_bos_token` / `add_eos_token`, applied
//! by a post-processor when a prompt is encoded with special tokens). The
//! models themselves live in [`bpe`] (`tokenizer.ggml.model = "gpt2"`,
//! byte-level BPE: SmolLM2, Llama 3, Qwen) and [`spm`] (`"llama"`,
//! SentencePiece BPE with byte fallback: Llama 2, Mistral ≤ v0.3, Gemma).
//! candle's `TokenizerFromGguf` is deliberately not used: it disagrees with
//! llama.cpp (see `ENGINE-NOTES.md`).

mod bpe;
mod spm;

use super::EngineError;
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::processors::template::{SpecialToken, Template, TemplateProcessing};
use tokenizers::{AddedToken, Tokenizer};

/// GGUF token type of the unknown token (Llama 2's `<unk>`).
const TOKEN_TYPE_UNKNOWN: i64 = 2;
/// GGUF token type of control tokens (`<|im_start|>`, `<start_of_turn>`).
const TOKEN_TYPE_CONTROL: i64 = 3;
/// GGUF token type of user-defined tokens (Gemma's `"\n"`, `"<b>"`).
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The tokenizer models the engine can build (`tokenizer.ggml.model`).
pub const SUPPORTED_MODELS: &[&str] = &["gpt2", "llama"];

/// A tokenizer model the engine can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenizerModel {
    /// Byte-level BPE with merges (`"gpt2"`).
    BytePairGpt2,
    /// SentencePiece BPE from scores, with byte fallback (`"llama"`).
    SentencePiece,
}

impl TokenizerModel {
    /// The model the file names; [`EngineError::Unsupported`] for the others.
    /// A file without the key is byte-level BPE, as before.
    pub(crate) fn of(content: &Content) -> Result<Self, EngineError> {
        match string(content, "tokenizer.ggml.model")?.unwrap_or("gpt2") {
            "gpt2" => Ok(Self::BytePairGpt2),
            "llama" => Ok(Self::SentencePiece),
            other => Err(EngineError::Unsupported(format!(
                "tokenizer model {other:?} (supported: {})",
                SUPPORTED_MODELS.join(", ")
            ))),
        }
    }
}

/// The special token ids and the BOS/EOS policy, with llama.cpp's defaults
/// where the file is silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Specials {
    /// `tokenizer.ggml.bos_token_id` (SentencePiece default: 1).
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id` (SentencePiece default: 2).
    pub eos: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`: whether a prompt starts with BOS.
    pub add_bos: bool,
    /// `tokenizer.ggml.add_eos_token`: whether a prompt ends with EOS.
    pub add_eos: bool,
}

impl Specials {
    /// Reads the ids and flags; an id outside the vocabulary of `n_tokens`
    /// is an [`EngineError::Gguf`], and so is `add_bos_token` without a BOS.
    pub(crate) fn of(content: &Content, n_tokens: usize) -> Result<Self, EngineError> {
        let model = TokenizerModel::of(content)?;
        let spm = model == TokenizerModel::SentencePiece;
        let id = |key: &str, default: Option<u32>| -> Result<Option<u32>, EngineError> {
            match integer(content, key)? {
                None => Ok(default.filter(|d| (*d as usize) < n_tokens)),
                Some(id) if id >= 0 && (id as usize) < n_tokens => Ok(Some(id as u32)),
                Some(id) => Err(EngineError::Gguf(format!(
                    "{key} = {id} is outside the vocabulary of {n_tokens}"
                ))),
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id", spm.then_some(1))?;
        let eos = id("tokenizer.ggml.eos_token_id", spm.then_some(2))?;
        // llama.cpp: SentencePiece vocabularies add BOS unless told not to;
        // byte-level BPE ones add it for the Llama 3 family of pre-tokenizers.
        let default_bos = spm
            || matches!(
                string(content, "tokenizer.ggml.pre")?,
                Some("llama3" | "llama-v3" | "llama-bpe" | "tekken" | "chameleon")
            );
        let add_bos = boolean(content, "tokenizer.ggml.add_bos_token")?.unwrap_or(default_bos);
        let add_eos = boolean(content, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        if add_bos && bos.is_none() {
            return Err(EngineError::Gguf(
                "tokenizer.ggml.add_bos_token is true, but there is no BOS token".into(),
            ));
        }
        if add_eos && eos.is_none() {
            return Err(EngineError::Gguf(
                "tokenizer.ggml.add_eos_token is true, but there is no EOS token".into(),
            ));
        }
        Ok(Self {
            bos,
            eos,
            add_bos,
            add_eos,
        })
    }
}

/// Builds the tokenizer of a GGUF file from its metadata.
///
/// `encode(text, false)` gives llama.cpp's `tokenize(text, add_special =
/// false, parse_special = true)`; `encode(text, true)` adds BOS/EOS as the
/// file's `add_bos_token` / `add_eos_token` say (llama.cpp's `add_special =
/// true`). [`EngineError::Unsupported`] for tokenizer models other than
/// [`SUPPORTED_MODELS`], [`EngineError::Gguf`] when the vocabulary is
/// malformed.
pub fn from_gguf(content: &Content) -> Result<Tokenizer, EngineError> {
    let model = TokenizerModel::of(content)?;
    let tokens = token_strings(content)?;
    let types = token_types(content)?;
    if let Some(types) = &types {
        if types.len() < tokens.len() {
            return Err(EngineError::Gguf(format!(
                "{} token types for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
    }
    let mut tokenizer = match model {
        TokenizerModel::BytePairGpt2 => bpe::tokenizer(content, &tokens)?,
        TokenizerModel::SentencePiece => spm::tokenizer(content, &tokens)?,
    };
    let added = register_added_tokens(&mut tokenizer, &tokens, types.as_deref())?;
    let specials = Specials::of(content, tokens.len())?;
    tokenizer.with_post_processor(post_processor(&specials, &tokens)?);
    tracing::debug!(
        model = ?model,
        vocab = tokens.len(),
        added,
        add_bos = specials.add_bos,
        "tokenizer built from GGUF"
    );
    Ok(tokenizer)
}

/// What decoding does with one token, for incremental decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenText {
    /// Skipped by a decode with `skip_special_tokens` (control tokens).
    Special,
    /// A byte-fallback token (`<0xNN>`): the SentencePiece decoder turns a
    /// run of them into text as one UTF-8 sequence (all U+FFFD when it is
    /// invalid), so their text is final only once the run has ended.
    Byte,
    /// Anything else: its text does not depend on the tokens after it.
    Text,
}

/// How `tokenizer` decodes `id` (an unknown id is [`TokenText::Text`]: the
/// decode itself reports it).
pub fn token_text(tokenizer: &Tokenizer, id: u32) -> TokenText {
    let Some(token) = tokenizer.id_to_token(id) else {
        return TokenText::Text;
    };
    if tokenizer.get_added_vocabulary().is_special_token(&token) {
        TokenText::Special
    } else if is_byte_token(&token) {
        TokenText::Byte
    } else {
        TokenText::Text
    }
}

/// `<0xNN>`, the form of SentencePiece's byte tokens.
fn is_byte_token(token: &str) -> bool {
    token.len() == 6
        && token.starts_with("<0x")
        && token.ends_with('>')
        && token[3..5].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Registers the control and unknown tokens as special added tokens (parsed
/// out of the text, skipped when decoding with `skip_special_tokens`) and the
/// user-defined ones as plain added tokens (always parsed out of the raw
/// text, as llama.cpp does even without `parse_special`, and kept when
/// decoding). Returns how many were registered.
fn register_added_tokens(
    tokenizer: &mut Tokenizer,
    tokens: &[String],
    types: Option<&[i64]>,
) -> Result<usize, EngineError> {
    let Some(types) = types else {
        return Ok(0);
    };
    let of_type = |wanted: &'static [i64]| {
        tokens
            .iter()
            .zip(types)
            .filter(move |(_, ty)| wanted.contains(ty))
            .map(|(t, _)| t.clone())
    };
    let control: Vec<AddedToken> = of_type(&[TOKEN_TYPE_CONTROL, TOKEN_TYPE_UNKNOWN])
        .map(|t| AddedToken::from(t, true))
        .collect();
    // Matched on the raw text (Gemma's "  " is two real spaces, not "▁▁").
    let user: Vec<AddedToken> = of_type(&[TOKEN_TYPE_USER_DEFINED])
        .map(|t| AddedToken::from(t, false).normalized(false))
        .collect();
    let count = control.len() + user.len();
    let error = |e| EngineError::Gguf(format!("cannot register added tokens: {e}"));
    tokenizer.add_special_tokens(control).map_err(error)?;
    tokenizer.add_tokens(user).map_err(error)?;
    Ok(count)
}

/// The post-processor that adds BOS/EOS when encoding with special tokens;
/// `None` when the file adds neither.
fn post_processor(
    specials: &Specials,
    tokens: &[String],
) -> Result<Option<TemplateProcessing>, EngineError> {
    let error = |e: String| EngineError::Gguf(format!("BOS/EOS template: {e}"));
    let mut marks = Vec::new();
    let mut piece = |name: &str, id: Option<u32>, add: bool| -> Result<bool, EngineError> {
        let Some(id) = id.filter(|_| add) else {
            return Ok(false);
        };
        let text = tokens.get(id as usize).cloned().unwrap_or_default();
        // The template names the token by key, so its text may hold any
        // character (a `:` or a space would break the string form).
        let mark = SpecialToken::new(name.to_string(), vec![id], vec![text])
            .map_err(|e| error(e.to_string()))?;
        marks.push(mark);
        Ok(true)
    };
    let bos = piece("BOS", specials.bos, specials.add_bos)?;
    let eos = piece("EOS", specials.eos, specials.add_eos)?;
    if !bos && !eos {
        return Ok(None);
    }
    let sequence = |seq: &str| {
        let mut pieces = Vec::new();
        if bos {
            pieces.push("BOS".to_string());
        }
        pieces.push(seq.to_string());
        if eos {
            pieces.push("EOS".to_string());
        }
        pieces
    };
    let single = Template::try_from(sequence("$A")).map_err(error)?;
    let pair = Template::try_from([sequence("$A"), sequence("$B:1")].concat()).map_err(error)?;
    TemplateProcessing::builder()
        .single(single)
        .pair(pair)
        .special_tokens(marks)
        .build()
        .map(Some)
        .map_err(|e| error(e.to_string()))
}

/// A string metadata value; `None` when absent, an error when not a string.
pub(crate) fn string<'a>(content: &'a Content, key: &str) -> Result<Option<&'a str>, EngineError> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(EngineError::Gguf(format!(
            "metadata {key} is {:?}, expected a string",
            other.value_type()
        ))),
    }
}

/// An integer metadata value of any width; `None` when absent.
pub(crate) fn integer(content: &Content, key: &str) -> Result<Option<i64>, EngineError> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(v) => as_integer(v)
            .map(Some)
            .ok_or_else(|| EngineError::Gguf(format!("metadata {key} is not an integer"))),
    }
}

/// A boolean metadata value; `None` when absent.
fn boolean(content: &Content, key: &str) -> Result<Option<bool>, EngineError> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(EngineError::Gguf(format!(
            "metadata {key} is not a boolean"
        ))),
    }
}

fn as_integer(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => i64::from(*x),
        Value::I8(x) => i64::from(*x),
        Value::U16(x) => i64::from(*x),
        Value::I16(x) => i64::from(*x),
        Value::U32(x) => i64::from(*x),
        Value::I32(x) => i64::from(*x),
        Value::U64(x) => i64::try_from(*x).ok()?,
        Value::I64(x) => *x,
        _ => return None,
    })
}

fn array<'a>(content: &'a Content, key: &str) -> Result<Option<&'a Vec<Value>>, EngineError> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(EngineError::Gguf(format!("metadata {key} is not an array"))),
    }
}

fn string_array(content: &Content, key: &str) -> Result<Option<Vec<String>>, EngineError> {
    let Some(values) = array(content, key)? else {
        return Ok(None);
    };
    values
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(EngineError::Gguf(format!("{key} holds a non-string"))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `tokenizer.ggml.tokens`: the vocabulary, index = token id.
///
/// As in llama.cpp, an empty token becomes `[EMPTY_<id>]` and a duplicate is
/// an error (two ids for one text would make encoding ambiguous).
pub(crate) fn token_strings(content: &Content) -> Result<Vec<String>, EngineError> {
    let mut tokens = string_array(content, "tokenizer.ggml.tokens")?
        .ok_or_else(|| EngineError::Gguf("missing tokenizer.ggml.tokens".into()))?;
    if tokens.is_empty() {
        return Err(EngineError::Gguf("empty tokenizer.ggml.tokens".into()));
    }
    if u32::try_from(tokens.len()).is_err() {
        return Err(EngineError::Gguf(format!(
            "{} tokens do not fit 32-bit ids",
            tokens.len()
        )));
    }
    for (id, token) in tokens.iter_mut().enumerate() {
        if token.is_empty() {
            *token = format!("[EMPTY_{id}]");
        }
    }
    let mut seen = std::collections::HashMap::with_capacity(tokens.len());
    for (id, token) in tokens.iter().enumerate() {
        if let Some(first) = seen.insert(token.as_str(), id) {
            return Err(EngineError::Gguf(format!(
                "duplicate token {token:?} in the vocabulary (ids {first} and {id})"
            )));
        }
    }
    Ok(tokens)
}

/// `tokenizer.ggml.token_type`, when present; one per token or an error.
pub(crate) fn token_types(content: &Content) -> Result<Option<Vec<i64>>, EngineError> {
    let Some(values) = array(content, "tokenizer.ggml.token_type")? else {
        return Ok(None);
    };
    values
        .iter()
        .map(|v| {
            as_integer(v).ok_or_else(|| EngineError::Gguf("token_type holds a non-integer".into()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
