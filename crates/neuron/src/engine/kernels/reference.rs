//! The scalar kernels: straight from GGML's block definitions (its
//! `ggml_vec_dot_*_generic` and `dequantize_row_*`), on the file's own block
//! bytes. They are the portable fallback ([`Level::Scalar`](super::Level))
//! and the reference every SIMD kernel is tested against: integer sums are
//! exact, and the float combination follows GGML's order.

use super::act::{BlockQ8K, Q8Row};
use super::format::{f16_at, off, scale_min_k4, QType, QK, QK_K};

/// Dot product of one legacy-type weight row (`nb` blocks of file bytes)
/// with one quantized activation row.
pub fn dot_q8(qt: QType, w: &[u8], a: Q8Row<'_>) -> f32 {
    let bb = qt.block_bytes();
    let mut sumf = 0f32;
    for (b, (blk, aq)) in w.chunks_exact(bb).zip(a.qs.chunks_exact(QK)).enumerate() {
        let dw = f16_at(blk, 0);
        let da = a.d[b];
        match qt {
            QType::Q4_0 => {
                let qs = &blk[2..18];
                let mut sumi = 0i32;
                for j in 0..QK / 2 {
                    let v0 = i32::from(qs[j] & 0x0F) - 8;
                    let v1 = i32::from(qs[j] >> 4) - 8;
                    sumi += v0 * i32::from(aq[j]) + v1 * i32::from(aq[j + QK / 2]);
                }
                sumf += sumi as f32 * (dw * da);
            }
            QType::Q4_1 => {
                let m = f16_at(blk, 2);
                let qs = &blk[4..20];
                let mut sumi = 0i32;
                for j in 0..QK / 2 {
                    let v0 = i32::from(qs[j] & 0x0F);
                    let v1 = i32::from(qs[j] >> 4);
                    sumi += v0 * i32::from(aq[j]) + v1 * i32::from(aq[j + QK / 2]);
                }
                sumf += sumi as f32 * (dw * da) + m * a.s[b];
            }
            QType::Q5_0 => {
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                let qs = &blk[6..22];
                let mut sumi = 0i32;
                for j in 0..QK / 2 {
                    let h0 = ((qh >> j) << 4) & 0x10;
                    let h1 = (qh >> (j + 12)) & 0x10;
                    let v0 = (u32::from(qs[j] & 0x0F) | h0) as i32 - 16;
                    let v1 = (u32::from(qs[j] >> 4) | h1) as i32 - 16;
                    sumi += v0 * i32::from(aq[j]) + v1 * i32::from(aq[j + QK / 2]);
                }
                sumf += sumi as f32 * (dw * da);
            }
            QType::Q8_0 => {
                let sumi: i32 = blk[2..34]
                    .iter()
                    .zip(aq)
                    .map(|(&w, &a)| i32::from(w as i8) * i32::from(a))
                    .sum();
                sumf += sumi as f32 * (dw * da);
            }
            QType::Q4K | QType::Q5K | QType::Q6K => {
                debug_assert!(false, "{qt:?} takes Q8_K activations");
            }
        }
    }
    sumf
}

/// Dot product of one K-quant weight row with one Q8_K activation row.
pub fn dot_q8k(qt: QType, w: &[u8], a: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (blk, y) in w.chunks_exact(qt.block_bytes()).zip(a) {
        let q8 = &y.qs;
        match qt {
            QType::Q4K | QType::Q5K => {
                let d = f16_at(blk, 0) * y.d;
                let dmin = f16_at(blk, 2) * y.d;
                let scales = &blk[off::Q4K_SCALES..off::Q4K_SCALES + 12];
                let mut summ = 0i32;
                for j in 0..8 {
                    let (_, mn) = scale_min_k4(j, scales);
                    summ +=
                        i32::from(mn) * (i32::from(y.bsums[2 * j]) + i32::from(y.bsums[2 * j + 1]));
                }
                let mut sumi = 0i32;
                for c in 0..4 {
                    let (sc_lo, _) = scale_min_k4(2 * c, scales);
                    let (sc_hi, _) = scale_min_k4(2 * c + 1, scales);
                    let (mut lo, mut hi) = (0i32, 0i32);
                    for l in 0..32 {
                        let (wl, wh) = k4_or_k5(qt, blk, c, l);
                        lo += wl * i32::from(q8[64 * c + l]);
                        hi += wh * i32::from(q8[64 * c + 32 + l]);
                    }
                    sumi += i32::from(sc_lo) * lo + i32::from(sc_hi) * hi;
                }
                sumf += d * sumi as f32 - dmin * summ as f32;
            }
            QType::Q6K => {
                let d = f16_at(blk, off::Q6K_D) * y.d;
                let mut sumi = 0i32;
                for (g, &sc) in blk[off::Q6K_SCALES..off::Q6K_SCALES + 16]
                    .iter()
                    .enumerate()
                {
                    let mut s = 0i32;
                    for e in 16 * g..16 * g + 16 {
                        s += q6k_quant(blk, e) * i32::from(q8[e]);
                    }
                    sumi += i32::from(sc as i8) * s;
                }
                sumf += d * sumi as f32;
            }
            _ => debug_assert!(false, "{qt:?} takes Q8 activations"),
        }
    }
    sumf
}

/// The quants (low half, high half) at position `l` of 64-element chunk `c`
/// of a Q4_K or Q5_K block: values 0..15 or 0..31.
#[inline]
fn k4_or_k5(qt: QType, blk: &[u8], c: usize, l: usize) -> (i32, i32) {
    if qt == QType::Q4K {
        let q = blk[off::Q4K_QS + 32 * c + l];
        (i32::from(q & 0x0F), i32::from(q >> 4))
    } else {
        let q = blk[off::Q5K_QS + 32 * c + l];
        let h = blk[off::Q5K_QH + l];
        (
            i32::from(q & 0x0F) + 16 * i32::from((h >> (2 * c)) & 1),
            i32::from(q >> 4) + 16 * i32::from((h >> (2 * c + 1)) & 1),
        )
    }
}

/// Element `e` (0..256) of a Q6_K block as a signed quant (−32..31).
#[inline]
fn q6k_quant(blk: &[u8], e: usize) -> i32 {
    let half = e / 128;
    let quarter = (e % 128) / 32;
    let l = e % 32;
    let ql = &blk[64 * half..64 * half + 64];
    let qh = blk[off::Q6K_QH + 32 * half + l];
    let low = match quarter {
        0 => ql[l] & 0x0F,
        1 => ql[l + 32] & 0x0F,
        2 => ql[l] >> 4,
        _ => ql[l + 32] >> 4,
    };
    let high = (qh >> (2 * quarter)) & 3;
    i32::from(low | (high << 4)) - 32
}

/// Dequantizes one weight row (`nb` blocks of file bytes) into `out`
/// (`nb × block_elems` values).
pub fn dequantize_row(qt: QType, w: &[u8], out: &mut [f32]) {
    let be = qt.block_elems();
    for (blk, y) in w
        .chunks_exact(qt.block_bytes())
        .zip(out.chunks_exact_mut(be))
    {
        match qt {
            QType::Q4_0 => {
                let d = f16_at(blk, 0);
                let qs = &blk[2..18];
                for j in 0..QK / 2 {
                    y[j] = (i32::from(qs[j] & 0x0F) - 8) as f32 * d;
                    y[j + QK / 2] = (i32::from(qs[j] >> 4) - 8) as f32 * d;
                }
            }
            QType::Q4_1 => {
                let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
                let qs = &blk[4..20];
                for j in 0..QK / 2 {
                    y[j] = f32::from(qs[j] & 0x0F) * d + m;
                    y[j + QK / 2] = f32::from(qs[j] >> 4) * d + m;
                }
            }
            QType::Q5_0 => {
                let d = f16_at(blk, 0);
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                let qs = &blk[6..22];
                for j in 0..QK / 2 {
                    let h0 = ((qh >> j) << 4) & 0x10;
                    let h1 = (qh >> (j + 12)) & 0x10;
                    y[j] = ((u32::from(qs[j] & 0x0F) | h0) as i32 - 16) as f32 * d;
                    y[j + QK / 2] = ((u32::from(qs[j] >> 4) | h1) as i32 - 16) as f32 * d;
                }
            }
            QType::Q8_0 => {
                let d = f16_at(blk, 0);
                for (v, &q) in y.iter_mut().zip(&blk[2..34]) {
                    *v = f32::from(q as i8) * d;
                }
            }
            QType::Q4K | QType::Q5K => {
                let d = f16_at(blk, 0);
                let dmin = f16_at(blk, 2);
                let scales = &blk[off::Q4K_SCALES..off::Q4K_SCALES + 12];
                for c in 0..4 {
                    let (s1, m1) = scale_min_k4(2 * c, scales);
                    let (s2, m2) = scale_min_k4(2 * c + 1, scales);
                    let (d1, m1) = (d * f32::from(s1), dmin * f32::from(m1));
                    let (d2, m2) = (d * f32::from(s2), dmin * f32::from(m2));
                    for l in 0..32 {
                        let (wl, wh) = k4_or_k5(qt, blk, c, l);
                        y[64 * c + l] = d1 * wl as f32 - m1;
                        y[64 * c + 32 + l] = d2 * wh as f32 - m2;
                    }
                }
            }
            QType::Q6K => {
                let d = f16_at(blk, off::Q6K_D);
                for (e, v) in y.iter_mut().enumerate().take(QK_K) {
                    let sc = blk[off::Q6K_SCALES + e / 16] as i8;
                    *v = d * f32::from(sc) * q6k_quant(blk, e) as f32;
                }
            }
        }
    }
}
