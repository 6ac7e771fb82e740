//! One answer as the chat API sends it: a [`Generation`]'s text read by the
//! tool call parser when the request has tools, as text pieces and whole
//! calls, then the end with its finish reason and usage.
//!
//! Owns the bookkeeping of calls: their ids and indices, `finish_reason:
//! "tool_calls"` once a call was made, stopping at the first call when only
//! one is wanted (the generation is dropped, which stops the device worker),
//! and the forced parts of a call (see `tool_calls::prompt`): the parser
//! reads the forced start before the generated text, a forced arguments
//! object is watched until the model closes it (then the call's forced end
//! is appended and generation stops), and the forced start's tokens count
//! as completion tokens, not prompt tokens, so usage and `count_tokens`
//! agree.

use std::collections::VecDeque;
use std::time::Instant;

use cortex_core::openai::{FinishReason, FunctionCall, ToolCall, Usage};

use crate::generate::{GenEvent, Generation};
use crate::tool_calls::json::{container_end, Scan};
use crate::tool_calls::prompt::ToolPlan;
use crate::tool_calls::{call_id, Event, ToolCallParser, ToolFormat};

/// A piece of the answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    /// A complete call and its index among the answer's calls.
    Call(u32, ToolCall),
}

/// What an [`Answer`] yields: pieces, then `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerEvent {
    Piece(Piece),
    Done {
        finish: FinishReason,
        stop: Option<String>,
        usage: Usage,
    },
    Failed(GenEvent),
}

/// Counts and times of a generation, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct GenStats {
    pub prompt_tokens: u64,
    /// Of `prompt_tokens`, those found in the prefix cache.
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub started: Instant,
    pub first_token_at: Option<Instant>,
}

/// Where the text comes from: a live generation, or (in tests) a recorded
/// model output. Only live ones exist outside tests, so the size difference
/// costs nothing.
#[allow(clippy::large_enum_variant)]
enum Source {
    Live(Generation),
    #[cfg(test)]
    Recorded(recorded::Recorded),
}

impl Source {
    async fn next(&mut self) -> Option<GenEvent> {
        match self {
            Source::Live(gen) => gen.next().await,
            #[cfg(test)]
            Source::Recorded(r) => r.next(),
        }
    }

    fn stats(&self, forced: u64) -> GenStats {
        let (prompt, cached, completion, started, first) = match self {
            Source::Live(g) => (
                g.prompt_tokens,
                g.cached_tokens,
                g.completion_tokens,
                g.started,
                g.first_token_at,
            ),
            #[cfg(test)]
            Source::Recorded(r) => (r.prompt_tokens, 0, r.completion_tokens, r.started, None),
        };
        let prompt_tokens = prompt.saturating_sub(forced);
        GenStats {
            prompt_tokens,
            // A forced call's opening is prompt for the engine but output
            // for the client; the prompt's last token always counts as
            // computed, as the engine always computes one.
            cached_tokens: cached.min(prompt_tokens.saturating_sub(1)),
            completion_tokens: completion + forced,
            started,
            first_token_at: first,
        }
    }
}

/// A running answer.
pub struct Answer {
    /// `None` once the answer ended early (the worker stops with it).
    gen: Option<Source>,
    parser: Option<ToolCallParser>,
    /// A forced arguments object the model is writing.
    args: Option<ArgsWatch>,
    one_call: bool,
    /// Prompt tokens that were the forced start of the answer.
    forced: u64,
    calls: u32,
    stats: GenStats,
    pending: VecDeque<AnswerEvent>,
    finished: bool,
}

impl Answer {
    /// `forced` is the number of prompt tokens that are `plan.forced`.
    pub fn new(gen: Generation, plan: Option<&ToolPlan>, forced: usize) -> Self {
        Self::from_source(Source::Live(gen), plan, forced)
    }

    fn from_source(gen: Source, plan: Option<&ToolPlan>, forced: usize) -> Self {
        let forced = forced as u64;
        let parser = plan.map(|p| {
            let mut parser = ToolCallParser::new(p.format);
            if let Some(f) = &p.forced {
                // A prefix of a call: the parser holds it, nothing comes out.
                let early = parser.push(&f.prefix);
                debug_assert!(early.is_empty(), "{early:?}");
            }
            parser
        });
        let args = plan
            .and_then(|p| p.forced.as_ref())
            .and_then(|f| f.args.as_ref())
            .map(|a| ArgsWatch {
                text: a.start.clone(),
                start: a.start.len(),
                suffix: a.suffix,
            });
        let stats = gen.stats(forced);
        Self {
            gen: Some(gen),
            parser,
            args,
            one_call: plan.is_some_and(|p| p.one_call),
            forced,
            calls: 0,
            stats,
            pending: VecDeque::new(),
            finished: false,
        }
    }

    /// Whether tool calls are read from this answer.
    pub fn reads_calls(&self) -> bool {
        self.parser.is_some()
    }

    /// The prompt size as usage reports it (without a forced call start).
    pub fn prompt_tokens(&self) -> u64 {
        self.stats.prompt_tokens
    }

    /// Counts and times so far (final once the answer ended).
    pub fn stats(&self) -> GenStats {
        match &self.gen {
            Some(gen) => gen.stats(self.forced),
            None => self.stats,
        }
    }

    /// The next event; `None` after `Done` or `Failed`.
    pub async fn next(&mut self) -> Option<AnswerEvent> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            if self.finished {
                return None;
            }
            let Some(gen) = self.gen.as_mut() else {
                self.finished = true;
                continue;
            };
            match gen.next().await {
                Some(GenEvent::Text(t)) => {
                    let text = match self.args.as_mut() {
                        Some(watch) => match watch.push(&t) {
                            Some(text) => {
                                self.args = None;
                                text
                            }
                            None => continue,
                        },
                        None => t,
                    };
                    let events = match self.parser.as_mut() {
                        Some(p) => p.push(&text),
                        None => vec![Event::Text(text)],
                    };
                    self.on_events(events);
                }
                Some(GenEvent::Done { finish, stop, .. }) => {
                    let mut events = Vec::new();
                    if let Some(p) = self.parser.as_mut() {
                        if let Some(watch) = self.args.take() {
                            // Never closed: what was written is read as is.
                            events.extend(p.push(&watch.text[watch.start..]));
                        }
                        events.extend(p.finish());
                    }
                    self.on_events(events);
                    if !self.finished {
                        self.end(finish, stop);
                    }
                }
                Some(failed) => {
                    self.stats = gen.stats(self.forced);
                    self.pending.push_back(AnswerEvent::Failed(failed));
                    self.finished = true;
                }
                None => self.finished = true,
            }
        }
    }

    fn on_events(&mut self, events: Vec<Event>) {
        for ev in events {
            match ev {
                Event::Text(t) => self.pending.push_back(AnswerEvent::Piece(Piece::Text(t))),
                Event::Call(c) => {
                    let format = self.parser.as_ref().map(ToolCallParser::format);
                    let call = tool_call(format, c.name, c.arguments);
                    self.pending
                        .push_back(AnswerEvent::Piece(Piece::Call(self.calls, call)));
                    self.calls += 1;
                    if self.one_call {
                        // Whatever the model writes after the one call
                        // wanted is not part of the answer.
                        return self.end(FinishReason::ToolCalls, None);
                    }
                }
            }
        }
    }

    fn end(&mut self, finish: FinishReason, stop: Option<String>) {
        if let Some(gen) = self.gen.take() {
            self.stats = gen.stats(self.forced);
        }
        let (finish, stop) = if self.calls > 0 {
            (FinishReason::ToolCalls, None)
        } else {
            (finish, stop)
        };
        self.pending.push_back(AnswerEvent::Done {
            finish,
            stop,
            usage: Usage::new(self.stats.prompt_tokens, self.stats.completion_tokens)
                .with_cached(self.stats.cached_tokens),
        });
        self.finished = true;
    }
}

/// Watches a forced JSON arguments object (see `ForcedArgs`).
struct ArgsWatch {
    /// The object so far, from its forced start.
    text: String,
    /// Length of the forced start (already given to the parser).
    start: usize,
    suffix: &'static str,
}

impl ArgsWatch {
    /// Adds generated text; once the object is closed (or cannot be an
    /// object), returns the generated text for the parser: the object's
    /// rest and the call's forced end when it is a valid object, else
    /// everything written, as written.
    fn push(&mut self, piece: &str) -> Option<String> {
        self.text.push_str(piece);
        match container_end(&self.text, 0) {
            Scan::Incomplete => None,
            Scan::Complete(end) if is_object(&self.text[..end]) => {
                Some(format!("{}{}", &self.text[self.start..end], self.suffix))
            }
            Scan::Complete(_) | Scan::Invalid => Some(self.text[self.start..].to_string()),
        }
    }
}

fn is_object(text: &str) -> bool {
    matches!(
        serde_json::from_str::<serde_json::Value>(text),
        Ok(serde_json::Value::Object(_))
    )
}

fn tool_call(format: Option<ToolFormat>, name: String, arguments: String) -> ToolCall {
    ToolCall {
        id: call_id(format),
        kind: "function".into(),
        function: FunctionCall { name, arguments },
    }
}

#[cfg(test)]
pub(crate) mod recorded {
    //! A recorded model output played back as a generation.

    use std::collections::VecDeque;
    use std::time::Instant;

    use cortex_core::openai::FinishReason;

    use super::{Answer, Source};
    use crate::generate::GenEvent;
    use crate::tool_calls::prompt::ToolPlan;

    pub struct Recorded {
        pub events: VecDeque<GenEvent>,
        pub prompt_tokens: u64,
        pub completion_tokens: u64,
        pub started: Instant,
    }

    impl Recorded {
        pub fn next(&mut self) -> Option<GenEvent> {
            let ev = self.events.pop_front()?;
            if matches!(ev, GenEvent::Text(_)) {
                self.completion_tokens += 1;
            }
            Some(ev)
        }
    }

    /// An answer whose generation writes `pieces` (one per token) then
    /// ends with `finish`; the prompt had `prompt_tokens` tokens, the last
    /// `forced` of them the plan's forced start.
    pub fn answer(
        pieces: &[&str],
        finish: FinishReason,
        plan: Option<&ToolPlan>,
        prompt_tokens: u64,
        forced: usize,
    ) -> Answer {
        let mut events: VecDeque<GenEvent> = pieces
            .iter()
            .map(|p| GenEvent::Text(p.to_string()))
            .collect();
        events.push_back(GenEvent::Done {
            finish,
            stop: None,
            prompt_tokens,
            cached_tokens: 0,
            completion_tokens: pieces.len() as u64,
        });
        let source = Source::Recorded(Recorded {
            events,
            prompt_tokens,
            completion_tokens: 0,
            started: Instant::now(),
        });
        Answer::from_source(source, plan, forced)
    }
}
