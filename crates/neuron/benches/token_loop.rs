//! The token loop's two halves, one iteration each: a decode step (one
//! forward pass of one token over a warm KV cache) and sampling from a
//! 49,152-wide logits tensor (SmolLM2's vocabulary), greedy and top-p.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo bench -p neuron --bench token_loop
//! ```
//!
//! The decode step needs the default model (`scripts/fetch-model`); without
//! it that group is skipped with a message. Numbers go in the README, never
//! in assertions.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use neuron::engine::gguf;
use neuron::engine::sampling::{Sampler, SamplingParams};

const VOCAB: usize = 49_152;
/// Positions already in the KV cache when the decode step runs.
const CONTEXT: usize = 200;

fn model_path() -> Option<PathBuf> {
    let dir = std::env::var_os("CORTEX_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models")));
    Some(dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")).filter(|p| p.is_file())
}

/// Deterministic logits with a realistic spread (no RNG crate needed).
fn logits() -> Tensor {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let v: Vec<f32> = (0..VOCAB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 * 20.0 - 10.0
        })
        .collect();
    Tensor::from_vec(v, (1, VOCAB), &Device::Cpu).unwrap()
}

fn sampling(c: &mut Criterion) {
    let logits = logits();
    let mut g = c.benchmark_group("sample_49152");
    let greedy = SamplingParams::default();
    let top_p = SamplingParams {
        temperature: 0.7,
        top_p: Some(0.9),
        top_k: None,
        seed: 42,
    };
    for (name, params) in [("greedy", greedy), ("temp0.7_top_p0.9", top_p)] {
        let mut sampler = Sampler::new(&params);
        g.bench_function(name, |b| {
            b.iter(|| black_box(sampler.sample(black_box(&logits)).unwrap()))
        });
    }
    g.finish();
}

fn decode_step(c: &mut Criterion) {
    let Some(path) = model_path() else {
        eprintln!("decode_step skipped: model not found (run scripts/fetch-model)");
        return;
    };
    let weights = gguf::load(&path, &Device::Cpu).unwrap();
    // A warm KV cache of CONTEXT positions; every iteration clones it (the
    // cache tensors are Arc-shared, so the clone is cheap) and runs one step.
    let mut warm = weights.base.clone();
    let prompt: Vec<u32> = (0..CONTEXT as u32).map(|i| 1000 + i % 500).collect();
    let input = Tensor::new(prompt.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    warm.forward(&input, 0).unwrap();
    let next = Tensor::new(&[1234u32], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mut g = c.benchmark_group("decode_step");
    g.sample_size(30).measurement_time(Duration::from_secs(8));
    g.bench_function(
        format!(
            "ctx{CONTEXT}_threads{}",
            candle_core::utils::get_num_threads()
        ),
        |b| {
            b.iter_batched(
                || warm.clone(),
                |mut m| black_box(m.forward(&next, CONTEXT).unwrap()),
                BatchSize::SmallInput,
            )
        },
    );
    let mut sampler = Sampler::new(&SamplingParams::default());
    g.bench_function("step_plus_greedy_sample", |b| {
        b.iter_batched(
            || warm.clone(),
            |mut m| {
                let logits = m.forward(&next, CONTEXT).unwrap();
                black_box(sampler.sample(&logits).unwrap())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, sampling, decode_step);
criterion_main!(benches);
