//! Bounded admission: caps on requests in flight per model and in total,
//! and on requests queued per model (waiting for a slot). When a cap is
//! reached the request is rejected at once (429 / Anthropic 529) instead of
//! piling up. Waiting for a cold load is bounded separately (`load_wait`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::error::GatewayError;

#[derive(Debug)]
struct Gate {
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    /// The model's queue-wait histogram, looked up once.
    queue_wait: OnceLock<Histogram>,
}

/// Admission control for the whole gateway.
pub struct Admission {
    total: Arc<AtomicUsize>,
    max_total: usize,
    max_in_flight: usize,
    max_queued: usize,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

/// Held while a request runs.
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    _total: TotalSlot,
    gate: Arc<Gate>,
}

impl Permit {
    /// The model's queue-wait histogram: made by `make` the first time.
    pub fn queue_wait(&self, make: impl FnOnce() -> Histogram) -> &Histogram {
        self.gate.queue_wait.get_or_init(make)
    }
}

#[derive(Debug)]
struct TotalSlot(Arc<AtomicUsize>);

impl Drop for TotalSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(max_total: usize, max_in_flight: usize, max_queued: usize) -> Self {
        Self {
            total: Arc::new(AtomicUsize::new(0)),
            max_total,
            max_in_flight: max_in_flight.max(1),
            max_queued,
            gates: Mutex::new(HashMap::new()),
        }
    }

    fn gate(&self, model: &str) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = gates.get(model) {
            return g.clone();
        }
        gates
            .entry(model.to_string())
            .or_insert_with(|| {
                Arc::new(Gate {
                    slots: Arc::new(Semaphore::new(self.max_in_flight)),
                    queued: AtomicUsize::new(0),
                    queue_wait: OnceLock::new(),
                })
            })
            .clone()
    }

    /// Requests running through the gateway now.
    pub fn in_flight(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Admit a request for `model`, waiting at most `wait` for a slot.
    /// Returns the permit and how long it waited.
    pub async fn admit(
        &self,
        model: &str,
        wait: Duration,
    ) -> Result<(Permit, Duration), GatewayError> {
        let full = |what: &str| GatewayError::Overloaded {
            message: format!("too many requests {what}; try again shortly"),
            retry_after_s: 1,
        };
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(full("in flight"));
        }
        let total = TotalSlot(self.total.clone());
        let gate = self.gate(model);
        if let Ok(p) = gate.slots.clone().try_acquire_owned() {
            return Ok((
                Permit {
                    _slot: p,
                    _total: total,
                    gate,
                },
                Duration::ZERO,
            ));
        }
        if gate.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            gate.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(full(&format!("queued for `{model}`")));
        }
        let queued = Queued(&gate.queued);
        let started = Instant::now();
        match tokio::time::timeout(wait, gate.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => {
                drop(queued);
                Ok((
                    Permit {
                        _slot: p,
                        _total: total,
                        gate,
                    },
                    started.elapsed(),
                ))
            }
            _ => Err(full(&format!("for `{model}` (no slot freed in time)"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn caps_in_flight_and_queue_and_rejects_at_once() {
        let a = Admission::new(100, 2, 1);
        let (p1, _) = a.admit("m", Duration::from_secs(1)).await.unwrap();
        let (_p2, _) = a.admit("m", Duration::from_secs(1)).await.unwrap();
        // A third waits (queue of 1); a fourth is rejected at once.
        let a = Arc::new(a);
        let a2 = a.clone();
        let waiter =
            tokio::spawn(async move { a2.admit("m", Duration::from_secs(10)).await.map(|_| ()) });
        tokio::task::yield_now().await;
        let e = a.admit("m", Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(e, GatewayError::Overloaded { .. }), "{e:?}");
        // Another model is not affected.
        assert!(a.admit("other", Duration::ZERO).await.is_ok());
        drop(p1);
        assert!(waiter.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn total_cap_and_wait_timeout() {
        let a = Admission::new(1, 10, 10);
        let (p, _) = a.admit("a", Duration::ZERO).await.unwrap();
        assert!(a.admit("b", Duration::ZERO).await.is_err());
        assert_eq!(a.in_flight(), 1);
        drop(p);
        assert_eq!(a.in_flight(), 0);
        let a = Admission::new(10, 1, 10);
        let (_p, _) = a.admit("a", Duration::ZERO).await.unwrap();
        let e = a.admit("a", Duration::from_millis(50)).await.unwrap_err();
        assert!(e.message().contains("no slot"), "{e:?}");
        assert_eq!(
            a.in_flight(),
            1,
            "a rejected request leaves no count behind"
        );
    }
}
