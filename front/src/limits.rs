//! The sold-out short circuit.

use dashmap::DashMap;
use seckill_proto::{TokenBucket, TokenRate};
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

// ---- bounded maps without scans ---------------------------------------------

/// A map that forgets: entries live in two generations; every `window_ms`
/// (or when the current one holds `len_max` entries) the older generation is
/// dropped and the current one becomes the older. An entry read from the
/// older generation moves back into the current one. Memory stays below
/// 2 × `len_max` entries and no request scans the map (the idea of
/// `engine/src/shard/clicks.rs`).
pub struct TwoGen<K, V> {
    current: std::collections::HashMap<K, V>,
    older: std::collections::HashMap<K, V>,
    rotated_at_ms: u64,
    window_ms: u64,
    len_max: usize,
}

impl<K: std::hash::Hash + Eq, V> TwoGen<K, V> {
    pub fn new(window_ms: u64, len_max: usize) -> Self {
        Self {
            current: Default::default(),
            older: Default::default(),
            rotated_at_ms: 0,
            window_ms,
            len_max: len_max.max(1),
        }
    }

    /// Rotates when a window has passed, or (`adding`) when the current
    /// generation is full.
    fn rotate_if_due(&mut self, now_ms: u64, adding: bool) {
        let full = adding && self.current.len() >= self.len_max;
        if full || now_ms.saturating_sub(self.rotated_at_ms) >= self.window_ms {
            self.older = std::mem::take(&mut self.current);
            self.rotated_at_ms = now_ms;
        }
    }

    /// The entry for `key` in the current generation, moved up from the
    /// older one or made by `fresh`.
    pub fn entry(&mut self, key: K, now_ms: u64, fresh: impl FnOnce() -> V) -> &mut V {
        let adding = !self.current.contains_key(&key);
        self.rotate_if_due(now_ms, adding);
        if !self.current.contains_key(&key) {
            let v = self.older.remove(&key).unwrap_or_else(fresh);
            return self.current.entry(key).or_insert(v);
        }
        self.current.entry(key).or_insert_with(fresh)
    }

    pub fn get(&mut self, key: &K, now_ms: u64) -> Option<&V> {
        self.rotate_if_due(now_ms, false);
        self.current.get(key).or_else(|| self.older.get(key))
    }

    pub fn insert(&mut self, key: K, value: V, now_ms: u64) {
        let adding = !self.current.contains_key(&key);
        self.rotate_if_due(now_ms, adding);
        self.current.insert(key, value);
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.older.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The client address a limit is kept by: an IPv4 address, or the /64 of
/// an IPv6 one (what one subscriber gets).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct IpKey(u128);

impl IpKey {
    pub fn of(ip: std::net::IpAddr) -> IpKey {
        match ip {
            std::net::IpAddr::V4(v4) => IpKey(u32::from(v4) as u128),
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey(u32::from(v4) as u128),
                None => IpKey((u128::from(v6) & !((1u128 << 64) - 1)) | (1 << 32)),
            },
        }
    }
}

const LOCK_SHARDS: usize = 16;

fn lock_shard(key: IpKey) -> usize {
    // Spread neighbouring addresses: a cheap multiplicative hash.
    ((key.0 as u64 ^ (key.0 >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % LOCK_SHARDS
}

/// Open HTTP connections per client address, capped. Touched twice per
/// connection (open, close), never per request. An address leaves the map
/// when its last connection closes, so it holds at most one entry per open
/// connection.
pub struct ConnectionsPerIp {
    open: [parking_lot::Mutex<std::collections::HashMap<IpKey, u32>>; LOCK_SHARDS],
    max: u32,
}

/// One counted connection; uncounted when dropped.
pub struct ConnectionSlot {
    owner: std::sync::Arc<ConnectionsPerIp>,
    key: IpKey,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open[lock_shard(self.key)].lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl ConnectionsPerIp {
    /// `max` 0 turns the cap off.
    pub fn new(max: u32) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self { open: Default::default(), max })
    }

    /// A slot for one more connection from `ip`, or `None` at the cap.
    pub fn open(self: &std::sync::Arc<Self>, ip: std::net::IpAddr) -> Option<ConnectionSlot> {
        let key = IpKey::of(ip);
        if self.max > 0 {
            let mut open = self.open[lock_shard(key)].lock();
            let n = open.entry(key).or_insert(0);
            if *n >= self.max {
                return None;
            }
            *n += 1;
        } else {
            return Some(ConnectionSlot { owner: self.clone(), key: IpKey(u128::MAX) });
        }
        Some(ConnectionSlot { owner: self.clone(), key })
    }

    pub fn max(&self) -> u32 {
        self.max
    }
}

/// Per-address token buckets for anonymous requests (activity reads,
/// unknown routes): `per_s` a second, bursts of 2 × `per_s`. Memory is
/// bounded by `TwoGen` (a bucket idle for a window is full again, so
/// forgetting it changes nothing).
pub struct IpBuckets {
    shards: [parking_lot::Mutex<TwoGen<IpKey, TokenBucket>>; LOCK_SHARDS],
    per_s: u32,
    /// `per_s` a second, bursts of 2 × `per_s`.
    rate: TokenRate,
}

/// Addresses tracked per lock shard and generation.
pub const IPS_TRACKED_PER_SHARD_MAX: usize = 1 << 16;

impl IpBuckets {
    /// `per_s` 0 turns the limit off.
    pub fn new(per_s: u32) -> Self {
        // Empty to full takes two seconds: forget after that.
        let window_ms = 2_000;
        Self {
            shards: std::array::from_fn(|_| parking_lot::Mutex::new(TwoGen::new(window_ms, IPS_TRACKED_PER_SHARD_MAX))),
            per_s,
            rate: TokenRate { burst: 2.0 * f64::from(per_s), per_window: f64::from(per_s), window_ms: 1_000.0 },
        }
    }

    /// Takes one request for `ip`; `Err(retry_after_s)` when its bucket is empty.
    pub fn take(&self, ip: std::net::IpAddr, now_ms: u64) -> Result<(), u32> {
        if self.per_s == 0 {
            return Ok(());
        }
        let key = IpKey::of(ip);
        let mut shard = self.shards[lock_shard(key)].lock();
        let bucket = shard.entry(key, now_ms, || TokenBucket::full(&self.rate, now_ms));
        bucket.take(&self.rate, now_ms).map_err(|_| 1)
    }
}

/// Activity views (`GET /activities`, `/activities/{id}`) as the engine
/// last answered them, for `ttl_ms`: a page-refresh flood is answered here
/// and never reaches the shard queues. The engine's answer is cached, not
/// the JSON, so `phase` and `starts_in_ms` are computed per request.
pub struct ActivityCache {
    entries: parking_lot::Mutex<TwoGen<ActivityKey, (u64, std::sync::Arc<seckill_proto::Response>)>>,
    ttl_ms: u64,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ActivityKey {
    One(u64),
    Page { offset: u32, limit: u32 },
}

/// Cached answers kept at most (per generation).
pub const ACTIVITY_CACHE_ENTRIES_MAX: usize = 4096;

impl ActivityCache {
    pub fn new(ttl_ms: u64) -> Self {
        Self { entries: parking_lot::Mutex::new(TwoGen::new(ttl_ms.max(1), ACTIVITY_CACHE_ENTRIES_MAX)), ttl_ms }
    }

    pub fn get(&self, key: ActivityKey, now_ms: u64) -> Option<std::sync::Arc<seckill_proto::Response>> {
        if self.ttl_ms == 0 {
            return None;
        }
        let mut entries = self.entries.lock();
        entries.get(&key, now_ms).filter(|(until_ms, _)| *until_ms > now_ms).map(|(_, r)| r.clone())
    }

    pub fn put(&self, key: ActivityKey, resp: std::sync::Arc<seckill_proto::Response>, now_ms: u64) {
        if self.ttl_ms == 0 {
            return;
        }
        self.entries.lock().insert(key, (now_ms + self.ttl_ms, resp), now_ms);
    }
}

#[cfg(test)]
mod bounded_tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn two_generations_stay_bounded_and_keep_recent_entries() {
        let mut m: TwoGen<u64, u64> = TwoGen::new(1_000, 4);
        for k in 0..100 {
            m.insert(k, k, 0);
            assert!(m.len() <= 8);
        }
        assert_eq!(m.get(&99, 0), Some(&99));
        assert_eq!(m.get(&99, 1_000), Some(&99), "one window later, still in the older generation");
        assert_eq!(m.get(&99, 2_000), None, "two windows later, forgotten");
    }

    #[test]
    fn connections_per_ip_are_capped_and_released() {
        let c = ConnectionsPerIp::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b: IpAddr = "10.0.0.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let s1 = c.open(a);
        let s2 = c.open(a);
        assert!(s1.is_some() && s2.is_some());
        assert!(c.open(a).is_none(), "the third from one address is refused");
        assert!(c.open(b).is_some(), "others are not");
        drop(s1);
        assert!(c.open(a).is_some(), "a closed connection frees its slot");
        // Addresses of one IPv6 /64 count together.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap_or(a);
        let v6b: IpAddr = "2001:db8::ffff:1".parse().unwrap_or(a);
        assert_eq!(IpKey::of(v6a), IpKey::of(v6b));
        assert_ne!(IpKey::of(v6a), IpKey::of(a));
    }

    #[test]
    fn ip_buckets_allow_bursts_then_refill() {
        let b = IpBuckets::new(5);
        let ip = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..10 {
            assert!(b.take(ip, 0).is_ok());
        }
        assert_eq!(b.take(ip, 0), Err(1));
        assert!(b.take(IpAddr::from([10, 0, 0, 2]), 0).is_ok());
        assert!(b.take(ip, 200).is_ok(), "5 a second: one back after 200 ms");
        assert!(b.take(ip, 200).is_err());
    }

    #[test]
    fn activity_cache_entries_expire() {
        let c = ActivityCache::new(1_000);
        let k = ActivityKey::One(7);
        assert!(c.get(k, 0).is_none());
        c.put(k, std::sync::Arc::new(seckill_proto::Response::Done), 0);
        assert!(c.get(k, 999).is_some());
        assert!(c.get(k, 1_000).is_none());
    }
}
