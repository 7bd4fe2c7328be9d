//! The token bucket: the one refill-and-take rule of every rate limit (the
//! engine's per-user buy clicks, `engine/src/shard/clicks.rs`; the front's
//! per-address requests, `front/src/limits.rs`). Where the buckets live
//! and how they are forgotten is each caller's business.

/// A bucket's shape: it holds at most `burst` tokens and gains
/// `per_window` tokens every `window_ms` milliseconds, continuously.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenRate {
    pub burst: f64,
    pub per_window: f64,
    pub window_ms: f64,
}

/// One bucket: 16 bytes, `Copy`, no clock of its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    /// A bucket holding `rate.burst` tokens at `now_ms`.
    #[inline]
    pub fn full(rate: &TokenRate, now_ms: u64) -> Self {
        Self { tokens: rate.burst, last_ms: now_ms }
    }

    /// Refills for the time since the last call (never for time going
    /// backwards), then takes one token. `Err(wait_ms)` when less than one
    /// is left: the milliseconds until a whole token is back.
    #[inline]
    pub fn take(&mut self, rate: &TokenRate, now_ms: u64) -> Result<(), f64> {
        let refill = now_ms.saturating_sub(self.last_ms) as f64 * rate.per_window / rate.window_ms;
        self.tokens = (self.tokens + refill).min(rate.burst);
        self.last_ms = self.last_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - self.tokens) * rate.window_ms / rate.per_window)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOUR_A_SECOND: TokenRate = TokenRate { burst: 2.0, per_window: 4.0, window_ms: 1_000.0 };

    fn waits_ms(got: Result<(), f64>, want_ms: f64) -> bool {
        got.is_err_and(|ms| (ms - want_ms).abs() < 1e-9)
    }

    #[test]
    fn a_bucket_refills_continuously_up_to_its_burst() {
        let mut b = TokenBucket::full(&FOUR_A_SECOND, 0);
        assert_eq!(b.take(&FOUR_A_SECOND, 0), Ok(()));
        assert_eq!(b.take(&FOUR_A_SECOND, 0), Ok(()));
        assert!(waits_ms(b.take(&FOUR_A_SECOND, 0), 250.0), "one token every 250 ms");
        assert!(waits_ms(b.take(&FOUR_A_SECOND, 100), 150.0));
        assert_eq!(b.take(&FOUR_A_SECOND, 250), Ok(()));
        // A long idle time refills to the burst, not beyond it.
        for _ in 0..2 {
            assert_eq!(b.take(&FOUR_A_SECOND, 60_000), Ok(()));
        }
        assert!(b.take(&FOUR_A_SECOND, 60_000).is_err());
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let mut b = TokenBucket::full(&FOUR_A_SECOND, 10_000);
        assert!(b.take(&FOUR_A_SECOND, 10_000).is_ok());
        assert!(b.take(&FOUR_A_SECOND, 10_000).is_ok());
        assert!(b.take(&FOUR_A_SECOND, 5_000).is_err(), "an earlier time gives no tokens");
        // ... and does not move the bucket's clock back either.
        assert!(waits_ms(b.take(&FOUR_A_SECOND, 10_100), 150.0));
    }
}
