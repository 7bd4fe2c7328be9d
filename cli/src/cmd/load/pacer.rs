//! The open loop's clock: a ticker finer than tokio's timer.
//!
//! tokio rounds every deadline up to its next millisecond tick, so an open
//! loop paced with `sleep_until` sends each request up to ~1 ms after it was
//! due, and counts that as latency: against a hello-world server that answers
//! in ~10 µs it measured p50 1.18 ms. A `timerfd` per request wakes on time but
//! cost the client ~13 µs of CPU per request (an arm, an epoll wake and a read
//! each), on the cores the server under test runs on. So one periodic
//! `timerfd` ([`TICK`]) releases whatever came due since its last tick: a
//! request leaves at most a tick late (its latency still counts from its due
//! time), and the cost is one wake per tick, not per request. Elsewhere than
//! Linux, tokio's interval is the fallback.

use std::time::Duration;

/// How often due requests are released: a request leaves at most this late.
pub const TICK: Duration = Duration::from_micros(200);

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use std::io::{self, Read};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use tokio::io::unix::AsyncFd;

    /// A periodic, non-blocking `timerfd` registered with the runtime.
    pub struct TimerFd {
        fd: AsyncFd<std::fs::File>,
    }

    impl TimerFd {
        #[allow(unsafe_code)] // timerfd_create, timerfd_settime, AsyncFd::register: see the SAFETY comments
        pub fn every(period: Duration) -> io::Result<Self> {
            assert!(!period.is_zero() && period < Duration::from_secs(1));
            // SAFETY: timerfd_create takes no pointers; a non-negative return is a new fd we own.
            let raw = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a valid, open fd that nothing else owns.
            let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
            let every = libc::timespec { tv_sec: 0, tv_nsec: period.subsec_nanos() as libc::c_long };
            let spec = libc::itimerspec { it_interval: every, it_value: every };
            // SAFETY: the fd is ours and open; `spec` lives across the call; a null old value is allowed.
            if unsafe { libc::timerfd_settime(file.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: the `File` owns the fd, keeps it open and returns the same one
            // from `as_raw_fd` until the `AsyncFd` drops it.
            let fd = unsafe { AsyncFd::register_with_interest(file, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
            Ok(Self { fd })
        }

        /// Waits for the next tick (at once if ticks passed since the last call).
        pub async fn tick(&mut self) -> io::Result<()> {
            loop {
                let mut ready = self.fd.readable_mut().await?;
                let mut expirations = [0u8; 8];
                match ready.try_io(|f| f.get_mut().read(&mut expirations)) {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Ok(Err(e)) => return Err(e),
                    Err(_would_block) => continue,
                }
            }
        }
    }
}

/// Ticks every `period`: through a `timerfd` on Linux; through tokio's
/// interval (up to 1 ms late, said once in the log) elsewhere or once the
/// `timerfd` fails.
pub struct Ticker {
    period: Duration,
    clock: Clock,
}

enum Clock {
    #[cfg(target_os = "linux")]
    Fine(linux::TimerFd),
    Coarse(tokio::time::Interval),
}

impl Ticker {
    pub fn every(period: Duration) -> Self {
        #[cfg(target_os = "linux")]
        match linux::TimerFd::every(period) {
            Ok(fd) => return Self { period, clock: Clock::Fine(fd) },
            Err(e) => tracing::warn!("no timerfd ({e}): pacing with tokio's timer, up to 1 ms late"),
        }
        Self { period, clock: Clock::Coarse(tokio::time::interval(period)) }
    }

    /// Waits for the next tick (at once if ticks passed since the last call).
    pub async fn tick(&mut self) {
        match &mut self.clock {
            #[cfg(target_os = "linux")]
            Clock::Fine(fd) => {
                if let Err(e) = fd.tick().await {
                    tracing::warn!("timerfd failed ({e}): pacing with tokio's timer, up to 1 ms late");
                    self.clock = Clock::Coarse(tokio::time::interval(self.period));
                }
            }
            Clock::Coarse(interval) => {
                interval.tick().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test]
    async fn never_ticks_faster_than_its_period() {
        let mut ticker = Ticker::every(TICK);
        ticker.tick().await;
        let t0 = Instant::now();
        for _ in 0..50 {
            ticker.tick().await;
        }
        // Never faster than the period (late ticks coalesce, so never more than one per period).
        assert!(t0.elapsed() >= TICK * 49, "50 ticks in {:?}", t0.elapsed());
    }
}
