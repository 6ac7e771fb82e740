//! Embedding models: a Hugging Face model directory (`config.json`,
//! `model.safetensors`, `tokenizer.json`, as sentence-transformers saves
//! it) loaded into our own [`bert::Bert`] encoder, and the sentence
//! embedding of a batch of token sequences (mean pooling over real tokens,
//! L2 normalisation — what sentence-transformers' `all-MiniLM-L6-v2`
//! declares in its `modules.json`).
//!
//! Owns: recognising a model directory ([`is_model_dir`]), what it takes
//! ([`inspect`]), loading it ([`load`]), its CPU-side half ([`EmbedAssets`]:
//! the tokenizer and the sizes async handlers check requests against), and
//! [`EmbedModel::embed`]. Not threads or HTTP: the device worker runs
//! `embed` on its thread; the API tokenizes and answers.

pub mod bert;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::EngineError;
use bert::{Bert, BertConfig};

/// The files a model directory holds.
pub const CONFIG_FILE: &str = "config.json";
/// The weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The tokenizer.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Working memory an embedding model reserves beside its weights (counted
/// in its footprint like a chat model's KV reserve): the activations of one
/// forward pass. A request of many or long inputs runs as several passes,
/// each cut to fit (see [`EmbedModel::pass_bytes`]).
pub const WORK_BYTES: u64 = 96 << 20;

/// The directory holding the model that `path` names: the directory itself,
/// or the parent of its `model.safetensors`.
pub fn model_dir(path: &Path) -> Option<PathBuf> {
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else if path.file_name().is_some_and(|n| n == WEIGHTS_FILE) {
        path.parent()?.to_path_buf()
    } else {
        return None;
    };
    is_model_dir(&dir).then_some(dir)
}

/// Whether `dir` holds a model's config, weights and tokenizer.
pub fn is_model_dir(dir: &Path) -> bool {
    [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE]
        .iter()
        .all(|f| dir.join(f).is_file())
}

/// What a model directory takes once loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Bytes of the weights as loaded (f32: the safetensors' size).
    pub weights_bytes: u64,
    /// Width of an embedding.
    pub dims: usize,
    /// Positions the encoder reads (its longest input).
    pub max_positions: usize,
}

fn read(dir: &Path, file: &str) -> Result<String, EngineError> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).map_err(|source| EngineError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads the config and the safetensors header of the model at `path`
/// (no weights).
pub fn inspect(path: &Path) -> Result<Summary, EngineError> {
    let dir = model_dir(path).ok_or_else(|| {
        EngineError::Files(format!("{} is not a model directory", path.display()))
    })?;
    let config = BertConfig::parse(&read(&dir, CONFIG_FILE)?)?;
    Ok(Summary {
        weights_bytes: f32_bytes(&dir.join(WEIGHTS_FILE))?,
        dims: config.hidden_size,
        max_positions: config.max_position_embeddings,
    })
}

/// What the tensors of a safetensors file take as f32 (how [`load`] keeps
/// them), from its header alone: an 8-byte little-endian length, then the
/// JSON that the `safetensors` crate parses and checks. (Its own reader
/// wants the whole file in memory, mapped — `unsafe`, which this crate
/// keeps to its kernels — or read: 91 MB to list one model.)
fn f32_bytes(path: &Path) -> Result<u64, EngineError> {
    use std::io::Read;
    let bad = |why: String| EngineError::Files(format!("{WEIGHTS_FILE}: {why}"));
    let io = |source| EngineError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io)?;
    let len = u64::from_le_bytes(len);
    // The format caps the header at 100 MB.
    if len > 100_000_000 {
        return Err(bad(format!("a header of {len} bytes")));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).map_err(io)?;
    let header: safetensors::tensor::Metadata =
        serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    let mut total = 0u64;
    for (name, info) in header.tensors() {
        let elems = info
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| bad(format!("tensor {name} has a bad shape")))?;
        total = total.saturating_add(elems.saturating_mul(4));
    }
    Ok(total)
}

/// The CPU-side half of an embedding model, shared by async handlers.
pub struct EmbedAssets {
    /// `tokenizer.json`, with its padding and truncation switched off (the
    /// API counts and refuses over-long inputs; the encoder pads a batch).
    pub tokenizer: tokenizers::Tokenizer,
    /// The same tokenizer cutting each input to `max_positions` tokens (its
    /// start, special tokens included), for requests that ask to truncate.
    truncating: tokenizers::Tokenizer,
    /// Width of an embedding.
    pub dims: usize,
    /// Positions the model supports (`max_position_embeddings`).
    pub max_positions: usize,
    /// Tokens in the vocabulary.
    pub vocab: usize,
}

impl EmbedAssets {
    /// Token ids of `text`, with the model's special tokens (`[CLS]` …
    /// `[SEP]`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        ids(&self.tokenizer, text)
    }

    /// [`EmbedAssets::encode`], keeping only as much of the start of `text`
    /// as fits the model's positions (the special tokens stay).
    pub fn encode_truncated(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        ids(&self.truncating, text)
    }
}

/// `text`'s token ids from `tokenizer`, special tokens added.
fn ids(tokenizer: &tokenizers::Tokenizer, text: &str) -> Result<Vec<u32>, EngineError> {
    let e = tokenizer
        .encode(text, true)
        .map_err(|e| EngineError::Tokenize(e.to_string()))?;
    Ok(e.get_ids().to_vec())
}

impl std::fmt::Debug for EmbedAssets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedAssets")
            .field("dims", &self.dims)
            .field("max_positions", &self.max_positions)
            .finish_non_exhaustive()
    }
}

/// A loaded embedding model, owned by its device worker.
pub struct EmbedModel {
    bert: Bert,
    /// Tokenizer and sizes.
    pub assets: Arc<EmbedAssets>,
    /// Bytes of the weights on the device.
    pub weights_bytes: u64,
    device: Device,
}

impl std::fmt::Debug for EmbedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedModel")
            .field("config", self.bert.config())
            .field("weights_bytes", &self.weights_bytes)
            .field("device", &self.device)
            .finish()
    }
}

/// Loads the model directory `path` (or its `model.safetensors`) onto
/// `device`.
pub fn load(path: &Path, device: &Device) -> Result<EmbedModel, EngineError> {
    let dir = model_dir(path).ok_or_else(|| {
        EngineError::Files(format!("{} is not a model directory", path.display()))
    })?;
    let config = BertConfig::parse(&read(&dir, CONFIG_FILE)?)?;
    let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join(TOKENIZER_FILE))
        .map_err(|e| EngineError::Files(format!("{TOKENIZER_FILE}: {e}")))?;
    tokenizer
        .with_truncation(None)
        .map_err(|e| EngineError::Files(format!("{TOKENIZER_FILE}: {e}")))?;
    tokenizer.with_padding(None);
    let mut truncating = tokenizer.clone();
    truncating
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length: config.max_position_embeddings,
            ..Default::default()
        }))
        .map_err(|e| EngineError::Files(format!("{TOKENIZER_FILE}: {e}")))?;
    let tensors = candle_core::safetensors::load(dir.join(WEIGHTS_FILE), &Device::Cpu)
        .map_err(|e| EngineError::Files(format!("{WEIGHTS_FILE}: {e}")))?;
    let weights_bytes = tensors
        .values()
        .map(|t| (t.elem_count() * DType::F32.size_in_bytes()) as u64)
        .sum();
    let assets = Arc::new(EmbedAssets {
        tokenizer,
        truncating,
        dims: config.hidden_size,
        max_positions: config.max_position_embeddings,
        vocab: config.vocab_size,
    });
    let bert = Bert::new(config, tensors, device)?;
    Ok(EmbedModel {
        bert,
        assets,
        weights_bytes,
        device: device.clone(),
    })
}

impl EmbedModel {
    /// The unit-length sentence embedding of each token sequence, in order.
    ///
    /// Sequences run in passes of similar length (sorted, then cut where a
    /// pass would need more than [`WORK_BYTES`]); each pass pads to its longest
    /// sequence under an attention mask, so an input's vector does not
    /// depend on its neighbours (beyond float rounding).
    pub fn embed(&self, inputs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EngineError> {
        let max = self.assets.max_positions;
        for ids in inputs {
            if ids.is_empty() {
                return Err(EngineError::EmptyPrompt);
            }
            if ids.len() > max {
                return Err(EngineError::ContextOverflow {
                    needed: ids.len(),
                    max,
                });
            }
            if let Some(t) = ids.iter().find(|t| **t as usize >= self.assets.vocab) {
                return Err(EngineError::Batch(format!(
                    "token id {t} is outside the vocabulary of {}",
                    self.assets.vocab
                )));
            }
        }
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| inputs[i].len());
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); inputs.len()];
        let mut start = 0;
        while start < order.len() {
            // Sorted by length: the pass's last row is its longest.
            let mut end = start + 1;
            while end < order.len()
                && self.pass_bytes(end + 1 - start, inputs[order[end]].len()) <= WORK_BYTES
            {
                end += 1;
            }
            let rows: Vec<&[u32]> = order[start..end]
                .iter()
                .map(|&i| inputs[i].as_slice())
                .collect();
            let vectors = self.pass(&rows).map_err(|e| match e {
                EngineError::NanEmbedding(row) => EngineError::NanEmbedding(order[start + row]),
                other => other,
            })?;
            for (&i, v) in order[start..end].iter().zip(vectors) {
                out[i] = v;
            }
            start = end;
        }
        Ok(out)
    }

    /// The largest activations of a pass of `rows` inputs padded to `len`
    /// tokens, in f32 bytes: per token the residual stream, Q, K, V and the
    /// feed-forward's two intermediates; per head the scores, scaled and
    /// softmaxed (three `len × len` tensors alive at once).
    pub fn pass_bytes(&self, rows: usize, len: usize) -> u64 {
        let c = self.bert.config();
        let per_token = 4 * c.hidden_size + 2 * c.intermediate_size;
        let scores = 3 * c.num_attention_heads * len * len;
        (4 * rows * (len * per_token + scores)) as u64
    }

    /// One padded forward pass over `rows`.
    fn pass(&self, rows: &[&[u32]]) -> Result<Vec<Vec<f32>>, EngineError> {
        let len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * len);
        let mut mask = Vec::with_capacity(rows.len() * len);
        for r in rows {
            ids.extend_from_slice(r);
            ids.extend(std::iter::repeat_n(0u32, len - r.len()));
            mask.extend(std::iter::repeat_n(1f32, r.len()));
            mask.extend(std::iter::repeat_n(0f32, len - r.len()));
        }
        let ids = Tensor::from_vec(ids, (rows.len(), len), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows.len(), len), &self.device)?;
        let hidden = self.bert.forward(&ids, &mask)?;
        let pooled = bert::mean_pool_normalized(&hidden, &mask)?;
        let v = pooled.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
        match v.iter().position(|e| e.iter().any(|x| !x.is_finite())) {
            Some(row) => Err(EngineError::NanEmbedding(row)),
            None => Ok(v),
        }
    }
}

#[cfg(test)]
mod tests;
