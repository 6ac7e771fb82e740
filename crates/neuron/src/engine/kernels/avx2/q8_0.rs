//! Q4_0, Q4_1, Q5_0 and Q8_0 weights (repacked, [`Soa`]) times Q8
//! activations.
//!
//! One micro-kernel for all four, specialised by a const type tag, computes
//! an `R × C` tile (R activation rows, C weight rows). Per group of eight
//! blocks it converts the eight f16 scales of each weight row at once and
//! stores the products `d_w·d_a` for the tile; per block it unpacks each
//! weight block once and multiplies it with every activation row.
//!
//! The 4- and 5-bit weights are used unsigned (0..15, 0..31): their offset
//! (−8, −16) becomes a minimum `m = −8·d` (−16·d), which with Q4_1's own
//! minimum enters as `m·s_a` per block, `s_a = d_a·Σq_a`. The minimum terms
//! of eight blocks are one FMA on the same accumulator (its lanes are summed
//! at the end anyway). Q8_0 is signed: its sign moves onto the activation
//! (`vpsignb`) so `vpmaddubsw` sees |w|.

use std::arch::x86_64::*;
use std::ops::Range;

use super::{f16x8, hsum_ps, load16, load32, load_ps, store_ps};
use crate::engine::kernels::act::Q8Row;
use crate::engine::kernels::format::{QType, QK};
use crate::engine::kernels::weights::Soa;

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q8_0: u8 = 3;

/// `out[i·ldo + j] = rows[i] · weight row (cols.start + j)`, for 1 to 4 rows.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn rows_q8(
    qt: QType,
    w: &Soa,
    nb: usize,
    rows: &[Q8Row<'_>],
    cols: Range<usize>,
    out: &mut [f32],
    ldo: usize,
) {
    match qt {
        QType::Q4_0 => by_rows::<Q4_0>(w, nb, rows, cols, out, ldo),
        QType::Q4_1 => by_rows::<Q4_1>(w, nb, rows, cols, out, ldo),
        QType::Q5_0 => by_rows::<Q5_0>(w, nb, rows, cols, out, ldo),
        QType::Q8_0 => by_rows::<Q8_0>(w, nb, rows, cols, out, ldo),
        QType::Q4K | QType::Q5K | QType::Q6K => {
            debug_assert!(false, "{qt:?} is not a legacy type")
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn by_rows<const K: u8>(
    w: &Soa,
    nb: usize,
    rows: &[Q8Row<'_>],
    cols: Range<usize>,
    out: &mut [f32],
    ldo: usize,
) {
    match rows {
        [a] if K == Q8_0 => by_cols::<K, 1, 1>(w, nb, [*a], cols, out, ldo),
        [a] => by_cols::<K, 1, 4>(w, nb, [*a], cols, out, ldo),
        [a, b] => by_cols::<K, 2, 2>(w, nb, [*a, *b], cols, out, ldo),
        [a, b, c] => by_cols::<K, 3, 2>(w, nb, [*a, *b, *c], cols, out, ldo),
        [a, b, c, d] => by_cols::<K, 4, 2>(w, nb, [*a, *b, *c, *d], cols, out, ldo),
        _ => debug_assert!(false, "1 to 4 rows per call, got {}", rows.len()),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn by_cols<const K: u8, const R: usize, const C: usize>(
    w: &Soa,
    nb: usize,
    rows: [Q8Row<'_>; R],
    cols: Range<usize>,
    out: &mut [f32],
    ldo: usize,
) {
    let mut c = cols.start;
    while c + C <= cols.end {
        let t = tile::<K, R, C>(w, nb, std::array::from_fn(|j| c + j), &rows);
        for (i, tr) in t.iter().enumerate() {
            let o = i * ldo + c - cols.start;
            out[o..o + C].copy_from_slice(tr);
        }
        c += C;
    }
    while c < cols.end {
        let t = tile::<K, R, 1>(w, nb, [c], &rows);
        for (i, tr) in t.iter().enumerate() {
            out[i * ldo + c - cols.start] = tr[0];
        }
        c += 1;
    }
}

/// The weight block at flat index `i` as 32 bytes: unsigned quants for the
/// 4/5-bit types, signed for Q8_0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack<const K: u8>(w: &Soa, i: usize) -> __m256i {
    if K == Q8_0 {
        return load32(&w.qs[i * 32..i * 32 + 32]);
    }
    let raw = load16(&w.qs[i * 16..i * 16 + 16]);
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw);
    let nib = _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
    if K != Q5_0 {
        return nib;
    }
    // Spread the 32 fifth bits to one byte each (0xFF where set), GGML's
    // `bytes_from_bits_32`: byte e takes byte e/8 of qh, then every bit but
    // bit e%8 is forced on, and only bytes that became all-ones had it set.
    let qh = w.qh[i] as i32;
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(qh),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let bits = _mm256_cmpeq_epi8(
        _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe)),
        _mm256_set1_epi64x(-1),
    );
    _mm256_or_si256(nib, _mm256_and_si256(bits, _mm256_set1_epi8(0x10)))
}

/// Dots of `R` activation rows with `C` weight rows (`cols`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile<const K: u8, const R: usize, const C: usize>(
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
        let mut dw = [_mm256_setzero_ps(); C];
        let mut mw = [_mm256_setzero_ps(); C];
        for c in 0..C {
            let base = cols[c] * nb + g;
            dw[c] = f16x8(&w.d, base, cnt);
            mw[c] = match K {
                Q4_1 => f16x8(&w.m, base, cnt),
                Q4_0 => _mm256_mul_ps(dw[c], _mm256_set1_ps(-8.0)),
                Q5_0 => _mm256_mul_ps(dw[c], _mm256_set1_ps(-16.0)),
                _ => _mm256_setzero_ps(),
            };
        }
        for r in 0..R {
            let da = load_ps(&rows[r].d[g..g + 8]);
            let sa = load_ps(&rows[r].s[g..g + 8]);
            for c in 0..C {
                store_ps(&mut sc[r][c], _mm256_mul_ps(dw[c], da));
                if K != Q8_0 {
                    acc[r][c] = _mm256_fmadd_ps(mw[c], sa, acc[r][c]);
                }
            }
        }
        for i in 0..cnt {
            let b = g + i;
            let wv: [__m256i; C] = std::array::from_fn(|c| unpack::<K>(w, cols[c] * nb + b));
            // Q8_0: |w| for vpmaddubsw, and w's sign moved onto the activation.
            let wa: [__m256i; C] = std::array::from_fn(|c| {
                if K == Q8_0 {
                    _mm256_sign_epi8(wv[c], wv[c])
                } else {
                    wv[c]
                }
            });
            for r in 0..R {
                let av = load32(&rows[r].qs[b * QK..b * QK + QK]);
                for c in 0..C {
                    let y = if K == Q8_0 {
                        _mm256_sign_epi8(av, wv[c])
                    } else {
                        av
                    };
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
