//! Engine benchmark: load time, prompt tokens/s, time to first token,
//! generation tokens/s (one sequence, and N sequences batched) and peak RSS
//! of the engine, with no HTTP, channels or threads in the way. Prints one
//! JSON line.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo run --release -p neuron --example bench_engine -- \
//!     [MODEL.gguf] [--prompt-tokens 200] [--gen-tokens 128] [--streams 8]
//! ```
//!
//! What is timed, in this order:
//! 1. `gguf::load` (metadata, tokenizer, template, weights) → `load_s`;
//! 2. one greedy sequence through the scheduler and the forward pass the
//!    device worker uses: the first pass (the whole prompt, cold: the first
//!    forward of the process) → `ttft_ms`; then `gen_tokens` decode passes
//!    → `gen_tok_s` (EOS is ignored so that every run decodes the same count);
//! 3. the same prompt again in a fresh KV pool (warm) → `prompt_tok_s`;
//! 4. `--streams N` sequences with different prompts, batched: generated
//!    tokens of all of them per second once every prompt is in → `batch_gen_tok_s`.
//!
//! Peak RSS is `VmHWM` from `/proc/self/status` at the end. The thread count
//! is candle's (`RAYON_NUM_THREADS`, default: every core). `scripts/bench-neuron`
//! runs this several times per thread count and prints medians.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::PathBuf;
use std::time::Instant;

use cortex_core::openai::{ChatMessage, Role};
use neuron::engine::gguf;
use neuron::engine::offline::{Job, Runner};
use neuron::engine::sampling::SamplingParams;
use neuron::engine::scheduler::SchedulerConfig;
use neuron::engine::{Device, ModelAssets};

const DEFAULT_MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/SmolLM2-135M-Instruct.Q4_1.gguf"
);

const SYSTEM: &str = "You are a careful assistant. Answer in plain English, in full sentences, \
and explain your reasoning step by step.";

/// Sentences appended to the user message until the prompt is long enough.
const FILLER: &[&str] = &[
    "The river that runs through the old town was used for centuries to carry wool and grain to the coast.",
    "In the spring the meadows flood, and the farmers move their sheep to the higher pastures on the hills.",
    "A stone bridge with seven arches was built in the fourteenth century and still carries traffic today.",
    "The town hall keeps a ledger of every market held on the square since the year the charter was granted.",
    "Travellers often remark on the bells of the abbey, which ring a different tune on each day of the week.",
    "Most of the houses along the quay are built of red brick, with steep roofs and narrow wooden shutters.",
];

struct Args {
    model: PathBuf,
    prompt_tokens: usize,
    gen_tokens: usize,
    streams: usize,
}

fn args() -> Args {
    let mut out = Args {
        model: PathBuf::from(DEFAULT_MODEL),
        prompt_tokens: 200,
        gen_tokens: 128,
        streams: 8,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--prompt-tokens" => out.prompt_tokens = it.next().unwrap().parse().unwrap(),
            "--gen-tokens" => out.gen_tokens = it.next().unwrap().parse().unwrap(),
            "--streams" => out.streams = it.next().unwrap().parse().unwrap(),
            "-h" | "--help" => {
                println!(
                    "bench_engine [MODEL.gguf] [--prompt-tokens N] [--gen-tokens N] [--streams N]"
                );
                std::process::exit(0);
            }
            path => out.model = PathBuf::from(path),
        }
    }
    out
}

/// A chat prompt of at least `target` tokens (the smallest that reaches it);
/// `variant` rotates the notes so that prompts differ.
fn prompt(assets: &ModelAssets, target: usize, variant: usize) -> Vec<u32> {
    let mut user = String::from(
        "Read the following notes about a small town, then write a long, detailed essay about its history.",
    );
    for sentence in FILLER.iter().cycle().skip(variant).take(1000) {
        let ids = assets
            .encode_chat(
                &[
                    ChatMessage::text(Role::System, SYSTEM),
                    ChatMessage::text(Role::User, user.as_str()),
                ],
                None,
            )
            .unwrap();
        if ids.len() >= target {
            return ids;
        }
        user.push(' ');
        user.push_str(sentence);
    }
    panic!("could not build a prompt of {target} tokens");
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn proc_status_kb(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Batching limits that put a whole prompt in one pass.
fn unchunked(max_sequences: usize, prompt: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_sequences,
        max_batch_tokens: max_sequences * prompt.max(1),
        prefill_chunk: prompt.max(1),
    }
}

const KV_BYTES: u64 = 384 << 20;

fn main() {
    let args = args();
    let device = Device::Cpu;

    let t = Instant::now();
    let loaded = gguf::load(&args.model, &device)
        .unwrap_or_else(|e| panic!("loading {}: {}", args.model.display(), e.chain()));
    let load_s = t.elapsed().as_secs_f64();
    let rss_after_load = proc_status_kb("VmRSS");
    let model = loaded.model.as_ref();

    let ids = prompt(&loaded.assets, args.prompt_tokens, 0);
    let n_prompt = ids.len();
    let job = |prompt: Vec<u32>, max_new: usize| Job {
        prompt,
        max_new,
        params: SamplingParams::default(),
    };

    // One sequence, as a device worker runs it: prefill, then decode passes.
    let runner = Runner::new(model, KV_BYTES, unchunked(1, n_prompt), &device).unwrap();
    let mut ticks = Vec::new();
    let start = Instant::now();
    let out = runner
        .run(
            &[job(ids.clone(), args.gen_tokens + 1)],
            |_| false,
            |_| ticks.push(Instant::now()),
        )
        .unwrap();
    let ttft_s = ticks[0].duration_since(start).as_secs_f64();
    let gen_s = ticks[ticks.len() - 1]
        .duration_since(ticks[0])
        .as_secs_f64();
    let eos_seen = out[0].iter().filter(|t| loaded.assets.is_eos(**t)).count();

    // The same prompt again, warm, in a fresh pool.
    let runner = Runner::new(model, KV_BYTES, unchunked(1, n_prompt), &device).unwrap();
    let t = Instant::now();
    runner
        .run(&[job(ids.clone(), 1)], |_| false, |_| {})
        .unwrap();
    let prefill_s = t.elapsed().as_secs_f64();

    // N sequences batched: decode passes once every prompt is in.
    let n = args.streams.max(1);
    let jobs: Vec<Job> = (0..n)
        .map(|v| {
            job(
                prompt(&loaded.assets, args.prompt_tokens, v),
                args.gen_tokens,
            )
        })
        .collect();
    let longest = jobs.iter().map(|j| j.prompt.len()).max().unwrap_or(1);
    let runner = Runner::new(model, KV_BYTES, unchunked(n, longest), &device).unwrap();
    let mut ticks = Vec::new();
    runner
        .run(&jobs, |_| false, |rows| ticks.push((Instant::now(), rows)))
        .unwrap();
    // The first pass carries every prompt; the rest are decode passes.
    let batch_tokens: usize = ticks[1..].iter().map(|(_, r)| r).sum();
    let batch_s = ticks[ticks.len() - 1]
        .0
        .duration_since(ticks[0].0)
        .as_secs_f64();

    let line = serde_json::json!({
        "model": args.model.file_name().map(|f| f.to_string_lossy().into_owned()),
        "threads": candle_core::utils::get_num_threads(),
        "prompt_tokens": n_prompt,
        "gen_tokens": args.gen_tokens,
        "load_s": load_s,
        "prefill_s": prefill_s,
        "prompt_tok_s": n_prompt as f64 / prefill_s,
        "ttft_ms": ttft_s * 1e3,
        "gen_s": gen_s,
        "gen_tok_s": args.gen_tokens as f64 / gen_s,
        "streams": n,
        "batch_gen_tok_s": batch_tokens as f64 / batch_s,
        "eos_ignored": eos_seen,
        "rss_after_load_mb": mb(rss_after_load),
        "peak_rss_mb": mb(proc_status_kb("VmHWM")),
        "avx2": cfg!(target_feature = "avx2"),
    });
    println!("{line}");
}
