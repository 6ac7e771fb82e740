//! One generation: a prompt, its own KV cache, and the token loop.
//!
//! Owns the `ModelWeights` clone of one request. The KV cache lives inside
//! `ModelWeights`, so sharing one instance between requests silently mixes
//! their caches (the `broadcast_add: shape mismatch` bug); each sequence
//! clones the never-used base of [`LoadedWeights`] instead — clones share the
//! `Arc`'d weights and cost no memory. A `Sequence` is `Send` and is stepped
//! by the device worker that owns the device; it knows nothing of threads,
//! stop strings or max_tokens.

use super::sampling::{Sampler, SamplingParams};
use super::{Device, EngineError, LoadedWeights};
use candle_core::Tensor;
use candle_transformers::models::quantized_llama::ModelWeights;

/// One generation with its own KV cache.
pub struct Sequence {
    model: ModelWeights,
    device: Device,
    sampler: Sampler,
    prompt: Vec<u32>,
    /// Positions already in the KV cache.
    pos: usize,
    /// The last sampled token: the input of the next decode step.
    last: Option<u32>,
    generated: usize,
    max_positions: usize,
}

impl Sequence {
    /// A sequence for `prompt`; nothing runs until the first [`Sequence::step`].
    ///
    /// [`EngineError::EmptyPrompt`] for an empty prompt,
    /// [`EngineError::ContextOverflow`] for one longer than the model allows.
    pub fn new(
        weights: &LoadedWeights,
        prompt: Vec<u32>,
        params: &SamplingParams,
    ) -> Result<Self, EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let max_positions = weights.assets.meta.max_positions();
        if prompt.len() > max_positions {
            return Err(EngineError::ContextOverflow {
                needed: prompt.len(),
                max: max_positions,
            });
        }
        Ok(Self {
            model: weights.base.clone(),
            device: weights.device.clone(),
            sampler: Sampler::new(params),
            prompt,
            pos: 0,
            last: None,
            generated: 0,
            max_positions,
        })
    }

    /// Runs one forward pass and samples the next token.
    ///
    /// The first call is the prefill (one forward over the whole prompt);
    /// later calls feed the previously returned token. Fails with
    /// [`EngineError::ContextOverflow`] before the forward pass when the
    /// cache is full. After any other error the KV cache may be partly
    /// written: drop the sequence.
    pub fn step(&mut self) -> Result<u32, EngineError> {
        let input: &[u32] = match &self.last {
            None => &self.prompt,
            Some(last) => std::slice::from_ref(last),
        };
        let needed = self.pos + input.len();
        if needed > self.max_positions {
            return Err(EngineError::ContextOverflow {
                needed,
                max: self.max_positions,
            });
        }
        let ids = Tensor::new(input, &self.device)?.unsqueeze(0)?;
        let logits = self.model.forward(&ids, self.pos)?;
        let position = needed - 1;
        let next = self.sampler.sample(&logits).map_err(|e| match e {
            EngineError::NanLogits(_) => EngineError::NanLogits(position),
            other => other,
        })?;
        self.pos = needed;
        self.last = Some(next);
        self.generated += 1;
        Ok(next)
    }

    /// Number of prompt tokens.
    pub fn prompt_len(&self) -> usize {
        self.prompt.len()
    }

    /// Tokens returned by [`Sequence::step`] so far.
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// Whether the prompt has been through the model.
    pub fn is_prefilled(&self) -> bool {
        self.pos > 0
    }

    /// How many more [`Sequence::step`] calls fit in the model's context:
    /// the cap a scheduler puts on `max_tokens`.
    pub fn remaining_steps(&self) -> usize {
        if self.pos == 0 {
            // The prefill is one step; each later step adds one position.
            (self.max_positions + 1).saturating_sub(self.prompt.len())
        } else {
            self.max_positions.saturating_sub(self.pos)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::test_model;
    use cortex_core::openai::{ChatMessage, Role};
    use std::time::Instant;

    fn greedy() -> SamplingParams {
        SamplingParams::default()
    }

    fn run(w: &LoadedWeights, prompt: &[u32], n: usize) -> Vec<u32> {
        let mut s = Sequence::new(w, prompt.to_vec(), &greedy()).unwrap();
        (0..n).map(|_| s.step().unwrap()).collect()
    }

    fn chat(w: &LoadedWeights, text: &str) -> Vec<u32> {
        w.assets
            .encode_chat(&[ChatMessage::text(Role::User, text)], None)
            .unwrap()
    }

    fn assert_send<T: Send + 'static>() {}

    #[test]
    fn sequence_is_send() {
        assert_send::<Sequence>();
    }

    #[test]
    fn empty_prompt_is_rejected() {
        let Some(w) = test_model::weights() else {
            return;
        };
        assert!(matches!(
            Sequence::new(&w, vec![], &greedy()),
            Err(EngineError::EmptyPrompt)
        ));
        let max = w.assets.meta.max_positions();
        let mut s = Sequence::new(&w, vec![1, 2, 3], &greedy()).unwrap();
        assert_eq!(s.remaining_steps(), max - 2);
        s.step().unwrap();
        assert_eq!(s.remaining_steps(), max - 3);
        assert_eq!(s.generated(), 1);
        // A prompt that fills the context exactly still gets its one step.
        let full = Sequence::new(&w, vec![1u32; max], &greedy()).unwrap();
        assert_eq!(full.remaining_steps(), 1);
        let long = vec![1u32; max + 1];
        assert!(matches!(
            Sequence::new(&w, long, &greedy()),
            Err(EngineError::ContextOverflow { .. })
        ));
    }

    #[test]
    fn greedy_answer_names_paris() {
        let Some(w) = test_model::weights() else {
            return;
        };
        let prompt = chat(&w, "What is the capital of France? Answer in one sentence.");
        let mut s = Sequence::new(&w, prompt.clone(), &greedy()).unwrap();
        assert!(!s.is_prefilled());
        let mut out = Vec::new();
        while out.len() < 40 {
            let id = s.step().unwrap();
            if w.assets.is_eos(id) {
                break;
            }
            out.push(id);
        }
        assert!(s.is_prefilled());
        assert_eq!(s.prompt_len(), prompt.len());
        let text = w.assets.decode(&out).unwrap();
        eprintln!("greedy answer: {text:?}");
        assert!(text.contains("Paris"), "{text:?}");
    }

    #[test]
    fn interleaved_sequences_match_sequential_runs() {
        let Some(w) = test_model::weights() else {
            return;
        };
        let a = chat(&w, "Name three colours.");
        let b = chat(&w, "Write one short sentence about the sea, please.");
        let n = 12;
        let alone_a = run(&w, &a, n);
        let alone_b = run(&w, &b, n);
        let mut sa = Sequence::new(&w, a, &greedy()).unwrap();
        let mut sb = Sequence::new(&w, b, &greedy()).unwrap();
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        // b starts one step late so the two sit at different positions.
        ta.push(sa.step().unwrap());
        for _ in 0..n {
            tb.push(sb.step().unwrap());
            if ta.len() < n {
                ta.push(sa.step().unwrap());
            }
        }
        assert_eq!(ta, alone_a);
        assert_eq!(tb, alone_b);
        assert_eq!((sa.generated(), sb.generated()), (n, n));
    }

    /// Load time, prefill and decode speed; printed, not asserted.
    /// `cargo test -p neuron --lib engine::sequence::tests::measure -- --ignored --nocapture`
    #[test]
    #[ignore = "measurement, run by hand"]
    fn measure() {
        let Some(path) = test_model::path() else {
            return;
        };
        let t = Instant::now();
        let w = crate::engine::gguf::load(&path, &Device::Cpu).unwrap();
        let load = t.elapsed();
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        let prompt = chat(&w, &format!("Summarise this text: {text}"));
        let mut s = Sequence::new(&w, prompt.clone(), &greedy()).unwrap();
        let t = Instant::now();
        s.step().unwrap();
        let prefill = t.elapsed();
        let decode_n = 64;
        let t = Instant::now();
        for _ in 0..decode_n {
            s.step().unwrap();
        }
        let decode = t.elapsed();
        eprintln!(
            "load {:.3}s; prefill {} tokens in {:.3}s = {:.1} tok/s; decode {} tokens in {:.3}s = {:.1} tok/s",
            load.as_secs_f64(),
            prompt.len(),
            prefill.as_secs_f64(),
            prompt.len() as f64 / prefill.as_secs_f64(),
            decode_n,
            decode.as_secs_f64(),
            decode_n as f64 / decode.as_secs_f64()
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod record {
    use super::*;
    use crate::engine::test_model;
    use cortex_core::openai::{ChatMessage, Role};

    #[test]
    #[ignore = "records expected outputs"]
    fn record_greedy() {
        let w = test_model::weights().unwrap();
        let filler = [
            "The river that runs through the old town was used for centuries to carry wool and grain to the coast.",
            "In the spring the meadows flood, and the farmers move their sheep to the higher pastures on the hills.",
            "A stone bridge with seven arches was built in the fourteenth century and still carries traffic today.",
            "The town hall keeps a ledger of every market held on the square since the year the charter was granted.",
            "Travellers often remark on the bells of the abbey, which ring a different tune on each day of the week.",
            "Most of the houses along the quay are built of red brick, with steep roofs and narrow wooden shutters.",
        ];
        let mut long = String::from("Read these notes about a small town, then summarise its history in three sentences.");
        for s in filler.iter().cycle().take(30) {
            long.push(' ');
            long.push_str(s);
        }
        let prompts: Vec<String> = vec![
            "What is the capital of France? Answer in one sentence.".into(),
            "Name three colours.".into(),
            "Write a short poem about the sea.".into(),
            "Explain in two sentences why the sky is blue.".into(),
            long,
            "Write a Python function that adds two numbers.".into(),
            "What is 12 times 7?".into(),
            "Translate 'good morning' into French.".into(),
        ];
        let mut out = Vec::new();
        for p in prompts {
            let ids = w.assets.encode_chat(&[ChatMessage::text(Role::User, p.as_str())], None).unwrap();
            let mut s = Sequence::new(&w, ids.clone(), &SamplingParams::default()).unwrap();
            let mut gen = Vec::new();
            while gen.len() < 48 {
                let t = s.step().unwrap();
                gen.push(t);
                if w.assets.is_eos(t) { break; }
            }
            eprintln!("{} prompt tokens -> {:?}", ids.len(), w.assets.decode(&gen).unwrap());
            out.push(serde_json::json!({"text": p, "prompt": ids, "expected": gen}));
        }
        std::fs::write("/tmp/greedy_smollm2.json", serde_json::to_string(&out).unwrap()).unwrap();
    }
}
