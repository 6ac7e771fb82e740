//! The `llama` family (SmolLM2, Llama 2 and 3.x, Mistral): pre-norm
//! decoder blocks of grouped-query attention with interleaved RoPE (GGUF
//! llama files store q/k permuted for llama.cpp's `NORM` rope) and a SiLU
//! gated feed-forward.
//!
//! RoPE covers the file's `context_length`, with `llama.rope.scaling.*`
//! (linear, or llama 3's frequency factors from `rope_freqs.weight` or the
//! `low_freq_factor`/`high_freq_factor` keys); other scaling types are
//! refused rather than run wrong.

use std::io::{Read, Seek};

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};

use super::{tensor, Head, Inputs, Metadata, Model, ModelConfig, Weights};
use crate::engine::attention::{AttnShape, Backend};
use crate::engine::batch::BatchInput;
use crate::engine::kv::KvCache;
use crate::engine::layers::{self, QLinear, RmsNorm, Rope, RopeStyle, TokenEmbedding};
use crate::engine::EngineError;

#[derive(Debug)]
struct Layer {
    attn_norm: RmsNorm,
    wq: QLinear,
    wk: QLinear,
    wv: QLinear,
    wo: QLinear,
    ffn_norm: RmsNorm,
    gate: QLinear,
    up: QLinear,
    down: QLinear,
}

/// A loaded llama-family model.
#[derive(Debug)]
pub struct Llama {
    config: ModelConfig,
    embed: TokenEmbedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QLinear,
    rope: Rope,
    attn: AttnShape,
    backend: Backend,
    device: Device,
}

/// How RoPE is scaled, from `llama.rope.scaling.*` and `rope_freqs.weight`.
fn rope<R: Read + Seek>(
    content: &Content,
    reader: &mut R,
    md: &Metadata,
    head_dim: usize,
    device: &Device,
) -> Result<Rope, EngineError> {
    let base = md.opt_f32("rope.freq_base")?.unwrap_or(10_000.0);
    let rope_dim = md.opt_usize("rope.dimension_count")?.unwrap_or(head_dim);
    if rope_dim != head_dim {
        return Err(EngineError::Unsupported(format!(
            "partial RoPE ({rope_dim} of {head_dim} dimensions)"
        )));
    }
    let factor = md.opt_f32("rope.scaling.factor")?.unwrap_or(1.0);
    let kind = md.opt_str("rope.scaling.type")?.unwrap_or("none");
    let mut position_scale = 1.0;
    let mut factors: Option<Vec<f32>> = None;
    match kind {
        "none" => {}
        "linear" if factor > 0.0 => position_scale = 1.0 / factor,
        "llama3" => {
            let original = md
                .opt_usize("rope.scaling.original_context_length")?
                .ok_or_else(|| {
                    EngineError::Gguf("llama3 RoPE scaling without original_context_length".into())
                })?;
            factors = Some(layers::llama3_freq_factors(
                head_dim,
                base,
                factor,
                md.opt_f32("rope.scaling.low_freq_factor")?.unwrap_or(1.0),
                md.opt_f32("rope.scaling.high_freq_factor")?.unwrap_or(4.0),
                original as f32,
            ));
        }
        other => {
            return Err(EngineError::Unsupported(format!(
                "RoPE scaling type {other:?} (factor {factor})"
            )))
        }
    }
    // llama.cpp writes llama 3's factors as a tensor; it wins over the keys.
    if content.tensor_infos.contains_key("rope_freqs.weight") {
        let t = tensor(content, reader, "rope_freqs.weight", &Device::Cpu)?;
        factors = Some(
            t.dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
    }
    Rope::new(
        head_dim,
        base,
        factors.as_deref(),
        position_scale,
        RopeStyle::Interleaved,
        device,
    )
}

impl Llama {
    /// Reads the weights of a llama-family GGUF file onto `device`.
    pub fn load<R: Read + Seek>(
        content: &Content,
        reader: &mut R,
        device: &Device,
        backend: Backend,
    ) -> Result<Self, EngineError> {
        let md = Metadata::new(content, "llama");
        if md.opt_usize("expert_count")?.unwrap_or(0) > 1 {
            return Err(EngineError::Unsupported(
                "mixture-of-experts llama models".into(),
            ));
        }
        let heads = md.usize("attention.head_count")?;
        let kv_heads = md.opt_usize("attention.head_count_kv")?.unwrap_or(heads);
        let hidden = md.usize("embedding_length")?;
        let layers = md.usize("block_count")?;
        let head_dim = md
            .opt_usize("attention.key_length")?
            .unwrap_or(hidden / heads);
        let eps = md
            .opt_f32("attention.layer_norm_rms_epsilon")?
            .unwrap_or(1e-5);
        let context_length = md.usize("context_length")?;
        if heads % kv_heads != 0 {
            return Err(EngineError::Gguf(format!(
                "{heads} heads are not a multiple of {kv_heads} KV heads"
            )));
        }
        let rope = rope(content, reader, &md, head_dim, device)?;

        let mut w = Weights::new(content, reader, device, eps);
        let Head {
            embed,
            norm,
            output,
        } = w.head()?;
        let mut blocks = Vec::with_capacity(layers);
        for i in 0..layers {
            blocks.push(Layer {
                attn_norm: w.norm(i, "attn_norm")?,
                wq: w.linear(i, "attn_q")?,
                wk: w.linear(i, "attn_k")?,
                wv: w.linear(i, "attn_v")?,
                wo: w.linear(i, "attn_output")?,
                ffn_norm: w.norm(i, "ffn_norm")?,
                gate: w.linear(i, "ffn_gate")?,
                up: w.linear(i, "ffn_up")?,
                down: w.linear(i, "ffn_down")?,
            });
        }
        let vocab = output.out_dim();
        Ok(Self {
            config: ModelConfig {
                architecture: "llama".into(),
                layers,
                heads,
                kv_heads,
                head_dim,
                hidden,
                vocab,
                context_length,
            },
            embed,
            layers: blocks,
            norm,
            output,
            rope,
            attn: AttnShape {
                heads,
                kv_heads,
                head_dim,
                scale: 1.0 / (head_dim as f64).sqrt(),
            },
            backend,
            device: device.clone(),
        })
    }
}

impl Model for Llama {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn forward(&self, batch: &BatchInput, kv: &KvCache) -> Result<Tensor, EngineError> {
        let c = &self.config;
        let inputs = Inputs::new(batch, c, kv, &self.device)?;
        let plan = Inputs::plan(batch, self.backend, None, &self.device)?;
        let (cos, sin) = self.rope.cos_sin(&inputs.positions)?;
        let mut x = self.embed.forward(&inputs.ids)?;
        for (i, l) in self.layers.iter().enumerate() {
            let h = l.attn_norm.forward(&x)?;
            let q = Inputs::heads_first(&l.wq.forward(&h)?, c.heads, c.head_dim)?;
            let k = Inputs::heads_first(&l.wk.forward(&h)?, c.kv_heads, c.head_dim)?;
            let v = l.wv.forward(&h)?;
            let q = self.rope.apply(&q, &cos, &sin)?;
            let k = self.rope.apply(&k, &cos, &sin)?;
            kv.write(i, &inputs.slots, &Inputs::rows_first(&k)?, &v)?;
            let y = plan.attend(&q, &kv.k(i)?, &kv.v(i)?, self.attn)?;
            x = (l.wo.forward(&y)? + &x)?;
            let h = l.ffn_norm.forward(&x)?;
            let gated = (candle_nn::ops::silu(&l.gate.forward(&h)?)? * l.up.forward(&h)?)?;
            x = (l.down.forward(&gated)? + &x)?;
        }
        debug_assert_eq!(x.dim(0).ok(), Some(inputs.rows));
        inputs.logits(&x, c.vocab, |x| self.output.forward(&self.norm.forward(x)?))
    }
}
