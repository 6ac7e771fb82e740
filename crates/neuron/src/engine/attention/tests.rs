#![allow(clippy::unwrap_used)]

use super::*;
use crate::engine::kv::BLOCK_SIZE;

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Plain attention of one query row against explicit key/value rows.
fn reference(q: &[f32], keys: &[Vec<f32>], vals: &[Vec<f32>], scale: f32) -> Vec<f32> {
    let scores: Vec<f32> = keys
        .iter()
        .map(|k| q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale)
        .collect();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    let mut out = vec![0f32; vals[0].len()];
    for (w, v) in e.iter().zip(vals) {
        for (o, x) in out.iter_mut().zip(v) {
            *o += w / sum * x;
        }
    }
    out
}

struct Case {
    shape: AttnShape,
    batch: BatchInput,
    pool_rows: usize,
}

/// Three sequences: a decode token deep in the context, a prompt chunk
/// crossing a block boundary at a non-zero position, and a first chunk;
/// block tables deliberately out of order.
fn case(heads: usize, kv_heads: usize) -> Case {
    case_d(heads, kv_heads, 8)
}

fn case_d(heads: usize, kv_heads: usize, head_dim: usize) -> Case {
    let mut batch = BatchInput::new();
    batch.push(&[1], 40, vec![7, 2, 9], true);
    batch.push(&[1, 2, 3, 4, 5], 13, vec![4, 0], true);
    batch.push(&[1, 2, 3], 0, vec![5], false);
    batch.push(&[7; 34], 0, vec![1, 3, 6], true);
    Case {
        shape: AttnShape {
            heads,
            kv_heads,
            head_dim,
            scale: 1.0 / (head_dim as f64).sqrt(),
        },
        batch,
        pool_rows: 10 * BLOCK_SIZE,
    }
}

/// Deterministic `q` `[1, heads, rows, d]` and K/V pools `[pool_rows, kv_dim]`.
fn inputs(s: AttnShape, rows: usize, pool_rows: usize) -> (Tensor, Tensor, Tensor) {
    let kv_dim = s.kv_heads * s.head_dim;
    let tensor = |seed, shape: &[usize]| {
        let n = shape.iter().product();
        Tensor::from_vec(values(n, seed), shape, &Device::Cpu).unwrap()
    };
    (
        tensor(1, &[1, s.heads, rows, s.head_dim]),
        tensor(2, &[pool_rows, kv_dim]),
        tensor(3, &[pool_rows, kv_dim]),
    )
}

fn run(
    c: &Case,
    backend: Backend,
    window: Option<usize>,
) -> (Vec<Vec<f32>>, Tensor, Tensor, Tensor) {
    let s = c.shape;
    let rows = c.batch.rows();
    let (q, k, v) = inputs(s, rows, c.pool_rows);
    let plan = AttentionPlan::new(backend, &c.batch, window, &Device::Cpu).unwrap();
    let out = plan.attend(&q, &k, &v, s).unwrap();
    assert_eq!(out.dims(), &[rows, s.heads * s.head_dim]);
    (out.to_vec2::<f32>().unwrap(), q, k, v)
}

fn expected(c: &Case, window: Option<usize>, q: &Tensor, k: &Tensor, v: &Tensor) -> Vec<Vec<f32>> {
    let s = c.shape;
    let d = s.head_dim;
    let q = q.squeeze(0).unwrap().to_vec3::<f32>().unwrap();
    let k = k.to_vec2::<f32>().unwrap();
    let v = v.to_vec2::<f32>().unwrap();
    let mut out = Vec::new();
    for ch in &c.batch.chunks {
        for i in 0..ch.len {
            let pos = ch.pos + i;
            let row = ch.start + i;
            let lo = window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let mut line = Vec::new();
            for (h, qh) in q.iter().enumerate() {
                let kvh = h / (s.heads / s.kv_heads);
                let sl = |p: usize| kv::slot(&ch.blocks, p).unwrap() as usize;
                let keys: Vec<Vec<f32>> = (lo..=pos)
                    .map(|p| k[sl(p)][kvh * d..(kvh + 1) * d].to_vec())
                    .collect();
                let vals: Vec<Vec<f32>> = (lo..=pos)
                    .map(|p| v[sl(p)][kvh * d..(kvh + 1) * d].to_vec())
                    .collect();
                line.extend(reference(&qh[row], &keys, &vals, s.scale as f32));
            }
            out.push(line);
        }
    }
    out
}

fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (r, (x, y)) in a.iter().zip(b).enumerate() {
        for (i, (p, q)) in x.iter().zip(y).enumerate() {
            assert!(
                (p - q).abs() <= 1e-5 * (1.0 + q.abs()),
                "{what}: row {r} col {i}: {p} vs {q}"
            );
        }
    }
}

#[test]
fn both_backends_compute_causal_paged_attention() {
    for (heads, kv_heads, d) in [(4, 4, 8), (6, 2, 8), (3, 1, 8), (9, 3, 64), (4, 1, 256)] {
        for window in [None, Some(1), Some(5), Some(17), Some(1000)] {
            let c = case_d(heads, kv_heads, d);
            let (cpu, q, k, v) = run(&c, Backend::Cpu, window);
            let (generic, ..) = run(&c, Backend::Generic, window);
            let want = expected(&c, window, &q, &k, &v);
            let what = format!("{heads}/{kv_heads} heads of {d}, window {window:?}");
            assert_close(&cpu, &want, &format!("cpu, {what}"));
            assert_close(&generic, &want, &format!("generic, {what}"));
        }
    }
}

#[test]
fn a_window_of_one_sees_only_itself() {
    // With window 1 each query attends to its own key only: the output is
    // that position's value row.
    let c = case(2, 1);
    let (out, _, _, v) = run(&c, Backend::Cpu, Some(1));
    let v = v.to_vec2::<f32>().unwrap();
    let ch = &c.batch.chunks[1];
    for i in 0..ch.len {
        let slot = kv::slot(&ch.blocks, ch.pos + i).unwrap() as usize;
        assert_close(
            &[out[ch.start + i][..8].to_vec()],
            &[v[slot].clone()],
            "window 1",
        );
    }
}

#[test]
fn shape_errors_are_errors_not_panics() {
    let c = case(4, 2);
    let plan = AttentionPlan::new(Backend::Cpu, &c.batch, None, &Device::Cpu).unwrap();
    let q = Tensor::zeros((1, 4, c.batch.rows(), 8), DType::F32, &Device::Cpu).unwrap();
    // A pool too small for the block tables.
    let small = Tensor::zeros((BLOCK_SIZE, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(plan.attend(&q, &small, &small, c.shape).is_err());
    // A q of the wrong row count.
    let q2 = Tensor::zeros((1, 4, 2, 8), DType::F32, &Device::Cpu).unwrap();
    let pool = Tensor::zeros((c.pool_rows, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(plan.attend(&q2, &pool, &pool, c.shape).is_err());
    let generic = AttentionPlan::new(Backend::Generic, &c.batch, None, &Device::Cpu).unwrap();
    assert!(generic.attend(&q2, &pool, &pool, c.shape).is_err());
}

/// The score pass transposes keys for a prompt chunk and not for a decode
/// token; either way a row's output is the same bits, so a sequence's
/// tokens do not depend on how its prompt was chunked or batched.
#[test]
fn a_row_is_the_same_bits_alone_or_in_a_chunk() {
    let s = AttnShape {
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
        scale: 0.125,
    };
    let (rows, pos, blocks) = (20, 13, vec![4, 0, 6]);
    let (q, k, v) = inputs(s, rows, 10 * BLOCK_SIZE);
    for window in [None, Some(5), Some(17)] {
        let mut chunk = BatchInput::new();
        chunk.push(&[1; 20], pos, blocks.clone(), true);
        let plan = AttentionPlan::new(Backend::Cpu, &chunk, window, &Device::Cpu).unwrap();
        let whole = plan
            .attend(&q, &k, &v, s)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (r, want) in whole.iter().enumerate() {
            let mut one = BatchInput::new();
            one.push(&[1], pos + r, blocks.clone(), true);
            let plan = AttentionPlan::new(Backend::Cpu, &one, window, &Device::Cpu).unwrap();
            let qr = q.narrow(2, r, 1).unwrap().contiguous().unwrap();
            let got = plan
                .attend(&qr, &k, &v, s)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got[0]), bits(want), "row {r}, window {window:?}");
        }
    }
}
