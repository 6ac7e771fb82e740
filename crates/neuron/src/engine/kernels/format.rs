//! The GGML block formats the kernels read: which types, their block sizes,
//! and the byte layout of one block (the GGUF file's layout, little-endian).
//!
//! Legacy 32-element blocks (`d` and `m` are f16):
//! - Q4_0: `d, qs[16]` — `x = d·(q − 8)`, low nibbles are elements 0..16,
//!   high nibbles 16..32;
//! - Q4_1: `d, m, qs[16]` — `x = d·q + m`;
//! - Q5_0: `d, qh[4], qs[16]` — `q = nibble | bit << 4`, `x = d·(q − 16)`;
//! - Q8_0: `d, qs[32]` (i8) — `x = d·q`.
//!
//! K-quants, 256-element super-blocks:
//! - Q4_K: `d, dmin, scales[12], qs[128]` — eight 32-element sub-blocks
//!   with 6-bit scales and mins: `x = d·sc·q − dmin·mn`;
//! - Q5_K: `d, dmin, scales[12], qh[32], qs[128]` — as Q4_K with a fifth bit;
//! - Q6_K: `ql[128], qh[64], scales[16] (i8), d` — sixteen 16-element
//!   groups: `x = d·sc·(q − 32)`.

use candle_core::quantized::GgmlDType;
use half::f16;

/// A weight block type with a kernel here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QType {
    /// 4-bit, one scale per 32.
    Q4_0,
    /// 4-bit, scale and minimum per 32.
    Q4_1,
    /// 5-bit, one scale per 32.
    Q5_0,
    /// 8-bit, one scale per 32.
    Q8_0,
    /// 4-bit K-quant.
    Q4K,
    /// 5-bit K-quant.
    Q5K,
    /// 6-bit K-quant.
    Q6K,
}

/// Elements in a legacy block.
pub const QK: usize = 32;
/// Elements in a K-quant super-block.
pub const QK_K: usize = 256;

impl QType {
    /// Every type, for tests and benchmarks.
    pub const ALL: [QType; 7] = [
        QType::Q4_0,
        QType::Q4_1,
        QType::Q5_0,
        QType::Q8_0,
        QType::Q4K,
        QType::Q5K,
        QType::Q6K,
    ];

    /// The type for a candle dtype, if it has a kernel here.
    pub fn from_ggml(dtype: GgmlDType) -> Option<QType> {
        Some(match dtype {
            GgmlDType::Q4_0 => QType::Q4_0,
            GgmlDType::Q4_1 => QType::Q4_1,
            GgmlDType::Q5_0 => QType::Q5_0,
            GgmlDType::Q8_0 => QType::Q8_0,
            GgmlDType::Q4K => QType::Q4K,
            GgmlDType::Q5K => QType::Q5K,
            GgmlDType::Q6K => QType::Q6K,
            _ => return None,
        })
    }

    /// The candle dtype.
    pub fn ggml(self) -> GgmlDType {
        match self {
            QType::Q4_0 => GgmlDType::Q4_0,
            QType::Q4_1 => GgmlDType::Q4_1,
            QType::Q5_0 => GgmlDType::Q5_0,
            QType::Q8_0 => GgmlDType::Q8_0,
            QType::Q4K => GgmlDType::Q4K,
            QType::Q5K => GgmlDType::Q5K,
            QType::Q6K => GgmlDType::Q6K,
        }
    }

    /// Elements per block.
    pub const fn block_elems(self) -> usize {
        if self.is_k_quant() {
            QK_K
        } else {
            QK
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            QType::Q4_0 => 18,
            QType::Q4_1 => 20,
            QType::Q5_0 => 22,
            QType::Q8_0 => 34,
            QType::Q4K => 144,
            QType::Q5K => 176,
            QType::Q6K => 210,
        }
    }

    /// Whether activations are quantized to 256-blocks (Q8_K) for this type.
    pub const fn is_k_quant(self) -> bool {
        matches!(self, QType::Q4K | QType::Q5K | QType::Q6K)
    }

    /// For the legacy types: the per-block activation sum term. Q4_1 follows
    /// llama.cpp and rounds `d·Σq` to f16 (its `block_q8_1.s`); Q4_0 and Q5_0
    /// use it only to undo their weight offset, so it stays exact in f32.
    pub const fn act_sum_f16(self) -> bool {
        matches!(self, QType::Q4_1)
    }
}

/// f16 bits at `at` (little-endian) as f32.
#[inline]
pub fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

/// f32 rounded to f16 precision (round to nearest even), as f32.
#[inline]
pub fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// The 6-bit scale and minimum of sub-block `j` (0..8) of a Q4_K/Q5_K
/// super-block, from its 12 packed bytes (GGML's `get_scale_min_k4`).
#[inline]
pub fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Byte offsets inside a K-quant block.
pub mod off {
    /// Q4_K: `d`, `dmin`, `scales[12]`, `qs[128]`.
    pub const Q4K_SCALES: usize = 4;
    /// Q4_K quants.
    pub const Q4K_QS: usize = 16;
    /// Q5_K: `d`, `dmin`, `scales[12]`, `qh[32]`, `qs[128]`.
    pub const Q5K_SCALES: usize = 4;
    /// Q5_K high bits.
    pub const Q5K_QH: usize = 16;
    /// Q5_K quants.
    pub const Q5K_QS: usize = 48;
    /// Q6_K: `ql[128]`, `qh[64]`, `scales[16]`, `d`.
    pub const Q6K_QH: usize = 128;
    /// Q6_K scales (i8).
    pub const Q6K_SCALES: usize = 192;
    /// Q6_K scale.
    pub const Q6K_D: usize = 208;
}
