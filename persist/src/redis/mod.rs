//! The Redis mirror: a read-only copy of engine state in Redis plus an
//! event stream, for other services (docs/REDIS.md is their contract).
//!
//! It tails the WAL like the persister and writes each batch of records to
//! Redis as one MULTI/EXEC pipeline: the changed hashes (coalesced: each key
//! once), buyers' units by increments, one stream entry per order event, and
//! `{prefix}mirror:lsn`. It keeps no copy of the orders: between batches it
//! holds the catalog and per-activity counters only, and reads what a batch
//! needs about older orders from Redis. When Redis lost data (the LSN key is
//! gone, the run id changed, the LSN went back) or fell further behind than
//! the WAL budget, it rewrites Redis (a resync) from the engine's state,
//! built for the occasion from the newest snapshot plus the WAL and dropped
//! afterwards, and goes on.
//!
//! It runs on its own thread with a one-thread tokio runtime. Nothing it
//! does can block the engine: it only reads the WAL, and Redis being slow
//! or down only makes it lag.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn main() -> std::io::Result<()> {
//! # let node: seckill_engine::node::Node = unimplemented!();
//! use seckill_persist::redis::{self, MirrorConfig, ReplicaSource};
//! let mirror = redis::spawn(
//!     MirrorConfig::new("redis://127.0.0.1:6379"),
//!     node.data_dir.clone(),
//!     node.wal.status.clone(),
//!     node.wal.checkpoints.clone(),
//!     ReplicaSource::Snapshots,
//! )?;
//! println!("mirror behind by {} records", mirror.lag_records());
//! mirror.shutdown();
//! # Ok(()) }
//! ```

mod keys;
mod mirror;
mod resp;
mod state;

use crate::redact_url;
use seckill_engine::replica::Replica;
use seckill_engine::wal::{Checkpoints, WalStatus};
use seckill_engine::{Clock, SystemClock};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// The name the mirror's WAL checkpoint is registered under.
pub const CHECKPOINT: &str = "mirror";

/// How the mirror runs. `MirrorConfig::new(url)` has the defaults.
#[derive(Clone)]
pub struct MirrorConfig {
    /// `redis://[:password@]host:port[/db]`.
    pub url: String,
    /// Put before every key (default `seckill:`). One engine per prefix.
    pub prefix: String,
    /// Records written per MULTI/EXEC at most.
    pub batch_records_max: usize,
    /// How long the mirror sleeps when the WAL has nothing new: a record is
    /// in Redis about this long (plus one Redis round trip) after it is
    /// durable. Records that arrive during a write are coalesced into the
    /// next batch, so batches grow with load without waiting longer.
    pub batch_ms: u64,
    /// A batch of fewer records than this is followed by a nap of
    /// `batch_ms` too, so that under a steady load the next batch holds
    /// what arrived meanwhile: each batch costs Redis a fixed part (the
    /// transaction, the fence, the activity hashes, one script call per
    /// activity, an AOF write and fsync) and the mirror a WAL read and a
    /// round trip. A record then waits at most `batch_ms` more.
    pub coalesce_records: usize,
    /// `XADD … MAXLEN ~ stream_maxlen`: entries kept in the event stream.
    pub stream_maxlen: u64,
    /// Records the mirror may fall behind before it stops holding WAL for
    /// Redis (and resyncs from snapshot + WAL when Redis is back).
    pub wal_budget_records: u64,
    /// While idle, how often the mirror checks that Redis still has the
    /// mirror (a FLUSHDB or a Redis restart is repaired within this).
    pub check_ms: u64,
    /// Limit of one Redis round trip; past it the connection is dropped.
    pub op_timeout_ms: u64,
    /// Reconnect delays double from 100 ms up to this.
    pub backoff_max_ms: u64,
    /// Keys written per pipeline during a resync.
    pub resync_chunk: usize,
    /// Time for the `phase` field (upcoming/ongoing/ended). Give it the
    /// engine's clock.
    pub clock: Arc<dyn Clock>,
}

impl MirrorConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "seckill:".into(),
            batch_records_max: 1000,
            batch_ms: 5,
            coalesce_records: 250,
            stream_maxlen: 1_000_000,
            wal_budget_records: 2_000_000,
            check_ms: 1000,
            op_timeout_ms: 5000,
            backoff_max_ms: 5000,
            resync_chunk: 1000,
            clock: Arc::new(SystemClock),
        }
    }
}

impl Default for MirrorConfig {
    fn default() -> Self {
        Self::new("redis://127.0.0.1:6379")
    }
}

impl std::fmt::Debug for MirrorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorConfig")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("batch_records_max", &self.batch_records_max)
            .field("batch_ms", &self.batch_ms)
            .field("coalesce_records", &self.coalesce_records)
            .field("stream_maxlen", &self.stream_maxlen)
            .field("wal_budget_records", &self.wal_budget_records)
            .field("check_ms", &self.check_ms)
            .field("op_timeout_ms", &self.op_timeout_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field("resync_chunk", &self.resync_chunk)
            .finish_non_exhaustive()
    }
}

/// Where the state for the mirror's first resync comes from (it is built,
/// written to Redis and dropped; later resyncs always use `Snapshots`).
pub enum ReplicaSource {
    /// The newest snapshot under `<data_dir>/snapshots` (none: empty),
    /// then the WAL after it. Needs nothing from the caller.
    Snapshots,
    /// A replica the caller already has (e.g. the one recovery built),
    /// then the WAL after its LSN. If the WAL after it is gone, the mirror
    /// falls back to `Snapshots`.
    Given(Box<Replica>),
}

/// What the mirror reports; `MirrorHandle::stats` returns one.
#[derive(Clone, Debug, PartialEq)]
pub struct MirrorStats {
    /// Everything up to this LSN is in Redis.
    pub applied_lsn: u64,
    /// Durable records not yet in Redis.
    pub lag_records: u64,
    /// Age of the oldest record not yet in Redis, in ms (0: caught up).
    pub lag_ms: u64,
    /// p99 of the last 4096 lag samples (one per durable LSN the mirror
    /// saw, taken when Redis had it), in ms.
    pub lag_p99_ms: u64,
    pub connected: bool,
    /// True while Redis must be rewritten from the engine's state (after
    /// data loss, at start, or past the WAL budget).
    pub resync_pending: bool,
    pub resyncs: u64,
    /// Batches written (one `MULTI/EXEC` each) since start: records over
    /// batches is the batch size.
    pub batches: u64,
    pub last_error: Option<String>,
}

impl MirrorStats {
    /// The `mirror` object of the admin `stats` command.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "applied_lsn": self.applied_lsn,
            "lag_records": self.lag_records,
            "lag_ms": self.lag_ms,
            "lag_p99_ms": self.lag_p99_ms,
            "connected": self.connected,
            "resync_pending": self.resync_pending,
            "resyncs": self.resyncs,
            "batches": self.batches,
            "last_error": self.last_error,
        })
    }
}

/// Samples of lag kept for `lag_p99_ms`.
const LAG_SAMPLES: usize = 4096;

/// State the mirror thread publishes to the handle.
#[derive(Default)]
pub(crate) struct Shared {
    stop: AtomicBool,
    applied_lsn: AtomicU64,
    /// Unix ms when the oldest record not yet in Redis was first seen durable (0: none).
    oldest_unapplied_ms: AtomicU64,
    connected: AtomicBool,
    resync_pending: AtomicBool,
    resyncs: AtomicU64,
    batches: AtomicU64,
    last_error: Mutex<Option<String>>,
    lag_samples_ms: Mutex<VecDeque<u64>>,
}

/// A lock that a panicked holder did not poison for good.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wall-clock Unix milliseconds (lag is measured in real time, whatever
/// clock the engine runs on).
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Shared {
    fn record_lag(&self, ms: u64) {
        let mut s = lock(&self.lag_samples_ms);
        if s.len() == LAG_SAMPLES {
            s.pop_front();
        }
        s.push_back(ms);
    }
}

/// The running mirror. Dropping it stops the thread (like `shutdown`).
/// Its figures are read through [`MirrorView`] (it derefs to one).
pub struct MirrorHandle {
    view: MirrorView,
    thread: Option<JoinHandle<()>>,
}

impl std::ops::Deref for MirrorHandle {
    type Target = MirrorView;
    fn deref(&self) -> &MirrorView {
        &self.view
    }
}

/// A read-only window on a running mirror's figures, cheap to clone and
/// to hand to `stats` and metrics.
#[derive(Clone)]
pub struct MirrorView {
    shared: Arc<Shared>,
    status: Arc<WalStatus>,
}

impl MirrorHandle {
    pub fn view(&self) -> MirrorView {
        self.view.clone()
    }

    /// Stops the mirror: it first writes what is durable (for up to two
    /// seconds, if Redis is there), then gives up its WAL checkpoint and
    /// the thread ends. Call it after the engine stopped (`Node::shutdown`)
    /// so the last records reach Redis.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.view.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl MirrorView {
    /// The last LSN whose effects are in Redis.
    pub fn applied_lsn(&self) -> u64 {
        self.shared.applied_lsn.load(Ordering::Acquire)
    }

    /// Durable records not yet in Redis.
    pub fn lag_records(&self) -> u64 {
        self.status.durable_lsn.load(Ordering::Acquire).saturating_sub(self.applied_lsn())
    }

    /// How long the oldest record not yet in Redis has waited, in ms,
    /// measured from when the mirror first saw it durable (it looks every
    /// loop turn: `batch_ms` when idle, one Redis write when busy).
    pub fn lag_ms(&self) -> u64 {
        if self.lag_records() == 0 {
            return 0;
        }
        match self.shared.oldest_unapplied_ms.load(Ordering::Acquire) {
            0 => 0,
            t => wall_ms().saturating_sub(t),
        }
    }

    /// p99 of the last 4096 lag samples, in ms (see `MirrorStats::lag_p99_ms`).
    pub fn lag_p99_ms(&self) -> u64 {
        let mut v: Vec<u64> = lock(&self.shared.lag_samples_ms).iter().copied().collect();
        if v.is_empty() {
            return 0;
        }
        v.sort_unstable();
        v[((v.len() * 99).div_ceil(100)).saturating_sub(1)]
    }

    /// What went wrong most recently, while it still does: cleared once
    /// Redis takes writes again.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.last_error).clone()
    }

    pub fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Full rewrites of Redis so far (the first one is at start).
    pub fn resyncs(&self) -> u64 {
        self.shared.resyncs.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> MirrorStats {
        MirrorStats {
            applied_lsn: self.applied_lsn(),
            lag_records: self.lag_records(),
            lag_ms: self.lag_ms(),
            lag_p99_ms: self.lag_p99_ms(),
            connected: self.connected(),
            resync_pending: self.shared.resync_pending.load(Ordering::Acquire),
            resyncs: self.resyncs(),
            batches: self.shared.batches.load(Ordering::Acquire),
            last_error: self.last_error(),
        }
    }
}

impl Drop for MirrorHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether Redis at `url` answers PING within `timeout`: for a start-up
/// line such as "Redis mirror: redis://… unreachable, will keep trying".
/// The mirror does not need it; it retries on its own.
pub fn probe(url: &str, timeout: std::time::Duration) -> Result<(), String> {
    let client = ::redis::Client::open(url).map_err(|e| format!("bad Redis URL {}: {e}", redact_url(url)))?;
    let mut conn = client.get_connection_with_timeout(timeout).map_err(|e| format!("{}: {e}", redact_url(url)))?;
    conn.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    ::redis::cmd("PING").query::<String>(&mut conn).map(|_| ()).map_err(|e| format!("{}: {e}", redact_url(url)))
}

/// Starts the mirror on its own thread. Returns at once: Redis is
/// connected and resynced in the background. A bad URL or an
/// unreachable Redis is not an error here; it shows in `last_error` and
/// the mirror keeps trying.
pub fn spawn(
    cfg: MirrorConfig,
    data_dir: PathBuf,
    status: Arc<WalStatus>,
    checkpoints: Arc<Checkpoints>,
    source: ReplicaSource,
) -> std::io::Result<MirrorHandle> {
    let shared = Arc::new(Shared::default());
    shared.resync_pending.store(true, Ordering::Release);
    // Exported at 0 from the start, so dashboards have a series before the first failure.
    metrics::counter!("seckill_mirror_errors_total").absolute(0);
    metrics::counter!("seckill_mirror_records_total").absolute(0);
    let (sh, st) = (shared.clone(), status.clone());
    let thread = std::thread::Builder::new()
        .name("redis-mirror".into())
        .spawn(move || mirror::run(cfg, data_dir, st, checkpoints, source, sh))?;
    Ok(MirrorHandle { view: MirrorView { shared, status }, thread: Some(thread) })
}
