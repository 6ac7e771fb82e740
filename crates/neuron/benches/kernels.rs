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
//! `BENCH_CLOCK=cpu` measures the process's CPU time instead of wall time:
//! on a shared machine, a single-threaded run's CPU time is what the work
//! costs, whatever else is running (with more threads it adds up every
//! thread, spinning included).
//!
//! Benchmark ids are `<model>/<tensor>/m<rows>/<impl>`, impl one of
//! `neuron` (the default: candle's barrier pool), `neuron-rayon` (rayon's
//! pool) and `neuron-serial` (the calling thread alone) for decode — the
//! pool comparison —, `neuron-scalar` (the portable
//! kernels; m = 1 only) and `candle`. The models come from `models/`
//! (`scripts/fetch-model`, `scripts/fetch-model --gemma3`) or
//! `CORTEX_MODELS_DIR`; a missing one is skipped with a message. Numbers go
//! in the README, never in assertions.
//!
//! The `attention` group times the CPU attention kernel on one layer of each
//! model's shape over random K/V: a 32-row prompt chunk at position 2,000
//! (one `prefill_chunk` of a long prompt) and eight decode rows at position
//! 2,000 (a batched decode step), ids `attention/<shape>/<case>/<impl>`:
//! `kernel` (ours, what CPU devices run) or `candle` (the generic candle
//! ops that CUDA runs, here on the CPU).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use candle_core::quantized::{gguf_file, QMatMul as CandleQMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use cpu_time::ProcessTime;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::Criterion;
use neuron::engine::attention::{AttentionPlan, AttnShape, Backend};
use neuron::engine::batch::BatchInput;
use neuron::engine::kernels::{Level, Parallelism, QMatMul};
use neuron::engine::kv::{blocks_for, BLOCK_SIZE};

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

/// Every weight matrix of a model (its blocks' and the output), once per
/// iteration: one decode step's matmuls, with weights streamed from memory
/// as in real decoding (a single matrix stays in cache between iterations).
fn decode_step<M: Measurement>(c: &mut Criterion<M>) {
    for (file, model, _) in MODELS {
        let path = models_dir().join(file);
        let Ok(mut f) = std::fs::File::open(&path) else {
            println!("skipping {}: missing", path.display());
            continue;
        };
        let content = gguf_file::Content::read(&mut f).unwrap();
        let mut names: Vec<&String> = content
            .tensor_infos
            .iter()
            .filter(|(n, i)| {
                (n.starts_with("blk.") || n.as_str() == "token_embd.weight")
                    && i.shape.dims().len() == 2
            })
            .map(|(n, _)| n)
            .collect();
        names.sort();
        let qts: Vec<QTensor> = names
            .iter()
            .map(|n| content.tensor(&mut f, n, &Device::Cpu).unwrap())
            .collect();
        let bytes: usize = qts.iter().map(|q| q.storage_size_in_bytes()).sum();
        println!(
            "{model}/decode_step: {} matrices, {:.1} MB",
            qts.len(),
            bytes as f64 / 1e6
        );
        let ours: Vec<QMatMul> = qts
            .iter()
            .map(|q| QMatMul::from_qtensor(q).unwrap())
            .collect();
        let theirs: Vec<CandleQMatMul> = qts
            .into_iter()
            .map(|q| CandleQMatMul::from_qtensor(q).unwrap())
            .collect();
        let mut g = c.benchmark_group(format!("{model}/decode_step"));
        for m in [1usize, 4] {
            let xs: Vec<Tensor> = ours.iter().map(|q| input(m, q.dims().1)).collect();
            g.bench_function(format!("m{m}/neuron"), |b| {
                b.iter(|| {
                    for (q, x) in ours.iter().zip(&xs) {
                        black_box(q.forward(x).unwrap());
                    }
                })
            });
            g.bench_function(format!("m{m}/candle"), |b| {
                b.iter(|| {
                    for (q, x) in theirs.iter().zip(&xs) {
                        black_box(q.forward(x).unwrap());
                    }
                })
            });
        }
        g.finish();
    }
}

fn kernels<M: Measurement>(c: &mut Criterion<M>) {
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
            let serial = QMatMul::from_qtensor(&qt)
                .unwrap()
                .with_parallelism(Parallelism::Serial);
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
                    g.bench_function(format!("m{m}/neuron-serial"), |b| {
                        b.iter(|| black_box(serial.forward(black_box(&x)).unwrap()))
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

/// `n` values in [-1, 1], different for each `seed`.
fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f64 + seed as f64 * 0.5) * 0.618_034).sin() as f32)
        .collect()
}

fn attention<M: Measurement>(c: &mut Criterion<M>) {
    const CONTEXT: usize = 2_000;
    let shapes = [("smollm2", 9, 3, 64), ("gemma3", 4, 1, 256)];
    let mut g = c.benchmark_group("attention");
    for (label, heads, kv_heads, head_dim) in shapes {
        let shape = AttnShape {
            heads,
            kv_heads,
            head_dim,
            scale: 1.0 / (head_dim as f64).sqrt(),
        };
        // (case, sequences, rows each): a prompt chunk, a batched decode step.
        for (case, seqs, len) in [("chunk32", 1, 32), ("decode8", 8, 1)] {
            let per_seq = blocks_for(CONTEXT + len);
            let mut batch = BatchInput::new();
            for s in 0..seqs {
                let first = (s * per_seq) as u32;
                let blocks = (first..first + per_seq as u32).collect();
                batch.push(&vec![1; len], CONTEXT, blocks, true);
            }
            let pool_rows = seqs * per_seq * BLOCK_SIZE;
            let kv_dim = kv_heads * head_dim;
            let dev = Device::Cpu;
            let k =
                Tensor::from_vec(values(pool_rows * kv_dim, 1), (pool_rows, kv_dim), &dev).unwrap();
            let v =
                Tensor::from_vec(values(pool_rows * kv_dim, 2), (pool_rows, kv_dim), &dev).unwrap();
            let rows = seqs * len;
            let q = Tensor::from_vec(
                values(heads * rows * head_dim, 3),
                (1, heads, rows, head_dim),
                &dev,
            )
            .unwrap();
            for (backend, name) in [(Backend::Cpu, "kernel"), (Backend::Generic, "candle")] {
                let plan = AttentionPlan::new(backend, &batch, None, &dev).unwrap();
                g.bench_function(format!("{label}/{case}/{name}"), |b| {
                    b.iter(|| black_box(plan.attend(&q, &k, &v, shape).unwrap()))
                });
            }
        }
    }
    g.finish();
}

/// CPU time of the whole process.
struct CpuTime;

impl Measurement for CpuTime {
    type Intermediate = ProcessTime;
    type Value = Duration;

    fn start(&self) -> ProcessTime {
        ProcessTime::now()
    }
    fn end(&self, i: ProcessTime) -> Duration {
        i.elapsed()
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

fn main() {
    if std::env::var("BENCH_CLOCK").as_deref() == Ok("cpu") {
        let mut c = config().with_measurement(CpuTime).configure_from_args();
        decode_step(&mut c);
        kernels(&mut c);
        attention(&mut c);
        c.final_summary();
    } else {
        let mut c = config().configure_from_args();
        decode_step(&mut c);
        kernels(&mut c);
        attention(&mut c);
        c.final_summary();
    }
}
