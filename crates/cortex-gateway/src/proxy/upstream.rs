//! Reading a neuron's SSE stream: bounded lines, a time-to-first-token
//! limit, then an idle-gap limit between events (never a whole-response
//! limit). Cancel-safe, so callers may race it against a keepalive timer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

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
        Self {
            body,
            decoder: SseDecoder::new(max_line),
            queue: VecDeque::new(),
            first_deadline: Instant::now() + first_token_timeout,
            idle,
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
            let wait = if self.started {
                self.idle
            } else {
                self.first_deadline
                    .saturating_duration_since(Instant::now())
            };
            match tokio::time::timeout(wait, self.body.frame()).await {
                Err(_) => {
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
                Ok(frame) => {
                    if let Some(f) = self.take(frame) {
                        return Some(Err(f));
                    }
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
            if let Some(f) = self.take(frame) {
                return Some(Some(Err(f)));
            }
        }
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
