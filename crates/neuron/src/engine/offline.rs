//! Running sequences to completion on one thread, without a device worker:
//! the same scheduler, KV pool and forward pass the worker uses, for tests,
//! benchmarks and tools.

use super::kv::{KvCache, KvGeometry};
use super::model::Model;
use super::sampling::SamplingParams;
use super::scheduler::{Scheduler, SchedulerConfig};
use super::{Device, EngineError};

/// One prompt to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// The prompt's token ids.
    pub prompt: Vec<u32>,
    /// Tokens to generate at most.
    pub max_new: usize,
    /// Sampling (greedy by default).
    pub params: SamplingParams,
}

/// A model with its own KV pool, ready to run jobs.
pub struct Runner<'m> {
    model: &'m dyn Model,
    kv: KvCache,
    config: SchedulerConfig,
}

impl std::fmt::Debug for Runner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("model", self.model.config())
            .field("kv", &self.kv.geometry())
            .field("config", &self.config)
            .finish()
    }
}

impl<'m> Runner<'m> {
    /// A runner with a pool of `kv_bytes` bytes on `device`.
    pub fn new(
        model: &'m dyn Model,
        kv_bytes: u64,
        config: SchedulerConfig,
        device: &Device,
    ) -> Result<Self, EngineError> {
        let c = model.config();
        let kv = KvCache::new(
            KvGeometry::from_budget(c.layers, c.kv_dim(), kv_bytes),
            device,
        )?;
        Ok(Self { model, kv, config })
    }

    /// Runs every job in one scheduler (so they batch with each other) until
    /// each has `max_new` tokens or produced a token `stop` accepts (kept as
    /// its last token). Calls `on_tick` after each forward pass with the
    /// number of rows it computed.
    pub fn run(
        &self,
        jobs: &[Job],
        stop: impl Fn(u32) -> bool,
        mut on_tick: impl FnMut(usize),
    ) -> Result<Vec<Vec<u32>>, EngineError> {
        let g = self.kv.geometry();
        let mut sched: Scheduler<usize> =
            Scheduler::new(self.config, g.blocks, self.model.config().context_length);
        let mut out = vec![Vec::new(); jobs.len()];
        for (i, j) in jobs.iter().enumerate() {
            sched
                .add(i, j.prompt.clone(), &j.params)
                .map_err(|(_, e)| e)?;
        }
        while !sched.is_idle() {
            let plan = sched.plan();
            if let Some((_, e)) = plan.failed.into_iter().next() {
                return Err(e);
            }
            let Some(tick) = plan.tick else {
                return Err(EngineError::KvCacheTooSmall(
                    "no sequence can make progress".into(),
                ));
            };
            let logits = self
                .model
                .forward(&tick.batch, &self.kv)?
                .to_vec2::<f32>()?;
            on_tick(tick.batch.rows());
            sched.complete(&tick);
            let mut rows = logits.iter();
            for e in tick.entries.iter().filter(|e| e.logits) {
                let row = rows
                    .next()
                    .ok_or_else(|| EngineError::Batch("missing logits row".into()))?;
                let Some(s) = sched.get_mut(e.id) else {
                    continue;
                };
                let job = s.payload;
                let tok = s.sample(row)?;
                out[job].push(tok);
                if out[job].len() >= jobs[job].max_new || stop(tok) {
                    sched.remove(e.id);
                }
            }
        }
        Ok(out)
    }
}
