//! The token loop's two halves: a decode step (one forward pass over the
//! decode tokens of 1 and of 8 sequences, each with 200 positions in the KV
//! pool) and sampling from a 49,152-wide logits row (SmolLM2's vocabulary),
//! greedy and top-p.
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

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion};
use neuron::engine::batch::BatchInput;
use neuron::engine::gguf;
use neuron::engine::kv::{KvCache, KvGeometry, BLOCK_SIZE};
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
fn logits() -> Vec<f32> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..VOCAB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 * 20.0 - 10.0
        })
        .collect()
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
    let loaded = gguf::load(&path, &Device::Cpu).unwrap();
    let model = loaded.model.as_ref();
    let cfg = model.config();
    let per_seq = CONTEXT.div_ceil(BLOCK_SIZE) + 1;
    let geometry = KvGeometry {
        layers: cfg.layers,
        kv_dim: cfg.kv_dim(),
        blocks: 8 * per_seq,
    };
    let kv = KvCache::new(geometry, &Device::Cpu).unwrap();
    // Eight sequences, each with CONTEXT positions in its own blocks.
    let tables: Vec<Vec<u32>> = (0..8u32)
        .map(|s| (s * per_seq as u32..(s + 1) * per_seq as u32).collect())
        .collect();
    for (s, table) in tables.iter().enumerate() {
        let prompt: Vec<u32> = (0..CONTEXT as u32)
            .map(|i| 1000 + (i + s as u32) % 500)
            .collect();
        let mut b = BatchInput::new();
        b.push(&prompt, 0, table.clone(), false);
        model.forward(&b, &kv).unwrap();
    }
    let mut g = c.benchmark_group("decode_step");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    let threads = candle_core::utils::get_num_threads();
    for n in [1usize, 8] {
        let mut b = BatchInput::new();
        for table in &tables[..n] {
            b.push(&[1234], CONTEXT, table.clone(), true);
        }
        // Rewriting position CONTEXT each time keeps the context fixed.
        g.bench_function(format!("ctx{CONTEXT}_seqs{n}_threads{threads}"), |bench| {
            bench.iter(|| black_box(model.forward(&b, &kv).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, sampling, decode_step);
criterion_main!(benches);
