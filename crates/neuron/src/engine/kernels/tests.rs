//! Every kernel at every level this CPU supports against the scalar
//! reference ([`reference`]), on random blocks (proptest).
//!
//! Two kinds of case:
//! - exact: every scale is 1.0, so all terms are integers and the result
//!   must equal the reference exactly while the sum of |terms| stays below
//!   2^24 (where f32 holds every integer) — this is what catches a wrong
//!   quant, a lost bit or an i16 overflow;
//! - scaled: random f16 scales; the result must lie within the rounding
//!   error of an f32 sum, `2·(nb + 10)·2^-24·Σ|terms|`, of the reference.
//!
//! Activations are any 8-bit quants in −127..=127 (the quantizer never
//! produces −128, and the Q8_0 kernel relies on it, as GGML's does).

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::act::{quantize_row_q8_scalar, ActQ8, ActQ8K, BlockQ8K};
use super::format::{f16_at, off, round_f16, scale_min_k4, QType, QK, QK_K};
use super::matmul::Scratch;
use super::reference;
use super::{Level, QMatMul};

/// A weight matrix, activations, and whether every scale is 1.
#[derive(Debug, Clone)]
struct Case {
    qt: QType,
    n: usize,
    nb: usize,
    m: usize,
    w: Vec<u8>,
    aq: Vec<i8>,
    ad: Vec<f32>,
    exact: bool,
}

const ONE_F16: [u8; 2] = 0x3C00u16.to_le_bytes();

/// A finite f16 scale of either sign between 2^-10 and 2.
fn scale_f16(seed: u16) -> [u8; 2] {
    let mag = f32::from(seed % 2048 + 1) / 1024.0; // (0, 2]
    let v = if seed & 0x8000 != 0 { -mag } else { mag };
    half::f16::from_f32(v.max(-2.0)).to_bits().to_le_bytes()
}

/// Sets the f16 scale fields of every block of `w`.
fn set_scales(qt: QType, w: &mut [u8], seeds: &[u16], exact: bool) {
    let mut it = seeds.iter().cycle();
    for blk in w.chunks_exact_mut(qt.block_bytes()) {
        let mut pick = || {
            if exact {
                ONE_F16
            } else {
                scale_f16(*it.next().unwrap())
            }
        };
        match qt {
            QType::Q6K => blk[off::Q6K_D..off::Q6K_D + 2].copy_from_slice(&pick()),
            QType::Q4_1 | QType::Q4K | QType::Q5K => {
                blk[0..2].copy_from_slice(&pick());
                blk[2..4].copy_from_slice(&pick());
            }
            _ => blk[0..2].copy_from_slice(&pick()),
        }
    }
}

fn case(qt: QType, max_nb: usize) -> impl Strategy<Value = Case> {
    (1..=max_nb, 1..=11usize, 1..=6usize, any::<bool>()).prop_flat_map(move |(nb, n, m, exact)| {
        let elems = nb * qt.block_elems();
        (
            prop::collection::vec(any::<u8>(), n * nb * qt.block_bytes()),
            prop::collection::vec(-127i8..=127, m * elems),
            prop::collection::vec(any::<u16>(), 1..16),
            prop::collection::vec(1u16..2048, m * nb),
        )
            .prop_map(move |(mut w, aq, seeds, ad)| {
                set_scales(qt, &mut w, &seeds, exact);
                let ad = ad
                    .iter()
                    .map(|&s| {
                        if exact {
                            1.0
                        } else {
                            round_f16(f32::from(s) / 4096.0)
                        }
                    })
                    .collect();
                Case {
                    qt,
                    n,
                    nb,
                    m,
                    w,
                    aq,
                    ad,
                    exact,
                }
            })
    })
}

/// The activations of a case, in the kernels' format.
fn scratch(c: &Case) -> Scratch {
    let mut s = Scratch::default();
    if c.qt.is_k_quant() {
        s.q8k = ActQ8K {
            m: c.m,
            nb: c.nb,
            blocks: Vec::new(),
        };
        for (i, q) in c.aq.chunks_exact(QK_K).enumerate() {
            let mut b = BlockQ8K {
                d: c.ad[i],
                ..BlockQ8K::default()
            };
            b.qs.copy_from_slice(q);
            b.fill_bsums();
            s.q8k.blocks.push(b);
        }
    } else {
        let nbp = c.nb.div_ceil(8) * 8;
        let mut a = ActQ8 {
            m: c.m,
            nb: c.nb,
            nbp,
            d: vec![0.0; c.m * nbp],
            s: vec![0.0; c.m * nbp],
            qs: c.aq.clone(),
        };
        for r in 0..c.m {
            for b in 0..c.nb {
                let d = c.ad[r * c.nb + b];
                let at = (r * c.nb + b) * QK;
                let sum: i32 = c.aq[at..at + QK].iter().map(|&q| i32::from(q)).sum();
                a.d[r * nbp + b] = d;
                a.s[r * nbp + b] = if c.qt.act_sum_f16() {
                    round_f16(d * sum as f32)
                } else {
                    d * sum as f32
                };
            }
        }
        s.q8 = a;
    }
    s
}

/// Σ|terms| of one dot product, in any decomposition a kernel may use.
fn abs_bound(qt: QType, w: &[u8], act: &Scratch, r: usize) -> f64 {
    let mut t = 0f64;
    if qt.is_k_quant() {
        for (blk, y) in w.chunks_exact(qt.block_bytes()).zip(act.q8k.row(r)) {
            let abs_q8: Vec<f64> = y.qs.iter().map(|&q| f64::from(q).abs()).collect();
            let sum16 = |g: usize| abs_q8[16 * g..16 * g + 16].iter().sum::<f64>();
            if qt == QType::Q6K {
                let d = f64::from(f16_at(blk, off::Q6K_D) * y.d).abs();
                for g in 0..16 {
                    let sc = f64::from(blk[off::Q6K_SCALES + g] as i8).abs();
                    t += d * sc * 64.0 * sum16(g);
                }
            } else {
                let d = f64::from(f16_at(blk, 0) * y.d).abs();
                let dmin = f64::from(f16_at(blk, 2) * y.d).abs();
                for j in 0..8 {
                    let (sc, mn) = scale_min_k4(j, &blk[4..16]);
                    let s = sum16(2 * j) + sum16(2 * j + 1);
                    t += d * f64::from(sc) * 32.0 * s + dmin * f64::from(mn) * s;
                }
            }
        }
    } else {
        let a = act.q8.row(r);
        for (b, blk) in w.chunks_exact(qt.block_bytes()).enumerate() {
            let dw = f64::from(f16_at(blk, 0)).abs();
            let da = f64::from(a.d[b]).abs();
            let s = f64::from(a.s[b]).abs();
            let qa: f64 = a.qs[b * QK..b * QK + QK]
                .iter()
                .map(|&q| f64::from(q).abs())
                .sum();
            let (wmax, offset, m) = match qt {
                QType::Q4_0 => (16.0, 8.0, 0.0),
                QType::Q4_1 => (16.0, 0.0, f64::from(f16_at(blk, 2)).abs()),
                QType::Q5_0 => (32.0, 16.0, 0.0),
                _ => (128.0, 0.0, 0.0),
            };
            t += dw * da * (wmax + offset) * qa + (m + dw * offset) * s;
        }
    }
    t
}

fn check(c: &Case) -> Result<(), TestCaseError> {
    let act = scratch(c);
    let rb = c.nb * c.qt.block_bytes();
    for level in Level::supported() {
        let mm = QMatMul::from_bytes(c.qt, c.n, c.nb * c.qt.block_elems(), &c.w, level).unwrap();
        let mut out = vec![0f32; c.m * c.n];
        mm.matmul_quantized(&act, c.m, &mut out);
        for r in 0..c.m {
            for col in 0..c.n {
                let wr = &c.w[col * rb..(col + 1) * rb];
                let want = if c.qt.is_k_quant() {
                    reference::dot_q8k(c.qt, wr, act.q8k.row(r))
                } else {
                    reference::dot_q8(c.qt, wr, act.q8.row(r))
                };
                let got = out[r * c.n + col];
                let bound = abs_bound(c.qt, wr, &act, r);
                let what = format!(
                    "{:?} {} row {r} col {col} (nb {})",
                    c.qt,
                    level.name(),
                    c.nb
                );
                if c.exact && bound < f64::from(1u32 << 24) {
                    prop_assert_eq!(got, want, "{} exact", what);
                } else {
                    let tol = 2.0 * (c.nb as f64 + 10.0) * f64::from(f32::EPSILON) / 2.0 * bound;
                    let err = (f64::from(got) - f64::from(want)).abs();
                    prop_assert!(
                        err <= tol,
                        "{what}: got {got}, want {want}, err {err} > tol {tol}"
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn q4_0_matches_reference(c in case(QType::Q4_0, 20)) { check(&c)?; }

    #[test]
    fn q4_1_matches_reference(c in case(QType::Q4_1, 20)) { check(&c)?; }

    #[test]
    fn q5_0_matches_reference(c in case(QType::Q5_0, 20)) { check(&c)?; }

    #[test]
    fn q8_0_matches_reference(c in case(QType::Q8_0, 20)) { check(&c)?; }

    #[test]
    fn q4_k_matches_reference(c in case(QType::Q4K, 3)) { check(&c)?; }

    #[test]
    fn q5_k_matches_reference(c in case(QType::Q5K, 3)) { check(&c)?; }

    #[test]
    fn q6_k_matches_reference(c in case(QType::Q6K, 3)) { check(&c)?; }

    /// The SIMD quantizer gives the scalar one's bits.
    #[test]
    fn q8_quantizer_levels_agree(
        x in prop::collection::vec(-1000f32..1000.0, 32..=320),
        zero_block in any::<bool>(),
        sum_f16 in any::<bool>(),
    ) {
        let nb = x.len() / QK;
        let mut x = x[..nb * QK].to_vec();
        if zero_block {
            x[..QK].fill(0.0);
        }
        let mut want = (vec![0i8; nb * QK], vec![0f32; nb], vec![0f32; nb]);
        quantize_row_q8_scalar(&x, &mut want.0, &mut want.1, &mut want.2, sum_f16);
        let mut got = (vec![0i8; nb * QK], vec![0f32; nb], vec![0f32; nb]);
        super::act::quantize_row_q8(&x, &mut got.0, &mut got.1, &mut got.2, sum_f16);
        prop_assert_eq!(got, want);
    }

    /// Quantized activations reconstruct their input within half a step.
    #[test]
    fn q8_quantizers_round_to_nearest(x in prop::collection::vec(-50f32..50.0, 256..=512)) {
        let nb = x.len() / QK_K;
        let x = &x[..nb * QK_K];
        let mut a = ActQ8::default();
        a.quantize(x, 1, nb * QK_K / QK, false);
        for (i, &v) in x.iter().enumerate() {
            let b = i / QK;
            let amax = x[b * QK..b * QK + QK].iter().fold(0f32, |m, v| m.max(v.abs()));
            let step = amax / 127.0;
            let q = f32::from(a.qs[i]);
            prop_assert!((q * step - v).abs() <= step * 0.5001 + 1e-6);
            prop_assert!(a.qs[i] != -128);
        }
        let mut k = ActQ8K::default();
        k.quantize(x, 1, nb);
        for (i, &v) in x.iter().enumerate() {
            let y = &k.blocks[i / QK_K];
            prop_assert!((f32::from(y.qs[i % QK_K]) * y.d - v).abs() <= y.d.abs() * 0.5001 + 1e-6);
        }
        for y in &k.blocks {
            let mut z = *y;
            z.fill_bsums();
            prop_assert_eq!(z.bsums, y.bsums);
        }
    }
}

/// Dequantization agrees between the file layout and the repacked one, for
/// every type and level.
#[test]
fn dequantize_rows_agree_across_levels() {
    let mut seed = 0x1234_5678u32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for qt in QType::ALL {
        let (n, nb) = (5, 2);
        let mut w: Vec<u8> = (0..n * nb * qt.block_bytes())
            .map(|_| next() as u8)
            .collect();
        let seeds: Vec<u16> = (0..8).map(|_| next() as u16).collect();
        set_scales(qt, &mut w, &seeds, false);
        let k = nb * qt.block_elems();
        let mut want = vec![0f32; n * k];
        for (r, row) in want.chunks_exact_mut(k).enumerate() {
            let rb = nb * qt.block_bytes();
            reference::dequantize_row(qt, &w[r * rb..(r + 1) * rb], row);
        }
        for level in Level::supported() {
            let mm = QMatMul::from_bytes(qt, n, k, &w, level).unwrap();
            let ids = [4u32, 0, 2, 2];
            let mut got = vec![0f32; ids.len() * k];
            mm.dequantize_rows(&ids, &mut got).unwrap();
            for (i, &id) in ids.iter().enumerate() {
                assert_eq!(
                    &got[i * k..(i + 1) * k],
                    &want[id as usize * k..(id as usize + 1) * k],
                    "{qt:?} at {level:?}"
                );
            }
        }
    }
}

/// GGML's exact rounding: ties to even, scale from the absolute maximum
/// (Q8) or from the signed extreme (Q8_K, whose scale is then negative).
#[test]
fn quantizers_known_answers() {
    let mut x = [0f32; QK_K];
    x[..8].copy_from_slice(&[127.0, -50.0, 0.5, 1.5, 2.5, -0.5, -2.5, 3.0]);
    let want = [127i8, -50, 0, 2, 2, 0, -2, 3];
    let mut a = ActQ8::default();
    a.quantize(&x[..QK], 1, 1, false);
    assert_eq!(&a.qs[..8], &want);
    assert_eq!((a.d[0], a.s[0]), (1.0, 82.0));
    a.quantize(&x[..QK], 1, 1, true);
    assert_eq!(a.s[0], 82.0);

    let mut k = ActQ8K::default();
    k.quantize(&x, 1, 1);
    let y = &k.blocks[0];
    assert_eq!(y.d, -1.0);
    assert_eq!(&y.qs[..8], &want.map(|q| -q));
    assert_eq!(y.bsums[0], -82);
    x[1] = -127.0;
    x[0] = 100.0;
    k.quantize(&x, 1, 1);
    assert_eq!(
        (k.blocks[0].d, k.blocks[0].qs[0], k.blocks[0].qs[1]),
        (1.0, 100, -127)
    );
    // An all-zero block has a zero scale and zero quants.
    k.quantize(&[0.0; QK_K], 1, 1);
    assert_eq!(k.blocks[0], BlockQ8K::default());
}
