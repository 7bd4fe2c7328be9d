//! The Redis mirror: a read-only copy of engine state in Redis plus an
//! event stream, for other services (docs/REDIS.md is their contract).
//!
//! It tails the WAL like the persister and writes each batch of records to
//! Redis as one MULTI/EXEC pipeline: the changed hashes (coalesced: each key
//! once), buyers' units by increments, one stream entry per order event, and
//! `{prefix}mirror:lsn` (order hashes only with `order_hashes`). It keeps no
//! copy of the orders: between batches it holds the catalog and
//! per-activity counters only; a status change's record says what the
//! order was. When Redis lost data (the LSN key is
//! gone, the run id changed, the LSN went back) or fell further behind than
//! the WAL budget, it rewrites Redis (a resync) from the engine's state,
//! built for the occasion from the newest snapshot plus the WAL and dropped
//! afterwards, and goes on.
//!
//! The WAL-consumer driver (`crate::consumer`) runs it on its own thread
//! with a one-thread tokio runtime, as it runs the persister. Nothing it
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
//! );
//! println!("mirror behind by {} records", mirror.lag_records());
//! mirror.shutdown(redis::SHUTDOWN_DRAIN);
//! # Ok(()) }
//! ```

mod keys;
mod mirror;
mod resp;
mod state;

use crate::consumer::{self, Batching, Start};
use crate::{redact_url, BackendUrl};
use seckill_engine::replica::Replica;
use seckill_engine::wal::{Checkpoints, WalStatus};
use seckill_engine::{Clock, SystemClock};
use std::path::PathBuf;
use std::sync::Arc;

/// The name the mirror's WAL checkpoint is registered under.
pub const CHECKPOINT: &str = "mirror";

/// How the mirror runs. `MirrorConfig::new(url)` has the defaults.
#[derive(Clone)]
pub struct MirrorConfig {
    /// `redis://[:password@]host:port[/db]`.
    pub url: BackendUrl,
    /// Put before every key (default `seckill:`). One engine per prefix.
    pub prefix: String,
    /// Whether each order also gets a hash `{prefix}order:{id}` (default
    /// off: the `created` entry of the event stream carries every field the
    /// hash had, and reads by id go to the HTTP API or MySQL). A key per
    /// order is the most expensive thing the mirror asks of Redis
    /// (docs/REDIS.md, "Order hashes"). When off, a resync deletes the
    /// order hashes an earlier run wrote.
    pub order_hashes: bool,
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
    /// activity whose buyers gave units back, an AOF write and fsync) and the mirror a WAL read and a
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
            url: BackendUrl::new(url),
            prefix: "seckill:".into(),
            order_hashes: false,
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

/// The Redis the mirror writes to unless told otherwise (`--redis-url`).
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

impl Default for MirrorConfig {
    fn default() -> Self {
        Self::new(DEFAULT_URL)
    }
}

impl std::fmt::Debug for MirrorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorConfig")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("order_hashes", &self.order_hashes)
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

/// The running mirror (see [`crate::consumer::Handle`]: `shutdown(drain)`
/// drains, dropping it stops without draining; both wait for the thread).
pub type MirrorHandle = crate::consumer::Handle;
/// A read-only window on the mirror's figures.
pub type MirrorView = crate::consumer::View;
/// What the mirror reports (`MirrorView::stats`).
pub type MirrorStats = crate::consumer::Stats;

/// How long `seckill` lets the mirror drain at shutdown.
pub const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

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
) -> MirrorHandle {
    let given = match source {
        ReplicaSource::Given(r) => Some(*r),
        ReplicaSource::Snapshots => None,
    };
    let batching = Batching {
        records_max: cfg.batch_records_max,
        open_ms: 0,
        idle_poll_ms: cfg.batch_ms,
        coalesce_records: cfg.coalesce_records,
        backoff_max_ms: cfg.backoff_max_ms,
        wal_budget_records: cfg.wal_budget_records,
    };
    let target = mirror::Redis::new(cfg, data_dir.clone(), status.clone());
    consumer::spawn(target, batching, Start { applied: None, given }, data_dir, status, checkpoints)
}
