//! Tokenizer check: how long building a GGUF file's tokenizer takes, and its
//! token ids for a list of strings (to compare with llama.cpp's).
//!
//! ```text
//! cargo run --release -p neuron --example tokenizer_check -- MODEL.gguf \
//!     [--runs 5] [--encode STRINGS.json]
//! ```
//!
//! Prints one JSON line to stderr: `header_s` (reading the GGUF metadata, no
//! weights) and the median / min / max of `--runs` builds of the tokenizer
//! (`tokenizer::from_gguf`), wall time and, on Linux, the thread's CPU time
//! (`/proc/thread-self/schedstat`; on a busy machine the wall time includes
//! waiting for a core, the CPU time does not). With `--encode`, reads a JSON array of strings
//! and prints a JSON array of their ids to stdout, special tokens parsed and
//! nothing added: what llama.cpp's `tokenize(text, add_special = false,
//! parse_special = true)` gives (node-llama-cpp: `model.tokenize(text, true)`).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use candle_core::quantized::gguf_file::Content;
use neuron::engine::tokenizer;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .expect("usage: tokenizer_check MODEL.gguf [--runs N] [--encode FILE]");
    let mut runs = 5usize;
    let mut encode = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            "--encode" => encode = Some(args.next().expect("--encode FILE")),
            other => panic!("unknown argument {other}"),
        }
    }

    let started = Instant::now();
    let mut file = std::fs::File::open(&model).unwrap();
    let content = Content::read(&mut file).unwrap();
    let header_s = started.elapsed().as_secs_f64();

    let mut times = Vec::new();
    let mut cpu_times = Vec::new();
    let mut built = None;
    for _ in 0..runs.max(1) {
        let (started, cpu) = (Instant::now(), cpu_seconds());
        let t = tokenizer::from_gguf(&content).unwrap();
        times.push(started.elapsed().as_secs_f64());
        if let (Some(before), Some(after)) = (cpu, cpu_seconds()) {
            cpu_times.push(after - before);
        }
        built = Some(t);
    }
    let (wall, cpu) = (summary(times), summary(cpu_times));
    eprintln!(
        "{}",
        serde_json::json!({
            "model": model,
            "header_s": header_s,
            "runs": runs.max(1),
            "tokenizer_wall_s": wall,
            "tokenizer_cpu_s": cpu,
        })
    );

    if let (Some(path), Some(t)) = (encode, built) {
        let texts: Vec<String> =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|s| t.encode(s.as_str(), false).unwrap().get_ids().to_vec())
            .collect();
        println!("{}", serde_json::to_string(&ids).unwrap());
    }
}

/// `{median, min, max}`, or null when there are no samples.
fn summary(mut samples: Vec<f64>) -> serde_json::Value {
    if samples.is_empty() {
        return serde_json::Value::Null;
    }
    samples.sort_by(f64::total_cmp);
    serde_json::json!({
        "median": samples[samples.len() / 2],
        "min": samples[0],
        "max": samples[samples.len() - 1],
    })
}

/// CPU time of this thread so far (the first field of
/// `/proc/thread-self/schedstat`, in ns), where Linux provides it.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}
