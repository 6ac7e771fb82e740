//! The quantized matmul kernels (`neuron::engine::kernels`) against candle's
//! own `QMatMul` on the same weights: the real matrices of the two models
//! (read from their GGUF files), a decode step (m = 1), batched decode
//! (m = 4, 8) and a prompt (m = 200).
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo bench -p neuron --bench kernels
//! RAYON_NUM_THREADS=2 cargo bench -p neuron --bench kernels -- 'smollm2/ffn_up/m1'
//! ```
//!
//! Benchmark ids are `<model>/<tensor>/m<rows>/<impl>`, impl one of
//! `neuron` (the default: candle's barrier pool), `neuron-rayon` (rayon's
//! pool; decode only, the pool comparison), `neuron-scalar` (the portable
//! kernels; m = 1 only) and `candle`. The models come from `models/`
//! (`scripts/fetch-model`, `scripts/fetch-model --gemma3`) or
//! `CORTEX_MODELS_DIR`; a missing one is skipped with a message. Numbers go
//! in the README, never in assertions.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use candle_core::quantized::{gguf_file, QMatMul as CandleQMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use neuron::engine::kernels::{Level, Parallelism, QMatMul};

/// A model file, its label, and the (tensor, label) pairs benchmarked.
type Model = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const MODELS: &[Model] = &[
    (
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "smollm2",
        &[
            ("blk.0.attn_q.weight", "attn_q"),
            ("blk.0.attn_k.weight", "attn_k"),
            ("blk.0.ffn_up.weight", "ffn_up"),
            ("blk.0.ffn_down.weight", "ffn_down"),
            ("token_embd.weight", "output"),
        ],
    ),
    (
        "gemma-3-270m-q4_k_m.gguf",
        "gemma3",
        &[
            ("blk.0.attn_q.weight", "attn_q"),
            ("blk.0.attn_v.weight", "attn_v"),
            ("blk.0.attn_output.weight", "attn_output"),
            ("blk.0.ffn_up.weight", "ffn_up"),
            ("blk.0.ffn_down.weight", "ffn_down_q6k"),
            ("blk.1.ffn_down.weight", "ffn_down_1"),
            ("token_embd.weight", "output"),
        ],
    ),
];

const ROWS: &[usize] = &[1, 4, 8, 200];

fn models_dir() -> PathBuf {
    std::env::var_os("CORTEX_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models")))
}

fn load(file: &str, names: &[&str]) -> Option<Vec<QTensor>> {
    let path = models_dir().join(file);
    let mut f = std::fs::File::open(&path)
        .map_err(|e| println!("skipping {}: {e}", path.display()))
        .ok()?;
    let content = gguf_file::Content::read(&mut f).unwrap();
    Some(
        names
            .iter()
            .map(|n| content.tensor(&mut f, n, &Device::Cpu).unwrap())
            .collect(),
    )
}

fn input(m: usize, k: usize) -> Tensor {
    let v: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.7)
        .collect();
    Tensor::from_vec(v, (m, k), &Device::Cpu).unwrap()
}

fn kernels(c: &mut Criterion) {
    println!(
        "kernel level: {:?}, pool threads: {}",
        Level::detected(),
        candle_core::utils::barrier_pool().n_workers() + 1
    );
    for (file, model, tensors) in MODELS {
        let names: Vec<&str> = tensors.iter().map(|t| t.0).collect();
        let Some(qts) = load(file, &names) else {
            continue;
        };
        for ((_, label), qt) in tensors.iter().zip(qts) {
            let (n, k) = qt.shape().dims2().unwrap();
            let ours = QMatMul::from_qtensor(&qt).unwrap();
            let rayon = QMatMul::from_qtensor(&qt)
                .unwrap()
                .with_parallelism(Parallelism::Rayon);
            let scalar = QMatMul::from_qtensor_at(&qt, Level::Scalar).unwrap();
            let dtype = qt.dtype();
            let theirs = CandleQMatMul::from_qtensor(qt).unwrap();
            let mut g = c.benchmark_group(format!("{model}/{label}"));
            println!("{model}/{label}: {dtype:?} n={n} k={k}");
            for &m in ROWS {
                // The output matrices are huge: prompts there are one row
                // (only the last position's logits are computed).
                if *label == "output" && m == 200 {
                    continue;
                }
                let x = input(m, k);
                g.bench_function(format!("m{m}/neuron"), |b| {
                    b.iter(|| black_box(ours.forward(black_box(&x)).unwrap()))
                });
                if m <= 8 {
                    g.bench_function(format!("m{m}/neuron-rayon"), |b| {
                        b.iter(|| black_box(rayon.forward(black_box(&x)).unwrap()))
                    });
                }
                if m == 1 {
                    g.bench_function(format!("m{m}/neuron-scalar"), |b| {
                        b.iter(|| black_box(scalar.forward(black_box(&x)).unwrap()))
                    });
                }
                g.bench_function(format!("m{m}/candle"), |b| {
                    b.iter(|| black_box(theirs.forward(black_box(&x)).unwrap()))
                });
            }
            g.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = kernels
}
criterion_main!(benches);
