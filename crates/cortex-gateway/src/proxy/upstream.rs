//! Reading a neuron's SSE stream: bounded lines, a time-to-first-token
//! limit, then an idle-gap limit between events (never a whole-response
//! limit). Cancel-safe, so callers may race it against a keepalive timer.
//!
//! The limits share one timer per stream, moved only when it fires before
//! the limit it stands for (each event pushes the idle limit on, but the
//! timer is left where it is until it goes off): a fresh timer per event
//! would take the runtime's timer lock twice for every token of every
//! stream, and on a busy machine a thread preempted while holding it
//! stalls every other stream behind it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use bytes::Bytes;
use futures::FutureExt;
use http_body::Frame;
use http_body_util::BodyExt;

use crate::neuron_client::{BodyError, NeuronBody};
use crate::sse::{SseDecoder, SseEvent};

/// Why an upstream stream ended badly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFailure(pub String);

pub struct UpstreamSse {
    body: NeuronBody,
    decoder: SseDecoder,
    queue: VecDeque<SseEvent>,
    first_deadline: Instant,
    idle: Duration,
    /// When the last frame arrived.
    last: Instant,
    /// Fires at or before the limit that applies now.
    timer: Pin<Box<Sleep>>,
    /// Set by the caller when the first token arrived: from then on the idle
    /// limit applies.
    pub started: bool,
    ended: bool,
}

impl UpstreamSse {
    pub fn new(
        body: NeuronBody,
        max_line: usize,
        first_token_timeout: Duration,
        idle: Duration,
    ) -> Self {
        let now = Instant::now();
        let first_deadline = now + first_token_timeout;
        Self {
            body,
            decoder: SseDecoder::new(max_line),
            queue: VecDeque::new(),
            first_deadline,
            idle,
            last: now,
            timer: Box::pin(tokio::time::sleep_until(first_deadline)),
            started: false,
            ended: false,
        }
    }

    /// The next event; `None` at a clean end of the body.
    pub async fn next(&mut self) -> Option<Result<SseEvent, StreamFailure>> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some(Ok(ev));
            }
            if self.ended {
                return None;
            }
            let limit = if self.started {
                self.last + self.idle
            } else {
                self.first_deadline
            };
            if self.timer.deadline() > limit {
                self.timer.as_mut().reset(limit);
            }
            tokio::select! {
                biased;
                frame = self.body.frame() => {
                    self.last = Instant::now();
                    if let Some(f) = self.take(frame) {
                        return Some(Err(f));
                    }
                }
                () = self.timer.as_mut() => {
                    if Instant::now() < limit {
                        // Events came since it was set: it stood for an
                        // earlier limit.
                        self.timer.as_mut().reset(limit);
                        continue;
                    }
                    self.ended = true;
                    let what = if self.started {
                        "between tokens"
                    } else {
                        "before the first token"
                    };
                    return Some(Err(StreamFailure(format!(
                        "the neuron went silent {what} for too long"
                    ))));
                }
            }
        }
    }

    /// The next event if it is here already, without waiting: `None` when
    /// the neuron has sent nothing more yet, `Some(None)` at the end. Lets a
    /// caller send a burst of events in one write.
    pub fn next_ready(&mut self) -> Option<Option<Result<SseEvent, StreamFailure>>> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some(Some(Ok(ev)));
            }
            if self.ended {
                return Some(None);
            }
            let frame = self.body.frame().now_or_never()?;
            self.last = Instant::now();
            if let Some(f) = self.take(frame) {
                return Some(Some(Err(f)));
            }
        }
    }

    /// After the last event (`[DONE]`): read what has already arrived of
    /// the body's end, so that its connection goes back to the pool
    /// (dropped unread, it would be closed).
    pub fn drain(&mut self) {
        while let Some(Some(Ok(_))) = self.next_ready() {}
    }

    /// Decode one frame of the body (`None`: its end) into the queue; a
    /// failure ends the stream.
    fn take(&mut self, frame: Option<Result<Frame<Bytes>, BodyError>>) -> Option<StreamFailure> {
        let failure = match frame {
            None => match self.decoder.finish() {
                Ok(ev) => {
                    self.queue.extend(ev);
                    None
                }
                Err(e) => Some(StreamFailure(e.to_string())),
            },
            Some(Err(e)) => Some(StreamFailure(format!("the neuron's stream broke: {e}"))),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    return None;
                };
                match self.decoder.push(&data) {
                    Ok(events) => {
                        self.queue.extend(events);
                        return None;
                    }
                    Err(e) => Some(StreamFailure(e.to_string())),
                }
            }
        };
        // The end of the body, or a failure: nothing more will be read.
        self.ended = true;
        failure
    }
}
