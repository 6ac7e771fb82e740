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
//!
//! Register tiles: a prompt chunk's score pass puts a block's sixteen keys
//! across the vector lanes and scores four queries against them at once
//! ([`lane_scores`]); the value pass adds a block's value rows into up to
//! four heads of a row at once, sixteen outputs each ([`add_weighted`]).
//! Both are small functions of fixed-size arrays, kept out of line: inlined
//! into the tile, LLVM ran their loops scalar. Timed beside candle's ops by
//! `cargo bench -p neuron --bench kernels -- attention` (README, "Attention
//! on long prompts").

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
        let nh = t.heads.len();
        // Each row: its position and its lowest visible position. The
        // tile's queries are (row, head) pairs in that order, as the output;
        // the heads of one row see the same positions.
        let rows: Vec<(usize, usize)> = t
            .rows
            .clone()
            .map(|row| {
                let pos = c.pos + meta.rows[row].1 as usize;
                (pos, self.window.map_or(0, |w| (pos + 1).saturating_sub(w)))
            })
            .collect();
        let (Some(lo_min), Some(hi)) = (
            rows.iter().map(|r| r.1).min(),
            rows.iter().map(|r| r.0).max(),
        ) else {
            return Vec::new();
        };
        let span = hi + 1 - lo_min;
        let query = |ri: usize, h: usize| {
            let at = ((t.heads.start + h) * self.rows + t.rows.start + ri) * d;
            &self.q[at..][..d]
        };
        let slot = |p: usize| {
            (c.blocks[p / BLOCK_SIZE] as usize * BLOCK_SIZE + p % BLOCK_SIZE) * self.kv_dim + kv_off
        };
        // The positions lo_min..=hi cut at block boundaries.
        let blocks = || {
            (lo_min / BLOCK_SIZE..=hi / BLOCK_SIZE)
                .map(move |b| (b * BLOCK_SIZE).max(lo_min)..((b + 1) * BLOCK_SIZE).min(hi + 1))
        };
        let visible = |block: &Range<usize>, (pos, lo): (usize, usize)| {
            block.start.max(lo)..block.end.min(pos + 1)
        };

        // Scores, one block of keys at a time for every query. With enough
        // queries to pay for it, the block's keys are transposed once into
        // lane order and four queries at a time score all sixteen keys
        // together ([`lane_scores`], the float operations of [`dot`]; keys a
        // query does not see are computed and dropped); otherwise (decode
        // tokens) each query scores key by key.
        let queries = rows.len() * nh;
        let row_of = |qi: usize| rows[qi / nh];
        let mut scores = vec![0f32; queries * span];
        if d % 8 == 0 && queries >= TRANSPOSE_MIN_QUERIES {
            let mut qt = vec![0f32; queries * d];
            for (qi, qt) in qt.chunks_exact_mut(d).enumerate() {
                for (x, &v) in query(qi / nh, qi % nh).iter().enumerate() {
                    qt[lane_index(x, d)] = v;
                }
            }
            let mut kt = vec![[0f32; BLOCK_SIZE]; d];
            for block in blocks() {
                let first = block.start - block.start % BLOCK_SIZE;
                for (j, p) in (first..first + BLOCK_SIZE).enumerate() {
                    let key = &self.k[slot(p)..][..d];
                    for (x, &k) in key.iter().enumerate() {
                        kt[lane_index(x, d)][j] = k;
                    }
                }
                for q0 in (0..queries).step_by(LANE_QUERIES) {
                    let q1 = (q0 + LANE_QUERIES).min(queries);
                    if (q0..q1).all(|qi| visible(&block, row_of(qi)).is_empty()) {
                        continue;
                    }
                    let q = &qt[q0 * d..q1 * d];
                    let put = |scores: &mut [f32], s: &[[f32; BLOCK_SIZE]]| {
                        for (qi, s) in (q0..q1).zip(s) {
                            let out = &mut scores[qi * span..][..span];
                            for p in visible(&block, row_of(qi)) {
                                out[p - lo_min] = s[p - first] * self.scale;
                            }
                        }
                    };
                    match q1 - q0 {
                        1 => put(&mut scores, &lane_scores::<1>(q, &kt)),
                        2 => put(&mut scores, &lane_scores::<2>(q, &kt)),
                        3 => put(&mut scores, &lane_scores::<3>(q, &kt)),
                        _ => put(&mut scores, &lane_scores::<LANE_QUERIES>(q, &kt)),
                    }
                }
            }
        } else {
            for (ri, &row) in rows.iter().enumerate() {
                let seen = visible(&(lo_min..hi + 1), row);
                for h in 0..nh {
                    let out = &mut scores[(ri * nh + h) * span..][..span];
                    for p in seen.clone() {
                        out[p - lo_min] = dot(query(ri, h), &self.k[slot(p)..][..d]) * self.scale;
                    }
                }
            }
        }
        // Each query's softmax over its own positions, in position order:
        // the weights, each exponential divided by their sum.
        for (ri, &(pos, lo)) in rows.iter().enumerate() {
            for h in 0..nh {
                let at = (ri * nh + h) * span;
                let row = &mut scores[at + lo - lo_min..at + pos + 1 - lo_min];
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
        }
        // The weighted values, one block at a time for every row, up to four
        // heads of a row together ([`add_weighted`]: each element adds its
        // terms in position order).
        let mut out = vec![0f32; rows.len() * nh * d];
        let mut vals: Vec<&[f32]> = Vec::with_capacity(BLOCK_SIZE);
        for block in blocks() {
            for (ri, &row) in rows.iter().enumerate() {
                let seen = visible(&block, row);
                if seen.is_empty() {
                    continue;
                }
                vals.clear();
                vals.extend(seen.clone().map(|p| &self.v[slot(p)..][..d]));
                let w = |qi: usize| &scores[qi * span + seen.start - lo_min..][..seen.len()];
                if d % STRIP != 0 {
                    for qi in ri * nh..(ri + 1) * nh {
                        add_weighted_any(&mut out[qi * d..][..d], w(qi), &vals);
                    }
                    continue;
                }
                for h0 in (0..nh).step_by(MAX_HEADS) {
                    let (q0, q1) = (ri * nh + h0, ri * nh + (h0 + MAX_HEADS).min(nh));
                    let o = &mut out[q0 * d..q1 * d];
                    match q1 - q0 {
                        1 => add_weighted::<1>(o, [w(q0)], &vals),
                        2 => add_weighted::<2>(o, [w(q0), w(q0 + 1)], &vals),
                        3 => add_weighted::<3>(o, [w(q0), w(q0 + 1), w(q0 + 2)], &vals),
                        _ => add_weighted::<MAX_HEADS>(
                            o,
                            [w(q0), w(q0 + 1), w(q0 + 2), w(q0 + 3)],
                            &vals,
                        ),
                    }
                }
            }
        }
        out
    }
}

/// Queries that [`lane_scores`] takes together.
const LANE_QUERIES: usize = 4;

/// Heads of one row that [`add_weighted`] takes together.
const MAX_HEADS: usize = 4;

/// Where element `x` of a `d`-wide vector goes in lane order: lane
/// `x % 8` first, then `x / 8` (so lane `i` of [`dot`] reads a contiguous
/// run).
fn lane_index(x: usize, d: usize) -> usize {
    (x % 8) * (d / 8) + x / 8
}

/// [`dot`] of each of `H` queries (`qt`, each `d` wide in lane order) with
/// the sixteen keys of a block (`kt[lane_index(x)]`, a key per element):
/// for each lane `i`, every key's partial sum over `c` in order, then the
/// lanes added in order — `dot`'s float operations, with keys across the
/// vector lanes (no horizontal sums), each key column loaded once for all
/// `H` queries.
// Not inlined: compiled on its own, its loops vectorise (inlined into the
// tile they did not, and ran scalar).
#[inline(never)]
fn lane_scores<const H: usize>(qt: &[f32], kt: &[[f32; BLOCK_SIZE]]) -> [[f32; BLOCK_SIZE]; H] {
    let d = qt.len() / H;
    let n = d / 8;
    // -0.0 + x is x for every x: the first lane's partial sums exactly.
    let mut s = [[-0.0f32; BLOCK_SIZE]; H];
    for i in 0..8 {
        let mut acc = [[0f32; BLOCK_SIZE]; H];
        let lane = &kt[i * n..][..n];
        let q: [&[f32]; H] = std::array::from_fn(|h| &qt[h * d + i * n..][..n]);
        for (c, k) in lane.iter().enumerate() {
            for (acc, q) in acc.iter_mut().zip(q) {
                let q = q[c];
                for j in 0..BLOCK_SIZE {
                    acc[j] += q * k[j];
                }
            }
        }
        for (s, acc) in s.iter_mut().zip(&acc) {
            for j in 0..BLOCK_SIZE {
                s[j] += acc[j];
            }
        }
    }
    s
}

/// Output elements of a query that [`add_weighted`] keeps in registers.
const STRIP: usize = 16;

/// `out[h] += Σ w[h][p] · vals[p]` for `H` queries (`out` `[H][d]`,
/// `d` a multiple of [`STRIP`]), each element adding its terms in position
/// order; each strip of a value row is loaded once for all `H` queries.
// Not inlined, as `lane_scores`.
#[inline(never)]
fn add_weighted<const H: usize>(out: &mut [f32], w: [&[f32]; H], vals: &[&[f32]]) {
    let d = out.len() / H;
    for x0 in (0..d).step_by(STRIP) {
        let mut acc = [[0f32; STRIP]; H];
        for (h, acc) in acc.iter_mut().enumerate() {
            acc.copy_from_slice(&out[h * d + x0..][..STRIP]);
        }
        for (p, v) in vals.iter().enumerate() {
            let v = &v[x0..][..STRIP];
            for (acc, w) in acc.iter_mut().zip(w) {
                let w = w[p];
                for j in 0..STRIP {
                    acc[j] += w * v[j];
                }
            }
        }
        for (h, acc) in acc.iter().enumerate() {
            out[h * d + x0..][..STRIP].copy_from_slice(acc);
        }
    }
}

/// [`add_weighted`] for one query of any width.
fn add_weighted_any(out: &mut [f32], w: &[f32], vals: &[&[f32]]) {
    for (p, v) in vals.iter().enumerate() {
        for (o, &x) in out.iter_mut().zip(*v) {
            *o += w[p] * x;
        }
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

/// Queries in a tile from which its score pass transposes each block of
/// keys (below, a query scores key by key: decode tokens).
const TRANSPOSE_MIN_QUERIES: usize = 8;

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
