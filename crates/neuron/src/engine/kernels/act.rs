//! Activations quantized to 8 bits, the right-hand side of every kernel.
//!
//! Two formats, with llama.cpp's x86 rounding so that the integer parts match
//! what it computes on the same input:
//! - [`ActQ8`] for the legacy types: per 32-block a scale `d = amax/127`
//!   (kept at f16 precision, as `block_q8_0.d`), quants
//!   `round_ties_even(x·127/amax)`, and a sum term `s = d·Σq` (f16-rounded
//!   for Q4_1 like `block_q8_1.s`, exact otherwise). Stored as separate
//!   arrays per row (scales, sums, quants) so a kernel loads eight scales
//!   with one instruction; the scale and sum rows are zero-padded to a
//!   multiple of 8 blocks.
//! - [`BlockQ8K`] for the K-quants: per 256-block `d = −max/127` (f32, of
//!   the signed extreme), quants `min(127, round_ties_even(x/d))` and the
//!   sums of each 16 quants (`block_q8_K`).

use super::format::{round_f16, QK, QK_K};

/// Legacy-type activations of `m` rows of `nb` 32-blocks.
#[derive(Debug, Default, Clone)]
pub struct ActQ8 {
    /// Rows.
    pub m: usize,
    /// Blocks per row.
    pub nb: usize,
    /// Blocks per row in `d` and `s`: `nb` rounded up to a multiple of 8.
    pub nbp: usize,
    /// Block scales, `m × nbp`, zero past `nb`.
    pub d: Vec<f32>,
    /// Block sum terms `d·Σq`, `m × nbp`, zero past `nb`.
    pub s: Vec<f32>,
    /// Quants, `m × nb × 32`.
    pub qs: Vec<i8>,
}

/// One row of an [`ActQ8`].
#[derive(Debug, Clone, Copy)]
pub struct Q8Row<'a> {
    /// Scales (`nbp` long).
    pub d: &'a [f32],
    /// Sum terms (`nbp` long).
    pub s: &'a [f32],
    /// Quants (`nb × 32` long).
    pub qs: &'a [i8],
}

impl ActQ8 {
    /// Quantizes `x` (`m` rows of `nb·32`) into `self`, reusing its buffers.
    pub fn quantize(&mut self, x: &[f32], m: usize, nb: usize, sum_f16: bool) {
        debug_assert_eq!(x.len(), m * nb * QK);
        self.m = m;
        self.nb = nb;
        self.nbp = nb.div_ceil(8) * 8;
        self.d.clear();
        self.d.resize(m * self.nbp, 0.0);
        self.s.clear();
        self.s.resize(m * self.nbp, 0.0);
        self.qs.clear();
        self.qs.resize(m * nb * QK, 0);
        let nbp = self.nbp;
        for (r, xr) in x.chunks_exact(nb * QK).enumerate() {
            let qr = &mut self.qs[r * nb * QK..(r + 1) * nb * QK];
            let dr = &mut self.d[r * nbp..r * nbp + nb];
            let sr = &mut self.s[r * nbp..r * nbp + nb];
            quantize_row_q8(xr, qr, dr, sr, sum_f16);
        }
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> Q8Row<'_> {
        let (nb, nbp) = (self.nb, self.nbp);
        Q8Row {
            d: &self.d[r * nbp..(r + 1) * nbp],
            s: &self.s[r * nbp..(r + 1) * nbp],
            qs: &self.qs[r * nb * QK..(r + 1) * nb * QK],
        }
    }
}

/// Quantizes one row: `x` is `nb·32` values; `qs`, `d` and `s` receive
/// `nb·32`, `nb` and `nb` values.
pub fn quantize_row_q8(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32], sum_f16: bool) {
    #[cfg(target_arch = "x86_64")]
    if super::Level::detected() >= super::Level::Avx2 {
        // SAFETY: AVX2, FMA and F16C were detected on this CPU.
        unsafe { super::avx2::quantize_row_q8(x, qs, d, s, sum_f16) };
        return;
    }
    quantize_row_q8_scalar(x, qs, d, s, sum_f16);
}

/// The portable [`quantize_row_q8`]; the SIMD version gives the same bits.
pub fn quantize_row_q8_scalar(
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    s: &mut [f32],
    sum_f16: bool,
) {
    for (((xb, qb), db), sb) in x
        .chunks_exact(QK)
        .zip(qs.chunks_exact_mut(QK))
        .zip(d.iter_mut())
        .zip(s.iter_mut())
    {
        let amax = xb.iter().fold(0f32, |a, &v| a.max(v.abs()));
        let dd = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in qb.iter_mut().zip(xb) {
            let r = (v * id).round_ties_even().clamp(-128.0, 127.0) as i8;
            *q = r;
            sum += i32::from(r);
        }
        let dq = round_f16(dd);
        *db = dq;
        *sb = if sum_f16 {
            round_f16(dd * sum as f32)
        } else {
            dq * sum as f32
        };
    }
}

/// A 256-element activation block for the K-quants (`block_q8_K`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    /// Scale (f32).
    pub d: f32,
    /// Quants.
    pub qs: [i8; QK_K],
    /// Sum of each 16 quants.
    pub bsums: [i16; QK_K / 16],
}

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        }
    }
}

impl BlockQ8K {
    /// Recomputes `bsums` from `qs`.
    pub fn fill_bsums(&mut self) {
        for (sum, q) in self.bsums.iter_mut().zip(self.qs.chunks_exact(16)) {
            *sum = q.iter().map(|&v| i16::from(v)).sum();
        }
    }
}

/// K-quant activations: `m` rows of `nb` blocks.
#[derive(Debug, Default, Clone)]
pub struct ActQ8K {
    /// Rows.
    pub m: usize,
    /// Blocks per row.
    pub nb: usize,
    /// `m × nb` blocks.
    pub blocks: Vec<BlockQ8K>,
}

impl ActQ8K {
    /// Quantizes `x` (`m` rows of `nb·256`) into `self`, reusing its buffer.
    pub fn quantize(&mut self, x: &[f32], m: usize, nb: usize) {
        debug_assert_eq!(x.len(), m * nb * QK_K);
        self.m = m;
        self.nb = nb;
        self.blocks.clear();
        self.blocks.resize(m * nb, BlockQ8K::default());
        for (xb, b) in x.chunks_exact(QK_K).zip(self.blocks.iter_mut()) {
            quantize_block_q8k(xb, b);
        }
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[BlockQ8K] {
        &self.blocks[r * self.nb..(r + 1) * self.nb]
    }
}

/// GGML's `quantize_row_q8_K_ref` for one block.
pub fn quantize_block_q8k(x: &[f32], y: &mut BlockQ8K) {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        *y = BlockQ8K::default();
        return;
    }
    let iscale = -127.0 / max;
    for (q, &v) in y.qs.iter_mut().zip(x) {
        *q = (iscale * v).round_ties_even().clamp(-128.0, 127.0) as i8;
    }
    y.fill_bsums();
    y.d = 1.0 / iscale;
}
