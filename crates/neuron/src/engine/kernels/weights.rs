//! Weight storage: the file's blocks, or the legacy types repacked for the
//! SIMD kernels. Either way the weights stay quantized (the same number of
//! bytes as in the file).
//!
//! Two repackings for the SIMD kernels:
//! - [`X8`] (Q4_0, Q4_1, Q5_0): rows interleaved by eight, so that each
//!   32-bit lane of a register holds one output column (llama.cpp's
//!   `q4_0x8` idea): per block, the eight rows' scales are one f16 vector and
//!   their quants four 32-byte registers;
//! - [`Soa`] (Q8_0): scales and quants in their own row-major arrays, so a
//!   kernel converts eight consecutive f16 scales of a row at once; Q8_0 is
//!   read mostly in the output matrix, where memory, not arithmetic, bounds
//!   the speed.
//!
//! K-quant super-blocks carry one f16 scale per 256 elements and are kept as
//! they are.

use super::format::{QType, QK};
use super::reference;
use super::Level;

/// A matrix of `n` rows × `nb` blocks.
#[derive(Debug)]
pub enum Weights {
    /// The file's bytes: the scalar level, and the K-quants at every level.
    Ggml(Vec<u8>),
    /// Q8_0 at SIMD levels.
    Soa(Soa),
    /// Q4_0, Q4_1 and Q5_0 at SIMD levels.
    X8(X8),
}

/// Eight rows interleaved: row `8g + lane` of block `b` lives at index
/// `(g·nb + b)·8 + lane` of `d`/`m`, and its 16 quant bytes at
/// `qs[(g·nb + b)·128 + 32·j + 4·lane .. +4]` for chunk j (bytes 4j..4j+4).
/// The last group is padded with zero rows.
#[derive(Debug, Default)]
pub struct X8 {
    /// Scales `d` (f16 bits), 8 per group and block.
    pub d: Vec<u16>,
    /// Q4_1 minimums (f16 bits), as `d`; empty for the other types.
    pub m: Vec<u16>,
    /// Q5_0 fifth bits: 8 planes per group and block, plane `2j + half`
    /// holding bit `4·lane + k` = bit `16·half + 4j + k` of row `lane`'s `qh`.
    pub qh: Vec<u32>,
    /// Quants, 128 bytes per group and block.
    pub qs: Vec<u8>,
}

/// Q8_0 blocks split by field, each array row-major (`row × nb + block`).
#[derive(Debug, Default)]
pub struct Soa {
    /// Scales `d` (f16 bits).
    pub d: Vec<u16>,
    /// Quants: 32 signed bytes per block.
    pub qs: Vec<u8>,
}

impl Weights {
    /// Stores `bytes` (`n` rows of `nb` blocks of `qt`) for `level`.
    pub fn new(qt: QType, level: Level, bytes: &[u8], n: usize, nb: usize) -> Weights {
        if level == Level::Scalar || qt.is_k_quant() {
            return Weights::Ggml(bytes.to_vec());
        }
        if qt != QType::Q8_0 {
            return Weights::X8(X8::new(qt, bytes, n, nb));
        }
        let bb = qt.block_bytes();
        let blocks = bytes.len() / bb;
        let mut s = Soa {
            d: Vec::with_capacity(blocks),
            qs: Vec::with_capacity(blocks * 32),
        };
        for blk in bytes.chunks_exact(bb) {
            s.d.push(u16::from_le_bytes([blk[0], blk[1]]));
            s.qs.extend_from_slice(&blk[2..34]);
        }
        Weights::Soa(s)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Weights::Ggml(b) => b.len(),
            Weights::Soa(s) => s.d.len() * 2 + s.qs.len(),
            Weights::X8(x) => x.d.len() * 2 + x.m.len() * 2 + x.qh.len() * 4 + x.qs.len(),
        }
    }

    /// Dequantizes row `r` (of `nb` blocks) into `out`.
    pub fn dequantize_row(&self, qt: QType, nb: usize, r: usize, out: &mut [f32]) {
        let bb = qt.block_bytes();
        match self {
            Weights::Ggml(bytes) => {
                reference::dequantize_row(qt, &bytes[r * nb * bb..(r + 1) * nb * bb], out)
            }
            Weights::X8(x) => {
                let mut blk = [0u8; 22];
                for (b, y) in out.chunks_exact_mut(QK).enumerate().take(nb) {
                    x.block(qt, nb, r, b, &mut blk);
                    reference::dequantize_row(qt, &blk[..bb], y);
                }
            }
            Weights::Soa(s) => {
                // Rebuild each block in the file's layout and use the
                // reference: embedding lookups are a few rows per step.
                let mut blk = [0u8; 34];
                for (b, y) in out.chunks_exact_mut(QK).enumerate().take(nb) {
                    let i = r * nb + b;
                    blk[0..2].copy_from_slice(&s.d[i].to_le_bytes());
                    blk[2..34].copy_from_slice(&s.qs[i * 32..i * 32 + 32]);
                    reference::dequantize_row(qt, &blk[..bb], y);
                }
            }
        }
    }
}

impl X8 {
    fn new(qt: QType, bytes: &[u8], n: usize, nb: usize) -> X8 {
        let bb = qt.block_bytes();
        let groups = n.div_ceil(8);
        let mut x = X8 {
            d: vec![0; groups * nb * 8],
            m: if qt == QType::Q4_1 {
                vec![0; groups * nb * 8]
            } else {
                Vec::new()
            },
            qh: if qt == QType::Q5_0 {
                vec![0; groups * nb * 8]
            } else {
                Vec::new()
            },
            qs: vec![0; groups * nb * 128],
        };
        for (row, rb) in bytes.chunks_exact(nb * bb).enumerate() {
            let (g, lane) = (row / 8, row % 8);
            for (b, blk) in rb.chunks_exact(bb).enumerate() {
                let i = g * nb + b;
                x.d[i * 8 + lane] = u16::from_le_bytes([blk[0], blk[1]]);
                let qs = match qt {
                    QType::Q4_1 => {
                        x.m[i * 8 + lane] = u16::from_le_bytes([blk[2], blk[3]]);
                        &blk[4..20]
                    }
                    QType::Q5_0 => {
                        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                        for j in 0..4 {
                            for half in 0..2 {
                                let bits = (qh >> (16 * half + 4 * j)) & 0xF;
                                x.qh[i * 8 + 2 * j + half] |= bits << (4 * lane);
                            }
                        }
                        &blk[6..22]
                    }
                    _ => &blk[2..18],
                };
                for j in 0..4 {
                    let at = i * 128 + 32 * j + 4 * lane;
                    x.qs[at..at + 4].copy_from_slice(&qs[4 * j..4 * j + 4]);
                }
            }
        }
        x
    }

    /// Block `b` of row `r` in the file's layout.
    fn block(&self, qt: QType, nb: usize, r: usize, b: usize, blk: &mut [u8; 22]) {
        let (g, lane) = (r / 8, r % 8);
        let i = g * nb + b;
        blk[0..2].copy_from_slice(&self.d[i * 8 + lane].to_le_bytes());
        let at = match qt {
            QType::Q4_1 => {
                blk[2..4].copy_from_slice(&self.m[i * 8 + lane].to_le_bytes());
                4
            }
            QType::Q5_0 => {
                let mut qh = 0u32;
                for j in 0..4 {
                    for half in 0..2 {
                        let bits = (self.qh[i * 8 + 2 * j + half] >> (4 * lane)) & 0xF;
                        qh |= bits << (16 * half + 4 * j);
                    }
                }
                blk[2..6].copy_from_slice(&qh.to_le_bytes());
                6
            }
            _ => 2,
        };
        for j in 0..4 {
            let src = i * 128 + 32 * j + 4 * lane;
            blk[at + 4 * j..at + 4 * j + 4].copy_from_slice(&self.qs[src..src + 4]);
        }
    }
}
