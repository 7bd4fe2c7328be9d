//! The stock token pool of one activity, shared by every shard.
//!
//! Tokens leave the pool when a shard decides a buy and come back only once
//! the record that frees them is durable (see `commit`). Because of that
//! order, every take in any durable prefix of the log was paid for by stock
//! that is itself in that prefix: recovery can never find an activity oversold.

use std::sync::atomic::{AtomicU64, Ordering};

/// The stock tokens of one activity, shared by every shard and taken with
/// a compare-and-swap: never below zero, never above what was added.
#[derive(Debug, Default)]
pub struct StockPool {
    /// Every token ever added (total_stock plus `stock.add`).
    added: AtomicU64,
    /// Tokens nobody holds. Invariant: `remaining <= added`.
    remaining: AtomicU64,
    /// Buy tokens handed out (gate of seed 002); not durable: they expire in minutes.
    gate_issued: AtomicU64,
}

/// A return of tokens that were never taken (a broken invariant).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("returning {returned} tokens would put {remaining} above the {added} ever added")]
pub struct Overfilled {
    pub returned: u64,
    pub remaining: u64,
    pub added: u64,
}

impl StockPool {
    /// A pool holding `total` tokens.
    pub fn new(total: u64) -> Self {
        Self { added: AtomicU64::new(total), remaining: AtomicU64::new(total), gate_issued: AtomicU64::new(0) }
    }

    /// Takes `n` tokens if that many are left; all or nothing, lock-free.
    #[inline]
    pub fn try_take(&self, n: u64) -> bool {
        debug_assert!(n > 0);
        self.remaining.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(n)).is_ok()
    }

    /// Gives back `n` tokens taken earlier. Refuses to go above `added`:
    /// that would mean a token was returned twice.
    pub fn give_back(&self, n: u64) -> Result<(), Overfilled> {
        // `added` is read after each `remaining` it is compared with: `add`
        // grows `added` first, so that read covers every addition `r` shows
        // (reading it once up front refused tokens while stock was added).
        let added = || self.added.load(Ordering::Acquire);
        self.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_add(n).filter(|sum| *sum <= added()))
            .map(|_| ())
            .map_err(|remaining| Overfilled { returned: n, remaining, added: added() })
    }

    /// Adds new stock. `added` grows first so `remaining <= added` holds for
    /// every reader at every moment.
    pub fn add(&self, n: u64) {
        self.added.fetch_add(n, Ordering::AcqRel);
        self.remaining.fetch_add(n, Ordering::AcqRel);
    }

    /// Counts one more buy token if fewer than `gate_factor` × stock were issued.
    pub(crate) fn try_issue_gate(&self, gate_factor: u32) -> bool {
        let cap = self.added().saturating_mul(gate_factor as u64);
        self.gate_issued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap).then_some(n + 1)).is_ok()
    }

    /// Tokens nobody holds.
    pub fn remaining(&self) -> u64 {
        self.remaining.load(Ordering::Acquire)
    }

    /// Every token ever added (total stock plus `stock.add`).
    pub fn added(&self) -> u64 {
        self.added.load(Ordering::Acquire)
    }

    /// Recovery only: set the counts derived from the recovered orders.
    pub fn reset(&self, added: u64, held: u64) {
        assert!(held <= added, "recovered state holds {held} tokens of {added}: oversold");
        self.added.store(added, Ordering::Release);
        self.remaining.store(added - held, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn take_is_all_or_nothing() {
        let p = StockPool::new(3);
        assert!(p.try_take(2));
        assert!(!p.try_take(2));
        assert!(p.try_take(1));
        assert!(!p.try_take(1));
        assert_eq!(p.remaining(), 0);
    }

    #[test]
    fn give_back_never_exceeds_added() {
        let p = StockPool::new(2);
        assert!(p.try_take(1));
        assert!(p.give_back(1).is_ok());
        assert_eq!(p.give_back(1), Err(Overfilled { returned: 1, remaining: 2, added: 2 }));
        p.add(5);
        assert_eq!((p.remaining(), p.added()), (7, 7));
    }

    #[test]
    fn concurrent_takes_never_oversell() {
        let p = Arc::new(StockPool::new(10_000));
        let won: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let p = p.clone();
                    s.spawn(move || (0..5_000).filter(|_| p.try_take(1)).count() as u64)
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(won, 10_000);
        assert_eq!(p.remaining(), 0);
    }
}
