//! The building blocks every model family is made of: quantized linear
//! layers ([`QLinear`]), RMS norms, the quantized token embedding and rotary
//! position embeddings ([`Rope`]).
//!
//! Owns how GGUF tensors become these blocks. It does not own any model's
//! wiring (that is `model/<family>.rs`) nor the KV cache (`kv`). Everything
//! here is a candle op that exists on CUDA too; the CPU kernels of the
//! quantized matmuls plug in behind [`QLinear`].

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use super::{kernels, EngineError};

/// `y = x · Wᵀ` with `W` kept as the GGUF file stores it (quantized blocks,
/// or f32 for float tensors).
///
/// The seam for CPU kernels: when they are switched on
/// (`NEURON_KERNELS`, see [`kernels::enabled`]), on a CPU device a block type the
/// [`kernels`] know (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K) is repacked
/// at load into a [`kernels::QMatMul`] (activations quantized to 8 bits,
/// integer multiply-adds, the kernels of this CPU picked at run time) and
/// the GGUF tensor is dropped; anything else, and every tensor on CUDA,
/// keeps candle's `QMatMul`.
#[derive(Debug, Clone)]
pub struct QLinear {
    inner: Matmul,
    in_dim: usize,
    out_dim: usize,
}

/// What computes a [`QLinear`].
#[derive(Debug, Clone)]
enum Matmul {
    /// candle's quantized matmul (CUDA, float tensors).
    Candle(QMatMul),
    /// Our CPU kernels.
    Cpu(Arc<kernels::QMatMul>),
}

impl QLinear {
    /// A linear layer over `w` of shape `[out, in]` (GGUF's `[in, out]` as
    /// candle reads it, i.e. one row per output).
    pub fn new(w: QTensor) -> Result<Self, EngineError> {
        Self::from_arc(Arc::new(w))
    }

    /// As [`QLinear::new`], sharing `w`.
    pub fn from_arc(w: Arc<QTensor>) -> Result<Self, EngineError> {
        let (out_dim, in_dim) = w.shape().dims2()?;
        let inner = match cpu_kernel(&w)? {
            Some(k) => Matmul::Cpu(Arc::new(k)),
            None => Matmul::Candle(QMatMul::from_arc(w)?),
        };
        Ok(Self {
            inner,
            in_dim,
            out_dim,
        })
    }

    /// The output projection tied to the token embedding: the same blocks
    /// (one copy in memory, repacked or not).
    pub fn tied(embed: &TokenEmbedding) -> Result<Self, EngineError> {
        let (vocab, hidden) = (embed.vocab(), embed.hidden());
        let inner = match &embed.table {
            Table::Cpu(k) => Matmul::Cpu(k.clone()),
            Table::Candle(t) => Matmul::Candle(QMatMul::from_arc(t.clone())?),
        };
        Ok(Self {
            inner,
            in_dim: hidden,
            out_dim: vocab,
        })
    }

    /// `[rows, in] → [rows, out]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.inner {
            Matmul::Candle(m) => m.forward(x),
            Matmul::Cpu(k) => k.forward(&x.contiguous()?),
        }
    }

    /// Input features.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Output features.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Whether our CPU kernels compute this layer (else candle's matmul).
    pub fn uses_cpu_kernels(&self) -> bool {
        matches!(self.inner, Matmul::Cpu(_))
    }
}

/// Our CPU kernel for `w`, when our kernels are switched on
/// ([`kernels::enabled`]) and `w` lives on the CPU in a block type they
/// know; `None` leaves it to candle.
fn cpu_kernel(w: &QTensor) -> Result<Option<kernels::QMatMul>, EngineError> {
    if !kernels::enabled() || !w.device().is_cpu() || kernels::QType::from_ggml(w.dtype()).is_none()
    {
        return Ok(None);
    }
    kernels::QMatMul::from_qtensor(w)
        .map(Some)
        .map_err(|e| EngineError::Gguf(format!("repacking a weight for the CPU kernels: {e}")))
}

/// Root-mean-square normalisation over the last dimension, with a learned
/// scale (GGUF files of Gemma already carry `1 + w`).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    /// A norm with the scale `w` (any GGUF dtype; held as f32).
    pub fn new(w: QTensor, eps: f32) -> Result<Self, EngineError> {
        let weight = w.dequantize(&w.device())?.to_dtype(DType::F32)?;
        Ok(Self { weight, eps })
    }

    /// Normalises the last dimension of a contiguous `x`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps)
    }
}

/// The token embedding, kept in its GGUF blocks: a lookup dequantizes only
/// the rows it reads (the whole table in f32 would be 113 MB for SmolLM2 and
/// 671 MB for Gemma 3 270M). On a CPU it is held by the CPU kernels, so a
/// tied output projection ([`QLinear::tied`]) shares the repacked blocks.
#[derive(Debug, Clone)]
pub struct TokenEmbedding {
    table: Table,
    vocab: usize,
    hidden: usize,
}

/// Who holds the embedding's blocks.
#[derive(Debug, Clone)]
enum Table {
    /// The GGUF tensor (CUDA, or a block type without CPU kernels).
    Candle(Arc<QTensor>),
    /// The CPU kernels' copy.
    Cpu(Arc<kernels::QMatMul>),
}

impl TokenEmbedding {
    /// The table `[vocab, hidden]`.
    pub fn new(table: Arc<QTensor>) -> Result<Self, EngineError> {
        let (vocab, hidden) = table.shape().dims2()?;
        let table = match cpu_kernel(&table)? {
            Some(k) => Table::Cpu(Arc::new(k)),
            None => Table::Candle(table),
        };
        Ok(Self {
            table,
            vocab,
            hidden,
        })
    }

    /// `ids` `[rows]` (u32) → `[rows, hidden]` f32.
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        match &self.table {
            Table::Candle(t) => t.embedding(ids),
            Table::Cpu(k) => k.embedding(ids),
        }
    }

    /// Rows in the table.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Width of a row.
    pub fn hidden(&self) -> usize {
        self.hidden
    }
}

/// Which dimensions RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(2i, 2i+1)`: llama.cpp's `NORM`, used by GGUF llama files
    /// (their q/k weights are permuted for it at conversion).
    Interleaved,
    /// Pairs `(i, i + d/2)`: llama.cpp's `NEOX`, used by Gemma, Qwen, …
    Halves,
}

/// Rotary position embedding for one frequency base.
///
/// No table of every position: the `cos`/`sin` rows a forward pass needs are
/// computed from its positions (a few thousand multiplications), so a model
/// with a 32k context and two bases (Gemma 3) does not hold 64 MiB of tables.
/// The rows are bit-identical to a precomputed table's.
#[derive(Debug, Clone)]
pub struct Rope {
    /// `1 / (base^(2i/d) · factor_i)`, shape `[1, d/2]`.
    inv_freq: Tensor,
    style: RopeStyle,
    /// Linear position scaling (`1 / rope.scaling.factor`), 1 when none.
    position_scale: f32,
    head_dim: usize,
}

impl Rope {
    /// RoPE over `head_dim` dimensions with frequency `base`. `freq_factors`
    /// (llama 3 scaling, `rope_freqs.weight`) divide each frequency;
    /// `position_scale` multiplies positions (linear scaling).
    pub fn new(
        head_dim: usize,
        base: f32,
        freq_factors: Option<&[f32]>,
        position_scale: f32,
        style: RopeStyle,
        device: &Device,
    ) -> Result<Self, EngineError> {
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(EngineError::Gguf(format!(
                "RoPE dimension {head_dim} is not a positive even number"
            )));
        }
        if let Some(f) = freq_factors {
            if f.len() != head_dim / 2 {
                return Err(EngineError::Gguf(format!(
                    "{} RoPE frequency factors for {} frequencies",
                    f.len(),
                    head_dim / 2
                )));
            }
        }
        let inv_freq: Vec<f32> = (0..head_dim)
            .step_by(2)
            .enumerate()
            .map(|(n, i)| {
                let f = 1f32 / base.powf(i as f32 / head_dim as f32);
                match freq_factors {
                    Some(factors) => f / factors[n],
                    None => f,
                }
            })
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, head_dim / 2), device)?;
        Ok(Self {
            inv_freq,
            style,
            position_scale,
            head_dim,
        })
    }

    /// `cos` and `sin` rows `[rows, d/2]` for `positions` `[rows]` (u32).
    pub fn cos_sin(&self, positions: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut p = positions.to_dtype(DType::F32)?.unsqueeze(1)?;
        if self.position_scale != 1.0 {
            p = (p * f64::from(self.position_scale))?;
        }
        let angles = p.broadcast_mul(&self.inv_freq)?;
        Ok((angles.cos()?, angles.sin()?))
    }

    /// Rotates `x` `[1, heads, rows, d]` (contiguous) with the rows' `cos`/`sin`.
    pub fn apply(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        match self.style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(x, cos, sin),
            RopeStyle::Halves => candle_nn::rotary_emb::rope(x, cos, sin),
        }
    }

    /// Dimensions rotated (the head dimension).
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }
}

/// llama 3's frequency factors (`rope_type = "llama3"` in Hugging Face
/// configs; llama.cpp stores the result as `rope_freqs.weight`): low
/// frequencies are slowed by `factor`, high ones kept, the band between
/// interpolated.
pub fn llama3_freq_factors(
    head_dim: usize,
    base: f32,
    factor: f32,
    low_freq_factor: f32,
    high_freq_factor: f32,
    original_context: f32,
) -> Vec<f32> {
    let low_freq_wavelen = original_context / low_freq_factor;
    let high_freq_wavelen = original_context / high_freq_factor;
    (0..head_dim)
        .step_by(2)
        .map(|i| {
            let freq = 1f32 / base.powf(i as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_freq_wavelen {
                1.0
            } else if wavelen > low_freq_wavelen {
                factor
            } else {
                let smooth = (original_context / wavelen - low_freq_factor)
                    / (high_freq_factor - low_freq_factor);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// GELU with the tanh approximation (Gemma's feed-forward activation).
pub fn gelu_tanh(x: &Tensor) -> candle_core::Result<Tensor> {
    x.gelu()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;

    #[test]
    fn rope_rows_equal_a_precomputed_table() {
        // The table candle-transformers built: arange(N) · θ, then cos/sin.
        let (d, base, n) = (64usize, 100_000f32, 300usize);
        let theta: Vec<f32> = (0..d)
            .step_by(2)
            .map(|i| 1f32 / base.powf(i as f32 / d as f32))
            .collect();
        let theta = Tensor::new(theta.as_slice(), &Device::Cpu).unwrap();
        let table = Tensor::arange(0, n as u32, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .reshape((n, 1))
            .unwrap()
            .matmul(&theta.reshape((1, d / 2)).unwrap())
            .unwrap();
        let rope = Rope::new(d, base, None, 1.0, RopeStyle::Interleaved, &Device::Cpu).unwrap();
        let positions = Tensor::new(&[0u32, 7, 299, 1, 150], &Device::Cpu).unwrap();
        let (cos, sin) = rope.cos_sin(&positions).unwrap();
        let want = table.index_select(&positions, 0).unwrap();
        assert_eq!(
            cos.to_vec2::<f32>().unwrap(),
            want.cos().unwrap().to_vec2::<f32>().unwrap()
        );
        assert_eq!(
            sin.to_vec2::<f32>().unwrap(),
            want.sin().unwrap().to_vec2::<f32>().unwrap()
        );
    }

    #[test]
    fn rope_scaling_and_factors() {
        let d = 8;
        let plain = Rope::new(d, 10_000.0, None, 1.0, RopeStyle::Halves, &Device::Cpu).unwrap();
        let linear = Rope::new(d, 10_000.0, None, 0.5, RopeStyle::Halves, &Device::Cpu).unwrap();
        let factors = [1.0, 2.0, 4.0, 8.0];
        let scaled = Rope::new(
            d,
            10_000.0,
            Some(&factors),
            1.0,
            RopeStyle::Halves,
            &Device::Cpu,
        )
        .unwrap();
        let p = |v: u32| Tensor::new(&[v], &Device::Cpu).unwrap();
        let angle = |r: &Rope, pos: u32| {
            let (c, _) = r.cos_sin(&p(pos)).unwrap();
            c.to_vec2::<f32>().unwrap()[0].clone()
        };
        // Linear scaling at position 20 is the plain rope at position 10.
        assert_eq!(angle(&linear, 20), angle(&plain, 10));
        // A factor of 1 keeps the frequency; the others slow it.
        assert_eq!(angle(&scaled, 9)[0], angle(&plain, 9)[0]);
        let (a, b) = (angle(&scaled, 9)[3], angle(&plain, 9)[3]);
        assert!((a - b).abs() > 1e-9 || a == b);
        assert!(Rope::new(7, 1.0, None, 1.0, RopeStyle::Halves, &Device::Cpu).is_err());
        assert!(Rope::new(8, 1.0, Some(&[1.0]), 1.0, RopeStyle::Halves, &Device::Cpu).is_err());
    }

    #[test]
    fn llama3_factors_follow_the_three_bands() {
        // Llama 3.1 8B: base 500000, factor 8, low 1, high 4, original 8192.
        let f = llama3_freq_factors(128, 500_000.0, 8.0, 1.0, 4.0, 8192.0);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0, "the highest frequency is kept");
        assert_eq!(f[63], 8.0, "the lowest frequency is slowed by the factor");
        assert!(f.windows(2).all(|w| w[0] <= w[1]), "{f:?}");
        assert!(f.iter().any(|x| *x > 1.0 && *x < 8.0), "a band in between");
    }

    #[test]
    fn quantized_embedding_matches_the_dequantized_table() {
        let table: Vec<f32> = (0..8 * 64)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let t = Tensor::from_vec(table, (8, 64), &Device::Cpu).unwrap();
        let q = Arc::new(QTensor::quantize(&t, GgmlDType::Q8_0).unwrap());
        let full = q.dequantize(&Device::Cpu).unwrap();
        let emb = TokenEmbedding::new(q).unwrap();
        assert_eq!((emb.vocab(), emb.hidden()), (8, 64));
        let ids = Tensor::new(&[3u32, 0, 7, 3], &Device::Cpu).unwrap();
        assert_eq!(
            emb.forward(&ids).unwrap().to_vec2::<f32>().unwrap(),
            full.index_select(&ids, 0)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
        );
        let out_of_range = Tensor::new(&[8u32], &Device::Cpu).unwrap();
        assert!(emb.forward(&out_of_range).is_err());
    }

    #[test]
    fn qlinear_shapes() {
        let w = Tensor::ones((5, 32), DType::F32, &Device::Cpu).unwrap();
        let l = QLinear::new(QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()).unwrap();
        assert_eq!((l.in_dim(), l.out_dim()), (32, 5));
        let x = Tensor::ones((3, 32), DType::F32, &Device::Cpu).unwrap();
        let y = l.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y.len(), 3);
        assert!(y.iter().flatten().all(|v| (v - 32.0).abs() < 0.5), "{y:?}");
    }
}
