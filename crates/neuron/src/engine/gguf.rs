//! GGUF files: the cheap header read ([`inspect`]) and the full load
//! ([`load`]) of a llama-family model into [`LoadedWeights`].
//!
//! Owns the checks on what the engine can run (architecture, tokenizer model)
//! and the estimate of the memory the weights take. It does not own threads:
//! [`load`] runs on whatever thread calls it (a device worker).

use super::{
    template::{self, ChatTemplate},
    tokenizer, Device, EngineError, LoadedWeights, ModelAssets, ModelMeta,
};
use candle_core::quantized::{gguf_file::Content, GgmlDType};
use candle_transformers::models::quantized_llama::ModelWeights;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Architectures candle's `quantized_llama` can run (it reads `llama.*` keys).
const SUPPORTED_ARCHITECTURES: &[&str] = &["llama"];

/// Token texts that end a turn, as llama.cpp's end-of-generation list.
const EOG_TEXTS: &[&str] = &[
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|end_of_text|>",
];

/// The token embedding tensor, which `quantized_llama` dequantizes to f32.
const TOKEN_EMBD: &str = "token_embd.weight";

/// What [`inspect`] learns from a GGUF header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufSummary {
    /// The model's metadata.
    pub meta: ModelMeta,
    /// Size of the file in bytes.
    pub file_size: u64,
    /// Estimated memory the weights take once loaded (same as [`load`]'s).
    pub weights_bytes: u64,
}

/// Reads the header of a GGUF file (metadata and tensor table, no weights).
///
/// [`EngineError::Gguf`] for a file that is not GGUF, and
/// [`EngineError::Unsupported`] for a model [`load`] would refuse.
pub fn inspect(path: &Path) -> Result<GgufSummary, EngineError> {
    let (mut file, file_size) = open(path)?;
    let content = read_header(&mut file)?;
    let meta = meta(&content)?;
    Ok(GgufSummary {
        meta,
        file_size,
        weights_bytes: weights_bytes(&content),
    })
}

/// Loads a llama-family GGUF model onto `device`: metadata, tokenizer, chat
/// template and weights. Runs on a device-worker thread.
pub fn load(path: &Path, device: &Device) -> Result<LoadedWeights, EngineError> {
    let started = Instant::now();
    let (mut file, file_size) = open(path)?;
    let content = read_header(&mut file)?;
    let meta = meta(&content)?;
    let weights_bytes = weights_bytes(&content);
    let assets = assets(&content, meta)?;
    let assets_done = started.elapsed();
    let base = ModelWeights::from_gguf(content, &mut file, device)?;
    tracing::info!(
        path = %path.display(),
        architecture = %assets.meta.architecture,
        file_size,
        weights_bytes,
        assets_ms = assets_done.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    Ok(LoadedWeights {
        base,
        assets: Arc::new(assets),
        weights_bytes,
        device: device.clone(),
    })
}

/// The CPU-side half of a model from its header: metadata, tokenizer and
/// chat template (the file's, or the built-in one for its architecture).
fn assets(content: &Content, meta: ModelMeta) -> Result<ModelAssets, EngineError> {
    let tokenizer = tokenizer::from_gguf(content)?;
    let source = tokenizer::string(content, "tokenizer.chat_template")?
        .or_else(|| template::builtin_for(&meta.architecture));
    let template = ChatTemplate::new(source, meta.bos_token.as_deref(), meta.eos_token.as_deref())?;
    Ok(ModelAssets {
        meta,
        tokenizer,
        template,
    })
}

/// [`ModelAssets`] from a file's header alone, whatever its architecture:
/// tokenizer tests of models whose forward pass may not exist yet.
#[cfg(test)]
pub(crate) fn assets_of(path: &Path) -> Result<ModelAssets, EngineError> {
    let (mut file, _) = open(path)?;
    let content = read_header(&mut file)?;
    let meta = describe(&content)?;
    assets(&content, meta)
}

fn open(path: &Path) -> Result<(File, u64), EngineError> {
    let io = |source| EngineError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    Ok((file, size))
}

fn read_header(file: &mut File) -> Result<Content, EngineError> {
    Content::read(file).map_err(|e| EngineError::Gguf(e.to_string()))
}

/// Builds [`ModelMeta`] and refuses what the engine cannot run.
fn meta(content: &Content) -> Result<ModelMeta, EngineError> {
    let meta = describe(content)?;
    if !SUPPORTED_ARCHITECTURES.contains(&meta.architecture.as_str()) {
        return Err(EngineError::Unsupported(format!(
            "architecture {:?} (supported: {})",
            meta.architecture,
            SUPPORTED_ARCHITECTURES.join(", ")
        )));
    }
    Ok(meta)
}

/// Reads [`ModelMeta`]; refuses tokenizers the engine cannot build, not
/// architectures.
fn describe(content: &Content) -> Result<ModelMeta, EngineError> {
    let architecture = tokenizer::string(content, "general.architecture")?
        .ok_or_else(|| EngineError::Gguf("missing general.architecture".into()))?
        .to_string();
    tokenizer::TokenizerModel::of(content)?;
    let context_key = format!("{architecture}.context_length");
    let context_length = match tokenizer::integer(content, &context_key)? {
        Some(n) if n > 0 => usize::try_from(n)
            .map_err(|_| EngineError::Gguf(format!("{context_key} = {n} out of range")))?,
        Some(n) => return Err(EngineError::Gguf(format!("{context_key} = {n}"))),
        None => {
            let fallback = candle_transformers::models::quantized_llama::MAX_SEQ_LEN;
            tracing::warn!(key = %context_key, fallback, "context length missing from GGUF");
            fallback
        }
    };
    let tokens = tokenizer::token_strings(content)?;
    let specials = tokenizer::Specials::of(content, tokens.len())?;
    let token_id = |key: &str| -> Result<Option<u32>, EngineError> {
        match tokenizer::integer(content, key)? {
            None => Ok(None),
            Some(id) if id >= 0 && (id as usize) < tokens.len() => Ok(Some(id as u32)),
            Some(id) => Err(EngineError::Gguf(format!(
                "{key} = {id} is outside the vocabulary of {}",
                tokens.len()
            ))),
        }
    };
    let mut eos_token_ids: Vec<u32> = [
        specials.eos,
        token_id("tokenizer.ggml.eot_token_id")?,
        token_id("tokenizer.ggml.eom_token_id")?,
    ]
    .into_iter()
    .flatten()
    .collect();
    let types = tokenizer::token_types(content)?;
    for (id, text) in tokens.iter().enumerate() {
        let is_control = types
            .as_ref()
            .and_then(|t| t.get(id))
            .is_none_or(|ty| *ty == 3);
        if is_control && EOG_TEXTS.contains(&text.as_str()) {
            eos_token_ids.push(id as u32);
        }
    }
    eos_token_ids.sort_unstable();
    eos_token_ids.dedup();
    let text_of = |id: Option<u32>| id.and_then(|id| tokens.get(id as usize)).cloned();
    Ok(ModelMeta {
        name: tokenizer::string(content, "general.name")?.map(str::to_string),
        context_length,
        bos_token: text_of(specials.bos),
        eos_token: text_of(specials.eos),
        add_bos_token: specials.add_bos,
        add_eos_token: specials.add_eos,
        eos_token_ids,
        vocab_size: tokens.len(),
        architecture,
    })
}

/// Estimated memory of the loaded weights.
///
/// Quantized tensors stay as they are in the file; f16/bf16/f32 tensors are
/// held as f32 by `quantized_llama`; the token embedding is additionally
/// dequantized to f32, and its quantized copy is only kept when it doubles as
/// the output projection (no `output.weight`).
fn weights_bytes(content: &Content) -> u64 {
    let tied = !content.tensor_infos.contains_key("output.weight");
    content
        .tensor_infos
        .iter()
        .map(|(name, info)| {
            let elems = info.shape.elem_count() as u64;
            let stored = match info.ggml_dtype {
                GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => elems * 4,
                dtype => elems / dtype.block_size() as u64 * dtype.type_size() as u64,
            };
            if name == TOKEN_EMBD {
                elems * 4 + if tied { stored } else { 0 }
            } else {
                stored
            }
        })
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::test_model;
    use candle_core::quantized::gguf_file::Value;
    use std::io::Write;

    #[test]
    fn garbage_is_a_gguf_error() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"this is not a gguf file at all, just some bytes\x00\x01\x02")
            .unwrap();
        let err = inspect(f.path()).unwrap_err();
        assert!(matches!(err, EngineError::Gguf(_)), "{err:?}");
        let err = load(f.path(), &Device::Cpu).unwrap_err();
        assert!(matches!(err, EngineError::Gguf(_)), "{err:?}");
    }

    #[test]
    fn truncated_header_is_a_gguf_error() {
        // A valid magic and version followed by absurd counts.
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"GGUF\x03\x00\x00\x00").unwrap();
        f.write_all(&u64::MAX.to_le_bytes()).unwrap();
        f.write_all(&u64::MAX.to_le_bytes()).unwrap();
        let err = inspect(f.path()).unwrap_err();
        assert!(matches!(err, EngineError::Gguf(_)), "{err:?}");
    }

    /// A GGUF file holding `metadata` and no tensors.
    fn header_file(metadata: &[(&str, Value)]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        candle_core::quantized::gguf_file::write(f.as_file_mut(), &refs, &[]).unwrap();
        f
    }

    #[test]
    fn tokenizer_models_checked_and_sentencepiece_defaults() {
        let tokens = ["<unk>", "<s>", "</s>", "a"].map(|t| Value::String(t.into()));
        let file = |model: &str| {
            header_file(&[
                ("general.architecture", Value::String("llama".into())),
                ("llama.context_length", Value::U32(128)),
                ("tokenizer.ggml.model", Value::String(model.into())),
                ("tokenizer.ggml.tokens", Value::Array(tokens.to_vec())),
            ])
        };
        let err = inspect(file("t5").path()).unwrap_err();
        assert!(
            matches!(&err, EngineError::Unsupported(text) if text.contains("\"t5\"")),
            "{err:?}"
        );
        // SentencePiece without ids or flags: llama.cpp's BOS 1, EOS 2, BOS
        // added.
        let meta = inspect(file("llama").path()).unwrap().meta;
        assert_eq!(meta.bos_token.as_deref(), Some("<s>"));
        assert_eq!(meta.eos_token.as_deref(), Some("</s>"));
        assert!(meta.add_bos_token && !meta.add_eos_token);
        assert_eq!(meta.eos_token_ids, vec![2]);
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let err = inspect(Path::new("/nonexistent/model.gguf")).unwrap_err();
        assert!(matches!(err, EngineError::Io { .. }), "{err:?}");
        assert!(err.chain().contains("/nonexistent/model.gguf"));
    }

    #[test]
    fn inspect_real_file() {
        let Some(path) = test_model::path() else {
            return;
        };
        let s = inspect(&path).unwrap();
        assert_eq!(s.meta.architecture, "llama");
        assert_eq!(s.meta.context_length, 8192);
        assert_eq!(s.meta.max_positions(), 4096);
        assert_eq!(s.meta.vocab_size, 49152);
        assert_eq!(s.meta.bos_token.as_deref(), Some("<|im_start|>"));
        assert_eq!(s.meta.eos_token.as_deref(), Some("<|im_end|>"));
        // <|endoftext|> and <|im_end|>.
        assert_eq!(s.meta.eos_token_ids, vec![0, 2]);
        assert_eq!(s.file_size, 98_362_432);
        // Quantized weights (~96 MB) plus the f32 token embedding (~113 MB).
        assert!(
            (150_000_000..300_000_000).contains(&s.weights_bytes),
            "weights_bytes = {}",
            s.weights_bytes
        );
        let w = test_model::weights().unwrap();
        assert_eq!(w.weights_bytes, s.weights_bytes);
        assert_eq!(w.assets.meta, s.meta);
        assert!(w.assets.is_eos(2) && !w.assets.is_eos(1));
    }
}
