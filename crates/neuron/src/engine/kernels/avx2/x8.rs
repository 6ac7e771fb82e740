//! Q4_0, Q4_1 and Q5_0 weights interleaved by eight rows ([`X8`]) times Q8
//! activations: each 32-bit lane of a register is one output column.
//!
//! Per block, the 128 quant bytes of eight weight rows are four registers;
//! each holds 4 bytes of every row (low nibbles: elements 4j..4j+4, high
//! nibbles: 16+4j..). `vpmaddubsw` against 4 activation bytes broadcast to
//! every lane gives, per lane, two sums of two products; eight of those add
//! up in i16 without overflow (16 products of ≤ 15·127 < 2^15) and
//! `vpmaddwd` finishes the block's dot product per column. The block scales
//! of the eight rows are one f16 load, and the 4/5-bit offset or Q4_1's
//! minimum is `m·s_a` per block (see `legacy`). No horizontal sums: the
//! accumulator is the eight outputs.
//!
//! Q5_0 (values up to 31) is widened after every two chunks, and its fifth
//! bits are stored as eight 32-bit planes per block, one per (chunk, half),
//! bit `4·lane + k` for byte k of a lane: GGML's `bytes_from_bits_32` turns a
//! plane into the 0x10 bytes of one register.

use std::arch::x86_64::*;

use super::load32;
use crate::engine::kernels::act::Q8Row;
use crate::engine::kernels::format::{QType, QK};
use crate::engine::kernels::weights::X8;

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;

/// `out[i·ldo + j] = rows[i] · weight row (cols.start + j)`; `cols.start`
/// is a multiple of 8 (a row group's first row).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn rows_x8(
    qt: QType,
    w: &X8,
    nb: usize,
    rows: &[Q8Row<'_>],
    cols: std::ops::Range<usize>,
    out: &mut [f32],
    ldo: usize,
) {
    debug_assert_eq!(cols.start % 8, 0);
    let (groups, ncols) = (cols.start / 8..cols.end.div_ceil(8), cols.len());
    match qt {
        QType::Q4_0 => by_rows::<Q4_0>(w, nb, rows, groups, ncols, out, ldo),
        QType::Q4_1 => by_rows::<Q4_1>(w, nb, rows, groups, ncols, out, ldo),
        QType::Q5_0 => by_rows::<Q5_0>(w, nb, rows, groups, ncols, out, ldo),
        _ => debug_assert!(false, "{qt:?} is not interleaved"),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn by_rows<const K: u8>(
    w: &X8,
    nb: usize,
    rows: &[Q8Row<'_>],
    groups: std::ops::Range<usize>,
    ncols: usize,
    out: &mut [f32],
    ldo: usize,
) {
    match rows {
        [a] => by_groups::<K, 1>(w, nb, &[*a], groups, ncols, out, ldo),
        [a, b] => by_groups::<K, 2>(w, nb, &[*a, *b], groups, ncols, out, ldo),
        [a, b, c] => by_groups::<K, 3>(w, nb, &[*a, *b, *c], groups, ncols, out, ldo),
        [a, b, c, d] => by_groups::<K, 4>(w, nb, &[*a, *b, *c, *d], groups, ncols, out, ldo),
        _ => debug_assert!(false, "1 to 4 rows per call, got {}", rows.len()),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn by_groups<const K: u8, const R: usize>(
    w: &X8,
    nb: usize,
    rows: &[Q8Row<'_>; R],
    groups: std::ops::Range<usize>,
    ncols: usize,
    out: &mut [f32],
    ldo: usize,
) {
    for (gi, g) in groups.enumerate() {
        let t = tile::<K, R>(w, nb, g, rows);
        let c0 = 8 * gi;
        let width = ncols.saturating_sub(c0).min(8);
        for (i, tr) in t.iter().enumerate() {
            out[i * ldo + c0..i * ldo + c0 + width].copy_from_slice(&tr[..width]);
        }
    }
}

/// 4 activation bytes at `at`, in every lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bcast4(a: &[i8], at: usize) -> __m256i {
    let b = &a[at..at + 4];
    _mm256_set1_epi32(i32::from_le_bytes([
        b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8,
    ]))
}

/// The 0x10 bits of one Q5_0 plane: byte e gets 0x10 if bit e is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn plane_bits(plane: u32) -> __m256i {
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(plane as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let set = _mm256_cmpeq_epi8(
        _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe)),
        _mm256_set1_epi64x(-1),
    );
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// Dots of `R` activation rows with the eight weight rows of group `g`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile<const K: u8, const R: usize>(
    w: &X8,
    nb: usize,
    g: usize,
    rows: &[Q8Row<'_>; R],
) -> [[f32; 8]; R] {
    let ones = _mm256_set1_epi16(1);
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..nb {
        let i = g * nb + b;
        let q = &w.qs[i * 128..i * 128 + 128];
        let mut lo = [_mm256_setzero_si256(); 4];
        let mut hi = [_mm256_setzero_si256(); 4];
        for j in 0..4 {
            let x = load32(&q[32 * j..32 * j + 32]);
            lo[j] = _mm256_and_si256(x, m4);
            hi[j] = _mm256_and_si256(_mm256_srli_epi16::<4>(x), m4);
        }
        if K == Q5_0 {
            let planes = &w.qh[i * 8..i * 8 + 8];
            for j in 0..4 {
                lo[j] = _mm256_or_si256(lo[j], plane_bits(planes[2 * j]));
                hi[j] = _mm256_or_si256(hi[j], plane_bits(planes[2 * j + 1]));
            }
        }
        let d = &w.d[i * 8..i * 8 + 8];
        // SAFETY: `d` is 8 u16 = 16 bytes; `loadu` has no alignment requirement.
        let dw = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(d.as_ptr().cast()) });
        let mw = match K {
            Q4_1 => {
                let m = &w.m[i * 8..i * 8 + 8];
                // SAFETY: as above.
                _mm256_cvtph_ps(unsafe { _mm_loadu_si128(m.as_ptr().cast()) })
            }
            Q4_0 => _mm256_mul_ps(dw, _mm256_set1_ps(-8.0)),
            _ => _mm256_mul_ps(dw, _mm256_set1_ps(-16.0)),
        };
        for r in 0..R {
            let a = &rows[r].qs[b * QK..b * QK + QK];
            let part = |j: usize| {
                _mm256_add_epi16(
                    _mm256_maddubs_epi16(lo[j], bcast4(a, 4 * j)),
                    _mm256_maddubs_epi16(hi[j], bcast4(a, 16 + 4 * j)),
                )
            };
            let p = if K == Q5_0 {
                _mm256_add_epi32(
                    _mm256_madd_epi16(_mm256_add_epi16(part(0), part(1)), ones),
                    _mm256_madd_epi16(_mm256_add_epi16(part(2), part(3)), ones),
                )
            } else {
                let s = _mm256_add_epi16(
                    _mm256_add_epi16(part(0), part(1)),
                    _mm256_add_epi16(part(2), part(3)),
                );
                _mm256_madd_epi16(s, ones)
            };
            let sc = _mm256_mul_ps(dw, _mm256_set1_ps(rows[r].d[b]));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sc, acc[r]);
            acc[r] = _mm256_fmadd_ps(mw, _mm256_set1_ps(rows[r].s[b]), acc[r]);
        }
    }
    acc.map(|a| {
        let mut o = [0f32; 8];
        super::store_ps(&mut o, a);
        o
    })
}
