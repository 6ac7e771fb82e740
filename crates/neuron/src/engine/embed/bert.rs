//! A BERT encoder in plain candle ops (the architecture of
//! sentence-transformers' MiniLM / MPNet-style embedding models): word +
//! position + token-type embeddings and a LayerNorm, then N post-LayerNorm
//! encoder layers (multi-head self-attention under a padding mask, an
//! exact-erf GELU feed-forward). It owns the weights and the forward pass
//! only; tokenizing, pooling and batching are in the parent module.
//!
//! Written for cortex (candle-transformers is not a dependency: it costs
//! minutes of build time for one 150-line file), following the layout of
//! Hugging Face `transformers`' `BertModel` so its safetensors load as they
//! are.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, LayerNorm, Linear};
use serde::Deserialize;

use crate::engine::EngineError;

/// The fields of a Hugging Face `config.json` the encoder reads; the rest
/// are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    /// `"bert"` (others are refused: their layouts differ).
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// `"gelu"` (exact, erf) or `"gelu_new"` / `"gelu_pytorch_tanh"` (tanh).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Only `"absolute"` is supported.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Parses and checks `config.json`.
    pub fn parse(text: &str) -> Result<Self, EngineError> {
        let c: Self = serde_json::from_str(text)
            .map_err(|e| EngineError::Files(format!("config.json: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), EngineError> {
        let unsupported = |what: String| Err(EngineError::Unsupported(what));
        if let Some(t) = &self.model_type {
            if t != "bert" {
                return unsupported(format!("model_type {t:?} (the encoder runs \"bert\")"));
            }
        }
        if let Some(p) = &self.position_embedding_type {
            if p != "absolute" {
                return unsupported(format!("position_embedding_type {p:?}"));
            }
        }
        if self.activation().is_none() {
            return unsupported(format!("hidden_act {:?}", self.hidden_act));
        }
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(EngineError::Files(format!("config.json: {name} is 0")));
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(EngineError::Files(format!(
                "config.json: hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        Ok(())
    }

    fn activation(&self) -> Option<Activation> {
        match self.hidden_act.as_str() {
            "gelu" => Some(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Activation::GeluTanh),
            _ => None,
        }
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    GeluErf,
    GeluTanh,
}

/// Takes named tensors out of a safetensors map, checking shapes.
struct Weights {
    map: HashMap<String, Tensor>,
    prefix: &'static str,
}

impl Weights {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, EngineError> {
        let key = format!("{}{name}", self.prefix);
        let t = self.map.remove(&key).ok_or_else(|| {
            EngineError::Files(format!("model.safetensors: missing tensor {key}"))
        })?;
        if t.dims() != shape {
            return Err(EngineError::Files(format!(
                "model.safetensors: tensor {key} has shape {:?}, the config says {shape:?}",
                t.dims()
            )));
        }
        Ok(t.to_dtype(DType::F32)?)
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<Linear, EngineError> {
        let w = self.get(&format!("{name}.weight"), &[out, inp])?;
        let b = self.get(&format!("{name}.bias"), &[out])?;
        Ok(Linear::new(w, Some(b)))
    }

    fn norm(&mut self, name: &str, width: usize, eps: f64) -> Result<LayerNorm, EngineError> {
        let w = self.get(&format!("{name}.weight"), &[width])?;
        let b = self.get(&format!("{name}.bias"), &[width])?;
        Ok(LayerNorm::new(w, b, eps))
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

/// The encoder: weights on one device, shared by every request.
pub struct Bert {
    config: BertConfig,
    act: Activation,
    words: Embedding,
    positions: Embedding,
    token_types: Embedding,
    norm: LayerNorm,
    layers: Vec<Layer>,
}

impl Bert {
    /// Builds the encoder from the tensors of a `BertModel` safetensors file
    /// (names with or without a `bert.` prefix), moved to `device`.
    pub fn new(
        config: BertConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self, EngineError> {
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_device(device)?)))
            .collect::<Result<HashMap<_, _>, candle_core::Error>>()?;
        let mut w = Weights {
            map: tensors,
            prefix,
        };
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        let words = Embedding::new(
            w.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            h,
        );
        let positions = Embedding::new(
            w.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            h,
        );
        let token_types = Embedding::new(
            w.get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?,
            h,
        );
        let norm = w.norm("embeddings.LayerNorm", h, eps)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let ff = config.intermediate_size;
            layers.push(Layer {
                query: w.linear(&format!("{p}.attention.self.query"), h, h)?,
                key: w.linear(&format!("{p}.attention.self.key"), h, h)?,
                value: w.linear(&format!("{p}.attention.self.value"), h, h)?,
                attn_out: w.linear(&format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), h, eps)?,
                up: w.linear(&format!("{p}.intermediate.dense"), ff, h)?,
                down: w.linear(&format!("{p}.output.dense"), h, ff)?,
                out_norm: w.norm(&format!("{p}.output.LayerNorm"), h, eps)?,
            });
        }
        let act = config.activation().ok_or_else(|| {
            EngineError::Unsupported(format!("hidden_act {:?}", config.hidden_act))
        })?;
        Ok(Self {
            config,
            act,
            words,
            positions,
            token_types,
            norm,
            layers,
        })
    }

    /// The model's shape.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The last hidden states `[batch, len, hidden]` of `ids` `[batch, len]`
    /// (u32), where `mask` `[batch, len]` (f32) is 1 on real tokens and 0 on
    /// padding: padded keys get no attention.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor, EngineError> {
        let (batch, len) = ids.dims2()?;
        if len > self.config.max_position_embeddings {
            return Err(EngineError::ContextOverflow {
                needed: len,
                max: self.config.max_position_embeddings,
            });
        }
        let device = ids.device();
        let positions = Tensor::arange(0u32, len as u32, device)?;
        let types = Tensor::zeros(len, DType::U32, device)?;
        let x = self
            .words
            .forward(ids)?
            .broadcast_add(&self.positions.forward(&positions)?)?
            .broadcast_add(&self.token_types.forward(&types)?)?;
        let mut x = self.norm.forward(&x)?;
        // 0 on real keys, a large negative number on padding, added to the
        // scores before the softmax (as transformers' extended mask does).
        let bias = ((mask.ones_like()? - mask)? * f64::from(f32::MIN / 2.0))?
            .reshape((batch, 1, 1, len))?;
        for layer in &self.layers {
            x = self.layer(layer, &x, &bias)?;
        }
        Ok(x)
    }

    fn layer(&self, l: &Layer, x: &Tensor, bias: &Tensor) -> Result<Tensor, EngineError> {
        let (batch, len, hidden) = x.dims3()?;
        let heads = self.config.num_attention_heads;
        let d = self.config.head_dim();
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((batch, len, heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(l.query.forward(x)?)?;
        let k = split(l.key.forward(x)?)?;
        let v = split(l.value.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch, len, hidden))?;
        let a = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + x)?)?;
        let up = l.up.forward(&a)?;
        let up = match self.act {
            Activation::GeluErf => up.gelu_erf()?,
            Activation::GeluTanh => up.gelu()?,
        };
        Ok(l.out_norm.forward(&(l.down.forward(&up)? + a)?)?)
    }
}

/// Mean of `hidden` `[batch, len, width]` over the positions where `mask`
/// `[batch, len]` is 1, then scaled to unit L2 norm (sentence-transformers'
/// `Pooling(mean)` + `Normalize`): `[batch, width]`.
pub fn mean_pool_normalized(hidden: &Tensor, mask: &Tensor) -> Result<Tensor, EngineError> {
    let m = mask.unsqueeze(D::Minus1)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    let mean = sum.broadcast_div(&count)?;
    let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    Ok(mean.broadcast_div(&norm)?)
}
