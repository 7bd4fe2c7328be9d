//! The sold-out short circuit.

use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};

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
    fn sold_out_marks_expire() {
        let s = SoldOut::new(1_000);
        assert!(!s.is_sold_out(1, 0));
        s.mark(1, 0);
        assert!(s.is_sold_out(1, 999));
        assert!(!s.is_sold_out(1, 1_000));
        assert!(!s.is_sold_out(2, 10));
    }
}
