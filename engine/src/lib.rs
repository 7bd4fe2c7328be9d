//! The seckill engine: every buy decision, made by the shard that owns the
//! buyer, against stock tokens shared by all shards.
//!
//! Architecture Invariant: `engine`'s only seckill dependency is `proto`;
//! `server`, `persist`, `replica` and `cli` depend on it, never the reverse.
//! It does no socket I/O: its sockets are `seckill-server`'s.
//!
//! # Public API
//!
//! Deliberately small: what `seckill-server`, `cli`, `persist`, `replica`,
//! the benches, the fuzz targets and the tests need, and why each part is
//! public. An item no other crate needs is `pub(crate)` or in a private module.
//!
//! * **Running an engine** — [`node::Node`] (`Node::open`: lock a data dir,
//!   recover, start the WAL and the shards) with [`node::NodeConfig`] and
//!   [`node::NodeError`], [`EngineConfig`], [`Clock`]/[`SystemClock`]; the
//!   handle [`Engine`]: `try_submit` an [`Envelope`] whose answer comes back
//!   on its [`ReplyTx`] (a connection writer's channel or, under `seckill
//!   up`, a callback into the HTTP task), and the operator's control path with
//!   [`ActivitySpec`], [`ActivityChanges`], [`AdminError`].
//! * **The data the log carries** — [`Event`], [`Activity`], [`Product`],
//!   [`Order`]; [`replica::Replica`] (the whole state rebuilt from events,
//!   with [`replica::ReplicaError`]) and [`purchases::Purchases`]. The MySQL
//!   and Redis consumers in `persist` and a replica group's state machine
//!   apply them. (`ActivityStatus` and the other shared enums are `proto`'s.)
//! * **The log** — [`wal`]: `Wal`/`WalConfig`, `Durability`, `OnFailure`,
//!   `WalStatus`, `Checkpoints` and `Snapshotter` for the binary and the
//!   operator's commands; `tail::Tailer` and `rebuild` for consumers;
//!   `repair` for `seckill repair-wal`; `segment`, `snapshot` and `codec`
//!   for the fuzz targets, a replica group's log and the WAL benchmarks;
//!   `os_fs` and the [`wal::Fs`] seam every file operation goes through.
//! * **Operator figures** — [`ActivityStats`] and [`BuyOutcome`] (names via
//!   `BuyOutcome::NAMES`), read by `/metrics` and the dashboard; [`StatsHook`]
//!   and [`WarmupHook`], the seams that plug MySQL and Redis into the
//!   operator's `stats`, `warmup` and `verify`.
//! * **A replica group's leader** (`seckill-replica`) — `Sink::Replicated`
//!   (batches to the replicator thread the replica crate owns) and
//!   `Engine::from_replica` (shards from the group's applied state);
//!   `Engine::close` stops the shards before the replicator drains.
//! * **The decision core, for tests and benches** — [`ShardState`] (decides
//!   with no threads and no I/O), [`Batch`] and [`Sink`] (how answers are
//!   released), [`Reply`], [`StockPool`], [`shard_of_user`], [`BATCH_MAX`]:
//!   the model tests and the `decide` benchmarks drive them directly.
//! * **Limits** — [`limits`]: the bounds and defaults the binary's flags
//!   default to or check (the ones only the engine checks are private).
//!
//! Feature `sim` (off by default; the engine's own tests turn it on through a
//! dev-dependency on themselves) adds the simulated disk and clock:
//! `wal::sim_fs` (`SimFs`, `Fault`), `wal::overlay` with `wal::Override`,
//! `LogFile` and `ReadFile` (one replaced file operation over a real disk),
//! and `ManualClock`.
//!
//! Everything else (the shard threads, the WAL writer, the snapshot thread,
//! per-shard counters, the archived form of events) is private, so it can
//! change without touching another crate.

mod activity;
mod clock;
mod commit;
mod engine;
mod event;
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

pub use activity::{Activity, ActivityChanges, Product};
#[cfg(any(test, feature = "sim"))]
pub use clock::ManualClock;
pub use clock::{Clock, SystemClock};
pub use commit::{Batch, Reply, ReplyTx, Sink};
pub use engine::{shard_of_user, ActivitySpec, AdminError, Engine, EngineConfig};
pub use event::Event;
pub use hooks::{StatsHook, WarmupHook};
pub use order::Order;
pub use shard::{Envelope, ShardState, BATCH_MAX};
pub use stats::{ActivityStats, BuyOutcome};
pub use stock::StockPool;

/// Runs an owner thread's loop; if it panics (a broken invariant), the whole
/// process stops. A dead shard or WAL writer would leave the requests queued
/// to it unanswered forever; a dead process is restarted and recovers every
/// acknowledged decision from the log (crash-only, as TigerBeetle does).
/// Public for the owner threads of other crates (the replica group's
/// replicator and releaser).
pub fn abort_on_panic(what: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        tracing::error!("{what} thread panicked: stopping the process so a restart recovers from the WAL");
        eprintln!("seckill: {what} thread panicked; aborting (restart to recover from the WAL)");
        std::process::abort();
    }
}
