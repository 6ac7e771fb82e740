//! Reading a neuron's SSE stream: bounded lines, a time-to-first-token
//! limit, then an idle-gap limit between events (never a whole-response
//! limit). Cancel-safe, so callers may race it against a keepalive timer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::sse::{SseDecoder, SseEvent};

/// Why an upstream stream ended badly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFailure(pub String);

pub struct UpstreamSse {
    body: Incoming,
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
        body: Incoming,
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
                Ok(None) => {
                    self.ended = true;
                    match self.decoder.finish() {
                        Ok(Some(ev)) => self.queue.push_back(ev),
                        Ok(None) => {}
                        Err(e) => return Some(Err(StreamFailure(e.to_string()))),
                    }
                }
                Ok(Some(Err(e))) => {
                    self.ended = true;
                    return Some(Err(StreamFailure(format!(
                        "the neuron's stream broke: {e}"
                    ))));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        match self.decoder.push(&data) {
                            Ok(events) => self.queue.extend(events),
                            Err(e) => {
                                self.ended = true;
                                return Some(Err(StreamFailure(e.to_string())));
                            }
                        }
                    }
                }
            }
        }
    }
}
