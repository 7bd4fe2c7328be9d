//! The seckill engine: every buy decision, made by the shard that owns the
//! buyer, against stock tokens shared by all shards.
//!
//! Architecture Invariant: `engine` never depends on `front` or `persist`;
//! they depend on it (or only on `proto`).

pub mod activity;
pub mod client;
pub mod clock;
pub mod commit;
pub mod engine;
pub mod event;
pub mod node;
pub mod order;
pub mod purchases;
pub mod replica;
pub mod server;
pub mod shard;
pub mod stock;
pub mod wal;

pub use activity::{Activity, ActivityStatus, Product};
pub use clock::{Clock, ManualClock, SystemClock};
pub use commit::{Batch, Sink};
pub use engine::{ActivitySpec, AdminError, Engine, EngineConfig};
pub use event::Event;
pub use order::Order;
pub use shard::{Envelope, ShardState};
pub use stock::StockPool;
