//! The seckill engine: every buy decision, made by the shard that owns the
//! buyer, against stock tokens shared by all shards.
//!
//! Architecture Invariant: `engine` never depends on `front`, `persist` or
//! `server`; they depend on it (or only on `proto`). It does no socket I/O:
//! its sockets are `seckill-server`'s.
//!
//! # Public API
//!
//! What other crates may use, and why each part is public:
//!
//! * **Running an engine** — [`node::Node`] (`Node::open`: lock a data dir,
//!   recover, start the WAL and the shards) with [`node::NodeConfig`],
//!   [`EngineConfig`], [`Clock`]/[`SystemClock`]/[`ManualClock`]; the handle
//!   [`Engine`] (`try_submit` an [`Envelope`] whose answer comes back on a
//!   [`ReplyTx`]; the operator's control path with [`ActivitySpec`],
//!   [`ActivityChanges`], [`AdminError`]). Used by `seckill-server`, `cli`,
//!   the benches and the fuzz targets.
//! * **The data the log carries** — [`Event`], [`Activity`], [`Product`],
//!   [`Order`], [`ActivityStatus`]; [`replica::Replica`] (the whole state
//!   rebuilt from events) and [`purchases::Purchases`]. The MySQL and Redis
//!   consumers in `persist` apply them.
//! * **The log itself** — [`wal`]: `Wal`/`WalConfig`, `Durability`,
//!   `WalStatus`, `Checkpoints` and `Snapshotter` for operators, `tail` for
//!   consumers, `repair` for `seckill repair-wal`, `snapshot`/`segment`/`codec`
//!   for the consumers' resync and the fuzz targets, and the file-system seam
//!   `fs` (`Fs`, `overlay`) with `sim_fs` that the power-loss and disk-fault
//!   tests put under it.
//! * **Operator figures** — [`ActivityStats`], [`BuyOutcome`] and their
//!   names, read by the `/metrics` exporter and the dashboard; [`StatsHook`]
//!   and [`WarmupHook`], the seams that plug MySQL and Redis into operator
//!   commands.
//! * **A replica group's leader** (`seckill-replica`) —
//!   `Sink::Replicated` (batches to a replicator thread the replica crate
//!   owns) and `Engine::from_replica` (shards from the group's applied
//!   state); `Engine::close` stops the shards before the replicator drains.
//! * **The decision core, for tests and benches** — [`ShardState`] (decides
//!   with no threads and no I/O), [`Batch`] and [`Sink`] (how answers are
//!   released), [`Reply`], [`StockPool`], [`shard_of_user`], [`BATCH_MAX`]:
//!   the model tests and the `decide` benchmarks drive them directly.
//! * **Limits** — [`limits`]: the ones the binary's flags default to or check.
//!
//! Everything else (the shard threads, the WAL writer, the snapshot thread,
//! per-shard counters, the limits only the engine checks) is private, so it
//! can change without touching another crate.

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
mod stats;
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
pub use stats::{ActivityStats, BuyOutcome, BUY_OUTCOMES, ORDER_STATUSES};
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
