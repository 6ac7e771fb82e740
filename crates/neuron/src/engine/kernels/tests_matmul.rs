//! Whole matmuls: against dequantized weights times f32 activations (within
//! the activations' quantization error), odd shapes, every row count of a
//! tile and its remainder, the thread pools, the candle op, and bad input.

#![allow(clippy::unwrap_used)]

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use proptest::prelude::*;

use super::format::{QType, QK, QK_K};

const ALL: [QType; 7] = QType::ALL;
use super::{KernelError, Level, Parallelism, QMatMul};

/// Deterministic values in [-1, 1) with a few outliers, like activations.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            if i % 97 == 0 {
                v * 8.0
            } else {
                v
            }
        })
        .collect()
}

/// A quantized weight matrix made by candle from random values.
fn weights(qt: QType, n: usize, k: usize, seed: u64) -> QTensor {
    let w = Tensor::from_vec(values(n * k, seed), (n, k), &Device::Cpu).unwrap();
    QTensor::quantize(&w, qt.ggml()).unwrap()
}

/// `x · Wᵀ` in f64 over the dequantized weights, and a bound on the error
/// that quantizing `x` to 8 bits may cause.
fn expected(w: &[f32], x: &[f32], m: usize, n: usize, k: usize, qt: QType) -> (Vec<f64>, Vec<f64>) {
    let blk = if qt.is_k_quant() { QK_K } else { QK };
    let mut want = vec![0f64; m * n];
    let mut tol = vec![0f64; m * n];
    for r in 0..m {
        let xr = &x[r * k..(r + 1) * k];
        // Half a quantization step per element, plus the f16 rounding of
        // the block scale (and of Q4_1's sum term): 0.6 steps, and 1e-3 of
        // the products' magnitude.
        let step: Vec<f64> = xr
            .chunks_exact(blk)
            .map(|b| f64::from(b.iter().fold(0f32, |a, v| a.max(v.abs()))) / 127.0)
            .collect();
        for c in 0..n {
            let wr = &w[c * k..(c + 1) * k];
            let (mut s, mut t, mut mag) = (0f64, 0f64, 0f64);
            for j in 0..k {
                let (a, b) = (f64::from(wr[j]), f64::from(xr[j]));
                s += a * b;
                mag += (a * b).abs();
                t += a.abs() * 0.6 * step[j / blk];
            }
            want[r * n + c] = s;
            tol[r * n + c] = t + 1e-3 * mag + 1e-5;
        }
    }
    (want, tol)
}

fn check_matmul(qt: QType, m: usize, n: usize, k: usize, seed: u64) {
    let qw = weights(qt, n, k, seed);
    let wf: Vec<f32> = qw
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let x = values(m * k, seed + 1);
    let (want, tol) = expected(&wf, &x, m, n, k, qt);
    for level in Level::supported() {
        let mut serial: Option<Vec<f32>> = None;
        for par in [
            Parallelism::Serial,
            Parallelism::CandlePool,
            Parallelism::Rayon,
        ] {
            let mm = QMatMul::from_qtensor_at(&qw, level)
                .unwrap()
                .with_parallelism(par);
            let mut out = vec![f32::NAN; m * n];
            mm.matmul(&x, m, &mut out).unwrap();
            for i in 0..m * n {
                let err = (f64::from(out[i]) - want[i]).abs();
                assert!(
                    err <= tol[i],
                    "{qt:?} {level:?} {par:?} m={m} n={n} k={k} cell {i}: got {}, want {}, tol {}",
                    out[i],
                    want[i],
                    tol[i]
                );
            }
            // Threads change who computes a cell, never how.
            match &serial {
                None => serial = Some(out),
                Some(s) => assert_eq!(s, &out, "{qt:?} {level:?} {par:?}"),
            }
        }
    }
}

#[test]
fn every_type_every_row_count() {
    for qt in ALL {
        let k = if qt.is_k_quant() { 2 * QK_K } else { 3 * QK };
        for m in 1..=17 {
            check_matmul(qt, m, 37, k, m as u64 * 31 + qt.block_bytes() as u64);
        }
    }
}

#[test]
fn large_enough_for_the_pool() {
    // More than SERIAL_MACS multiply-adds, more than one column chunk.
    for qt in ALL {
        let k = if qt.is_k_quant() { 3 * QK_K } else { 18 * QK };
        check_matmul(qt, 9, 70, k, 7);
        check_matmul(qt, 1, 301, k, 8);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn odd_shapes(ti in 0..ALL.len(), m in 1..=17usize, n in 1..=80usize, blocks in 1..=3usize, seed in any::<u64>()) {
        let qt = ALL[ti];
        let k = blocks * qt.block_elems();
        check_matmul(qt, m, n, k, seed);
    }
}

#[test]
fn candle_op_matches_candle_qmatmul() {
    for qt in ALL {
        let k = if qt.is_k_quant() { QK_K } else { 4 * QK };
        let qw = weights(qt, 40, k, 3);
        let x = Tensor::from_vec(values(2 * 3 * k, 4), (2, 3, k), &Device::Cpu).unwrap();
        let ours = QMatMul::from_qtensor(&qw).unwrap().forward(&x).unwrap();
        assert_eq!(ours.dims(), &[2, 3, 40]);
        let theirs = candle_core::quantized::QMatMul::from_qtensor(qw)
            .unwrap()
            .forward(&x)
            .unwrap();
        let diff: f32 = (ours.clone() - theirs.clone())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        let scale: f32 = theirs
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(
            diff <= 0.02 * scale + 1e-4,
            "{qt:?}: max diff {diff} vs max {scale}"
        );
        // Half-precision inputs come back in their dtype.
        for dt in [DType::F16, DType::BF16] {
            let y = QMatMul::from_qtensor(&weights(qt, 8, k, 5))
                .unwrap()
                .forward(&x.to_dtype(dt).unwrap())
                .unwrap();
            assert_eq!((y.dtype(), y.dims()), (dt, &[2usize, 3, 8][..]));
        }
    }
}

#[test]
fn bad_input_is_an_error() {
    let qw = weights(QType::Q4_1, 8, 64, 1);
    let mm = QMatMul::from_qtensor(&qw).unwrap();
    // Wrong k, rank 1, and a non-contiguous view: errors, no panic.
    let x = Tensor::zeros((2, 32), DType::F32, &Device::Cpu).unwrap();
    assert!(mm.forward(&x).is_err());
    assert!(mm
        .forward(&Tensor::zeros(64, DType::F32, &Device::Cpu).unwrap())
        .is_err());
    let t = Tensor::zeros((64, 3), DType::F32, &Device::Cpu)
        .unwrap()
        .t()
        .unwrap();
    assert!(mm.forward(&t).is_err());
    assert!(mm
        .forward(&Tensor::zeros((1, 64), DType::U32, &Device::Cpu).unwrap())
        .is_err());
    assert!(matches!(
        mm.matmul(&[0.0; 64], 2, &mut [0.0; 16]),
        Err(KernelError::BufferSize(_))
    ));
    // Embedding ids past the table.
    let mut out = vec![0f32; 64];
    assert!(matches!(
        mm.dequantize_rows(&[8], &mut out),
        Err(KernelError::RowOutOfRange { id: 8, rows: 8 })
    ));
    let ids = Tensor::new(&[[1u32, 7], [0, 2]], &Device::Cpu).unwrap();
    assert_eq!(mm.embedding(&ids).unwrap().dims(), &[2, 2, 64]);
    // Types without a kernel, bad shapes and sizes.
    let f = QTensor::quantize(
        &Tensor::zeros((4, 64), DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    assert!(matches!(
        QMatMul::from_qtensor(&f),
        Err(KernelError::Unsupported(GgmlDType::F32))
    ));
    assert!(QMatMul::from_bytes(QType::Q8_0, 2, 48, &[0; 68], Level::Scalar).is_err());
    assert!(matches!(
        QMatMul::from_bytes(QType::Q8_0, 2, 32, &[0; 67], Level::Scalar),
        Err(KernelError::DataSize {
            got: 67,
            expected: 68
        })
    ));
}

#[test]
fn embedding_rows_match_candle_dequantize() {
    for qt in ALL {
        let k = qt.block_elems() * 2;
        let qw = weights(qt, 6, k, 9);
        let all: Vec<f32> = qw
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mm = QMatMul::from_qtensor(&qw).unwrap();
        let mut out = vec![0f32; 2 * k];
        mm.dequantize_rows(&[5, 1], &mut out).unwrap();
        assert_eq!(&out[..k], &all[5 * k..6 * k], "{qt:?}");
        assert_eq!(&out[k..], &all[k..2 * k], "{qt:?}");
    }
}
