//! Q4_K, Q5_K and Q6_K weights (the file's blocks) times Q8_K activations.
//!
//! Per super-block and weight row, the quants are unpacked once and
//! multiplied with each of up to four activation rows; the sub-block scales
//! are applied in integers (`vpmaddwd`), so each super-block costs one f32
//! FMA per row. The Q4_K/Q5_K minimums use the activation's 16-element sums:
//! `dmin·Σ mn_j·(sum of sub-block j)`. Q6_K's −32 offset is
//! `vpmaddubsw(32, q8)` subtracted in i16.

use std::arch::x86_64::*;
use std::ops::Range;

use super::{hsum_ps, load16, load32};
use crate::engine::kernels::act::BlockQ8K;
use crate::engine::kernels::format::{off, QType};

/// `out[i·ldo + j] = rows[i] · weight row (cols.start + j)`, for 1 to 4
/// rows; `w` holds every weight row, `nb` super-blocks each.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn rows_q8k(
    qt: QType,
    w: &[u8],
    nb: usize,
    rows: &[&[BlockQ8K]],
    cols: Range<usize>,
    out: &mut [f32],
    ldo: usize,
) {
    match rows {
        [a] => by_cols::<1>(qt, w, nb, [*a], cols, out, ldo),
        [a, b] => by_cols::<2>(qt, w, nb, [*a, *b], cols, out, ldo),
        [a, b, c] => by_cols::<3>(qt, w, nb, [*a, *b, *c], cols, out, ldo),
        [a, b, c, d] => by_cols::<4>(qt, w, nb, [*a, *b, *c, *d], cols, out, ldo),
        _ => debug_assert!(false, "1 to 4 rows per call, got {}", rows.len()),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn by_cols<const R: usize>(
    qt: QType,
    w: &[u8],
    nb: usize,
    rows: [&[BlockQ8K]; R],
    cols: Range<usize>,
    out: &mut [f32],
    ldo: usize,
) {
    let rb = nb * qt.block_bytes();
    for c in cols.clone() {
        let wr = &w[c * rb..(c + 1) * rb];
        let t = match qt {
            QType::Q4K => tile_q45k::<false, R>(wr, rows),
            QType::Q5K => tile_q45k::<true, R>(wr, rows),
            QType::Q6K => tile_q6k::<R>(wr, rows),
            _ => [0.0; R],
        };
        for (i, v) in t.into_iter().enumerate() {
            out[i * ldo + c - cols.start] = v;
        }
    }
}

/// One f16 (bits) as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_at(b: &[u8], at: usize) -> f32 {
    let bits = u16::from_le_bytes([b[at], b[at + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// The eight 6-bit scales (i16 lanes 0..8) and minimums (lanes 8..16) of a
/// Q4_K/Q5_K super-block, from its 12 packed bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scales_mins_k4(s: &[u8]) -> __m256i {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let u = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (u0, u1, u2) = (u(0), u(1), u(2));
    // Bytes 0..8: scales 0..8; bytes 8..16: minimums 0..8.
    let sc_lo = u0 & KMASK1;
    let sc_hi = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
    let mn_lo = u1 & KMASK1;
    let mn_hi = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
    _mm256_cvtepu8_epi16(_mm_set_epi32(
        mn_hi as i32,
        mn_lo as i32,
        sc_hi as i32,
        sc_lo as i32,
    ))
}

/// Q4_K (`K5 = false`) or Q5_K: dots of one weight row with `R` rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_q45k<const K5: bool, const R: usize>(w: &[u8], rows: [&[BlockQ8K]; R]) -> [f32; R] {
    let (bb, scales_at, qs_at) = if K5 {
        (176, off::Q5K_SCALES, off::Q5K_QS)
    } else {
        (144, off::Q4K_SCALES, off::Q4K_QS)
    };
    let m4 = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(1);
    let mut acc = [_mm256_setzero_ps(); R];
    for (sb, blk) in w.chunks_exact(bb).enumerate() {
        let d = f16_at(blk, 0);
        let dmin = f16_at(blk, 2);
        let sm = scales_mins_k4(&blk[scales_at..scales_at + 12]);
        let mins = _mm256_extracti128_si256::<1>(sm);
        let sc128 = _mm256_castsi256_si128(sm);
        let scales = _mm256_set_m128i(sc128, sc128);
        for r in 0..R {
            let y = &rows[r][sb];
            let bs = load32(&y.bsums);
            let q8s = _mm_hadd_epi16(
                _mm256_castsi256_si128(bs),
                _mm256_extracti128_si256::<1>(bs),
            );
            let m = _mm_mul_ps(
                _mm_set1_ps(-dmin * y.d),
                _mm_cvtepi32_ps(_mm_madd_epi16(mins, q8s)),
            );
            acc[r] = _mm256_add_ps(acc[r], _mm256_set_m128(_mm_setzero_ps(), m));
        }
        let hbits = if K5 {
            load32(&blk[off::Q5K_QH..off::Q5K_QH + 32])
        } else {
            _mm256_setzero_si256()
        };
        let mut sumi = [_mm256_setzero_si256(); R];
        for j in 0..4 {
            let lo_idx = (4 * j) as i16;
            let scale_l =
                _mm256_shuffle_epi8(scales, _mm256_set1_epi16(((lo_idx + 1) << 8) | lo_idx));
            let scale_h = _mm256_shuffle_epi8(
                scales,
                _mm256_set1_epi16(((lo_idx + 3) << 8) | (lo_idx + 2)),
            );
            let q = load32(&blk[qs_at + 32 * j..qs_at + 32 * j + 32]);
            let mut lo = _mm256_and_si256(q, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
            if K5 {
                let bit = |s: usize| {
                    let b = _mm256_srl_epi16(hbits, _mm_cvtsi32_si128(s as i32));
                    _mm256_slli_epi16::<4>(_mm256_and_si256(b, one))
                };
                lo = _mm256_or_si256(lo, bit(2 * j));
                hi = _mm256_or_si256(hi, bit(2 * j + 1));
            }
            for r in 0..R {
                let y = &rows[r][sb].qs;
                let pl = _mm256_maddubs_epi16(lo, load32(&y[64 * j..64 * j + 32]));
                let ph = _mm256_maddubs_epi16(hi, load32(&y[64 * j + 32..64 * j + 64]));
                let s = _mm256_add_epi32(
                    _mm256_madd_epi16(scale_l, pl),
                    _mm256_madd_epi16(scale_h, ph),
                );
                sumi[r] = _mm256_add_epi32(sumi[r], s);
            }
        }
        for r in 0..R {
            let dd = _mm256_set1_ps(d * rows[r][sb].d);
            acc[r] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(sumi[r]), acc[r]);
        }
    }
    acc.map(|a| hsum_ps(a))
}

/// Q6_K: dots of one weight row with `R` rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_q6k<const R: usize>(w: &[u8], rows: [&[BlockQ8K]; R]) -> [f32; R] {
    let m4 = _mm256_set1_epi8(0x0F);
    let m3 = _mm256_set1_epi8(3);
    let m32s = _mm256_set1_epi8(32);
    let mut acc = [_mm256_setzero_ps(); R];
    for (sb, blk) in w.chunks_exact(QType::Q6K.block_bytes()).enumerate() {
        let d = f16_at(blk, off::Q6K_D);
        let scales = load16(&blk[off::Q6K_SCALES..off::Q6K_SCALES + 16]);
        let mut sumi = [_mm256_setzero_si256(); R];
        for j in 0..2 {
            let b1 = load32(&blk[64 * j..64 * j + 32]);
            let b2 = load32(&blk[64 * j + 32..64 * j + 64]);
            let bh = load32(&blk[off::Q6K_QH + 32 * j..off::Q6K_QH + 32 * j + 32]);
            let high = |s: i32| {
                let h = _mm256_srl_epi16(bh, _mm_cvtsi32_si128(s));
                _mm256_slli_epi16::<4>(_mm256_and_si256(h, m3))
            };
            let q = [
                _mm256_or_si256(_mm256_and_si256(b1, m4), high(0)),
                _mm256_or_si256(_mm256_and_si256(b2, m4), high(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(b1), m4), high(4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(b2), m4), high(6)),
            ];
            for (k, qk) in q.iter().enumerate() {
                // Scales 2i and 2i+1 for the two 16-element halves of these 32.
                let i = (4 * j + k) as i64;
                let ctrl = _mm_set_epi64x(
                    (2 * i + 1) * 0x0101_0101_0101_0101,
                    2 * i * 0x0101_0101_0101_0101,
                );
                let sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, ctrl));
                for r in 0..R {
                    let at = 128 * j + 32 * k;
                    let q8 = load32(&rows[r][sb].qs[at..at + 32]);
                    let p = _mm256_sub_epi16(
                        _mm256_maddubs_epi16(*qk, q8),
                        _mm256_maddubs_epi16(m32s, q8),
                    );
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(sc, p));
                }
            }
        }
        for r in 0..R {
            let dd = _mm256_set1_ps(d * rows[r][sb].d);
            acc[r] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(sumi[r]), acc[r]);
        }
    }
    acc.map(|a| hsum_ps(a))
}
