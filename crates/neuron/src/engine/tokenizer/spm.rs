//! SentencePiece BPE (`tokenizer.ggml.model = "llama"`): Llama 2, Mistral
//! ≤ v0.3, Gemma.
//!
//! The file holds tokens, scores and token types but no merges. llama.cpp's
//! SPM tokenizer starts from the characters of the text (spaces escaped to
//! `▁`), repeatedly merges the adjacent pair whose concatenation is a token
//! of the highest score, and writes a symbol that is no token as its bytes
//! (`<0xNN>`). A `tokenizers` BPE does the same given every split `(a, b)` of
//! every token `a + b` with `a` and `b` tokens, ranked by the score of `a + b`
//! (the way Hugging Face's SentencePiece converters derive merges), with
//! byte fallback. The rest is Hugging Face's `tokenizer.json` for these
//! models: spaces → `▁` (after a `▁` prefix when `add_space_prefix`), no
//! pre-tokenizer, and a `▁` → space, byte-fallback, fuse decoder.

use super::EngineError;
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{NormalizerWrapper, Tokenizer};

/// SentencePiece's escaped space.
const SPACE: &str = "\u{2581}";

/// The SentencePiece tokenizer, without added tokens or post-processor.
pub(super) fn tokenizer(content: &Content, tokens: &[String]) -> Result<Tokenizer, EngineError> {
    let scores = scores(content, tokens.len())?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), id as u32))
        .collect();
    let merges = merges(tokens, &scores, &vocab);
    // llama.cpp's default unknown token for SentencePiece is id 0.
    let unk = super::integer(content, "tokenizer.ggml.unknown_token_id")?
        .unwrap_or(0)
        .try_into()
        .ok()
        .and_then(|id: usize| tokens.get(id))
        .cloned();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder
        .build()
        .map_err(|e| EngineError::Gguf(format!("cannot build SentencePiece tokenizer: {e}")))?;

    // llama.cpp: SentencePiece vocabularies prefix a space unless told not to
    // (Gemma is told not to).
    let add_space_prefix =
        super::boolean(content, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
    let escape = |e| EngineError::Gguf(format!("SentencePiece normalizer: {e}"));
    let replace = Replace::new(" ", SPACE).map_err(escape)?;
    let normalizer: NormalizerWrapper = if add_space_prefix {
        NormalizerSequence::new(vec![Prepend::new(SPACE.into()).into(), replace.into()]).into()
    } else {
        replace.into()
    };
    let mut decoders = vec![
        Replace::new(SPACE, " ").map_err(escape)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        // The prefixed space is not part of the text.
        decoders.push(Strip::new(' ', 1, 0).into());
    }

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(escape)?;
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

/// `tokenizer.ggml.scores` (f32 or i32, one per token); all zero when absent,
/// as in llama.cpp.
fn scores(content: &Content, n_tokens: usize) -> Result<Vec<f32>, EngineError> {
    let Some(values) = super::array(content, "tokenizer.ggml.scores")? else {
        return Ok(vec![0.0; n_tokens]);
    };
    if values.len() < n_tokens {
        return Err(EngineError::Gguf(format!(
            "{} scores for {n_tokens} tokens",
            values.len()
        )));
    }
    values[..n_tokens]
        .iter()
        .map(|v| match v {
            Value::F32(s) => Ok(*s),
            Value::I32(s) => Ok(*s as f32),
            _ => Err(EngineError::Gguf(
                "tokenizer.ggml.scores holds a non-number".into(),
            )),
        })
        .collect()
}

/// Every split `(a, b)` of every token `a + b` where `a` and `b` are tokens,
/// highest score of `a + b` first; ties by the ids of `a + b`, `a`, `b`.
///
/// llama.cpp considers the same pairs: a bigram is merged when its
/// concatenation is in the vocabulary, best score first. Where two pairs of
/// equal score overlap, llama.cpp merges the leftmost and this order the one
/// of lower ids; that needs two tokens of one score (Gemma's and Llama 2's
/// ordinary tokens all have distinct scores) or one text reachable by two
/// splits at once. `spm_tests` checks the rest against a port of llama.cpp's
/// algorithm.
fn merges(tokens: &[String], scores: &[f32], vocab: &Vocab) -> Vec<(String, String)> {
    // (rank of the score, id of a + b, id of a, id of b): sorting the tuples
    // sorts the merges.
    let mut found: Vec<(u32, u32, u32, u32)> = Vec::with_capacity(tokens.len() * 2);
    for ((id, text), score) in tokens.iter().enumerate().zip(scores) {
        let rank = descending(*score);
        for (split, _) in text.char_indices().skip(1) {
            let Some(&left) = vocab.get(&text[..split]) else {
                continue;
            };
            if let Some(&right) = vocab.get(&text[split..]) {
                found.push((rank, id as u32, left, right));
            }
        }
    }
    found.sort_unstable();
    found
        .into_iter()
        .map(|(_, _, left, right)| {
            (
                tokens[left as usize].clone(),
                tokens[right as usize].clone(),
            )
        })
        .collect()
}

/// A key that sorts scores from the highest down (IEEE total order, so a
/// NaN score cannot break the sort).
fn descending(score: f32) -> u32 {
    let bits = score.to_bits();
    let ascending = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    };
    !ascending
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "spm_tests.rs"]
mod tests;
