//! neuron: the per-host inference daemon of cortex.
//!
//! - [`engine`]: candle inference — GGUF loading, tokenizer, chat template,
//!   sampling, stop sequences, incremental detokenization;
pub mod engine;
