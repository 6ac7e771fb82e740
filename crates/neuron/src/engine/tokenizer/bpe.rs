//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`): SmolLM2, Llama 3, Qwen.
//!
//! Owns the recipe that agrees with llama.cpp (see `ENGINE-NOTES.md`): a
//! `tokenizers` BPE from `tokens` + `merges` (each split on its first
//! space), the pre-tokenizer of llama.cpp's `tokenizer.ggml.pre` type
//! (`smollm`: `Digits(individual)` then `ByteLevel(add_prefix_space =
//! false)`), and a `ByteLevel` decoder.

use super::{string_array, EngineError};
use candle_core::quantized::gguf_file::Content;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{SplitDelimiterBehavior, Tokenizer};

/// llama.cpp's `LLAMA3` pre-tokenizer regex (also used by `smaug-bpe`).
const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The byte-level BPE tokenizer, without added tokens or post-processor.
pub(super) fn tokenizer(content: &Content, tokens: &[String]) -> Result<Tokenizer, EngineError> {
    let merges = merges(content)?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), id as u32))
        .collect();
    let pre = super::string(content, "tokenizer.ggml.pre")?.unwrap_or("default");
    let ignore_merges = matches!(pre, "llama-bpe" | "llama3" | "smaug-bpe");
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| EngineError::Gguf(format!("cannot build BPE tokenizer: {e}")))?;

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
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
