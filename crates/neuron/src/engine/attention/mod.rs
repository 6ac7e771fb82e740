//! Attention over the paged KV cache: each sequence's new queries against
//! every cached position of that sequence (causal within the new tokens,
//! optionally limited to a sliding window), never across sequences.
//!
//! Two backends behind one seam, chosen by device:
//! - **generic**: candle ops that exist on CUDA — gather the sequence's rows
//!   from the pool with `index_select`, grouped-query matmuls, an additive
//!   mask, softmax, matmul. One set of ops per sequence.
//! - **cpu**: a candle `CustomOp3` ([`cpu::PagedAttention`]) that reads the
//!   pool storage directly (no gather copy), in f32, parallel over tiles
//!   of a chunk's rows and the query heads of one K/V head.
//!
//! Both compute the same function (tested against each other). A
//! [`AttentionPlan`] is prepared once per forward pass and window (the
//! gather indices and masks, or the CPU kernel's block tables) and used by
//! every layer.

mod cpu;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::batch::BatchInput;
use super::kv;

/// The attention shape of a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (`heads` is a multiple of it).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Multiplies `q · k` (usually `1 / sqrt(head_dim)`).
    pub scale: f64,
}

/// Which implementation runs attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// candle ops, on any device.
    Generic,
    /// The CPU kernel reading the pool in place.
    Cpu,
}

impl Backend {
    /// The CPU kernel on CPU devices, the generic ops elsewhere.
    pub fn for_device(device: &Device) -> Self {
        if device.is_cpu() {
            Backend::Cpu
        } else {
            Backend::Generic
        }
    }
}

/// One sequence's part of a generic plan.
#[derive(Debug)]
struct GenericChunk {
    start: usize,
    len: usize,
    /// Pool rows of the positions the chunk attends over, `[ctx]` u32.
    gather: Tensor,
    /// `[len, ctx]` of 0 / -inf, `None` when nothing is masked.
    mask: Option<Tensor>,
}

#[derive(Debug)]
enum PlanKind {
    Generic(Vec<GenericChunk>),
    Cpu(Arc<cpu::Meta>),
}

/// What every layer of one forward pass needs to run attention for one
/// window size.
#[derive(Debug)]
pub struct AttentionPlan {
    kind: PlanKind,
    rows: usize,
}

impl AttentionPlan {
    /// Prepares `batch` for `backend`; `window` limits each query at position
    /// `p` to keys at positions `> p - window` (llama.cpp's standard sliding
    /// window); `None` is full causal attention.
    pub fn new(
        backend: Backend,
        batch: &BatchInput,
        window: Option<usize>,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let kind = match backend {
            Backend::Cpu => PlanKind::Cpu(Arc::new(cpu::Meta::new(batch, window))),
            Backend::Generic => {
                let mut chunks = Vec::with_capacity(batch.chunks.len());
                for c in &batch.chunks {
                    // The earliest position any query of the chunk may see.
                    let lo = window.map_or(0, |w| (c.pos + 1).saturating_sub(w));
                    let ctx = c.context();
                    let rows: Vec<u32> = (lo..ctx)
                        .map(|p| {
                            kv::slot(&c.blocks, p).ok_or_else(|| {
                                candle_core::Error::Msg(format!(
                                    "invalid batch: position {p} has no block"
                                ))
                            })
                        })
                        .collect::<candle_core::Result<_>>()?;
                    let mut masked = false;
                    let mut mask = Vec::with_capacity(c.len * rows.len());
                    for i in 0..c.len {
                        let q = c.pos + i;
                        for p in lo..ctx {
                            let hidden = p > q || window.is_some_and(|w| q - p >= w);
                            masked |= hidden;
                            mask.push(if hidden { f32::NEG_INFINITY } else { 0.0 });
                        }
                    }
                    let n_keys = rows.len();
                    chunks.push(GenericChunk {
                        start: c.start,
                        len: c.len,
                        gather: Tensor::from_vec(rows, n_keys, device)?,
                        mask: if masked {
                            Some(Tensor::from_vec(mask, (c.len, n_keys), device)?)
                        } else {
                            None
                        },
                    });
                }
                PlanKind::Generic(chunks)
            }
        };
        Ok(Self {
            kind,
            rows: batch.rows(),
        })
    }

    /// Attention for one layer: `q` `[1, heads, rows, head_dim]` (after RoPE),
    /// `k_pool` and `v_pool` that layer's `[pool rows, kv_heads · head_dim]`
    /// (the new rows already written). Returns `[rows, heads · head_dim]`.
    pub fn attend(
        &self,
        q: &Tensor,
        k_pool: &Tensor,
        v_pool: &Tensor,
        shape: AttnShape,
    ) -> candle_core::Result<Tensor> {
        let (_, heads, rows, head_dim) = q.dims4()?;
        if heads != shape.heads
            || head_dim != shape.head_dim
            || rows != self.rows
            || shape.kv_heads == 0
            || heads % shape.kv_heads != 0
        {
            candle_core::bail!(
                "attention shape mismatch: q {:?}, {} rows planned, {shape:?}",
                q.dims(),
                self.rows
            );
        }
        match &self.kind {
            PlanKind::Cpu(meta) => {
                let op = cpu::PagedAttention {
                    meta: meta.clone(),
                    shape,
                };
                q.contiguous()?.apply_op3_no_bwd(k_pool, v_pool, &op)
            }
            PlanKind::Generic(chunks) => {
                let mut outs = Vec::with_capacity(chunks.len());
                for c in chunks {
                    outs.push(generic_chunk(q, k_pool, v_pool, c, shape)?);
                }
                Tensor::cat(&outs, 0)
            }
        }
    }
}

/// One sequence, candle ops only.
fn generic_chunk(
    q: &Tensor,
    k_pool: &Tensor,
    v_pool: &Tensor,
    c: &GenericChunk,
    s: AttnShape,
) -> candle_core::Result<Tensor> {
    let rep = s.heads / s.kv_heads;
    let keys = c.gather.dim(0)?;
    // [heads, len, d] → [kv_heads, rep · len, d]: query head h uses KV head h / rep.
    let q = q
        .narrow(2, c.start, c.len)?
        .squeeze(0)?
        .contiguous()?
        .reshape((s.kv_heads, rep * c.len, s.head_dim))?;
    let gather = |pool: &Tensor| -> candle_core::Result<Tensor> {
        pool.index_select(&c.gather, 0)?
            .reshape((keys, s.kv_heads, s.head_dim))?
            .transpose(0, 1)?
            .contiguous()
    };
    let k = gather(k_pool)?;
    let v = gather(v_pool)?;
    let att = (q.matmul(&k.t()?)? * s.scale)?;
    let att = match &c.mask {
        None => att,
        Some(mask) => att
            .reshape((s.kv_heads, rep, c.len, keys))?
            .broadcast_add(mask)?
            .reshape((s.kv_heads, rep * c.len, keys))?,
    };
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    att.matmul(&v)?
        .reshape((s.heads, c.len, s.head_dim))?
        .transpose(0, 1)?
        .reshape((c.len, s.heads * s.head_dim))?
        .to_dtype(DType::F32)
}

#[cfg(test)]
mod tests;
