//! The CPU attention kernel: a candle `CustomOp3` over `(q, k_pool, v_pool)`
//! that reads each sequence's K/V rows where they lie in the pool (through
//! its block table) instead of gathering them into new tensors, and runs the
//! (token, head) pairs in parallel on rayon's pool. f32 only; safe code.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rayon::prelude::*;

use super::AttnShape;
use crate::engine::batch::BatchInput;
use crate::engine::kv::{BlockId, BLOCK_SIZE};

/// One chunk as the kernel needs it.
#[derive(Debug)]
struct Chunk {
    pos: usize,
    blocks: Vec<BlockId>,
}

/// The per-forward data of the kernel: each row's chunk, and the window.
#[derive(Debug)]
pub(super) struct Meta {
    chunks: Vec<Chunk>,
    /// For each row: (chunk index, index within the chunk).
    rows: Vec<(u32, u32)>,
    window: Option<usize>,
}

impl Meta {
    pub(super) fn new(batch: &BatchInput, window: Option<usize>) -> Self {
        let mut rows = Vec::with_capacity(batch.rows());
        let chunks = batch
            .chunks
            .iter()
            .enumerate()
            .map(|(ci, c)| {
                rows.extend((0..c.len).map(|i| (ci as u32, i as u32)));
                Chunk {
                    pos: c.pos,
                    blocks: c.blocks.clone(),
                }
            })
            .collect();
        Self {
            chunks,
            rows,
            window,
        }
    }
}

/// The op: `q` `[1, heads, rows, d]`, pools `[pool rows, kv_heads · d]` →
/// `[rows, heads · d]`.
pub(super) struct PagedAttention {
    pub(super) meta: Arc<Meta>,
    pub(super) shape: AttnShape,
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        other => candle_core::bail!("paged attention: {what} is {:?}, not f32", other.dtype()),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("paged attention: {what} is not contiguous"),
    }
}

/// Dot product with eight independent sums (so the compiler vectorises it).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

impl CustomOp3 for PagedAttention {
    fn name(&self) -> &'static str {
        "paged-attention"
    }

    fn cpu_fwd(
        &self,
        s_q: &CpuStorage,
        l_q: &Layout,
        s_k: &CpuStorage,
        l_k: &Layout,
        s_v: &CpuStorage,
        l_v: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let AttnShape {
            heads,
            kv_heads,
            head_dim: d,
            scale,
        } = self.shape;
        let q = contiguous(s_q, l_q, "q")?;
        let k = contiguous(s_k, l_k, "the K pool")?;
        let v = contiguous(s_v, l_v, "the V pool")?;
        let rows = self.meta.rows.len();
        let kv_dim = kv_heads * d;
        let (_, pool_width) = l_k.shape().dims2()?;
        if q.len() != heads * rows * d || pool_width != kv_dim || l_v.shape() != l_k.shape() {
            candle_core::bail!(
                "paged attention: shape mismatch (q {:?}, k {:?}, v {:?}, {heads} heads of {d})",
                l_q.shape(),
                l_k.shape(),
                l_v.shape()
            );
        }
        let pool_rows = k.len() / kv_dim;
        // Every slot the kernel will read, checked once up front so the
        // parallel loop cannot index out of the pool.
        for c in &self.meta.chunks {
            if let Some(b) = c
                .blocks
                .iter()
                .find(|b| (**b as usize + 1) * BLOCK_SIZE > pool_rows)
            {
                candle_core::bail!("paged attention: block {b} is outside the pool");
            }
        }
        for &(ci, i) in &self.meta.rows {
            let c = &self.meta.chunks[ci as usize];
            if c.pos + i as usize >= c.blocks.len() * BLOCK_SIZE {
                candle_core::bail!(
                    "paged attention: position {} has no block",
                    c.pos + i as usize
                );
            }
        }
        let rep = heads / kv_heads;
        let scale = scale as f32;
        let window = self.meta.window;
        let mut out = vec![0f32; rows * heads * d];
        out.par_chunks_mut(d).enumerate().for_each(|(item, o)| {
            let (row, h) = (item / heads, item % heads);
            let (ci, i) = self.meta.rows[row];
            let c = &self.meta.chunks[ci as usize];
            let pos = c.pos + i as usize;
            let lo = window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let qh = &q[(h * rows + row) * d..][..d];
            let kv_off = (h / rep) * d;
            let slot = |p: usize| {
                (c.blocks[p / BLOCK_SIZE] as usize * BLOCK_SIZE + p % BLOCK_SIZE) * kv_dim + kv_off
            };
            let mut scores: Vec<f32> = (lo..=pos)
                .map(|p| dot(qh, &k[slot(p)..][..d]) * scale)
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            for (p, s) in (lo..=pos).zip(&scores) {
                let w = s / sum;
                for (o, x) in o.iter_mut().zip(&v[slot(p)..][..d]) {
                    *o += w * x;
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, heads * d))))
    }
}
