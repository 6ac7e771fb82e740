//! Gemma 3 (text): the embedding scaled by `sqrt(hidden)`, RMS norms of q
//! and k per head, norms before and after both attention and feed-forward,
//! a GELU(tanh) gated feed-forward, NEOX RoPE, and sliding-window attention
//! on five layers of every six (layer `i` is global when `(i + 1) % 6 == 0`,
//! as llama.cpp's pattern), local layers with RoPE base 10 000 and global
//! ones with `gemma3.rope.freq_base`. Attention is scaled by
//! `1 / sqrt(key_length)`; the output projection is the token embedding
//! unless the file has `output.weight`; final logit soft-capping applies
//! when the metadata names it.

use std::io::{Read, Seek};

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};

use super::{Head, Inputs, Metadata, Model, ModelConfig, Weights};
use crate::engine::attention::{AttnShape, Backend};
use crate::engine::batch::BatchInput;
use crate::engine::kv::KvCache;
use crate::engine::layers::{gelu_tanh, QLinear, RmsNorm, Rope, RopeStyle, TokenEmbedding};
use crate::engine::EngineError;

/// Layers per sliding-window pattern when the file does not say.
const DEFAULT_PATTERN: usize = 6;
/// RoPE base of the local (sliding-window) layers.
const LOCAL_ROPE_BASE: f32 = 10_000.0;
/// RoPE base of the global layers when the file does not say.
const GLOBAL_ROPE_BASE: f32 = 1_000_000.0;

#[derive(Debug)]
struct Layer {
    attn_norm: RmsNorm,
    wq: QLinear,
    wk: QLinear,
    wv: QLinear,
    wo: QLinear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    post_attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    gate: QLinear,
    up: QLinear,
    down: QLinear,
    post_ffn_norm: RmsNorm,
    /// Sliding-window (local) layer.
    local: bool,
}

/// A loaded Gemma 3 model.
#[derive(Debug)]
pub struct Gemma3 {
    config: ModelConfig,
    embed: TokenEmbedding,
    embed_scale: f64,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QLinear,
    local_rope: Rope,
    global_rope: Rope,
    window: usize,
    softcap: Option<f64>,
    attn: AttnShape,
    backend: Backend,
    device: Device,
}

impl Gemma3 {
    /// Reads the weights of a Gemma 3 GGUF file onto `device`.
    pub fn load<R: Read + Seek>(
        content: &Content,
        reader: &mut R,
        device: &Device,
        backend: Backend,
    ) -> Result<Self, EngineError> {
        let md = Metadata::new(content, "gemma3");
        let heads = md.usize("attention.head_count")?;
        let kv_heads = md.opt_usize("attention.head_count_kv")?.unwrap_or(heads);
        let hidden = md.usize("embedding_length")?;
        let layers = md.usize("block_count")?;
        let head_dim = md.usize("attention.key_length")?;
        let value_dim = md.opt_usize("attention.value_length")?.unwrap_or(head_dim);
        let eps = md
            .opt_f32("attention.layer_norm_rms_epsilon")?
            .unwrap_or(1e-6);
        let context_length = md.usize("context_length")?;
        let window = md.usize("attention.sliding_window")?;
        let pattern = md
            .opt_usize("attention.sliding_window_pattern")?
            .unwrap_or(DEFAULT_PATTERN)
            .max(1);
        if heads % kv_heads != 0 || value_dim != head_dim {
            return Err(EngineError::Unsupported(format!(
                "gemma3 with {heads} heads, {kv_heads} KV heads, key length {head_dim}, value length {value_dim}"
            )));
        }
        let global_base = md.opt_f32("rope.freq_base")?.unwrap_or(GLOBAL_ROPE_BASE);
        let local_base = md
            .opt_f32("rope.local_freq_base")?
            .unwrap_or(LOCAL_ROPE_BASE);
        // llama.cpp scales positions of the global layers only.
        let global_scale = match md.opt_f32("rope.scaling.factor")? {
            Some(f) if f > 0.0 => 1.0 / f,
            _ => 1.0,
        };
        let local_rope = Rope::new(head_dim, local_base, None, 1.0, RopeStyle::Halves, device)?;
        let global_rope = Rope::new(
            head_dim,
            global_base,
            None,
            global_scale,
            RopeStyle::Halves,
            device,
        )?;
        let softcap = md
            .opt_f32("final_logit_softcapping")?
            .filter(|c| *c > 0.0)
            .map(f64::from);

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
                q_norm: w.norm(i, "attn_q_norm")?,
                k_norm: w.norm(i, "attn_k_norm")?,
                post_attn_norm: w.norm(i, "post_attention_norm")?,
                ffn_norm: w.norm(i, "ffn_norm")?,
                gate: w.linear(i, "ffn_gate")?,
                up: w.linear(i, "ffn_up")?,
                down: w.linear(i, "ffn_down")?,
                post_ffn_norm: w.norm(i, "post_ffw_norm")?,
                local: (i + 1) % pattern != 0,
            });
        }
        let vocab = output.out_dim();
        Ok(Self {
            config: ModelConfig {
                architecture: "gemma3".into(),
                layers,
                heads,
                kv_heads,
                head_dim,
                hidden,
                vocab,
                context_length,
            },
            embed,
            embed_scale: (hidden as f64).sqrt(),
            layers: blocks,
            norm,
            output,
            local_rope,
            global_rope,
            window,
            softcap,
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

/// `[rows, heads · d]` → per-head RMS norm → `[1, heads, rows, d]`.
fn normed_heads(x: &Tensor, norm: &RmsNorm, heads: usize, d: usize) -> candle_core::Result<Tensor> {
    let rows = x.dim(0)?;
    let x = norm.forward(&x.reshape((rows, heads, d))?)?;
    x.transpose(0, 1)?.contiguous()?.unsqueeze(0)
}

impl Model for Gemma3 {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn forward(&self, batch: &BatchInput, kv: &KvCache) -> Result<Tensor, EngineError> {
        let c = &self.config;
        let inputs = Inputs::new(batch, c, kv, &self.device)?;
        let local_plan = Inputs::plan(batch, self.backend, Some(self.window), &self.device)?;
        let global_plan = Inputs::plan(batch, self.backend, None, &self.device)?;
        let local = self.local_rope.cos_sin(&inputs.positions)?;
        let global = self.global_rope.cos_sin(&inputs.positions)?;
        let mut x = (self.embed.forward(&inputs.ids)? * self.embed_scale)?;
        for (i, l) in self.layers.iter().enumerate() {
            let (rope, (cos, sin), plan) = if l.local {
                (&self.local_rope, &local, &local_plan)
            } else {
                (&self.global_rope, &global, &global_plan)
            };
            let h = l.attn_norm.forward(&x)?;
            let q = normed_heads(&l.wq.forward(&h)?, &l.q_norm, c.heads, c.head_dim)?;
            let k = normed_heads(&l.wk.forward(&h)?, &l.k_norm, c.kv_heads, c.head_dim)?;
            let v = l.wv.forward(&h)?;
            let q = rope.apply(&q, cos, sin)?;
            let k = rope.apply(&k, cos, sin)?;
            kv.write(i, &inputs.slots, &Inputs::rows_first(&k)?, &v)?;
            let y = plan.attend(&q, &kv.k(i)?, &kv.v(i)?, self.attn)?;
            x = (l.post_attn_norm.forward(&l.wo.forward(&y)?)? + &x)?;
            let h = l.ffn_norm.forward(&x)?;
            let gated = (gelu_tanh(&l.gate.forward(&h)?)? * l.up.forward(&h)?)?;
            x = (l.post_ffn_norm.forward(&l.down.forward(&gated)?)? + &x)?;
        }
        inputs.logits(&x, c.vocab, |x| {
            let logits = self.output.forward(&self.norm.forward(x)?)?;
            match self.softcap {
                None => Ok(logits),
                Some(cap) => (logits / cap)?.tanh()? * cap,
            }
        })
    }
}
