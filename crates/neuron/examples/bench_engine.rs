//! Engine benchmark: load time, prompt tokens/s, time to first token,
//! generation tokens/s and peak RSS of the candle engine, with no HTTP,
//! channels or scheduler in the way. Prints one JSON line.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo run --release -p neuron --example bench_engine -- \
//!     [MODEL.gguf] [--prompt-tokens 200] [--gen-tokens 128]
//! ```
//!
//! What is timed, in this order:
//! 1. `gguf::load` (metadata, tokenizer, template, weights) → `load_s`;
//! 2. a greedy [`Sequence`]: its first `step()` is the prefill plus the
//!    first sample → `ttft_ms` (cold: the first forward pass of the process,
//!    as the first request after a load); then `gen_tokens` more steps →
//!    `gen_tok_s` (EOS is ignored so that every run decodes the same count);
//! 3. a raw prefill (`forward` over the prompt on a fresh clone of the base
//!    weights, no sampling) → `prefill_s` and `prompt_tok_s` (warm).
//!
//! Peak RSS is `VmHWM` from `/proc/self/status` at the end. The thread count
//! is candle's (`RAYON_NUM_THREADS`, default: every core). `scripts/bench-neuron`
//! runs this several times per thread count and prints medians.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Tensor;
use cortex_core::openai::{ChatMessage, Role};
use neuron::engine::gguf;
use neuron::engine::sampling::SamplingParams;
use neuron::engine::sequence::Sequence;
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
}

fn args() -> Args {
    let mut out = Args {
        model: PathBuf::from(DEFAULT_MODEL),
        prompt_tokens: 200,
        gen_tokens: 128,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--prompt-tokens" => out.prompt_tokens = it.next().unwrap().parse().unwrap(),
            "--gen-tokens" => out.gen_tokens = it.next().unwrap().parse().unwrap(),
            "-h" | "--help" => {
                println!("bench_engine [MODEL.gguf] [--prompt-tokens N] [--gen-tokens N]");
                std::process::exit(0);
            }
            path => out.model = PathBuf::from(path),
        }
    }
    out
}

/// A chat prompt of at least `target` tokens (the smallest that reaches it).
fn prompt(assets: &ModelAssets, target: usize) -> Vec<u32> {
    let mut user = String::from(
        "Read the following notes about a small town, then write a long, detailed essay about its history.",
    );
    for sentence in FILLER.iter().cycle().take(1000) {
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

fn main() {
    let args = args();
    let device = Device::Cpu;

    let t = Instant::now();
    let weights = gguf::load(&args.model, &device)
        .unwrap_or_else(|e| panic!("loading {}: {}", args.model.display(), e.chain()));
    let load_s = t.elapsed().as_secs_f64();
    let rss_after_load = proc_status_kb("VmRSS");

    let ids = prompt(&weights.assets, args.prompt_tokens);
    let n_prompt = ids.len();

    // The Sequence path, as a device worker drives it.
    let mut seq = Sequence::new(&weights, ids.clone(), &SamplingParams::default()).unwrap();
    let t = Instant::now();
    let first = seq.step().unwrap();
    let ttft_s = t.elapsed().as_secs_f64();
    let mut eos_seen = usize::from(weights.assets.is_eos(first));
    let t = Instant::now();
    for _ in 0..args.gen_tokens {
        let id = seq.step().unwrap();
        eos_seen += usize::from(weights.assets.is_eos(id));
    }
    let gen_s = t.elapsed().as_secs_f64();

    // A raw prefill (forward only, no sampling), warm.
    let mut model = weights.base.clone();
    let input = Tensor::new(ids.as_slice(), &weights.device)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let t = Instant::now();
    let logits = model.forward(&input, 0).unwrap();
    let _ = logits.dims();
    let prefill_s = t.elapsed().as_secs_f64();

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
        "eos_ignored": eos_seen,
        "rss_after_load_mb": mb(rss_after_load),
        "peak_rss_mb": mb(proc_status_kb("VmHWM")),
        "avx2": cfg!(target_feature = "avx2"),
    });
    println!("{line}");
}
