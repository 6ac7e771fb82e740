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
//! (`tokenizer::from_gguf`). With `--encode`, reads a JSON array of strings
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
    let mut built = None;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let t = tokenizer::from_gguf(&content).unwrap();
        times.push(started.elapsed().as_secs_f64());
        built = Some(t);
    }
    times.sort_by(f64::total_cmp);
    eprintln!(
        "{}",
        serde_json::json!({
            "model": model,
            "header_s": header_s,
            "tokenizer_s_median": times[times.len() / 2],
            "tokenizer_s_min": times[0],
            "tokenizer_s_max": times[times.len() - 1],
            "runs": times.len(),
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
