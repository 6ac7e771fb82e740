//! Turning logits into a token id: greedy, or temperature with optional
//! top-k / top-p, through candle's `LogitsProcessor`.
//!
//! Owns the NaN check (NaN logits are a model or numeric fault, reported as
//! [`EngineError::NanLogits`] rather than sampled). It does not own stop
//! sequences, max_tokens or EOS handling.

use super::EngineError;
use candle_core::{DType, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};

/// Temperatures at or below this are greedy, as in candle.
const GREEDY_BELOW: f64 = 1e-7;

/// Sampling parameters of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 (or anything `<= 1e-7`) is greedy argmax.
    pub temperature: f64,
    /// Nucleus sampling; `None` or `>= 1.0` means no top-p.
    pub top_p: Option<f64>,
    /// Keep only the `k` most likely tokens; `None` or 0 means all.
    pub top_k: Option<usize>,
    /// Seed of the random generator (ignored by greedy).
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Greedy, seed 0.
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: None,
            top_k: None,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// The candle sampling strategy these parameters describe.
    pub fn sampling(&self) -> Sampling {
        let temperature = self.temperature;
        // NaN temperature falls through to greedy too.
        if temperature.is_nan() || temperature <= GREEDY_BELOW {
            return Sampling::ArgMax;
        }
        let top_p = self.top_p.filter(|p| *p < 1.0 && *p > 0.0);
        let top_k = self.top_k.filter(|k| *k > 0);
        match (top_k, top_p) {
            (None, None) => Sampling::All { temperature },
            (Some(k), None) => Sampling::TopK { k, temperature },
            (None, Some(p)) => Sampling::TopP { p, temperature },
            (Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
        }
    }
}

/// Samples token ids from logits; one per sequence (it owns the RNG state).
pub struct Sampler {
    processor: LogitsProcessor,
    sampled: usize,
}

impl Sampler {
    /// A sampler for `p`, seeded with `p.seed`.
    pub fn new(p: &SamplingParams) -> Self {
        Self {
            processor: LogitsProcessor::from_sampling(p.seed, p.sampling()),
            sampled: 0,
        }
    }

    /// Samples one token from `logits` of shape `(vocab)` or `(1, vocab)`.
    ///
    /// NaN anywhere in the logits is [`EngineError::NanLogits`] carrying the
    /// number of tokens this sampler sampled before (a [`super::sequence::Sequence`]
    /// replaces it with the sequence position).
    pub fn sample(&mut self, logits: &Tensor) -> Result<u32, EngineError> {
        let logits = logits.flatten_all()?.to_dtype(DType::F32)?;
        let values = logits.to_vec1::<f32>()?;
        if values.iter().any(|v| v.is_nan()) {
            return Err(EngineError::NanLogits(self.sampled));
        }
        let id = self.processor.sample(&logits)?;
        self.sampled += 1;
        Ok(id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn logits(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    fn params(
        temperature: f64,
        top_p: Option<f64>,
        top_k: Option<usize>,
        seed: u64,
    ) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            top_k,
            seed,
        }
    }

    #[test]
    fn greedy_picks_argmax() {
        for t in [0.0, 1e-8] {
            let mut s = Sampler::new(&params(t, Some(0.5), Some(3), 7));
            assert_eq!(s.sample(&logits(&[0.1, 3.0, -2.0, 2.9])).unwrap(), 1);
            let batched = logits(&[5.0, 1.0, 9.0]).unsqueeze(0).unwrap();
            assert_eq!(s.sample(&batched).unwrap(), 2);
        }
    }

    #[test]
    fn strategy_follows_params() {
        assert_eq!(params(0.0, None, None, 0).sampling(), Sampling::ArgMax);
        assert_eq!(
            params(0.7, Some(1.0), Some(0), 0).sampling(),
            Sampling::All { temperature: 0.7 }
        );
        assert_eq!(
            params(0.7, None, Some(5), 0).sampling(),
            Sampling::TopK {
                k: 5,
                temperature: 0.7
            }
        );
        assert_eq!(
            params(0.7, Some(0.9), None, 0).sampling(),
            Sampling::TopP {
                p: 0.9,
                temperature: 0.7
            }
        );
        assert_eq!(
            params(0.7, Some(0.9), Some(5), 0).sampling(),
            Sampling::TopKThenTopP {
                k: 5,
                p: 0.9,
                temperature: 0.7
            }
        );
    }

    #[test]
    fn same_seed_same_samples() {
        let l = logits(&[1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.02, 0.98]);
        for p in [
            params(1.0, None, None, 42),
            params(1.0, Some(0.9), None, 42),
            params(1.0, None, Some(4), 42),
            params(1.0, Some(0.9), Some(4), 42),
        ] {
            let run = |p: &SamplingParams| {
                let mut s = Sampler::new(p);
                (0..64).map(|_| s.sample(&l).unwrap()).collect::<Vec<_>>()
            };
            let a = run(&p);
            assert_eq!(a, run(&p));
            // Not degenerate: near-uniform logits give several distinct tokens.
            let mut distinct = a.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert!(distinct.len() > 1, "{a:?}");
            assert!(a.iter().all(|id| *id < 8));
        }
    }

    #[test]
    fn top_k_one_is_argmax() {
        let mut s = Sampler::new(&params(5.0, None, Some(1), 3));
        for _ in 0..20 {
            assert_eq!(s.sample(&logits(&[0.0, 0.1, 0.3, 0.2])).unwrap(), 2);
        }
    }

    #[test]
    fn nan_is_an_error() {
        for t in [0.0, 1.0] {
            let mut s = Sampler::new(&params(t, None, None, 0));
            let err = s.sample(&logits(&[0.0, f32::NAN, 1.0])).unwrap_err();
            assert!(matches!(err, EngineError::NanLogits(0)), "{err:?}");
        }
    }
}
