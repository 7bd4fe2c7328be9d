//! Downstream copies of the engine's state, fed from its WAL: the MySQL
//! persister (`mysql/`) and the Redis mirror (`redis/`). Both tail the log
//! (`seckill_engine::wal::tail::Tailer`), apply records in batches, and
//! register a checkpoint so the WAL is kept until they have it: one driver
//! does all that (`consumer`), MySQL and Redis are its targets.
//!
//! Architecture Invariant: nothing here can slow or stop the engine. A
//! consumer that falls behind only lags; MySQL or Redis being down never
//! blocks a buy.

pub mod consumer;
pub mod mysql;
pub mod redact;
pub mod redis;

pub use redact::redact_url;
