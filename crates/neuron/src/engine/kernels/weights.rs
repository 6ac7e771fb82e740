//! Weight storage: the file's blocks, or the legacy types repacked for the
//! SIMD kernels. Either way the weights stay quantized (the same number of
//! bytes as in the file).
//!
//! The repacking ([`Soa`]) splits each legacy block into its fields and keeps
//! each field in its own row-major array: a kernel then converts eight
//! consecutive f16 scales of a row with one instruction instead of one per
//! block. K-quant super-blocks carry one f16 scale per 256 elements and are
//! kept as they are.

use super::format::{QType, QK};
use super::reference;
use super::Level;

/// A matrix of `n` rows × `nb` blocks.
#[derive(Debug)]
pub enum Weights {
    /// The file's bytes: the scalar level, and the K-quants at every level.
    Ggml(Vec<u8>),
    /// Legacy types at SIMD levels.
    Soa(Soa),
}

/// Legacy blocks split by field, each array row-major (`row × nb + block`).
#[derive(Debug, Default)]
pub struct Soa {
    /// Scales `d` (f16 bits).
    pub d: Vec<u16>,
    /// Q4_1 minimums `m` (f16 bits); empty for the other types.
    pub m: Vec<u16>,
    /// Q5_0 fifth bits; empty for the other types.
    pub qh: Vec<u32>,
    /// Quants: 16 bytes per block (nibbles, as in the file), 32 for Q8_0.
    pub qs: Vec<u8>,
}

impl Weights {
    /// Stores `bytes` (`n` rows of `nb` blocks of `qt`) for `level`.
    pub fn new(qt: QType, level: Level, bytes: &[u8]) -> Weights {
        if level == Level::Scalar || qt.is_k_quant() {
            return Weights::Ggml(bytes.to_vec());
        }
        let bb = qt.block_bytes();
        let blocks = bytes.len() / bb;
        let mut s = Soa {
            d: Vec::with_capacity(blocks),
            qs: Vec::with_capacity(blocks * if qt == QType::Q8_0 { 32 } else { 16 }),
            ..Soa::default()
        };
        for blk in bytes.chunks_exact(bb) {
            s.d.push(u16::from_le_bytes([blk[0], blk[1]]));
            match qt {
                QType::Q4_0 => s.qs.extend_from_slice(&blk[2..18]),
                QType::Q4_1 => {
                    s.m.push(u16::from_le_bytes([blk[2], blk[3]]));
                    s.qs.extend_from_slice(&blk[4..20]);
                }
                QType::Q5_0 => {
                    s.qh.push(u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]));
                    s.qs.extend_from_slice(&blk[6..22]);
                }
                QType::Q8_0 => s.qs.extend_from_slice(&blk[2..34]),
                QType::Q4K | QType::Q5K | QType::Q6K => {}
            }
        }
        Weights::Soa(s)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Weights::Ggml(b) => b.len(),
            Weights::Soa(s) => s.d.len() * 2 + s.m.len() * 2 + s.qh.len() * 4 + s.qs.len(),
        }
    }

    /// Dequantizes row `r` (of `nb` blocks) into `out`.
    pub fn dequantize_row(&self, qt: QType, nb: usize, r: usize, out: &mut [f32]) {
        let bb = qt.block_bytes();
        match self {
            Weights::Ggml(bytes) => {
                reference::dequantize_row(qt, &bytes[r * nb * bb..(r + 1) * nb * bb], out)
            }
            Weights::Soa(s) => {
                // Rebuild each block in the file's layout and use the
                // reference: embedding lookups are a few rows per step.
                let mut blk = [0u8; 34];
                for (b, y) in out.chunks_exact_mut(QK).enumerate().take(nb) {
                    let i = r * nb + b;
                    blk[0..2].copy_from_slice(&s.d[i].to_le_bytes());
                    match qt {
                        QType::Q4_0 => blk[2..18].copy_from_slice(&s.qs[i * 16..i * 16 + 16]),
                        QType::Q4_1 => {
                            blk[2..4].copy_from_slice(&s.m[i].to_le_bytes());
                            blk[4..20].copy_from_slice(&s.qs[i * 16..i * 16 + 16]);
                        }
                        QType::Q5_0 => {
                            blk[2..6].copy_from_slice(&s.qh[i].to_le_bytes());
                            blk[6..22].copy_from_slice(&s.qs[i * 16..i * 16 + 16]);
                        }
                        QType::Q8_0 => blk[2..34].copy_from_slice(&s.qs[i * 32..i * 32 + 32]),
                        QType::Q4K | QType::Q5K | QType::Q6K => {}
                    }
                    reference::dequantize_row(qt, &blk[..bb], y);
                }
            }
        }
    }
}
