//! Time enters the engine through one trait so tests can move it by hand.

#[cfg(any(test, feature = "sim"))]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(any(test, feature = "sim"))]
use std::sync::Arc;

/// The engine's source of time.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
}

/// A clock that only moves when told to (tests and simulations: feature `sim`).
#[cfg(any(test, feature = "sim"))]
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

#[cfg(any(test, feature = "sim"))]
impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(now_ms)))
    }
    /// Moves the clock to `now_ms` (backwards too).
    pub fn set_ms(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
    /// Moves the clock `delta_ms` forward.
    pub fn advance_ms(&self, delta_ms: u64) {
        self.0.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

#[cfg(any(test, feature = "sim"))]
impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
