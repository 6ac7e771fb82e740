//! The request path's counters, gauges and histograms, kept in shards that
//! each API worker updates on its own (a cache line or two of its own) and
//! summed when scraped. With one shared atomic per counter, and one mutex
//! per histogram (prometheus-client's), the workers' cores passed each
//! metric's cache line back and forth on every request; here a worker
//! touches only memory no other worker writes. Exposition is the same as
//! prometheus-client's own types.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards per metric. API worker `n` writes shard `n % SHARDS`; threads
/// that are not API workers (tests, the admin routes) share shard 0.
const SHARDS: usize = 8;

/// Most buckets a histogram may have, its `+Inf` bucket included.
pub const MAX_BUCKETS: usize = 24;

fn shard() -> usize {
    crate::workers::current() % SHARDS
}

/// Two cache lines: adjacent-line prefetching pairs lines up.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Padded<T>(T);

/// A monotonic counter.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    shards: Arc<[Padded<AtomicU64>; SHARDS]>,
}

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, v: u64) {
        self.shards[shard()].0.fetch_add(v, Ordering::Relaxed);
    }

    /// The total over every shard.
    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |t, s| t.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A gauge that goes up and down by whole steps (requests in flight). A
/// request may end on another shard than it started on; only the sum means
/// anything.
#[derive(Debug, Clone, Default)]
pub struct Gauge {
    shards: Arc<[Padded<AtomicI64>; SHARDS]>,
}

impl Gauge {
    pub fn inc(&self) {
        self.shards[shard()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.shards[shard()].0.fetch_sub(1, Ordering::Relaxed);
    }

    /// The sum over every shard.
    pub fn get(&self) -> i64 {
        self.shards
            .iter()
            .fold(0i64, |t, s| t.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

impl TypedMetric for Gauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for Gauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[derive(Debug, Default)]
struct HistogramShard {
    /// The sum of the observations, as `f64` bits.
    sum: AtomicU64,
    /// Observations per bucket (not cumulative); the count is their sum,
    /// so that a scrape never shows a count its buckets do not add up to.
    buckets: [AtomicU64; MAX_BUCKETS],
}

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds, ascending, without the `+Inf` bucket.
    bounds: &'static [f64],
    shards: [Padded<HistogramShard>; SHARDS],
}

/// A histogram with fixed buckets, as prometheus-client's: an observation
/// counts in the first bucket whose upper bound is at least the value (NaN
/// in `+Inf`).
#[derive(Debug, Clone)]
pub struct Histogram {
    inner: Arc<HistogramInner>,
}

impl Histogram {
    /// Buckets with these upper bounds (ascending, at most
    /// `MAX_BUCKETS - 1` of them) and `+Inf`.
    pub const fn bounds_fit(bounds: &[f64]) -> bool {
        bounds.len() < MAX_BUCKETS
    }

    /// A histogram with `bounds` (ascending) and `+Inf`. Bounds beyond
    /// [`MAX_BUCKETS`]` - 1` are dropped (their observations land in
    /// `+Inf`); [`Histogram::bounds_fit`] checks a set at compile time.
    pub fn new(bounds: &'static [f64]) -> Self {
        let bounds = &bounds[..bounds.len().min(MAX_BUCKETS - 1)];
        Self {
            inner: Arc::new(HistogramInner {
                bounds,
                shards: Default::default(),
            }),
        }
    }

    pub fn observe(&self, v: f64) {
        let inner = &*self.inner;
        let bucket = if v.is_nan() {
            inner.bounds.len()
        } else {
            inner.bounds.partition_point(|b| *b < v)
        };
        let s = &inner.shards[shard()].0;
        s.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        // Usually only this shard's worker writes it, and the loop runs
        // once; threads that share a shard retry.
        let _ = s
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    /// Sum, count and per-bucket counts (upper bound, not cumulative), the
    /// last bucket `+Inf`, summed over every shard.
    pub fn get(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let inner = &*self.inner;
        let mut buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .map(|b| (b, 0))
            .collect();
        let mut sum = 0.0;
        for s in &inner.shards {
            sum += f64::from_bits(s.0.sum.load(Ordering::Relaxed));
            for (slot, n) in buckets.iter_mut().zip(&s.0.buckets) {
                slot.1 = slot.1.wrapping_add(n.load(Ordering::Relaxed));
            }
        }
        let count = buckets.iter().fold(0u64, |t, b| t.wrapping_add(b.1));
        (sum, count, buckets)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.get();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::counter::Counter as PcCounter;
    use prometheus_client::metrics::gauge::Gauge as PcGauge;
    use prometheus_client::metrics::histogram::Histogram as PcHistogram;
    use prometheus_client::registry::Registry;
    use proptest::prelude::*;

    const BOUNDS: &[f64] = &[0.001, 0.01, 0.1, 1.0, 10.0];

    fn text(
        name: &str,
        metric: impl EncodeMetric + Send + Sync + std::fmt::Debug + 'static,
    ) -> String {
        let mut r = Registry::default();
        r.register(name, "help", metric);
        let mut out = String::new();
        encode(&mut out, &r).unwrap();
        out
    }

    /// Run `f` on API worker `id`'s shard.
    fn on_worker(id: usize, f: impl FnOnce() + Send + 'static) {
        crate::workers::on_worker(id, async move { f() });
    }

    #[test]
    fn shards_written_from_several_workers_are_summed() {
        let c = Counter::default();
        let g = Gauge::default();
        let h = Histogram::new(BOUNDS);
        for id in 0..=(SHARDS + 2) {
            let (c, g, h) = (c.clone(), g.clone(), h.clone());
            on_worker(id, move || {
                c.inc_by(id as u64 + 1);
                g.inc();
                g.inc();
                g.dec();
                h.observe(id as f64 * 0.004);
            });
        }
        let n = SHARDS as u64 + 3;
        // Each worker wrote its own shard (`id % SHARDS`), not a shared one.
        for (k, shard) in c.shards.iter().enumerate() {
            let want: u64 = (0..n)
                .filter(|id| *id as usize % SHARDS == k)
                .map(|id| id + 1)
                .sum();
            assert_eq!(shard.0.load(Ordering::Relaxed), want, "shard {k}");
        }
        assert_eq!(c.get(), n * (n + 1) / 2);
        assert_eq!(g.get(), n as i64);
        let (sum, count, buckets) = h.get();
        assert_eq!(count, n);
        assert!((sum - (0..n).map(|i| i as f64 * 0.004).sum::<f64>()).abs() < 1e-9);
        // 0 → 0.001; 0.004, 0.008 → 0.01; 0.012 … 0.04 → 0.1.
        let per: Vec<u64> = buckets.iter().map(|b| b.1).collect();
        assert_eq!(per, vec![1, 2, n - 3, 0, 0, 0]);
        assert_eq!(buckets.last().map(|b| b.0), Some(f64::INFINITY));
    }

    #[test]
    fn a_gauge_that_ends_on_another_shard_sums_to_zero() {
        let g = Gauge::default();
        let g2 = g.clone();
        on_worker(1, move || g2.inc());
        let g3 = g.clone();
        on_worker(2, move || g3.dec());
        assert_eq!(g.get(), 0);
        assert!(text("inflight", g).contains("inflight 0\n"));
    }

    #[test]
    fn too_many_bounds_land_in_inf() {
        static MANY: [f64; 40] = {
            let mut a = [0.0; 40];
            let mut i = 0;
            while i < 40 {
                a[i] = i as f64;
                i += 1;
            }
            a
        };
        assert!(!Histogram::bounds_fit(&MANY));
        let h = Histogram::new(&MANY);
        h.observe(39.0);
        let (_, count, buckets) = h.get();
        assert_eq!((count, buckets.len()), (1, MAX_BUCKETS));
        assert_eq!(buckets[MAX_BUCKETS - 1].1, 1);
    }

    proptest! {
        /// The exposition is prometheus-client's, for any observations.
        #[test]
        fn encodes_as_prometheus_client_does(
            values in prop::collection::vec(
                prop_oneof![
                    (0u32..20_000).prop_map(|v| v as f64 / 1000.0),
                    Just(0.001), Just(1.0), Just(10.0), Just(f64::NAN), Just(-1.0), Just(1e9),
                ],
                0..40,
            ),
            steps in prop::collection::vec(0u64..1_000_000, 0..10),
            ups in 0usize..10,
            downs in 0usize..10,
        ) {
            let (ours, theirs) = (Histogram::new(BOUNDS), PcHistogram::new(BOUNDS.iter().copied()));
            for v in &values {
                ours.observe(*v);
                theirs.observe(*v);
            }
            let (a, b) = (text("h", ours), text("h", theirs));
            // NaN sums print alike ("NaN") too.
            prop_assert_eq!(a, b);

            let (ours, theirs) = (Counter::default(), PcCounter::<u64>::default());
            for s in &steps {
                ours.inc_by(*s);
                theirs.inc_by(*s);
            }
            ours.inc();
            theirs.inc();
            prop_assert_eq!(text("c", ours), text("c", theirs));

            let (ours, theirs) = (Gauge::default(), PcGauge::<i64>::default());
            for _ in 0..ups { ours.inc(); theirs.inc(); }
            for _ in 0..downs { ours.dec(); theirs.dec(); }
            prop_assert_eq!(text("g", ours), text("g", theirs));
        }
    }
}
