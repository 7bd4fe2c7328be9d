//! Seams through which the binary plugs downstream consumers (MySQL, Redis)
//! into the operator's commands without `engine` depending on them.

use serde_json::Value;
use std::sync::Arc;

/// A consumer's figures for `stats` (lag, errors), as JSON.
pub type StatsHook = Arc<dyn Fn() -> Value + Send + Sync>;

/// What `warmup` and `verify` call: the JSON report, or why it failed.
pub type WarmupHook = Arc<dyn Fn() -> Result<Value, String> + Send + Sync>;
