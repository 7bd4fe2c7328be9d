//! Latency histograms that cost one relaxed atomic add to record: fixed
//! buckets (the same bounds `/metrics` uses for its Prometheus histograms),
//! read by the operator's dashboard as cumulative counts and turned into
//! per-second percentiles from the difference of two readings.
//!
//! Nothing here allocates or locks; readers never stop writers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds (50 µs … 10 s).
/// `/metrics` histograms of seconds use the same bounds
/// ([`LATENCY_BUCKETS_S`]), so a percentile on the dashboard and one from
/// Prometheus' `histogram_quantile` are estimated from the same edges.
pub const LATENCY_BOUNDS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// [`LATENCY_BOUNDS_US`] in seconds, for `PrometheusBuilder::set_buckets`.
pub const LATENCY_BUCKETS_S: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets: one per bound plus the overflow bucket (+Inf).
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// A latency histogram many threads record into at once.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    counts: [AtomicU64; LATENCY_BUCKETS],
}

impl LatencyHistogram {
    #[inline]
    pub fn record(&self, d: Duration) {
        self.record_us(d.as_micros().min(u64::MAX as u128) as u64);
    }

    #[inline]
    pub fn record_us(&self, us: u64) {
        self.counts[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Starts again from zero (a slot reused for another subject).
    pub fn reset(&self) {
        for c in &self.counts {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// The counts so far (cumulative since start, one per bucket).
    pub fn read(&self) -> LatencyCounts {
        LatencyCounts(std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)))
    }
}

#[inline]
fn bucket_of(us: u64) -> usize {
    LATENCY_BOUNDS_US.iter().position(|b| us <= *b).unwrap_or(LATENCY_BOUNDS_US.len())
}

/// One reading of a [`LatencyHistogram`]: a count per bucket (not cumulative
/// across buckets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyCounts(pub [u64; LATENCY_BUCKETS]);

impl LatencyCounts {
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// What was recorded between `earlier` and `self` (readings of one histogram).
    pub fn since(&self, earlier: &LatencyCounts) -> LatencyCounts {
        LatencyCounts(std::array::from_fn(|i| self.0[i].saturating_sub(earlier.0[i])))
    }

    /// The `q` quantile (0..=1) in milliseconds, estimated as Prometheus'
    /// `histogram_quantile` does: linear within the bucket that holds it;
    /// the largest bound when it falls in the overflow bucket. `None` when
    /// nothing was recorded.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.0.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = LATENCY_BOUNDS_US.get(i) else {
                    return Some(LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1] as f64 / 1000.0);
                };
                let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_US[i - 1] };
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some((lower as f64 + (upper - lower) as f64 * within) / 1000.0);
            }
            below += n;
        }
        Some(LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1] as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_in_seconds_match_the_microseconds() {
        for (us, s) in LATENCY_BOUNDS_US.iter().zip(LATENCY_BUCKETS_S) {
            assert!((*us as f64 / 1e6 - s).abs() < 1e-12, "{us} µs vs {s} s");
        }
        assert!(LATENCY_BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn values_land_in_the_bucket_whose_bound_is_at_or_above_them() {
        let h = LatencyHistogram::default();
        for us in [0, 50, 51, 1_000, 10_000_000, 10_000_001, u64::MAX] {
            h.record_us(us);
        }
        let c = h.read();
        assert_eq!(c.0[0], 2, "0 and 50 µs");
        assert_eq!(c.0[1], 1, "51 µs");
        assert_eq!(c.0[4], 1, "1 ms");
        assert_eq!(c.0[16], 1, "10 s");
        assert_eq!(c.0[17], 2, "overflow");
        assert_eq!(c.total(), 7);
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let h = LatencyHistogram::default();
        assert_eq!(h.read().quantile_ms(0.5), None);
        // 100 samples in (1, 2.5] ms.
        for _ in 0..100 {
            h.record(Duration::from_micros(2_000));
        }
        let c = h.read();
        let p50 = c.quantile_ms(0.5).unwrap();
        assert!((p50 - 1.75).abs() < 1e-9, "{p50}");
        assert!((c.quantile_ms(1.0).unwrap() - 2.5).abs() < 1e-9);
        // One slow one: p99 stays in the fast bucket, max goes to the slow one.
        h.record(Duration::from_millis(400));
        let c = h.read();
        assert!(c.quantile_ms(0.99).unwrap() <= 2.5);
        assert!(c.quantile_ms(1.0).unwrap() > 250.0);
        let before = c;
        h.record(Duration::from_secs(60));
        let d = h.read().since(&before);
        assert_eq!(d.total(), 1);
        assert_eq!(d.quantile_ms(0.5), Some(10_000.0), "overflow reads as the largest bound");
    }
}
