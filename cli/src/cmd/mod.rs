//! One module per `seckill` subcommand.

/// Where the engine keeps its data (`--data-dir`) unless told otherwise;
/// every command that finds the engine through its data dir defaults to it.
pub const DATA_DIR_DEFAULT: &str = "./data";
/// The operator's listener (`--metrics`) of `engine`, `up`, `front` and `demo --serve`.
pub const METRICS_DEFAULT: &str = "127.0.0.1:9898";

pub mod admin;
pub mod demo;
pub mod engine;
pub mod front;
pub mod load;
pub mod migrate;
pub mod repair_wal;
pub mod replicated;
pub mod token;
pub mod up;
