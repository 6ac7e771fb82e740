//! [`QMatMul`]: the quantized matmul the forward pass calls, and how its work
//! is split over threads.
//!
//! A call quantizes `x` once (all rows), then cuts the output into units of
//! up to [`ROW_TILE`] rows × [`COL_CHUNK`] columns, ordered column chunk by
//! column chunk so a chunk's weights stay in cache while its row tiles run.
//! A decode step (one row, or one row per sequence when batched) has one row
//! tile: every weight is read once per call. Units are handed out from a
//! shared cursor on candle's spinning CPU pool, whose size is the neuron's
//! `--threads` (`RAYON_NUM_THREADS`); see [`Parallelism`] for the measurement
//! behind that choice.

use std::cell::RefCell;
use std::ops::Range;

use candle_core::backend::BackendStorage;
use candle_core::quantized::QTensor;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::act::{ActQ8, ActQ8K};
use super::format::QType;
use super::reference;
use super::weights::Weights;
use super::{KernelError, Level};

/// Activation rows per unit of work (the micro-kernels take 1 to 4 rows).
pub const ROW_TILE: usize = 4;
/// Output columns per unit of work (a multiple of 8: the interleaved
/// layouts' row groups).
pub const COL_CHUNK: usize = 32;
/// Below this many multiply-adds a call runs on the calling thread alone:
/// waking the pool costs more than it saves.
const SERIAL_MACS: usize = 1 << 16;

/// Which threads run a call's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallelism {
    /// candle's barrier pool (`candle_core::utils::barrier_pool`): threads
    /// spin briefly between calls, so the ~200 matmuls of a decode step do
    /// not each pay a wake-up; candle's own CPU ops use the same pool, so
    /// the two never compete for cores. The default.
    CandlePool,
    /// rayon's global pool (kept for the benchmark that chose between them).
    Rayon,
    /// The calling thread alone.
    Serial,
}

/// `x[m, k] · W[n, k]ᵀ` over quantized weights, with the kernels of one
/// [`Level`]. Built once per weight matrix at load time.
#[derive(Debug)]
pub struct QMatMul {
    qt: QType,
    n: usize,
    k: usize,
    nb: usize,
    level: Level,
    par: Parallelism,
    w: Weights,
}

/// Per-thread activation buffers, reused across calls.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// Legacy-type activations.
    pub(super) q8: ActQ8,
    /// K-quant activations.
    pub(super) q8k: ActQ8K,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A raw output pointer shared by the units of one call.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// SAFETY: units write disjoint (row, column) cells of one buffer that
// outlives the pool call, which returns only when every unit is done.
unsafe impl Send for OutPtr {}
// SAFETY: as above; the pointer itself is never mutated.
unsafe impl Sync for OutPtr {}

impl QMatMul {
    /// From a CPU `QTensor` of shape `(n, k)`, with the best kernels of this
    /// CPU.
    pub fn from_qtensor(t: &QTensor) -> Result<Self, KernelError> {
        Self::from_qtensor_at(t, Level::detected())
    }

    /// As [`QMatMul::from_qtensor`], with the kernels of `level`.
    pub fn from_qtensor_at(t: &QTensor, level: Level) -> Result<Self, KernelError> {
        let dtype = t.dtype();
        let qt = QType::from_ggml(dtype).ok_or(KernelError::Unsupported(dtype))?;
        let dims = t.shape().dims();
        let (n, k) = match *dims {
            [n, k] => (n, k),
            _ => {
                return Err(KernelError::Shape {
                    shape: dims.to_vec(),
                    dtype,
                    block: qt.block_elems(),
                })
            }
        };
        Self::from_bytes(qt, n, k, &t.data()?, level)
    }

    /// From GGML block bytes: `n` rows of `k` elements of type `qt`.
    pub fn from_bytes(
        qt: QType,
        n: usize,
        k: usize,
        bytes: &[u8],
        level: Level,
    ) -> Result<Self, KernelError> {
        if !level.is_supported() {
            return Err(KernelError::LevelUnsupported(level));
        }
        if k == 0 || k % qt.block_elems() != 0 {
            return Err(KernelError::Shape {
                shape: vec![n, k],
                dtype: qt.ggml(),
                block: qt.block_elems(),
            });
        }
        let nb = k / qt.block_elems();
        let expected = n * nb * qt.block_bytes();
        if bytes.len() != expected {
            return Err(KernelError::DataSize {
                got: bytes.len(),
                expected,
            });
        }
        Ok(QMatMul {
            qt,
            n,
            k,
            nb,
            level,
            par: Parallelism::CandlePool,
            w: Weights::new(qt, level, bytes, n, nb),
        })
    }

    /// The same weights run with `par` (for benchmarks).
    pub fn with_parallelism(mut self, par: Parallelism) -> Self {
        self.par = par;
        self
    }

    /// The block type.
    pub fn qtype(&self) -> QType {
        self.qt
    }

    /// `(n, k)`: output columns, input columns.
    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// The kernel level in use.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Bytes of weights held (as many as in the file).
    pub fn weight_bytes(&self) -> usize {
        self.w.bytes()
    }

    /// `out[m, n] = x[m, k] · Wᵀ`.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<(), KernelError> {
        if x.len() != m * self.k || out.len() != m * self.n {
            return Err(KernelError::BufferSize(format!(
                "x has {} values and out {}, expected {m}×{} and {m}×{}",
                x.len(),
                out.len(),
                self.k,
                self.n
            )));
        }
        if m == 0 || self.n == 0 {
            return Ok(());
        }
        SCRATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let scratch = &mut *guard;
            if self.qt.is_k_quant() {
                scratch.q8k.quantize(x, m, self.nb);
            } else {
                scratch.q8.quantize(x, m, self.nb, self.qt.act_sum_f16());
            }
            self.run(scratch, m, OutPtr(out.as_mut_ptr()));
        });
        Ok(())
    }

    /// `out[m, n]` from activations quantized beforehand (tests give their
    /// own, to reach every quant value).
    #[cfg(test)]
    pub(super) fn matmul_quantized(&self, act: &Scratch, m: usize, out: &mut [f32]) {
        assert_eq!(out.len(), m * self.n);
        self.run(act, m, OutPtr(out.as_mut_ptr()));
    }

    /// Runs every unit of an `m`-row call.
    fn run(&self, act: &Scratch, m: usize, out: OutPtr) {
        let row_tiles = m.div_ceil(ROW_TILE);
        let col_chunks = self.n.div_ceil(COL_CHUNK);
        let units = row_tiles * col_chunks;
        let unit = |u: usize| {
            let (cc, rt) = (u / row_tiles, u % row_tiles);
            let rows = rt * ROW_TILE..((rt + 1) * ROW_TILE).min(m);
            let cols = cc * COL_CHUNK..((cc + 1) * COL_CHUNK).min(self.n);
            self.unit(act, rows, cols, out);
        };
        let par = if m * self.n * self.k < SERIAL_MACS {
            Parallelism::Serial
        } else {
            self.par
        };
        match par {
            Parallelism::Serial => (0..units).for_each(unit),
            Parallelism::CandlePool => {
                candle_core::utils::barrier_pool().execute_chunked(units, |r| r.for_each(unit))
            }
            Parallelism::Rayon => {
                use rayon::prelude::*;
                (0..units).into_par_iter().for_each(unit)
            }
        }
    }

    /// Computes rows × cols of the output (rows ≤ [`ROW_TILE`],
    /// cols ≤ [`COL_CHUNK`]) and writes them through `out`.
    fn unit(&self, act: &Scratch, rows: Range<usize>, cols: Range<usize>, out: OutPtr) {
        let mut tile = [0f32; ROW_TILE * COL_CHUNK];
        let (nr, nc) = (rows.len(), cols.len());
        self.compute(act, rows.clone(), cols.clone(), &mut tile, COL_CHUNK);
        for (i, r) in rows.enumerate() {
            let src = &tile[i * COL_CHUNK..i * COL_CHUNK + nc];
            // SAFETY: `out` points to an `m × n` buffer that outlives this
            // call (see `run`); row `r < m`, columns `cols` lie inside row
            // `r`, and no other unit writes these cells.
            unsafe {
                std::ptr::copy_nonoverlapping(src.as_ptr(), out.0.add(r * self.n + cols.start), nc)
            };
        }
        debug_assert!(nr <= ROW_TILE);
    }

    /// `tile[i·ldo + j] = x row (rows.start + i) · W row (cols.start + j)`.
    fn compute(
        &self,
        act: &Scratch,
        rows: Range<usize>,
        cols: Range<usize>,
        tile: &mut [f32],
        ldo: usize,
    ) {
        let (qt, nb) = (self.qt, self.nb);
        let nr = rows.len();
        // Row i of the tile; past the end it repeats the last row (unused).
        let row = |i: usize| rows.start + i.min(nr.saturating_sub(1));
        match (&self.w, self.level) {
            #[cfg(target_arch = "x86_64")]
            (Weights::Soa(w), Level::Avx2) => {
                let r: [_; ROW_TILE] = std::array::from_fn(|i| act.q8.row(row(i)));
                // SAFETY: a `Level::Avx2` matmul is only built when the CPU
                // has AVX2, FMA and F16C (`from_bytes` checks `is_supported`).
                unsafe { super::avx2::rows_q8_0(w, nb, &r[..nr], cols, tile, ldo) }
            }
            #[cfg(target_arch = "x86_64")]
            (Weights::X8(w), Level::Avx2) => {
                let r: [_; ROW_TILE] = std::array::from_fn(|i| act.q8.row(row(i)));
                // Units start on a multiple of COL_CHUNK, itself of 8.
                // SAFETY: as above.
                unsafe { super::avx2::rows_x8(qt, w, nb, &r[..nr], cols, tile, ldo) }
            }
            #[cfg(target_arch = "x86_64")]
            (Weights::Ggml(w), Level::Avx2) if qt.is_k_quant() => {
                let r: [_; ROW_TILE] = std::array::from_fn(|i| act.q8k.row(row(i)));
                // SAFETY: as above.
                unsafe { super::avx2::rows_q8k(qt, w, nb, &r[..nr], cols, tile, ldo) }
            }
            (Weights::Ggml(w), _) => {
                let rb = nb * qt.block_bytes();
                for i in 0..nr {
                    let r = rows.start + i;
                    for (j, c) in cols.clone().enumerate() {
                        let wr = &w[c * rb..(c + 1) * rb];
                        tile[i * ldo + j] = if qt.is_k_quant() {
                            reference::dot_q8k(qt, wr, act.q8k.row(r))
                        } else {
                            reference::dot_q8(qt, wr, act.q8.row(r))
                        };
                    }
                }
            }
            #[allow(unreachable_patterns)]
            _ => debug_assert!(false, "no kernel for {qt:?} at {:?}", self.level),
        }
    }

    /// Dequantizes weight rows `ids` into `out` (`ids.len() × k`): the token
    /// embedding lookup, without a dequantized copy of the whole table.
    pub fn dequantize_rows(&self, ids: &[u32], out: &mut [f32]) -> Result<(), KernelError> {
        if out.len() != ids.len() * self.k {
            return Err(KernelError::BufferSize(format!(
                "out has {} values, expected {}×{}",
                out.len(),
                ids.len(),
                self.k
            )));
        }
        for (&id, row) in ids.iter().zip(out.chunks_exact_mut(self.k)) {
            if id as usize >= self.n {
                return Err(KernelError::RowOutOfRange { id, rows: self.n });
            }
            self.w.dequantize_row(self.qt, self.nb, id as usize, row);
        }
        Ok(())
    }

    /// `x[..., k] → [..., n]` on a CPU tensor (f32, f16 or bf16; the result
    /// is f32 for f32 input, else the input's dtype).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.apply_op1_no_bwd(self)
    }

    /// Embedding lookup: a u32 tensor of ids `[...]` → f32 `[..., k]`.
    pub fn embedding(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let flat: Vec<u32> = ids.flatten_all()?.to_vec1()?;
        let mut out = vec![0f32; flat.len() * self.k];
        self.dequantize_rows(&flat, &mut out)
            .map_err(candle_core::Error::wrap)?;
        let mut dims = ids.dims().to_vec();
        dims.push(self.k);
        Tensor::from_vec(out, dims, &candle_core::Device::Cpu)
    }
}

impl CustomOp1 for QMatMul {
    fn name(&self) -> &'static str {
        "neuron-qmatmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("neuron-qmatmul: input is not contiguous {layout:?}");
        };
        let dims = layout.shape().dims();
        match dims.last() {
            Some(&k) if k == self.k && dims.len() >= 2 => {}
            _ => candle_core::bail!(
                "neuron-qmatmul: input {dims:?} does not end in k = {} (rank ≥ 2)",
                self.k
            ),
        }
        let m = layout.shape().elem_count() / self.k;
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = self.n;
        }
        let mut out = vec![0f32; m * self.n];
        let run =
            |x: &[f32], out: &mut [f32]| self.matmul(x, m, out).map_err(candle_core::Error::wrap);
        let storage = match storage {
            CpuStorage::F32(v) => {
                run(&v[start..end], &mut out)?;
                CpuStorage::F32(out)
            }
            CpuStorage::F16(v) => {
                let x: Vec<f32> = v[start..end].iter().map(|h| h.to_f32()).collect();
                run(&x, &mut out)?;
                CpuStorage::F16(out.iter().map(|&f| half::f16::from_f32(f)).collect())
            }
            CpuStorage::BF16(v) => {
                let x: Vec<f32> = v[start..end].iter().map(|h| h.to_f32()).collect();
                run(&x, &mut out)?;
                CpuStorage::BF16(out.iter().map(|&f| half::bf16::from_f32(f)).collect())
            }
            other => candle_core::bail!(
                "neuron-qmatmul: unsupported input dtype {:?}",
                other.dtype()
            ),
        };
        Ok((storage, Shape::from(out_dims)))
    }
}
