//! Per-user token buckets for buy clicks, and the sold-out short circuit.

use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Users tracked at once; past it, full (idle) buckets are dropped first.
pub const TRACKED_USERS_MAX: usize = 1_000_000;

struct Bucket {
    tokens: f64,
    last_ms: u64,
}

pub struct RateLimit {
    per_minute: u32,
    buckets: DashMap<u64, Bucket>,
}

impl RateLimit {
    pub fn new(per_minute: u32) -> Self {
        assert!(per_minute > 0);
        Self { per_minute, buckets: DashMap::new() }
    }

    /// Takes one click for `user`. `Err(retry_after_s)` when the bucket is empty.
    pub fn check(&self, user: u64, now_ms: u64) -> Result<(), u64> {
        let cap = self.per_minute as f64;
        let per_ms = cap / 60_000.0;
        if self.buckets.len() >= TRACKED_USERS_MAX {
            self.buckets.retain(|_, b| b.tokens + (now_ms.saturating_sub(b.last_ms)) as f64 * per_ms < cap);
        }
        let mut b = self.buckets.entry(user).or_insert(Bucket { tokens: cap, last_ms: now_ms });
        let refill = now_ms.saturating_sub(b.last_ms) as f64 * per_ms;
        b.tokens = (b.tokens + refill).min(cap);
        b.last_ms = now_ms;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - b.tokens) / per_ms) / 1000.0).ceil().max(1.0) as u64)
        }
    }
}

/// Remembers which activities answered `sold_out`, so the front can answer
/// the next buyers itself. Each mark lasts `ttl_ms` (1 s): cancelled and
/// expired orders return stock, so the engine is asked again after that.
pub struct SoldOut {
    until_ms: DashMap<u64, AtomicU64>,
    ttl_ms: u64,
}

impl SoldOut {
    pub fn new(ttl_ms: u64) -> Self {
        Self { until_ms: DashMap::new(), ttl_ms }
    }

    pub fn is_sold_out(&self, activity: u64, now_ms: u64) -> bool {
        self.until_ms.get(&activity).is_some_and(|u| u.load(Ordering::Relaxed) > now_ms)
    }

    pub fn mark(&self, activity: u64, now_ms: u64) {
        if self.until_ms.len() > 100_000 {
            self.until_ms.retain(|_, u| u.load(Ordering::Relaxed) > now_ms);
        }
        self.until_ms
            .entry(activity)
            .or_insert_with(|| AtomicU64::new(0))
            .store(now_ms + self.ttl_ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_over_time() {
        let r = RateLimit::new(60);
        for _ in 0..60 {
            assert!(r.check(1, 0).is_ok());
        }
        assert_eq!(r.check(1, 0), Err(1));
        assert!(r.check(2, 0).is_ok(), "users are independent");
        assert!(r.check(1, 1_000).is_ok(), "one token per second comes back");
        assert!(r.check(1, 1_000).is_err());
    }

    #[test]
    fn sold_out_marks_expire() {
        let s = SoldOut::new(1_000);
        assert!(!s.is_sold_out(1, 0));
        s.mark(1, 0);
        assert!(s.is_sold_out(1, 999));
        assert!(!s.is_sold_out(1, 1_000));
        assert!(!s.is_sold_out(2, 10));
    }
}
