//! The MySQL persister: WAL → MySQL in batches, exactly once, surviving
//! outages of either side; plus `migrate`, `warmup` and `verify` (and
//! `probe` / `recreate` for `seckill demo`).
//! docs/PERSISTENCE.md has the tables and the arguments.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn f(node: seckill_engine::node::Node) {
//! use seckill_persist::mysql::{spawn, PersistConfig};
//! let persister = spawn(
//!     PersistConfig::new("mysql://root@127.0.0.1:3306/seckill"),
//!     node.data_dir.clone(),
//!     node.wal.status.clone(),
//!     node.wal.checkpoints.clone(),
//! );
//! // … serve …
//! persister.shutdown(std::time::Duration::from_secs(5));
//! # }
//! ```

mod apply;
mod persister;
mod schema;
mod verify;
mod warmup;

pub use persister::{apply_records, checkpoint, spawn, PersistConfig, PersisterHandle, CHECKPOINT_NAME};
pub use schema::{migrate, probe, recreate, DEFAULT_URL, MIGRATOR};
pub use verify::verify;
pub use warmup::{warmup, warmup_hook, WarmupReport};
