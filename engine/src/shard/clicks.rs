//! Per-user token buckets for buy clicks, kept by the shard that owns the
//! user: no lock, no shared map, and the limit holds across every front.
//!
//! Memory stays bounded without scanning: buckets live in two generations.
//! A bucket untouched for a whole refill window is full again, so dropping
//! it changes nothing; every `WINDOW_MS` the older generation is dropped and
//! the current one becomes the older. A user seen again moves back into the
//! current generation. Past `TRACKED_PER_SHARD_MAX` users in one generation
//! the rotation comes early: the only cost is that users idle for less than
//! a window may find a full bucket, never that memory grows.

use hashbrown::HashMap;
use seckill_proto::{TokenBucket, TokenRate};

/// A full bucket refills in one minute (the limit is "per minute").
pub(crate) const WINDOW_MS: u64 = 60_000;
/// Users tracked per generation on one shard.
pub(crate) const TRACKED_PER_SHARD_MAX: usize = 1 << 20;

/// `rotated_at_ms` before the first click.
const NOT_YET: u64 = u64::MAX;

/// Per-user buy clicks as token buckets, kept in two generations so idle
/// users age out without a scan.
pub struct ClickLimit {
    /// Clicks per minute per user; 0 turns the limit off.
    per_minute: u32,
    /// `per_minute` clicks, refilled over `WINDOW_MS`.
    rate: TokenRate,
    current: HashMap<u64, TokenBucket>,
    older: HashMap<u64, TokenBucket>,
    rotated_at_ms: u64,
}

impl ClickLimit {
    /// A limit of `per_minute` clicks per user (0: none).
    pub fn new(per_minute: u32) -> Self {
        let per_window = f64::from(per_minute);
        let rate = TokenRate { burst: per_window, per_window, window_ms: WINDOW_MS as f64 };
        Self { per_minute, rate, current: HashMap::new(), older: HashMap::new(), rotated_at_ms: NOT_YET }
    }

    /// The configured clicks per minute.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Takes one click for `user`. `Err(retry_after_s)` when the bucket is
    /// empty: the seconds until it holds a whole click again.
    pub fn take(&mut self, user: u64, now_ms: u64) -> Result<(), u32> {
        if self.per_minute == 0 {
            return Ok(());
        }
        if self.rotated_at_ms == NOT_YET {
            // The first click starts the first window; rotating here would
            // swap the room `reserve` made into the older generation.
            self.rotated_at_ms = now_ms;
        } else if now_ms.saturating_sub(self.rotated_at_ms) >= WINDOW_MS || self.current.len() >= TRACKED_PER_SHARD_MAX
        {
            // The older generation's table becomes the current one, emptied
            // but with its room: a busy shard does not grow a table of a
            // million users again (and rehash it at every doubling) each
            // minute, nor free one on its own thread.
            std::mem::swap(&mut self.current, &mut self.older);
            self.current.clear();
            // As many as last window, without growing during this one: growing
            // an empty table is an allocation, growing a full one a rehash.
            self.current.reserve(self.older.len());
            self.rotated_at_ms = now_ms;
        }
        let fresh = TokenBucket::full(&self.rate, now_ms);
        // One probe of the current generation, hit or miss.
        let bucket = match self.current.entry(user) {
            hashbrown::hash_map::Entry::Occupied(b) => b.into_mut(),
            // No probe of an empty older generation (a sale's first minute):
            // on a big table every probe is a cache miss.
            hashbrown::hash_map::Entry::Vacant(slot) if self.older.is_empty() => slot.insert(fresh),
            hashbrown::hash_map::Entry::Vacant(slot) => slot.insert(self.older.remove(&user).unwrap_or(fresh)),
        };
        bucket.take(&self.rate, now_ms).map_err(|wait_ms| {
            // Less a hair, so float noise cannot round 10.000000001 s up to 11.
            let wait_s = (wait_ms / 1000.0 - 1e-9).ceil();
            wait_s.clamp(1.0, (WINDOW_MS / 1000) as f64) as u32
        })
    }

    /// Reads `user`'s bucket without taking a click (`ShardState::warm`).
    #[inline]
    pub(crate) fn warm(&self, user: u64) {
        if self.per_minute > 0 {
            std::hint::black_box(self.current.contains_key(&user));
        }
    }

    /// Makes room for `users` more buyers in the current generation: growing
    /// a table of 100k+ users rehashes it on the shard thread, a pause of
    /// milliseconds that every queued buyer waits out.
    pub fn reserve(&mut self, users: usize) {
        if self.per_minute > 0 {
            self.current.reserve(users.min(TRACKED_PER_SHARD_MAX));
        }
    }

    /// Users the current generation holds without growing.
    #[cfg(test)]
    fn room(&self) -> usize {
        self.current.capacity()
    }

    /// Users currently tracked (both generations).
    pub fn tracked(&self) -> usize {
        self.current.len() + self.older.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_over_time() {
        let mut r = ClickLimit::new(60);
        for _ in 0..60 {
            assert!(r.take(1, 0).is_ok());
        }
        assert_eq!(r.take(1, 0), Err(1));
        assert!(r.take(2, 0).is_ok(), "users are independent");
        assert!(r.take(1, 1_000).is_ok(), "one click per second comes back");
        assert!(r.take(1, 1_000).is_err());
    }

    #[test]
    fn retry_after_is_the_time_to_one_click() {
        let mut r = ClickLimit::new(2);
        assert!(r.take(7, 0).is_ok());
        assert!(r.take(7, 0).is_ok());
        assert_eq!(r.take(7, 0), Err(30), "two a minute: one every 30 s");
        assert_eq!(r.take(7, 20_000), Err(10));
        assert!(r.take(7, 30_000).is_ok());
    }

    #[test]
    fn reserved_room_is_not_outgrown_by_as_many_users_nor_after_a_rotation() {
        // A wall-clock time: the first click must not rotate the room away.
        let t0 = 1_765_000_000_000;
        let mut r = ClickLimit::new(10);
        r.reserve(50_000);
        let room = r.room();
        for user in 0..50_000 {
            assert!(r.take(user, t0).is_ok());
        }
        assert_eq!(r.room(), room, "the table grew (a rehash on the shard thread)");
        // The next window's first click rotates; the new generation has room
        // for as many users as the last window saw.
        assert!(r.take(100_000, t0 + WINDOW_MS).is_ok());
        let room = r.room();
        assert!(room >= 50_000);
        for user in 100_001..150_000 {
            assert!(r.take(user, t0 + WINDOW_MS).is_ok());
        }
        assert_eq!(r.room(), room, "grew after a rotation");
    }

    #[test]
    fn off_when_zero() {
        let mut r = ClickLimit::new(0);
        for _ in 0..1000 {
            assert!(r.take(1, 0).is_ok());
        }
        assert_eq!(r.tracked(), 0);
    }

    #[test]
    fn a_bucket_survives_one_rotation_and_idle_ones_are_dropped() {
        let mut r = ClickLimit::new(3);
        for _ in 0..3 {
            assert!(r.take(1, 0).is_ok());
        }
        assert!(r.take(2, 0).is_ok());
        // One window later: both move to the older generation; user 1 has
        // refilled anyway, but is still tracked until the next rotation.
        assert!(r.take(3, WINDOW_MS).is_ok());
        assert_eq!(r.tracked(), 3);
        // A click 10 s into the next window keeps user 1's refilled bucket.
        assert!(r.take(1, WINDOW_MS + 10_000).is_ok());
        // After two windows without a click, user 2 is forgotten: exact,
        // since a bucket idle for a window is full.
        assert!(r.take(1, 2 * WINDOW_MS + 10_000).is_ok());
        assert_eq!(r.tracked(), 2, "users 1 and 3 remain; 2 is dropped");
    }

    #[test]
    fn an_empty_bucket_is_not_forgotten_by_a_rotation() {
        let mut r = ClickLimit::new(1);
        assert!(r.take(9, WINDOW_MS - 1).is_ok());
        // The generation rotates 1 ms later; the bucket moved along and is
        // still empty.
        assert!(r.take(9, WINDOW_MS).is_err());
    }

    #[test]
    fn a_rotation_keeps_the_tables_room() {
        let mut r = ClickLimit::new(60);
        for u in 0..10_000 {
            assert!(r.take(u, 0).is_ok());
        }
        let room = r.current.capacity();
        assert!(r.take(1, WINDOW_MS).is_ok(), "rotated: user 1 comes from the older generation");
        assert!(r.take(20_000, 2 * WINDOW_MS).is_ok(), "rotated again");
        assert!(r.current.capacity() >= room, "the current table grew again from nothing");
        assert_eq!(r.tracked(), 2, "only users seen in the last two windows are kept");
    }
}
