//! One generation as the HTTP layer sees it: the device worker's token ids
//! turned into text, cut at stop sequences, with a finish reason and usage.
//!
//! This is the async side of inference. It owns the request's [`InFlight`]
//! guard and the event receiver; dropping a [`Generation`] (a client that
//! went away) closes the receiver, and the device worker drops the sequence
//! before its next step. Detokenization errors are classified here, at the
//! `detokenize` site, through the same [`ModelHealth`] as worker errors.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use cortex_core::openai::FinishReason;
use tokio::sync::mpsc;

use crate::device_worker::{GenerateRequest, Injection, StopKind, TokenEvent};
use crate::engine::detok::IncrementalDecoder;
use crate::engine::sampling::SamplingParams;
use crate::engine::stop::StopMatcher;
use crate::fault::{ModelHealth, Site};
use crate::lifecycle::InFlight;

/// What a generation yields, in order: text pieces, then `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    Text(String),
    Done {
        finish: FinishReason,
        /// The stop sequence that ended the text, if one did.
        stop: Option<String>,
        prompt_tokens: u64,
        /// Of `prompt_tokens`, those whose K/V came from the prefix cache.
        cached_tokens: u64,
        completion_tokens: u64,
    },
    Failed {
        site: Site,
        chain: String,
        device_fault: bool,
    },
}

/// Parameters of one generation, already validated.
#[derive(Debug, Clone)]
pub struct GenParams {
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    pub stops: Vec<String>,
    pub stream: bool,
    pub inject: Option<Injection>,
    /// The conversation's id (`cortex_core::prefix`), for cache-aware routing.
    pub conversation: Option<u64>,
    /// Special tokens to write out as text (a tool call format's markers).
    pub keep_special: Vec<u32>,
}

/// A running generation.
pub struct Generation {
    rx: mpsc::UnboundedReceiver<TokenEvent>,
    decoder: IncrementalDecoder,
    stop: StopMatcher,
    health: Arc<ModelHealth>,
    stream: bool,
    inject_detok: Option<Injection>,
    pending: VecDeque<GenEvent>,
    finished: bool,
    pub prompt_tokens: u64,
    /// Prompt tokens whose K/V came from the prefix cache.
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub started: Instant,
    pub first_token_at: Option<Instant>,
    _guard: InFlight,
}

impl Generation {
    /// Queue `prompt` on the model's device worker.
    pub fn start(guard: InFlight, prompt: Vec<u32>, p: GenParams) -> Result<Self, GenEvent> {
        let model = guard.model().clone();
        let Some(assets) = model.assets.chat().cloned() else {
            return Err(GenEvent::Failed {
                site: Site::Prefill,
                chain: format!("missing handle: model {} is not a chat model", model.id),
                device_fault: false,
            });
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let prompt_tokens = prompt.len() as u64;
        model
            .worker
            .generate(GenerateRequest {
                key: model.key,
                prompt,
                params: p.sampling,
                max_new_tokens: p.max_new_tokens,
                health: model.health.clone(),
                stream: p.stream,
                inject: p
                    .inject
                    .filter(|i| matches!(i.site, Site::Prefill | Site::Decode)),
                events: tx,
                conversation: p.conversation,
            })
            .map_err(|e| GenEvent::Failed {
                site: Site::Prefill,
                chain: e.to_string(),
                device_fault: false,
            })?;
        Ok(Self {
            rx,
            decoder: IncrementalDecoder::keeping(assets, p.keep_special),
            stop: StopMatcher::new(p.stops),
            health: model.health.clone(),
            stream: p.stream,
            inject_detok: p.inject.filter(|i| i.site == Site::Detokenize),
            pending: VecDeque::new(),
            finished: false,
            prompt_tokens,
            cached_tokens: 0,
            completion_tokens: 0,
            started: Instant::now(),
            first_token_at: None,
            _guard: guard,
        })
    }

    /// The next event; `None` after `Done` or `Failed`.
    pub async fn next(&mut self) -> Option<GenEvent> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            if self.finished {
                return None;
            }
            let Some(ev) = self.rx.recv().await else {
                self.finished = true;
                return Some(GenEvent::Failed {
                    site: Site::Decode,
                    chain: "the device worker dropped the sequence without an answer".into(),
                    device_fault: false,
                });
            };
            match ev {
                TokenEvent::Prefilled { cached_tokens } => {
                    self.cached_tokens = cached_tokens as u64;
                }
                TokenEvent::Token(id) => {
                    self.completion_tokens += 1;
                    if self.first_token_at.is_none() {
                        self.first_token_at = Some(Instant::now());
                    }
                    let text = match self.inject_detok.take() {
                        Some(inj) => Err(inj.message()),
                        None => self.decoder.push(id).map_err(|e| e.chain()),
                    };
                    match text {
                        Ok(t) => self.on_text(&t, None),
                        Err(chain) => self.fail(Site::Detokenize, chain),
                    }
                }
                TokenEvent::Finished(kind) => match self.decoder.finish() {
                    Ok(rest) => {
                        let finish = match kind {
                            StopKind::Eos => FinishReason::Stop,
                            StopKind::Length => FinishReason::Length,
                        };
                        self.on_text(&rest, Some(finish));
                    }
                    Err(e) => self.fail(Site::Detokenize, e.chain()),
                },
                TokenEvent::Failed {
                    site,
                    chain,
                    device_fault,
                } => self.end(GenEvent::Failed {
                    site,
                    chain,
                    device_fault,
                }),
            }
        }
    }

    /// New text from the decoder; `end` when the worker finished.
    fn on_text(&mut self, text: &str, end: Option<FinishReason>) {
        let out = self.stop.push(text);
        let mut emit = out.text;
        if let Some(stop) = out.matched {
            if !emit.is_empty() {
                self.pending.push_back(GenEvent::Text(emit));
            }
            // Stop the worker now rather than at max_tokens.
            self.rx.close();
            return self.end(self.done(FinishReason::Stop, Some(stop)));
        }
        if let Some(finish) = end {
            emit.push_str(&self.stop.finish());
            if !emit.is_empty() {
                self.pending.push_back(GenEvent::Text(emit));
            }
            return self.end(self.done(finish, None));
        }
        if !emit.is_empty() {
            self.pending.push_back(GenEvent::Text(emit));
        }
    }

    fn done(&self, finish: FinishReason, stop: Option<String>) -> GenEvent {
        GenEvent::Done {
            finish,
            stop,
            prompt_tokens: self.prompt_tokens,
            cached_tokens: self.cached_tokens,
            completion_tokens: self.completion_tokens,
        }
    }

    fn fail(&mut self, site: Site, chain: String) {
        let device_fault = self.health.report(site, self.stream, &chain);
        self.rx.close();
        self.end(GenEvent::Failed {
            site,
            chain,
            device_fault,
        });
    }

    fn end(&mut self, ev: GenEvent) {
        self.finished = true;
        self.pending.push_back(ev);
    }
}
