//! Turning one row of logits into a token id: greedy argmax, or temperature
//! with optional top-k and top-p, from a seeded generator per sequence.
//!
//! Owns the NaN check (NaN logits are a model or numeric fault, reported as
//! [`EngineError::NanLogits`] rather than sampled). It does not own stop
//! sequences, max_tokens or EOS handling.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::EngineError;

/// Temperatures at or below this are greedy.
const GREEDY_BELOW: f64 = 1e-7;
/// First guess of the nucleus size for top-p (grown ×4 until it holds `p`),
/// so a 262k vocabulary is not sorted for every token.
const NUCLEUS_GUESS: usize = 64;

/// Sampling parameters of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 (or anything `<= 1e-7`, or NaN) is greedy argmax.
    pub temperature: f64,
    /// Nucleus sampling; `None`, `<= 0` or `>= 1.0` means no top-p.
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
    /// Whether these parameters pick the argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature.is_nan() || self.temperature <= GREEDY_BELOW
    }

    fn top_p(&self) -> Option<f64> {
        self.top_p.filter(|p| *p > 0.0 && *p < 1.0)
    }

    fn top_k(&self) -> Option<usize> {
        self.top_k.filter(|k| *k > 0)
    }
}

/// The index of the largest value; the first one on ties.
pub fn argmax(values: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, v) in values.iter().enumerate() {
        if best.is_none_or(|(_, b)| *v > b) {
            best = Some((i, *v));
        }
    }
    best.map(|(i, _)| i as u32)
}

/// Samples token ids from logits; one per sequence (it owns the RNG state).
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    sampled: usize,
}

impl Sampler {
    /// A sampler for `p`, seeded with `p.seed`.
    pub fn new(p: &SamplingParams) -> Self {
        Self {
            params: p.clone(),
            rng: StdRng::seed_from_u64(p.seed),
            sampled: 0,
        }
    }

    /// Samples one token from one row of logits.
    ///
    /// NaN anywhere is [`EngineError::NanLogits`] carrying the number of
    /// tokens this sampler sampled before (callers that know the sequence
    /// position replace it).
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, EngineError> {
        if logits.is_empty() || logits.iter().any(|v| v.is_nan()) {
            return Err(EngineError::NanLogits(self.sampled));
        }
        let id = if self.params.is_greedy() {
            argmax(logits)
        } else {
            self.sample_random(logits)
        }
        .ok_or(EngineError::NanLogits(self.sampled))?;
        self.sampled += 1;
        Ok(id)
    }

    fn sample_random(&mut self, logits: &[f32]) -> Option<u32> {
        let t = self.params.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            // All -inf (or +inf present): nothing to weigh; take the argmax.
            return argmax(logits);
        }
        // Unnormalised probabilities exp((l - max) / t), in f64.
        let weight = |l: f32| ((f64::from(l) - f64::from(max)) / t).exp();
        let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
        if let Some(k) = self.params.top_k().filter(|k| *k < ids.len()) {
            ids.select_nth_unstable_by(k - 1, by_logit);
            ids.truncate(k);
        }
        if let Some(p) = self.params.top_p() {
            let total: f64 = ids.iter().map(|i| weight(logits[*i as usize])).sum();
            let mut n = NUCLEUS_GUESS.min(ids.len());
            loop {
                if n < ids.len() {
                    ids.select_nth_unstable_by(n - 1, by_logit);
                }
                let head = &mut ids[..n];
                head.sort_unstable_by(by_logit);
                let mut cum = 0.0;
                let mut keep = None;
                for (i, id) in head.iter().enumerate() {
                    cum += weight(logits[*id as usize]) / total;
                    if cum >= p {
                        keep = Some(i + 1);
                        break;
                    }
                }
                match keep {
                    Some(k) => {
                        ids.truncate(k);
                        break;
                    }
                    None if n == ids.len() => break,
                    None => n = (n * 4).min(ids.len()),
                }
            }
        }
        let weights: Vec<f64> = ids.iter().map(|i| weight(logits[*i as usize])).collect();
        let total: f64 = weights.iter().sum();
        let mut u = self.rng.random::<f64>() * total;
        for (id, w) in ids.iter().zip(&weights) {
            if u < *w {
                return Some(*id);
            }
            u -= w;
        }
        // Rounding left u at the very end: the last candidate.
        ids.last().copied()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    fn greedy_picks_the_first_argmax() {
        for t in [0.0, 1e-8, f64::NAN] {
            let mut s = Sampler::new(&params(t, Some(0.5), Some(3), 7));
            assert_eq!(s.sample(&[0.1, 3.0, -2.0, 2.9]).unwrap(), 1);
            assert_eq!(s.sample(&[5.0, 9.0, 1.0, 9.0]).unwrap(), 1, "first on ties");
            assert_eq!(s.sample(&[f32::NEG_INFINITY, -1.0]).unwrap(), 1);
        }
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn same_seed_same_samples() {
        let l = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.02, 0.98];
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
            let mut distinct = a.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert!(distinct.len() > 1, "{a:?}");
            assert!(a.iter().all(|id| *id < 8));
            if p.top_k == Some(4) {
                // The four largest logits: ids 1, 3, 6, 0/5 (1.0 ties).
                assert!(a.iter().all(|id| [0, 1, 3, 5, 6].contains(id)), "{a:?}");
            }
        }
    }

    #[test]
    fn top_k_one_is_argmax() {
        let mut s = Sampler::new(&params(5.0, None, Some(1), 3));
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.0, 0.1, 0.3, 0.2]).unwrap(), 2);
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        // Probabilities about 0.70, 0.26, 0.04: p = 0.6 keeps only the first,
        // p = 0.9 the first two.
        let l = [2.0f32, 1.0, -1.0];
        let mut s = Sampler::new(&params(1.0, Some(0.6), None, 1));
        assert!((0..50).all(|_| s.sample(&l).unwrap() == 0));
        let mut s = Sampler::new(&params(1.0, Some(0.9), None, 1));
        let got: Vec<u32> = (0..200).map(|_| s.sample(&l).unwrap()).collect();
        assert!(
            got.contains(&0) && got.contains(&1) && !got.contains(&2),
            "{got:?}"
        );
    }

    #[test]
    fn temperature_sharpens() {
        let l = [1.0f32, 0.0];
        let count = |t: f64| {
            let mut s = Sampler::new(&params(t, None, None, 9));
            (0..2000).filter(|_| s.sample(&l).unwrap() == 0).count()
        };
        // p(0) = 0.73 at t = 1, 0.99995 at t = 0.1.
        let (warm, cold) = (count(1.0), count(0.1));
        assert!((1300..1600).contains(&warm), "{warm}");
        assert!(cold > 1990, "{cold}");
    }

    #[test]
    fn nan_is_an_error() {
        for t in [0.0, 1.0] {
            let mut s = Sampler::new(&params(t, None, None, 0));
            let err = s.sample(&[0.0, f32::NAN, 1.0]).unwrap_err();
            assert!(matches!(err, EngineError::NanLogits(0)), "{err:?}");
            assert!(s.sample(&[]).is_err());
        }
    }

    proptest! {
        /// Whatever the logits and parameters, a sample is a valid id that
        /// top-k allows.
        #[test]
        fn samples_are_in_range(
            logits in proptest::collection::vec(-50f32..50.0, 1..300),
            t in 0.0f64..3.0,
            top_p in proptest::option::of(0.0f64..1.2),
            top_k in proptest::option::of(0usize..400),
            seed: u64,
        ) {
            let mut s = Sampler::new(&params(t, top_p, top_k, seed));
            let id = s.sample(&logits).unwrap() as usize;
            prop_assert!(id < logits.len());
            if let Some(k) = top_k.filter(|k| *k > 0 && t > GREEDY_BELOW) {
                let larger = logits.iter().filter(|v| **v > logits[id]).count();
                prop_assert!(larger < k, "{larger} logits beat the sample, k = {k}");
            }
        }
    }
}
