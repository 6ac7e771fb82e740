//! Deadlines for connections that serve many requests.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A deadline that moves with every request but rarely fires: its timer is
/// moved only when it goes off before the current deadline (or the deadline
/// comes sooner), so that a busy connection does not touch the timer wheel
/// on every request, as a fresh `tokio::time::timeout` does.
#[derive(Debug)]
pub(crate) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
}

impl Deadline {
    /// A deadline `after` from now. Needs a runtime with time enabled; the
    /// timer belongs to that runtime.
    pub(crate) fn new(after: Duration) -> Self {
        let at = Instant::now() + after;
        Self {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    /// The deadline is now `after` from now.
    pub(crate) fn set(&mut self, after: Duration) {
        self.at = Instant::now() + after;
        if self.sleep.deadline() > self.at {
            self.sleep.as_mut().reset(self.at);
        }
    }

    /// Resolves once the deadline has passed.
    pub(crate) async fn passed(&mut self) {
        loop {
            self.sleep.as_mut().await;
            if Instant::now() >= self.at {
                return;
            }
            let at = self.at;
            self.sleep.as_mut().reset(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn moving_later_never_fires_early_and_sooner_is_honoured() {
        let t0 = Instant::now();
        let mut d = Deadline::new(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(6)).await;
        d.set(Duration::from_secs(10));
        d.passed().await;
        assert_eq!(t0.elapsed(), Duration::from_secs(16), "moved later");
        d.set(Duration::from_secs(60));
        d.set(Duration::from_secs(1));
        let t1 = Instant::now();
        d.passed().await;
        assert_eq!(t1.elapsed(), Duration::from_secs(1), "moved sooner");
    }
}
