//! Continuous batching for one model: which sequences run, and what each
//! forward pass ("tick") computes.
//!
//! Each tick carries the decode token of every running sequence that has one
//! (all at their own positions) and, within the tick's token budget
//! (`max_batch_tokens`), chunks of prompt tokens of sequences still
//! prefilling, oldest first, each at most `prefill_chunk` tokens per tick — so
//! a long prompt never stalls the others' next token for its whole prefill
//! (each of their tokens waits for one tick), nor a short prompt that
//! arrives after it. A prompt with the tick to itself (nobody generating, no
//! other prompt) fills the budget, as nobody waits on it.
//! Sequences join (up to `max_sequences`) and leave between ticks.
//!
//! KV blocks: a sequence is admitted only when the pool can hold its whole
//! prompt (plus the first generated token), taking the longest cached prefix
//! from the pool's prefix cache first, so a prefill never waits halfway for
//! room. Decoding takes one more block every `BLOCK_SIZE` tokens; when none
//! is left, the youngest running sequence is preempted (its blocks return
//! to the pool, it waits at the head of the queue and later recomputes its
//! tokens, usually from the prefix cache). A sequence alone that still cannot
//! grow fails with a clear host-side error.
//!
//! Generic over the caller's per-sequence payload `S`; owns no tensors, no
//! threads and no channels (the device worker owns those), so the policy is
//! unit-tested here without a model.

use std::collections::VecDeque;

use super::batch::BatchInput;
use super::kv::{self, BlockId, BlockPool, BLOCK_SIZE};
use super::sampling::{Sampler, SamplingParams};
use super::EngineError;

/// The batching limits of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Sequences running at once; more wait in the queue.
    pub max_sequences: usize,
    /// Tokens per forward pass: decode tokens first, prompt chunks in the rest.
    pub max_batch_tokens: usize,
    /// Most prompt tokens of one sequence in one forward pass, unless it has
    /// the pass to itself (then it may fill it).
    pub prefill_chunk: usize,
}

/// A sequence's handle within its scheduler.
pub type SeqId = u64;

/// One generation: its tokens, its place in the KV pool, its sampler.
#[derive(Debug)]
pub struct Sequence<S> {
    id: SeqId,
    /// The caller's data (a request, its channel, …).
    pub payload: S,
    /// Prompt, then generated tokens.
    tokens: Vec<u32>,
    prompt_len: usize,
    /// Tokens whose K/V are in the cache.
    computed: usize,
    blocks: Vec<BlockId>,
    /// Leading blocks registered in the prefix cache, and their chain ids.
    sealed: usize,
    chain: Vec<u64>,
    /// Prompt tokens found in the prefix cache at (first) admission.
    cached_tokens: usize,
    admitted_once: bool,
    sampler: Sampler,
}

impl<S> Sequence<S> {
    /// The sequence's id.
    pub fn id(&self) -> SeqId {
        self.id
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Number of prompt tokens.
    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    /// Prompt tokens whose K/V came from the prefix cache.
    pub fn cached_tokens(&self) -> usize {
        self.cached_tokens
    }

    /// The chain ids of its full blocks so far (what a later request that
    /// starts with the same tokens finds in the prefix cache).
    pub fn chain(&self) -> &[u64] {
        &self.chain
    }

    /// Whether it has been admitted to the batch (its cached prefix known).
    pub fn admitted(&self) -> bool {
        self.admitted_once
    }

    /// Whether no token has been generated yet (faults are then at "prefill").
    pub fn in_prefill(&self) -> bool {
        self.generated() == 0
    }

    /// Samples the next token from this sequence's logits row and appends
    /// it. NaN logits are an error naming the position.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, EngineError> {
        let position = self.tokens.len();
        let id = self.sampler.sample(logits).map_err(|e| match e {
            EngineError::NanLogits(_) => EngineError::NanLogits(position),
            other => other,
        })?;
        self.tokens.push(id);
        Ok(id)
    }

    /// Tokens still to run through the model.
    fn pending(&self) -> usize {
        self.tokens.len() - self.computed
    }
}

/// One sequence's part of a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The sequence.
    pub id: SeqId,
    /// New tokens it computes.
    pub rows: usize,
    /// Whether its last row's logits are wanted (its prompt is complete).
    pub logits: bool,
}

/// A planned forward pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// What the model computes.
    pub batch: BatchInput,
    /// Whose rows they are, in row order; `batch.logit_rows` follows the
    /// entries with `logits`.
    pub entries: Vec<Entry>,
}

/// The result of planning a tick.
#[derive(Debug)]
pub struct Plan<S> {
    /// The forward pass to run, if any sequence has work.
    pub tick: Option<Tick>,
    /// Sequences that cannot continue (removed, blocks returned).
    pub failed: Vec<(Sequence<S>, EngineError)>,
}

/// The sequences of one model and its KV block pool.
#[derive(Debug)]
pub struct Scheduler<S> {
    config: SchedulerConfig,
    pool: BlockPool,
    max_positions: usize,
    running: Vec<Sequence<S>>,
    waiting: VecDeque<Sequence<S>>,
    next_id: SeqId,
}

impl<S> Scheduler<S> {
    /// A scheduler over a pool of `blocks` blocks for a model of
    /// `max_positions` positions.
    pub fn new(config: SchedulerConfig, blocks: usize, max_positions: usize) -> Self {
        Self {
            config: SchedulerConfig {
                max_sequences: config.max_sequences.max(1),
                max_batch_tokens: config.max_batch_tokens.max(1),
                prefill_chunk: config.prefill_chunk.max(1),
            },
            pool: BlockPool::new(blocks),
            max_positions,
            running: Vec::new(),
            waiting: VecDeque::new(),
            next_id: 0,
        }
    }

    /// The pool's ledger (for `/status` and tests).
    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// Whether nothing is running or waiting.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// Sequences running (admitted to the batch).
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Sequences waiting for admission.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Queues a generation of `prompt`. Refused (payload handed back) when
    /// the prompt is empty, leaves no room in the model's context, or could
    /// never fit the KV pool.
    pub fn add(
        &mut self,
        payload: S,
        prompt: Vec<u32>,
        params: &SamplingParams,
    ) -> Result<SeqId, (S, EngineError)> {
        if prompt.is_empty() {
            return Err((payload, EngineError::EmptyPrompt));
        }
        if prompt.len() >= self.max_positions {
            let needed = prompt.len() + 1;
            return Err((
                payload,
                EngineError::ContextOverflow {
                    needed,
                    max: self.max_positions,
                },
            ));
        }
        let needed = kv::blocks_for(prompt.len() + 1);
        if needed > self.pool.capacity() {
            return Err((
                payload,
                EngineError::KvCacheTooSmall(format!(
                    "the prompt needs {} positions, the model's KV pool holds {} (raise kv_reserve)",
                    prompt.len() + 1,
                    self.pool.capacity() * BLOCK_SIZE
                )),
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.push_back(Sequence {
            id,
            payload,
            prompt_len: prompt.len(),
            tokens: prompt,
            computed: 0,
            blocks: Vec::new(),
            sealed: 0,
            chain: Vec::new(),
            cached_tokens: 0,
            admitted_once: false,
            sampler: Sampler::new(params),
        });
        Ok(id)
    }

    /// A running sequence.
    pub fn get_mut(&mut self, id: SeqId) -> Option<&mut Sequence<S>> {
        self.running.iter_mut().find(|s| s.id == id)
    }

    /// Removes a sequence (running or waiting) and returns its blocks.
    pub fn remove(&mut self, id: SeqId) -> Option<Sequence<S>> {
        let seq = if let Some(i) = self.running.iter().position(|s| s.id == id) {
            self.running.remove(i)
        } else {
            let i = self.waiting.iter().position(|s| s.id == id)?;
            self.waiting.remove(i)?
        };
        self.pool.release_all(&seq.blocks);
        Some(seq)
    }

    /// Removes every sequence `drop` picks (e.g. whose client went away).
    pub fn remove_where(&mut self, mut drop: impl FnMut(&Sequence<S>) -> bool) -> Vec<Sequence<S>> {
        let ids: Vec<SeqId> = self
            .running
            .iter()
            .chain(self.waiting.iter())
            .filter(|s| drop(s))
            .map(|s| s.id)
            .collect();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Removes every sequence and forgets every cached block (after a
    /// failed forward pass the pool's contents are not to be trusted).
    pub fn drain(&mut self) -> Vec<Sequence<S>> {
        let mut all: Vec<Sequence<S>> = self.running.drain(..).collect();
        all.extend(self.waiting.drain(..));
        self.pool.reset();
        all
    }

    /// Plans the next forward pass.
    pub fn plan(&mut self) -> Plan<S> {
        let mut failed = Vec::new();
        self.make_room_for_decode(&mut failed);
        let mut batch = BatchInput::new();
        let mut entries = Vec::new();
        let mut decoders = 0;
        for s in &mut self.running {
            if s.pending() != 1 || s.computed == 0 {
                continue;
            }
            if s.tokens.len() > self.max_positions {
                continue; // failed below
            }
            if kv::blocks_for(s.computed + 1) > s.blocks.len() {
                // make_room_for_decode guaranteed a block.
                match self.pool.allocate() {
                    Some(b) => s.blocks.push(b),
                    None => continue,
                }
            }
            batch.push(&s.tokens[s.computed..], s.computed, s.blocks.clone(), true);
            entries.push(Entry {
                id: s.id,
                rows: 1,
                logits: true,
            });
            decoders += 1;
        }
        let over: Vec<SeqId> = self
            .running
            .iter()
            .filter(|s| s.tokens.len() > self.max_positions)
            .map(|s| s.id)
            .collect();
        for id in over {
            if let Some(s) = self.remove(id) {
                let err = EngineError::ContextOverflow {
                    needed: s.tokens.len(),
                    max: self.max_positions,
                };
                failed.push((s, err));
            }
        }
        let mut budget = self.config.max_batch_tokens.saturating_sub(decoders).max(1);
        self.admit();
        // A prompt with the pass to itself (nobody generating, no other
        // prompt waiting) fills it; otherwise each gets at most a chunk.
        let prompts = self
            .running
            .iter()
            .filter(|s| s.pending() > 0 && !entries.iter().any(|e: &Entry| e.id == s.id))
            .count();
        let chunk = if decoders == 0 && prompts == 1 {
            self.config.max_batch_tokens
        } else {
            self.config.prefill_chunk
        };
        for s in &mut self.running {
            if budget == 0 {
                break;
            }
            let pending = s.pending();
            if pending == 0 || entries.iter().any(|e: &Entry| e.id == s.id) {
                continue;
            }
            let n = pending.min(chunk).min(budget);
            let logits = n == pending;
            batch.push(
                &s.tokens[s.computed..s.computed + n],
                s.computed,
                s.blocks.clone(),
                logits,
            );
            entries.push(Entry {
                id: s.id,
                rows: n,
                logits,
            });
            budget -= n;
        }
        let tick = (!batch.is_empty()).then_some(Tick { batch, entries });
        Plan { tick, failed }
    }

    /// Records that `tick` ran: its tokens are in the cache, and blocks it
    /// filled join the prefix cache.
    pub fn complete(&mut self, tick: &Tick) {
        for e in &tick.entries {
            let Some(s) = self.running.iter_mut().find(|s| s.id == e.id) else {
                continue;
            };
            s.computed += e.rows;
            while (s.sealed + 1) * BLOCK_SIZE <= s.computed {
                let i = s.sealed;
                let h = self.pool.seal(
                    s.blocks[i],
                    s.chain.last().copied(),
                    &s.tokens[i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE],
                );
                s.chain.push(h);
                s.sealed += 1;
            }
        }
    }

    /// Frees blocks for this tick's decode tokens, preempting the youngest
    /// sequences if needed; a sequence alone that cannot grow fails.
    fn make_room_for_decode(&mut self, failed: &mut Vec<(Sequence<S>, EngineError)>) {
        loop {
            let needed = self
                .running
                .iter()
                .filter(|s| {
                    s.pending() == 1
                        && s.computed > 0
                        && kv::blocks_for(s.computed + 1) > s.blocks.len()
                })
                .count();
            if needed <= self.pool.available() {
                return;
            }
            if self.running.len() > 1 {
                if let Some(mut victim) = self.running.pop() {
                    tracing::debug!(seq = victim.id, "KV pool full: sequence preempted");
                    self.pool.release_all(&victim.blocks);
                    victim.blocks.clear();
                    victim.computed = 0;
                    victim.sealed = 0;
                    victim.chain.clear();
                    self.waiting.push_front(victim);
                }
                continue;
            }
            if let Some(s) = self.running.pop() {
                self.pool.release_all(&s.blocks);
                let err = EngineError::KvCacheTooSmall(format!(
                    "the sequence needs {} positions, the model's KV pool holds {} (raise kv_reserve)",
                    s.tokens.len() + 1,
                    self.pool.capacity() * BLOCK_SIZE
                ));
                failed.push((s, err));
            }
            return;
        }
    }

    /// Moves waiting sequences into the batch while there is room: a free
    /// place (`max_sequences`) and blocks for the whole prompt, after the
    /// longest cached prefix.
    fn admit(&mut self) {
        while self.running.len() < self.config.max_sequences {
            let Some(mut s) = self.waiting.pop_front() else {
                return;
            };
            // Keep at least one token to compute: its logits are needed.
            let reusable = &s.tokens[..s.tokens.len() - 1];
            let (found, _) = self.pool.lookup_prefix(reusable);
            let needed = kv::blocks_for(s.tokens.len() + 1).saturating_sub(found.len());
            if needed > self.pool.available() {
                self.pool.release_all(&found);
                self.waiting.push_front(s);
                return;
            }
            s.computed = found.len() * BLOCK_SIZE;
            s.sealed = found.len();
            s.chain.clear();
            for chunk in s.tokens.chunks_exact(BLOCK_SIZE).take(found.len()) {
                let h = kv::chain_hash(s.chain.last().copied(), chunk);
                s.chain.push(h);
            }
            if !s.admitted_once {
                s.cached_tokens = s.computed;
                s.admitted_once = true;
            }
            s.blocks = found;
            for _ in 0..needed {
                match self.pool.allocate() {
                    Some(b) => s.blocks.push(b),
                    None => break, // not reached: `available` was checked
                }
            }
            self.running.push(s);
        }
    }
}

#[cfg(test)]
mod tests;
