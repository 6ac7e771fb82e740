//! The CPU attention kernel: a candle `CustomOp3` over `(q, k_pool, v_pool)`
//! that reads each sequence's K/V rows where they lie in the pool (through
//! its block table) instead of gathering them into new tensors. f32 only;
//! safe code.
//!
//! Work items are tiles: up to [`TILE_ROWS`] rows of one chunk times the
//! query heads that share one K/V head, run in parallel on rayon's pool.
//! A tile walks the sequence's K/V one 16-position block at a time and uses
//! each block for all its queries while it is in the L1 cache, so a prompt
//! chunk reads its context once per tile instead of once per (row, head):
//! at 2,000 positions that is what made long prompts slow. Each query's own
//! arithmetic (scores in position order, the maximum, the exponentials and
//! their sum, then the weighted values in position order) is the same
//! sequence of float operations whatever the tiling, so a row's output does
//! not depend on what else is in the batch.

use std::ops::Range;
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

/// Rows of one chunk in a work item.
const TILE_ROWS: usize = 16;

/// One work item: consecutive rows of one chunk, and query heads that share
/// one K/V head.
#[derive(Debug)]
struct Tile {
    chunk: usize,
    /// Rows of the batch (all in `chunk`).
    rows: Range<usize>,
    heads: Range<usize>,
    kv_head: usize,
}

/// What every tile reads.
struct Ctx<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    rows: usize,
    d: usize,
    kv_dim: usize,
    scale: f32,
    window: Option<usize>,
}

impl Ctx<'_> {
    /// The tile's output, `[row][head][d]`.
    fn tile(&self, meta: &Meta, t: &Tile) -> Vec<f32> {
        let d = self.d;
        let c = &meta.chunks[t.chunk];
        let kv_off = t.kv_head * d;
        // Each query: its offset in `q`, its position, its lowest visible
        // position; (row, head) order, as the output.
        let queries: Vec<(usize, usize, usize)> = t
            .rows
            .clone()
            .flat_map(|row| {
                let pos = c.pos + meta.rows[row].1 as usize;
                let lo = self.window.map_or(0, |w| (pos + 1).saturating_sub(w));
                t.heads
                    .clone()
                    .map(move |h| ((h * self.rows + row) * d, pos, lo))
            })
            .collect();
        let (Some(lo_min), Some(hi)) = (
            queries.iter().map(|q| q.2).min(),
            queries.iter().map(|q| q.1).max(),
        ) else {
            return Vec::new();
        };
        let span = hi + 1 - lo_min;
        let slot = |p: usize| {
            (c.blocks[p / BLOCK_SIZE] as usize * BLOCK_SIZE + p % BLOCK_SIZE) * self.kv_dim + kv_off
        };
        // The positions lo_min..=hi cut at block boundaries.
        let blocks = || {
            (lo_min / BLOCK_SIZE..=hi / BLOCK_SIZE)
                .map(move |b| (b * BLOCK_SIZE).max(lo_min)..((b + 1) * BLOCK_SIZE).min(hi + 1))
        };
        // Scores, one block of keys at a time for every query. With enough
        // queries to pay for it, the block's keys are transposed once
        // (`kt[x][j]`) and each query scores eight keys at a time
        // ([`dot8`], the same float operations as [`dot`]).
        let mut scores = vec![0f32; queries.len() * span];
        let transposed = d % 8 == 0 && queries.len() >= TRANSPOSE_MIN_QUERIES;
        let mut kt = vec![0f32; if transposed { d * BLOCK_SIZE } else { 0 }];
        for block in blocks() {
            if transposed {
                for (j, p) in block.clone().enumerate() {
                    for (x, &k) in self.k[slot(p)..][..d].iter().enumerate() {
                        kt[x * BLOCK_SIZE + j] = k;
                    }
                }
            }
            for (qi, &(qo, pos, lo)) in queries.iter().enumerate() {
                let qv = &self.q[qo..][..d];
                let row = &mut scores[qi * span..][..span];
                let visible = block.start.max(lo)..block.end.min(pos + 1);
                if !transposed {
                    for p in visible {
                        row[p - lo_min] = dot(qv, &self.k[slot(p)..][..d]) * self.scale;
                    }
                    continue;
                }
                // Groups of eight keys from the block's start; lanes past
                // the visible positions are computed and dropped.
                let mut g = visible.start - block.start;
                while block.start + g < visible.end {
                    let s = dot8(qv, &kt[g.min(BLOCK_SIZE - 8)..]);
                    let first = g.min(BLOCK_SIZE - 8);
                    for (j, s) in s.iter().enumerate().skip(g - first) {
                        let p = block.start + first + j;
                        if p >= visible.end {
                            break;
                        }
                        row[p - lo_min] = s * self.scale;
                    }
                    g = first + 8;
                }
            }
        }
        // Each query's softmax over its own positions, in position order:
        // the weights, each exponential divided by their sum.
        for (qi, &(_, pos, lo)) in queries.iter().enumerate() {
            let row = &mut scores[qi * span + lo - lo_min..qi * span + pos + 1 - lo_min];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for s in row.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            for s in row.iter_mut() {
                *s /= sum;
            }
        }
        // The weighted values, one block at a time for every query, in
        // strips of the output that stay in registers over the block's
        // positions (each element still adds its terms in position order).
        let mut out = vec![0f32; queries.len() * d];
        for block in blocks() {
            for (qi, &(_, pos, lo)) in queries.iter().enumerate() {
                let visible = block.start.max(lo)..block.end.min(pos + 1);
                let o = &mut out[qi * d..][..d];
                for (si, strip) in o.chunks_mut(STRIP).enumerate() {
                    let mut acc = [0f32; STRIP];
                    let acc = &mut acc[..strip.len()];
                    acc.copy_from_slice(strip);
                    for p in visible.clone() {
                        let w = scores[qi * span + p - lo_min];
                        let v = &self.v[slot(p) + si * STRIP..][..acc.len()];
                        for (a, &x) in acc.iter_mut().zip(v) {
                            *a += w * x;
                        }
                    }
                    strip.copy_from_slice(acc);
                }
            }
        }
        out
    }
}

impl PagedAttention {
    /// The work items: each chunk's rows cut into tiles of [`TILE_ROWS`],
    /// times the K/V heads; with too few of those to keep the pool busy (a
    /// lone decode token of a model with one K/V head), one query head each.
    fn tiles(&self, kv_heads: usize, rep: usize) -> Vec<Tile> {
        let mut row_tiles: Vec<(usize, Range<usize>)> = Vec::new();
        for (row, &(ci, _)) in self.meta.rows.iter().enumerate() {
            match row_tiles.last_mut() {
                Some((c, r)) if *c == ci as usize && r.len() < TILE_ROWS => r.end = row + 1,
                _ => row_tiles.push((ci as usize, row..row + 1)),
            }
        }
        let per_head = row_tiles.len() * kv_heads < 2 * rayon::current_num_threads();
        let mut tiles = Vec::new();
        for (chunk, rows) in row_tiles {
            for g in 0..kv_heads {
                let heads = g * rep..(g + 1) * rep;
                if per_head {
                    tiles.extend(heads.map(|h| Tile {
                        chunk,
                        rows: rows.clone(),
                        heads: h..h + 1,
                        kv_head: g,
                    }));
                } else {
                    tiles.push(Tile {
                        chunk,
                        rows: rows.clone(),
                        heads,
                        kv_head: g,
                    });
                }
            }
        }
        tiles
    }
}

/// Output elements of one query the value pass keeps in registers.
const STRIP: usize = 32;

/// Queries in a tile from which its score pass transposes each block of
/// keys (below, a query scores key by key: decode tokens).
const TRANSPOSE_MIN_QUERIES: usize = 8;

/// [`dot`] of `q` with eight keys at once, laid out `kt[x * BLOCK_SIZE + j]`
/// (`q.len()` a multiple of 8): for key `j`, lane `i` sums
/// `q[8c + i] · k_j[8c + i]` over `c` in order, then the lanes are added in
/// order — the float operations of `dot`, with keys across the vector
/// lanes instead of `x`, so no horizontal sum per score.
fn dot8(q: &[f32], kt: &[f32]) -> [f32; 8] {
    let mut acc = [[0f32; 8]; 8];
    for (c, qc) in q.chunks_exact(8).enumerate() {
        for (i, (&qv, lane)) in qc.iter().zip(acc.iter_mut()).enumerate() {
            let k = &kt[(8 * c + i) * BLOCK_SIZE..][..8];
            for (a, &k) in lane.iter_mut().zip(k) {
                *a += qv * k;
            }
        }
    }
    let mut s = acc[0];
    for lane in &acc[1..] {
        for (s, &a) in s.iter_mut().zip(lane) {
            *s += a;
        }
    }
    s
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
        let tiles = self.tiles(kv_heads, rep);
        let ctx = Ctx {
            q,
            k,
            v,
            rows,
            d,
            kv_dim,
            scale: scale as f32,
            window: self.meta.window,
        };
        let results: Vec<Vec<f32>> = tiles.par_iter().map(|t| ctx.tile(&self.meta, t)).collect();
        // Scatter each tile's [row][head][d] block into [rows, heads · d].
        let mut out = vec![0f32; rows * heads * d];
        for (t, res) in tiles.iter().zip(&results) {
            let nh = t.heads.len();
            for (ri, row) in t.rows.clone().enumerate() {
                let at = (row * heads + t.heads.start) * d;
                out[at..at + nh * d].copy_from_slice(&res[ri * nh * d..(ri + 1) * nh * d]);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, heads * d))))
    }
}
