//! The model seam: a [`Model`] turns a [`BatchInput`] into logits, reading
//! and writing the engine's [`KvCache`]; [`load`] builds the right one from a
//! GGUF file's `general.architecture`.
//!
//! One file per family: [`llama`] (SmolLM2, Llama 2/3.x, Mistral) and
//! [`gemma3`]. A new family (qwen2, qwen3, …) is one more file using the
//! shared blocks of `engine::layers`, [`Weights`] and [`Inputs`], and one
//! more arm in [`load`]. Models hold weights only: no KV, no sequence
//! state, so one instance serves every sequence of a batch.

pub mod gemma3;
pub mod llama;

use std::io::{Read, Seek};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use super::attention::{AttentionPlan, Backend};
use super::batch::BatchInput;
use super::kv::{self, KvCache};
use super::layers::{QLinear, RmsNorm, TokenEmbedding};
use super::EngineError;

/// Architectures [`load`] can build.
pub const ARCHITECTURES: &[&str] = &["llama", "gemma3"];

/// What the scheduler and the KV pool need to know about a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// `general.architecture`.
    pub architecture: String,
    /// Transformer layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Rows of the logits.
    pub vocab: usize,
    /// Positions the model supports (`<arch>.context_length`).
    pub context_length: usize,
}

impl ModelConfig {
    /// Width of one K (or V) row of the cache.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// A loaded model: weights and a forward pass over a batch.
///
/// `Send + Sync`, owned by its device worker. `forward` writes the batch's
/// new K/V rows into `kv` (at the slots of each chunk's block table) and
/// returns f32 logits `[batch.logit_rows.len(), vocab]`, in that order.
pub trait Model: Send + Sync {
    /// The model's shape.
    fn config(&self) -> &ModelConfig;

    /// One forward pass over `batch`.
    fn forward(&self, batch: &BatchInput, kv: &KvCache) -> Result<Tensor, EngineError>;
}

impl std::fmt::Debug for dyn Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", self.config())
            .finish()
    }
}

/// Builds the model of a GGUF file on `device`, dispatching on
/// `general.architecture`; `backend` picks the attention implementation.
pub fn load<R: Read + Seek>(
    content: &Content,
    reader: &mut R,
    device: &Device,
    backend: Backend,
) -> Result<Box<dyn Model>, EngineError> {
    let md = Metadata::new(content, "general");
    let arch = md.architecture()?;
    match arch.as_str() {
        "llama" => Ok(Box::new(llama::Llama::load(
            content, reader, device, backend,
        )?)),
        "gemma3" => Ok(Box::new(gemma3::Gemma3::load(
            content, reader, device, backend,
        )?)),
        other => Err(EngineError::Unsupported(format!(
            "architecture {other:?} (supported: {})",
            ARCHITECTURES.join(", ")
        ))),
    }
}

/// The KV row shape of a GGUF model from its header alone: `(layers,
/// kv_heads · head_dim)`, so a pool's size is known before loading.
pub fn kv_shape(content: &Content) -> Result<(usize, usize), EngineError> {
    let arch = Metadata::new(content, "general").architecture()?;
    let md = Metadata::new(content, &arch);
    let layers = md.usize("block_count")?;
    let heads = md.usize("attention.head_count")?;
    let kv_heads = md.opt_usize("attention.head_count_kv")?.unwrap_or(heads);
    let head_dim = match md.opt_usize("attention.key_length")? {
        Some(d) => d,
        None => md.usize("embedding_length")? / heads,
    };
    Ok((layers, kv_heads * head_dim))
}

/// Typed reads of `<prefix>.*` metadata keys with errors that name the key.
pub(crate) struct Metadata<'a> {
    content: &'a Content,
    prefix: String,
}

impl<'a> Metadata<'a> {
    pub(crate) fn new(content: &'a Content, prefix: &str) -> Self {
        Self {
            content,
            prefix: prefix.to_string(),
        }
    }

    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.prefix)
    }

    fn value(&self, k: &str) -> Option<&'a Value> {
        self.content.metadata.get(&self.key(k))
    }

    pub(crate) fn architecture(&self) -> Result<String, EngineError> {
        match self.content.metadata.get("general.architecture") {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(EngineError::Gguf("missing general.architecture".into())),
        }
    }

    /// An unsigned integer key, if present.
    pub(crate) fn opt_usize(&self, k: &str) -> Result<Option<usize>, EngineError> {
        let Some(v) = self.value(k) else {
            return Ok(None);
        };
        let n: i128 = match v {
            Value::U8(x) => (*x).into(),
            Value::U16(x) => (*x).into(),
            Value::U32(x) => (*x).into(),
            Value::U64(x) => (*x).into(),
            Value::I8(x) => (*x).into(),
            Value::I16(x) => (*x).into(),
            Value::I32(x) => (*x).into(),
            Value::I64(x) => (*x).into(),
            other => {
                return Err(EngineError::Gguf(format!(
                    "{} is {other:?}, not an integer",
                    self.key(k)
                )))
            }
        };
        usize::try_from(n)
            .map(Some)
            .map_err(|_| EngineError::Gguf(format!("{} = {n} is out of range", self.key(k))))
    }

    /// A required positive integer key.
    pub(crate) fn usize(&self, k: &str) -> Result<usize, EngineError> {
        match self.opt_usize(k)? {
            Some(n) if n > 0 => Ok(n),
            Some(n) => Err(EngineError::Gguf(format!("{} = {n}", self.key(k)))),
            None => Err(EngineError::Gguf(format!("missing {}", self.key(k)))),
        }
    }

    /// A float key, if present.
    pub(crate) fn opt_f32(&self, k: &str) -> Result<Option<f32>, EngineError> {
        match self.value(k) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x)),
            Some(Value::F64(x)) => Ok(Some(*x as f32)),
            Some(other) => Err(EngineError::Gguf(format!(
                "{} is {other:?}, not a number",
                self.key(k)
            ))),
        }
    }

    /// A string key, if present.
    pub(crate) fn opt_str(&self, k: &str) -> Result<Option<&'a str>, EngineError> {
        match self.value(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(EngineError::Gguf(format!(
                "{} is {other:?}, not a string",
                self.key(k)
            ))),
        }
    }
}

/// Reads tensor `name` onto `device`, naming it in the error.
pub(crate) fn tensor<R: Read + Seek>(
    content: &Content,
    reader: &mut R,
    name: &str,
    device: &Device,
) -> Result<QTensor, EngineError> {
    if !content.tensor_infos.contains_key(name) {
        return Err(EngineError::Gguf(format!("missing tensor {name}")));
    }
    content
        .tensor(reader, name, device)
        .map_err(|e| EngineError::Gguf(format!("tensor {name}: {e}")))
}

/// The weights every decoder family shares around its blocks.
pub(crate) struct Head {
    /// `token_embd.weight`.
    pub embed: TokenEmbedding,
    /// `output_norm.weight`, the norm before the output projection.
    pub norm: RmsNorm,
    /// `output.weight`, or the embedding's own table (tied) without it.
    pub output: QLinear,
}

/// Reads a decoder's weights by their GGUF names onto one device: the
/// [`Head`] and each block's norms and projections, so a family's `load`
/// names tensors and nothing else.
pub(crate) struct Weights<'a, R> {
    content: &'a Content,
    reader: &'a mut R,
    device: &'a Device,
    /// Epsilon of every RMS norm of the model.
    eps: f32,
}

impl<'a, R: Read + Seek> Weights<'a, R> {
    pub(crate) fn new(
        content: &'a Content,
        reader: &'a mut R,
        device: &'a Device,
        eps: f32,
    ) -> Self {
        Self {
            content,
            reader,
            device,
            eps,
        }
    }

    fn tensor(&mut self, name: &str) -> Result<QTensor, EngineError> {
        tensor(self.content, self.reader, name, self.device)
    }

    /// The token embedding, the final norm and the output projection.
    pub(crate) fn head(&mut self) -> Result<Head, EngineError> {
        let embed = TokenEmbedding::new(Arc::new(self.tensor("token_embd.weight")?))?;
        let output = if self.content.tensor_infos.contains_key("output.weight") {
            QLinear::new(self.tensor("output.weight")?)?
        } else {
            QLinear::tied(&embed)?
        };
        let norm = RmsNorm::new(self.tensor("output_norm.weight")?, self.eps)?;
        Ok(Head {
            embed,
            norm,
            output,
        })
    }

    /// `blk.{layer}.{name}.weight` as a projection.
    pub(crate) fn linear(&mut self, layer: usize, name: &str) -> Result<QLinear, EngineError> {
        QLinear::new(self.tensor(&format!("blk.{layer}.{name}.weight"))?)
    }

    /// `blk.{layer}.{name}.weight` as an RMS norm.
    pub(crate) fn norm(&mut self, layer: usize, name: &str) -> Result<RmsNorm, EngineError> {
        RmsNorm::new(
            self.tensor(&format!("blk.{layer}.{name}.weight"))?,
            self.eps,
        )
    }
}

/// The device tensors one forward pass derives from its batch, shared by all
/// layers.
pub(crate) struct Inputs {
    /// `[rows]` u32 token ids.
    pub ids: Tensor,
    /// `[rows]` u32 positions.
    pub positions: Tensor,
    /// `[rows, kv_dim]` u32 scatter index of the new K/V rows.
    pub slots: Tensor,
    /// `[logit rows]` u32, `None` when no row needs logits.
    pub logit_rows: Option<Tensor>,
    /// Number of rows.
    pub rows: usize,
}

impl Inputs {
    /// Checks `batch` against the pool and the model, then builds its tensors.
    pub(crate) fn new(
        batch: &BatchInput,
        config: &ModelConfig,
        kv: &KvCache,
        device: &Device,
    ) -> Result<Self, EngineError> {
        let geometry = kv.geometry();
        if geometry.layers != config.layers || geometry.kv_dim != config.kv_dim() {
            return Err(EngineError::Batch(format!(
                "KV pool of {} layers × {} does not fit the model ({} × {})",
                geometry.layers,
                geometry.kv_dim,
                config.layers,
                config.kv_dim()
            )));
        }
        if batch.is_empty() {
            return Err(EngineError::Batch("an empty batch".into()));
        }
        batch.validate(geometry.blocks, config.context_length)?;
        if let Some(t) = batch.tokens.iter().find(|t| **t as usize >= config.vocab) {
            return Err(EngineError::Batch(format!(
                "token id {t} is outside the vocabulary of {}",
                config.vocab
            )));
        }
        let rows = batch.rows();
        let logit_rows: Vec<u32> = batch.logit_rows.iter().map(|r| *r as u32).collect();
        Ok(Self {
            ids: Tensor::new(batch.tokens.as_slice(), device)?,
            positions: Tensor::new(batch.positions().as_slice(), device)?,
            slots: kv::slot_index(&batch.slots()?, config.kv_dim(), device)?,
            logit_rows: if logit_rows.is_empty() {
                None
            } else {
                let n = logit_rows.len();
                Some(Tensor::from_vec(logit_rows, n, device)?)
            },
            rows,
        })
    }

    /// An attention plan for this batch.
    pub(crate) fn plan(
        batch: &BatchInput,
        backend: Backend,
        window: Option<usize>,
        device: &Device,
    ) -> Result<AttentionPlan, EngineError> {
        Ok(AttentionPlan::new(backend, batch, window, device)?)
    }

    /// `[rows, heads · d]` → `[1, heads, rows, d]`, contiguous (for RoPE and
    /// attention).
    pub(crate) fn heads_first(x: &Tensor, heads: usize, d: usize) -> candle_core::Result<Tensor> {
        let rows = x.dim(0)?;
        x.reshape((rows, heads, d))?
            .transpose(0, 1)?
            .contiguous()?
            .unsqueeze(0)
    }

    /// `[1, heads, rows, d]` → `[rows, heads · d]`.
    pub(crate) fn rows_first(x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, heads, rows, d) = x.dims4()?;
        x.squeeze(0)?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((rows, heads * d))
    }

    /// The logits of the rows that need them: `x` `[rows, hidden]` → the
    /// selected rows through `head` (final norm and output projection), or
    /// an empty `[0, vocab]`.
    pub(crate) fn logits(
        &self,
        x: &Tensor,
        vocab: usize,
        head: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<Tensor, EngineError> {
        match &self.logit_rows {
            None => Ok(Tensor::zeros((0, vocab), DType::F32, x.device())?),
            Some(rows) => Ok(head(&x.index_select(rows, 0)?)?.to_dtype(DType::F32)?),
        }
    }
}

#[cfg(test)]
mod tests;
