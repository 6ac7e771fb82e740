//! Q8_0 weights (split by field, [`Soa`]) times Q8 activations.
//!
//! One micro-kernel computes an `R × C` tile (R activation rows, C weight
//! rows). Per group of eight blocks it converts the eight f16 scales of each
//! weight row at once and stores the products `d_w·d_a` for the tile; per
//! block it loads each weight block once and multiplies it with every
//! activation row. The weights are signed: their sign moves onto the
//! activation (`vpsignb`) so `vpmaddubsw` sees |w|.

use std::arch::x86_64::*;
use std::ops::Range;

use super::{f16x8, hsum_ps, load32, load_ps, store_ps};
use crate::engine::kernels::act::Q8Row;
use crate::engine::kernels::format::QK;
use crate::engine::kernels::weights::Soa;

/// `out[i·ldo + j] = rows[i] · weight row (cols.start + j)`, for 1 to 4 rows.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn rows_q8_0(
    w: &Soa,
    nb: usize,
    rows: &[Q8Row<'_>],
    cols: Range<usize>,
    out: &mut [f32],
    ldo: usize,
) {
    match rows {
        [a] => by_cols::<1, 1>(w, nb, [*a], cols, out, ldo),
        [a, b] => by_cols::<2, 2>(w, nb, [*a, *b], cols, out, ldo),
        [a, b, c] => by_cols::<3, 2>(w, nb, [*a, *b, *c], cols, out, ldo),
        [a, b, c, d] => by_cols::<4, 2>(w, nb, [*a, *b, *c, *d], cols, out, ldo),
        _ => debug_assert!(false, "1 to 4 rows per call, got {}", rows.len()),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn by_cols<const R: usize, const C: usize>(
    w: &Soa,
    nb: usize,
    rows: [Q8Row<'_>; R],
    cols: Range<usize>,
    out: &mut [f32],
    ldo: usize,
) {
    let mut c = cols.start;
    while c + C <= cols.end {
        let t = tile::<R, C>(w, nb, std::array::from_fn(|j| c + j), &rows);
        for (i, tr) in t.iter().enumerate() {
            let o = i * ldo + c - cols.start;
            out[o..o + C].copy_from_slice(tr);
        }
        c += C;
    }
    while c < cols.end {
        let t = tile::<R, 1>(w, nb, [c], &rows);
        for (i, tr) in t.iter().enumerate() {
            out[i * ldo + c - cols.start] = tr[0];
        }
        c += 1;
    }
}

/// Dots of `R` activation rows with `C` weight rows (`cols`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile<const R: usize, const C: usize>(
    w: &Soa,
    nb: usize,
    cols: [usize; C],
    rows: &[Q8Row<'_>; R],
) -> [[f32; C]; R] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut sc = [[[0f32; 8]; C]; R];
    let mut g = 0;
    while g < nb {
        let cnt = (nb - g).min(8);
        // Scales of this group of (up to) eight blocks.
        let dw: [__m256; C] = std::array::from_fn(|c| f16x8(&w.d, cols[c] * nb + g, cnt));
        for r in 0..R {
            let da = load_ps(&rows[r].d[g..g + 8]);
            for c in 0..C {
                store_ps(&mut sc[r][c], _mm256_mul_ps(dw[c], da));
            }
        }
        for i in 0..cnt {
            let b = g + i;
            let wv: [__m256i; C] = std::array::from_fn(|c| {
                let at = (cols[c] * nb + b) * 32;
                load32(&w.qs[at..at + 32])
            });
            // |w| for vpmaddubsw, and w's sign moved onto the activation.
            let wa: [__m256i; C] = std::array::from_fn(|c| _mm256_sign_epi8(wv[c], wv[c]));
            for r in 0..R {
                let av = load32(&rows[r].qs[b * QK..b * QK + QK]);
                for c in 0..C {
                    let y = _mm256_sign_epi8(av, wv[c]);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wa[c], y), ones);
                    let s = _mm256_broadcast_ss(&sc[r][c][i]);
                    acc[r][c] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(p), acc[r][c]);
                }
            }
        }
        g += 8;
    }
    acc.map(|row| row.map(|a| hsum_ps(a)))
}
