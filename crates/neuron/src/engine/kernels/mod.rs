//! Quantized matrix multiplication on the CPU, with SIMD kernels chosen at
//! run time.
//!
//! What lives here:
//! - [`QMatMul`]: `x[m, k] · W[n, k]ᵀ → [m, n]` over GGUF weight blocks
//!   (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K), built from a candle
//!   `QTensor` at load time and run as a candle `CustomOp1` on CPU tensors;
//!   [`QMatMul::dequantize_rows`] turns looked-up rows of a quantized token
//!   embedding into f32 without dequantizing the whole table.
//! - [`Level`]: which kernel family runs (AVX2+FMA+F16C, or the portable
//!   scalar code), detected once per process with
//!   `is_x86_feature_detected!`; every SIMD function is compiled with
//!   `#[target_feature]` and only called after that detection.
//! - How it computes, as llama.cpp does: activations are quantized to 8 bits
//!   per row (32-blocks with the block's sum for the legacy types, 256-blocks
//!   with 16-element sums for the K-quants), then blocks are multiplied with
//!   integer multiply-adds (`vpmaddubsw`/`vpmaddwd`) and scaled in f32.
//!   Weights are read once per call for all rows of `x` (a batched decode
//!   is a small matmul, not a dot product per sequence); work is split over
//!   output columns, and over row tiles for prompts, on candle's CPU thread
//!   pool (the neuron's `--threads`).
//!
//! This module alone may use `unsafe` (the workspace denies it): SIMD loads
//! and the calls into `#[target_feature]` functions. Each `unsafe` block says
//! why it is sound. The scalar code in [`reference`] is both the portable
//! fallback and the reference every SIMD kernel is tested against.
//!
//! AVX-512 and AVX-VNNI kernels are not written: the machines this was built
//! and tested on have neither, and an untested kernel is not shipped. A CPU
//! with AVX-512 runs the AVX2 kernels.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]
// Kernels index several arrays (tiles of rows × columns × lanes) with one
// loop variable; iterator chains would hide the tile shape.
#![allow(clippy::needless_range_loop)]

mod act;
#[cfg(target_arch = "x86_64")]
mod avx2;
mod format;
mod matmul;
mod reference;
mod weights;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_matmul;

pub use format::QType;
pub use matmul::{Parallelism, QMatMul};

use std::sync::OnceLock;

/// Whether the engine's quantized linear layers use these kernels on the
/// CPU (else candle's `QMatMul`), read once from `NEURON_KERNELS`: `auto`
/// (the best level of this CPU), `avx2` or `scalar` switch them on; unset or
/// `candle` leaves candle's matmul.
///
/// On by default; `NEURON_KERNELS=candle` falls back to candle's quantized
/// matmul (for comparisons). Our kernels quantize activations and sum as
/// llama.cpp does, so their greedy outputs follow llama.cpp's (the README's
/// CPU-speed section has the comparison); the engine's recorded outputs
/// were made with them.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("NEURON_KERNELS").as_deref() != Ok("candle"))
}

/// A kernel family. Ordered: a later level needs more CPU features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Portable Rust, no SIMD intrinsics: runs everywhere.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C (Intel Haswell, AMD Excavator and later).
    Avx2,
}

impl Level {
    /// The best level this CPU supports, detected once per process.
    ///
    /// `NEURON_KERNELS=scalar` in the environment caps it at [`Level::Scalar`]
    /// (for comparisons).
    pub fn detected() -> Level {
        static LEVEL: OnceLock<Level> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let best = Self::supported().into_iter().max().unwrap_or(Level::Scalar);
            match std::env::var("NEURON_KERNELS").as_deref() {
                Ok("scalar") => Level::Scalar,
                _ => best,
            }
        })
    }

    /// Every level this CPU can run, lowest first.
    pub fn supported() -> Vec<Level> {
        let mut out = vec![Level::Scalar];
        if Level::Avx2.is_supported() {
            out.push(Level::Avx2);
        }
        out
    }

    /// Whether this CPU can run the level's kernels.
    pub fn is_supported(self) -> bool {
        match self {
            Level::Scalar => true,
            Level::Avx2 => avx2_supported(),
        }
    }

    /// A short lower-case name (`"scalar"`, `"avx2"`).
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_supported() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_supported() -> bool {
    false
}

/// Why a [`QMatMul`] could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The tensor's block type has no kernel here (the caller keeps candle's
    /// own matmul for it).
    #[error("no CPU kernel for {0:?} weights")]
    Unsupported(candle_core::quantized::GgmlDType),
    /// The tensor is not a 2-D matrix whose rows are whole blocks.
    #[error(
        "bad weight shape {shape:?} for {dtype:?} (rows must be whole {block}-element blocks)"
    )]
    Shape {
        /// The tensor's shape.
        shape: Vec<usize>,
        /// Its block type.
        dtype: candle_core::quantized::GgmlDType,
        /// Elements per block.
        block: usize,
    },
    /// The raw data is not `rows × blocks per row × block size` bytes.
    #[error("weight data is {got} bytes, expected {expected}")]
    DataSize {
        /// Bytes found.
        got: usize,
        /// Bytes the shape and block type call for.
        expected: usize,
    },
    /// The requested level cannot run on this CPU.
    #[error("kernel level {0:?} is not supported by this CPU")]
    LevelUnsupported(Level),
    /// A row id outside the matrix.
    #[error("row {id} out of range: the matrix has {rows} rows")]
    RowOutOfRange {
        /// The id asked for.
        id: u32,
        /// Rows in the matrix.
        rows: usize,
    },
    /// The output buffer or input does not have the size the shape calls for.
    #[error("buffer size mismatch: {0}")]
    BufferSize(String),
    /// Reading the tensor's data failed in candle.
    #[error("candle error: {0}")]
    Candle(#[from] candle_core::Error),
}
