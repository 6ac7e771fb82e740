//! The tokenizer, rebuilt from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! Owns the recipe that agrees with llama.cpp (see `ENGINE-NOTES.md`): a
//! `tokenizers` BPE from `tokens` + `merges`, a `Digits(individual)` then
//! `ByteLevel(add_prefix_space = false)` pre-tokenizer for llama.cpp's
//! `smollm` pre-type, a `ByteLevel` decoder, and every control (3) or
//! user-defined (4) token registered as a special added token. candle's
//! `TokenizerFromGguf` is deliberately not used: it disagrees with llama.cpp.
//! Only byte-level BPE (`tokenizer.ggml.model = "gpt2"`) is supported.

use super::EngineError;
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// GGUF token type of control tokens (`<|im_start|>`).
const TOKEN_TYPE_CONTROL: i64 = 3;
/// GGUF token type of user-defined tokens.
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// llama.cpp's `LLAMA3` pre-tokenizer regex (also used by `smaug-bpe`).
const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Builds the tokenizer of a GGUF file from its metadata.
///
/// Fails with [`EngineError::Unsupported`] for tokenizer models other than
/// byte-level BPE, and [`EngineError::Gguf`] when the vocabulary is malformed.
pub fn from_gguf(content: &Content) -> Result<Tokenizer, EngineError> {
    let model = string(content, "tokenizer.ggml.model")?.unwrap_or("gpt2");
    if model != "gpt2" {
        return Err(EngineError::Unsupported(format!(
            "tokenizer model {model:?} (only byte-level BPE \"gpt2\" is supported)"
        )));
    }
    let tokens = token_strings(content)?;
    let merges = merges(content)?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), id as u32))
        .collect();
    let pre = string(content, "tokenizer.ggml.pre")?.unwrap_or("default");
    let ignore_merges = matches!(pre, "llama-bpe" | "llama3" | "smaug-bpe");
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| EngineError::Gguf(format!("cannot build BPE tokenizer: {e}")))?;

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    let specials: Vec<AddedToken> = match token_types(content)? {
        Some(types) => tokens
            .iter()
            .zip(types)
            .filter(|(_, ty)| matches!(*ty, TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED))
            .map(|(t, _)| AddedToken::from(t.clone(), true))
            .collect(),
        None => Vec::new(),
    };
    let special_count = specials.len();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| EngineError::Gguf(format!("cannot register special tokens: {e}")))?;
    tracing::debug!(
        vocab = tokens.len(),
        specials = special_count,
        pre,
        "tokenizer built from GGUF"
    );
    Ok(tokenizer)
}

/// The pre-tokenizer for llama.cpp's `tokenizer.ggml.pre` value.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper, EngineError> {
    let byte_level = ByteLevel::new(false, true, true);
    Ok(match pre {
        // llama.cpp splits digits individually before the GPT-2 regex.
        "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        "llama-bpe" | "llama3" | "smaug-bpe" => {
            let split = Split::new(
                SplitPattern::Regex(REGEX_LLAMA3.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| EngineError::Gguf(format!("pre-tokenizer regex: {e}")))?;
            Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into()
        }
        "default" | "gpt2" | "gpt-2" => byte_level.into(),
        other => {
            tracing::warn!(
                pre = other,
                "unknown tokenizer pre-type; using the GPT-2 byte-level split (tokens may differ from llama.cpp)"
            );
            byte_level.into()
        }
    })
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
pub(crate) fn token_strings(content: &Content) -> Result<Vec<String>, EngineError> {
    let tokens = string_array(content, "tokenizer.ggml.tokens")?
        .ok_or_else(|| EngineError::Gguf("missing tokenizer.ggml.tokens".into()))?;
    if tokens.is_empty() {
        return Err(EngineError::Gguf("empty tokenizer.ggml.tokens".into()));
    }
    Ok(tokens)
}

/// `tokenizer.ggml.token_type`, when present.
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

/// `tokenizer.ggml.merges`, each split on its first space.
fn merges(content: &Content) -> Result<Vec<(String, String)>, EngineError> {
    string_array(content, "tokenizer.ggml.merges")?
        .ok_or_else(|| EngineError::Gguf("missing tokenizer.ggml.merges".into()))?
        .into_iter()
        .map(|m| match m.split_once(' ') {
            Some((a, b)) => Ok((a.to_string(), b.to_string())),
            None => Err(EngineError::Gguf(format!("invalid merge {m:?}"))),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::engine::test_model;

    // Expected ids come from llama.cpp, the reference implementation: the npm
    // package node-llama-cpp 3.21.1 (prebuilt llama.cpp for linux-x64),
    // `model.tokenize(text, true)` (special tokens parsed, no BOS added — the
    // file says add_bos_token = false) on SmolLM2-135M-Instruct.Q4_1.gguf:
    //   cd /tmp && npm install node-llama-cpp@3.21
    //   const llama = await getLlama({gpu: false, build: "never"});
    //   const model = await llama.loadModel({modelPath});
    //   console.log(Array.from(model.tokenize(s, true)));
    const CHAT_PROMPT: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n";
    const EXPECTED: &[(&str, &[u32])] = &[
        ("Hello world", &[19556, 905]),
        ("Hello, world!", &[19556, 28, 905, 17]),
        ("naïve café", &[3546, 46494, 37366]),
        ("I ❤️ 🦀", &[57, 4636, 247, 114, 31752, 15107, 116, 218]),
        (
            "你好，世界",
            &[18645, 250, 48392, 138, 12831, 7906, 240, 178, 239, 230],
        ),
        (
            "a\tb\t\tc    d  e\n\n  f",
            &[81, 197, 82, 197, 197, 83, 333, 287, 216, 297, 8866, 275],
        ),
        (
            "12345 and 3.14159",
            &[33, 34, 35, 36, 37, 284, 216, 35, 30, 33, 36, 33, 37, 41],
        ),
        ("I'm can't we'll", &[57, 5248, 416, 982, 392, 3060]),
        (
            "<|im_start|>user\nHi<|im_end|>\n",
            &[1, 4093, 198, 26843, 2, 198],
        ),
        (
            CHAT_PROMPT,
            &[
                1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018,
                411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47,
                19842, 281, 582, 6330, 30, 2, 198, 1, 520, 9531, 198,
            ],
        ),
        (
            "  leading spaces and trailing  ",
            &[216, 2899, 5600, 284, 35079, 256],
        ),
        (
            "Ünïcödé — “quotes” … ½",
            &[
                142, 246, 94, 25972, 83, 7466, 84, 2756, 1841, 619, 385, 2346, 573, 5548, 216,
                16738,
            ],
        ),
        (
            "fn main() {\n    println!(\"hi\");\n}",
            &[
                7853, 1085, 1000, 1662, 472, 1628, 34115, 17, 1470, 6004, 21646, 198, 109,
            ],
        ),
    ];

    #[test]
    fn token_ids_match_llama_cpp() {
        let Some(w) = test_model::weights() else {
            return;
        };
        let mut failures = Vec::new();
        for (text, expected) in EXPECTED {
            let ids = w.assets.encode(text).unwrap();
            if ids != *expected {
                failures.push(format!("{text:?}: got {ids:?}, llama.cpp {expected:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn decode_round_trips() {
        let Some(w) = test_model::weights() else {
            return;
        };
        for (text, _) in EXPECTED {
            let ids = w.assets.encode(text).unwrap();
            let full = w.assets.tokenizer.decode(&ids, false).unwrap();
            assert_eq!(full, *text);
            if !text.contains("<|") {
                assert_eq!(w.assets.decode(&ids).unwrap(), *text);
            }
        }
        // Special tokens are skipped by ModelAssets::decode.
        let ids = w.assets.encode("<|im_start|>user\nHi<|im_end|>\n").unwrap();
        assert_eq!(w.assets.decode(&ids).unwrap(), "user\nHi\n");
    }

    #[test]
    fn special_tokens_are_registered() {
        let Some(w) = test_model::weights() else {
            return;
        };
        let t = &w.assets.tokenizer;
        assert_eq!(t.token_to_id("<|im_start|>"), Some(1));
        assert_eq!(t.token_to_id("<|im_end|>"), Some(2));
        assert_eq!(t.token_to_id("<|endoftext|>"), Some(0));
        assert_eq!(t.get_vocab_size(true), 49152);
    }
}
