//! One loaded model on a device worker: its weights, its KV pool, its
//! scheduler, and the tick that runs one batched forward pass and turns the
//! logits into token events.
//!
//! Fault handling lives here, on the thread where faults happen: each
//! error is classified through the request's [`ModelHealth`] (so a device
//! fault poisons the model even when no client is listening). A device
//! fault in a batched pass fails every sequence of the model and poisons
//! it; a host-side error in the pass fails the batch's sequences only; a
//! host-side error of one sequence (NaN logits, an injected host fault)
//! fails that sequence and the rest of the batch goes on. A panic inside the
//! tick is caught, fails the model's sequences, and poisons the model with
//! the panic's message; the worker keeps serving its other models.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::engine::kv::KvCache;
use crate::engine::scheduler::{Scheduler, SeqId, Sequence, Tick};
use crate::engine::{EngineError, LoadedModel};
use crate::fault::Site;

use super::{CacheReport, FaultKind, GenerateRequest, SharedCacheReport, StopKind, TokenEvent};
use crate::engine::conversations::Conversations;

/// A request being generated.
pub(super) struct Running {
    pub(super) req: Box<GenerateRequest>,
    emitted: usize,
}

/// A loaded model and everything the worker keeps for it.
pub(super) struct ModelSlot {
    pub(super) loaded: LoadedModel,
    pub(super) kv: KvCache,
    pub(super) sched: Scheduler<Running>,
    /// Why the model was poisoned; it runs nothing more until unloaded.
    pub(super) poisoned: Option<String>,
    pub(super) label: String,
    /// The conversations whose KV the prefix cache holds, and the pool's
    /// last report for `/status` and `/metrics`.
    pub(super) conversations: Conversations,
    pub(super) cache: SharedCacheReport,
    /// Ticks run (the report is refreshed every [`REPORT_EVERY`] of them).
    pub(super) ticks: u64,
}

/// Ticks between refreshes of the cached-conversation report (blocks are
/// evicted as other sequences allocate; a sequence leaving refreshes it too).
const REPORT_EVERY: u64 = 64;

/// The site of a sequence's next fault.
fn site_of<S>(s: &Sequence<S>) -> Site {
    if s.in_prefill() {
        Site::Prefill
    } else {
        Site::Decode
    }
}

/// Fails `req` with `chain`, letting its model's health decide and log.
pub(super) fn fail(req: &GenerateRequest, site: Site, chain: String) {
    let device_fault = req.health.report(site, req.stream, &chain);
    let _ = req.events.send(TokenEvent::Failed {
        site,
        chain,
        device_fault,
    });
}

/// The text of a panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".into()
    }
}

/// What the model computed for one tick: each logits row's sampling result.
type Sampled = Vec<(SeqId, Site, Result<u32, String>)>;

impl ModelSlot {
    /// Queues a request, or fails it at once (empty prompt, no room in the
    /// context or the pool, a poisoned model).
    pub(super) fn admit(&mut self, req: Box<GenerateRequest>) {
        if let Some(why) = &self.poisoned {
            let _ = req.events.send(TokenEvent::Failed {
                site: Site::Prefill,
                chain: format!("the model is poisoned after an earlier fault: {why}"),
                device_fault: true,
            });
            return;
        }
        let prompt = req.prompt.clone();
        let params = req.params.clone();
        if let Err((r, e)) = self.sched.add(Running { req, emitted: 0 }, prompt, &params) {
            fail(&r.req, Site::Prefill, e.chain());
        }
    }

    /// Whether the model has sequences to step.
    pub(super) fn has_work(&self) -> bool {
        self.poisoned.is_none() && !self.sched.is_idle()
    }

    /// Sequences running or waiting.
    pub(super) fn sequences(&self) -> usize {
        self.sched.running() + self.sched.waiting()
    }

    /// Fails every sequence with `chain` (unload, shutdown).
    pub(super) fn fail_all(&mut self, site: Site, chain: &str) {
        for s in self.sched.drain() {
            fail(&s.payload.req, site, chain.to_string());
        }
        self.conversations.clear();
        self.refresh_report();
    }

    /// One tick: drop sequences whose client left, plan, run the forward pass
    /// and sample, then report.
    pub(super) fn tick(&mut self) {
        let gone = self
            .sched
            .remove_where(|s| s.payload.req.events.is_closed());
        for s in &gone {
            tracing::debug!(device = %self.label, key = s.payload.req.key, seq = s.id(), "client went away; sequence dropped");
            self.remember(s);
        }
        self.ticks += 1;
        if !gone.is_empty() || self.ticks % REPORT_EVERY == 0 {
            self.refresh_report();
        }
        let plan = self.sched.plan();
        for (s, e) in plan.failed {
            let site = site_of(&s);
            fail(&s.payload.req, site, e.chain());
        }
        let Some(tick) = plan.tick else {
            return;
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| self.run(&tick)));
        match outcome {
            Err(payload) => {
                let chain = format!(
                    "panic during a forward pass: {}",
                    panic_text(payload.as_ref())
                );
                self.poison(&tick, &chain);
            }
            Ok(Err((chain, device_fault))) => {
                if device_fault {
                    self.poison(&tick, &chain);
                } else {
                    // The batch's K/V may be half written: its sequences
                    // cannot go on; the others never shared a written block.
                    for e in &tick.entries {
                        if let Some(s) = self.sched.remove(e.id) {
                            fail(&s.payload.req, site_of(&s), chain.clone());
                        }
                    }
                }
            }
            Ok(Ok(sampled)) => self.report(sampled),
        }
    }

    /// A device fault or panic: every sequence of the model fails, the model
    /// is poisoned (through the requests' health, which logs the decision)
    /// and runs nothing more until it is reloaded.
    fn poison(&mut self, tick: &Tick, chain: &str) {
        let in_batch = |id: SeqId| tick.entries.iter().any(|e| e.id == id);
        let mut reported = false;
        let all = self.sched.drain();
        self.conversations.clear();
        self.refresh_report();
        for s in &all {
            let site = site_of(s);
            if in_batch(s.id()) || !reported {
                // The health decision (poisoned or not) is made and logged
                // for each request of the batch.
                fail(&s.payload.req, site, chain.to_string());
                reported = true;
            } else {
                let _ = s.payload.req.events.send(TokenEvent::Failed {
                    site,
                    chain: format!("the model was poisoned by a fault in another request: {chain}"),
                    device_fault: true,
                });
            }
        }
        tracing::error!(device = %self.label, sequences = all.len(), error = %chain, "model marked poisoned: its sequences failed");
        self.poisoned = Some(chain.to_string());
    }

    /// The forward pass and sampling, with the test-only injections. An `Err`
    /// carries the error chain and whether it is a device fault.
    fn run(&mut self, tick: &Tick) -> Result<Sampled, (String, bool)> {
        // Injected faults at the site each sequence of the batch is at.
        let mut injected = None;
        for e in &tick.entries {
            let Some(s) = self.sched.get_mut(e.id) else {
                continue;
            };
            let site = site_of(s);
            match s.payload.req.inject.filter(|i| i.site == site) {
                Some(i) if i.kind == FaultKind::Panic => panic!("{}", i.message()),
                Some(i) if i.kind == FaultKind::Hang => loop {
                    tracing::warn!(device = %self.label, "{}: this worker will not return", i.message());
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                },
                Some(i) if i.kind == FaultKind::Device => injected = Some(i.message()),
                _ => {}
            }
        }
        if let Some(chain) = injected {
            return Err((chain, true));
        }
        let logits = self
            .loaded
            .model
            .forward(&tick.batch, &self.kv)
            .and_then(|t| Ok(t.to_vec2::<f32>()?))
            .map_err(|e| {
                let chain = e.chain();
                let fault = crate::fault::is_device_fault(&chain);
                (chain, fault)
            })?;
        self.sched.complete(tick);
        let mut out = Vec::with_capacity(logits.len());
        let mut rows = logits.iter();
        for e in tick.entries.iter().filter(|e| e.logits) {
            let Some(row) = rows.next() else {
                return Err((
                    format!(
                        "invalid batch: the model returned {} logits rows",
                        logits.len()
                    ),
                    false,
                ));
            };
            let Some(s) = self.sched.get_mut(e.id) else {
                continue;
            };
            let site = site_of(s);
            let result = match s.payload.req.inject.filter(|i| i.site == site) {
                Some(i) if i.kind == FaultKind::Host => Err(i.message()),
                _ => s.sample(row).map_err(|err: EngineError| err.chain()),
            };
            out.push((e.id, site, result));
        }
        Ok(out)
    }

    /// Sends each sampled token (or error) to its request and retires the
    /// sequences that are done.
    fn report(&mut self, sampled: Sampled) {
        for (id, site, result) in sampled {
            let done = {
                let Some(s) = self.sched.get_mut(id) else {
                    continue;
                };
                let cached = s.cached_tokens();
                let r = &mut s.payload;
                if r.emitted == 0 && result.is_ok() {
                    let _ = r.req.events.send(TokenEvent::Prefilled {
                        cached_tokens: cached,
                    });
                }
                match result {
                    Err(chain) => {
                        fail(&r.req, site, chain);
                        true
                    }
                    Ok(tok) if self.loaded.assets.is_eos(tok) => {
                        let _ = r.req.events.send(TokenEvent::Finished(StopKind::Eos));
                        true
                    }
                    Ok(tok) => {
                        r.emitted += 1;
                        let _ = r.req.events.send(TokenEvent::Token(tok));
                        if r.emitted >= r.req.max_new_tokens {
                            let _ = r.req.events.send(TokenEvent::Finished(StopKind::Length));
                            true
                        } else {
                            false
                        }
                    }
                }
            };
            if done {
                if let Some(s) = self.sched.remove(id) {
                    self.remember(&s);
                    self.refresh_report();
                }
            }
        }
    }

    /// A sequence leaves: its conversation is remembered with its blocks
    /// (a stopped or abandoned one too: its KV is as good).
    fn remember(&mut self, s: &Sequence<Running>) {
        if let Some(conv) = s.payload.req.conversation {
            self.conversations
                .record(conv, s.chain(), cortex_core::now_unix_ms());
        }
    }

    /// Rewrites the report `/status` reads.
    fn refresh_report(&mut self) {
        let pool = self.sched.pool();
        let block = crate::engine::kv::BLOCK_SIZE as u64;
        let report = CacheReport {
            prefixes: self.conversations.report(pool),
            capacity_tokens: pool.capacity() as u64 * block,
            used_tokens: pool.used() as u64 * block,
            cached_tokens: pool.cached_blocks() as u64 * block,
        };
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = report;
    }
}
