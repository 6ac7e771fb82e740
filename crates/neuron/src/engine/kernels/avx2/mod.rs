//! AVX2 + FMA + F16C kernels (x86-64-v3).
//!
//! Every function here is compiled with
//! `#[target_feature(enable = "avx2,fma,f16c")]`; the safe ones may only be
//! called from code with the same features, and the crate reaches them only
//! through `unsafe` calls made after [`Level::detected`](super::Level)
//! reported AVX2. Intrinsics are inlined into each other because they share
//! the feature set.
//!
//! The SIMD tricks are GGML's (ggml-cpu `arch/x86/quants.c`), written anew:
//! `vpmaddubsw` multiplies unsigned weight bytes by signed activation bytes
//! and adds pairs into i16 (no overflow: |w| ≤ 63 or, for Q8_0, the sign of
//! the weight moved onto the activation), `vpmaddwd` widens to i32 (times
//! the sub-block scale for the K-quants), and the block scales are applied
//! in f32 with FMA.

mod kquants;
mod q8_0;
mod x8;

pub use kquants::rows_q8k;
pub use q8_0::rows_q8_0;
pub use x8::rows_x8;

use std::arch::x86_64::*;

/// Horizontal sum of eight f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Horizontal sum of eight i32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// The first 32 bytes of `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load32<T: Copy>(s: &[T]) -> __m256i {
    let bytes = std::mem::size_of_val(s);
    assert!(bytes >= 32, "load32 needs 32 bytes, got {bytes}");
    // SAFETY: the assertion keeps the 32 bytes read inside `s`; `loadu` has
    // no alignment requirement, and `T` is a plain integer type.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// The first 16 bytes of `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load16(s: &[u8]) -> __m128i {
    assert!(s.len() >= 16, "load16 needs 16 bytes, got {}", s.len());
    // SAFETY: the assertion keeps the 16 bytes read inside `s`; `loadu` has
    // no alignment requirement.
    unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
}

/// The first 8 f32 of `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_ps(s: &[f32]) -> __m256 {
    assert!(s.len() >= 8, "load_ps needs 8 floats, got {}", s.len());
    // SAFETY: the assertion keeps the 8 floats read inside `s`; `loadu` has
    // no alignment requirement.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

/// `a[at..at + cnt]` (f16 bits, `cnt` ≤ 8) as 8 f32; lanes past `cnt` are
/// zero. Reads 8 values when the array has them (masking the rest: they are
/// the next row's, never used), and copies the tail only at the array's end.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16x8(a: &[u16], at: usize, cnt: usize) -> __m256 {
    if let Some(s) = a.get(at..at + 8) {
        // SAFETY: `s` is 8 u16 = 16 bytes; `loadu` has no alignment requirement.
        let v = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(s.as_ptr().cast()) });
        if cnt >= 8 {
            return v;
        }
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt as i32), lanes);
        return _mm256_and_ps(v, _mm256_castsi256_ps(keep));
    }
    let mut pad = [0u16; 8];
    pad[..cnt].copy_from_slice(&a[at..at + cnt]);
    // SAFETY: `pad` is 16 bytes; `loadu` has no alignment requirement.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(pad.as_ptr().cast()) })
}

/// Stores 8 f32 into `out`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store_ps(out: &mut [f32; 8], v: __m256) {
    // SAFETY: `out` is 8 writable floats; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) }
}

/// f32 to f16 precision (round to nearest even) and back.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn round_f16(x: f32) -> f32 {
    let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x));
    _mm_cvtss_f32(_mm_cvtph_ps(h))
}

/// [`super::act::quantize_row_q8_scalar`] with the same result bits.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn quantize_row_q8(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32], sum_f16: bool) {
    let sign = _mm256_set1_ps(-0.0);
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (((xb, qb), db), sb) in x
        .chunks_exact(32)
        .zip(qs.chunks_exact_mut(32))
        .zip(d.iter_mut())
        .zip(s.iter_mut())
    {
        let v = [
            load_ps(&xb[0..8]),
            load_ps(&xb[8..16]),
            load_ps(&xb[16..24]),
            load_ps(&xb[24..32]),
        ];
        let mut mx = _mm256_andnot_ps(sign, v[0]);
        for vi in &v[1..] {
            mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, *vi));
        }
        let m4 = _mm_max_ps(_mm256_extractf128_ps::<1>(mx), _mm256_castps256_ps128(mx));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        let amax = _mm_cvtss_f32(m4);
        let dd = amax / 127.0;
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        let q = v.map(|vi| {
            _mm256_cvtps_epi32(_mm256_round_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(_mm256_mul_ps(vi, id)))
        });
        let sum = hsum_epi32(_mm256_add_epi32(
            _mm256_add_epi32(q[0], q[1]),
            _mm256_add_epi32(q[2], q[3]),
        ));
        let p = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let p = _mm256_permutevar8x32_epi32(p, perm);
        // SAFETY: `qb` is 32 writable bytes; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_si256(qb.as_mut_ptr().cast(), p) };
        let dq = round_f16(dd);
        *db = dq;
        *sb = if sum_f16 {
            round_f16(dd * sum as f32)
        } else {
            dq * sum as f32
        };
    }
}
