//! The seckill engine: every buy decision, made by the shard that owns the
//! buyer, against stock tokens shared by all shards.
//!
//! Architecture Invariant: `engine` never depends on `front`, `persist` or
//! `server`; they depend on it (or only on `proto`). It does no socket I/O:
//! its sockets are `seckill-server`'s.
//!
//! The public API is what this file re-exports (the engine handle, its
//! configuration and operator types, the shard state and batches the tests
//! and benches drive) plus the modules other crates reach by path: `node`
//! (open a data dir), `wal` (log, snapshots, tailing, repair), `replica`,
//! `event`, `stats`, `purchases` and `limits`. Everything else is private.

mod activity;
mod clock;
mod commit;
mod engine;
pub mod event;
mod hooks;
pub mod limits;
pub mod node;
mod order;
pub mod purchases;
pub mod replica;
mod shard;
pub mod stats;
mod stock;
pub mod wal;

pub use activity::{Activity, ActivityChanges, ActivityStatus, Product};
pub use clock::{Clock, ManualClock, SystemClock};
pub use commit::{Batch, Reply, ReplyTx, Sink};
pub use engine::{
    shard_of_user, ActivitySpec, AdminError, Engine, EngineConfig, GROUP_COMMIT_WINDOW_US_DEFAULT,
    GROUP_COMMIT_WINDOW_US_MAX,
};
pub use event::Event;
pub use hooks::{StatsHook, WarmupHook};
pub use order::Order;
pub use shard::{Envelope, ShardState, BATCH_MAX};
pub use stock::StockPool;

/// Runs an owner thread's loop; if it panics (a broken invariant), the whole
/// process stops. A dead shard or WAL writer would leave the requests queued
/// to it unanswered forever; a dead process is restarted and recovers every
/// acknowledged decision from the log (crash-only, as TigerBeetle does).
pub(crate) fn abort_on_panic(what: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        tracing::error!("{what} thread panicked: stopping the process so a restart recovers from the WAL");
        eprintln!("seckill: {what} thread panicked; aborting (restart to recover from the WAL)");
        std::process::abort();
    }
}
