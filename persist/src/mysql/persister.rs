//! The persister: MySQL as a target of the WAL-consumer driver
//! (`crate::consumer`, which tails, batches, retries with backoff, holds
//! the checkpoint and resyncs). Here: connecting, the batch and resync
//! writes (`apply`), the checkpoint hint file.

use super::apply;
use super::schema;
use crate::consumer::{self, wall_ms, Batching, Failure, Names, Opened, Start, Target};
use crate::BackendUrl;
use seckill_engine::replica::Replica;
use seckill_engine::wal::{Checkpoints, WalStatus};
use seckill_engine::Event;
use sqlx::MySqlConnection;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The name under which the persister registers its WAL checkpoint.
pub const CHECKPOINT_NAME: &str = "persister";

/// A local note of the last LSN committed to MySQL, so the WAL is held from
/// there at once on start, before MySQL answers (it may be down).
const HINT_FILE: &str = "persister.checkpoint";

#[derive(Clone, Debug)]
pub struct PersistConfig {
    /// `mysql://user[:password]@host:port/database`.
    pub url: BackendUrl,
    /// A batch closes at this many records…
    pub batch_records_max: usize,
    /// …or this long after its first record arrived.
    pub batch_ms: u64,
    /// Retries after a failure wait 100 ms, doubling up to this.
    pub backoff_max_ms: u64,
    /// How often an idle persister looks for new durable records.
    pub idle_poll_ms: u64,
    /// A batch (or a connection attempt) that takes longer counts as MySQL
    /// being down: the connection is dropped and the batch retried.
    pub batch_timeout_ms: u64,
    /// Records MySQL may fall behind (down, slow, or the persister halted)
    /// before the persister stops holding WAL for it; when MySQL is back it
    /// is rebuilt from the engine's state (resync) instead of replayed.
    /// Bounds the WAL a MySQL outage can pin (about 128 bytes a record).
    pub wal_budget_records: u64,
}

impl PersistConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: BackendUrl::new(url),
            batch_records_max: 5000,
            batch_ms: 50,
            backoff_max_ms: 5000,
            idle_poll_ms: 5,
            batch_timeout_ms: 30_000,
            wal_budget_records: 2_000_000,
        }
    }
}

impl Default for PersistConfig {
    fn default() -> Self {
        Self::new(schema::DEFAULT_URL)
    }
}

/// The running persister (see [`crate::consumer::Handle`]: `shutdown(drain)`
/// drains, dropping it stops without draining; both wait for the thread).
pub type PersisterHandle = crate::consumer::Handle;

/// MySQL as a target of the WAL-consumer driver.
struct MySql {
    cfg: PersistConfig,
    data_dir: PathBuf,
    conn: Option<MySqlConnection>,
    /// The statement size under this server's `max_allowed_packet`.
    stmt_bytes: usize,
}

impl MySql {
    /// A batch (or a connection attempt) that takes longer counts as MySQL
    /// being down.
    fn limit(&self) -> Duration {
        Duration::from_millis(self.cfg.batch_timeout_ms.max(1000))
    }

    fn conn(&mut self) -> Result<&mut MySqlConnection, Failure> {
        self.conn.as_mut().ok_or_else(|| Failure::Transient("not connected to MySQL".into()))
    }
}

impl Target for MySql {
    const NAMES: Names = Names {
        thread: "persister",
        what: "persister",
        checkpoint: CHECKPOINT_NAME,
        kind: "mysql",
        halt_hint: "To rebuild MySQL from the engine's state run: UPDATE persist_checkpoint SET resync_requested = 1",
        errors_total: "seckill_persister_errors_total",
        records_total: "seckill_persister_records_total",
        batches_total: "seckill_persister_batches_total",
        resyncs_total: "seckill_persister_resyncs_total",
        restarts_total: "seckill_persister_restarts_total",
        budget_exceeded_total: "seckill_persister_budget_exceeded_total",
        lag_records: "seckill_persister_lag_records",
        applied_lsn: "seckill_persister_applied_lsn",
        halted: "seckill_persister_halted",
        connected: "seckill_persister_connected",
        batch_seconds: "seckill_persister_batch_seconds",
        lag_seconds_gauge: Some("seckill_persister_lag_seconds"),
        lag_seconds_histogram: None,
    };

    /// Connects, applies the migrations, reads the checkpoint.
    async fn open(&mut self) -> Result<Opened, Failure> {
        self.conn = None;
        let limit = self.limit();
        let url = self.cfg.url.as_str().to_owned();
        timed(limit, "the migrations", async { schema::migrate(&url).await.map_err(transient) }).await?;
        let opts = schema::options(&url).map_err(|e| Failure::Fatal(format!("{e:#}")))?;
        let conn = self.conn.insert(schema::connect(&opts).await.map_err(transient)?);
        let (lsn, flagged) = timed(limit, "reading the checkpoint", apply::read_checkpoint(conn)).await?;
        self.stmt_bytes = timed(limit, "reading max_allowed_packet", apply::read_statement_bytes(conn)).await?;
        Ok(Opened { lsn: Some(lsn), resync_flagged: flagged, resumed: false })
    }

    async fn apply(&mut self, after: u64, batch: &[(u64, Event)]) -> Result<u64, Failure> {
        let (limit, stmt_bytes) = (self.limit(), self.stmt_bytes);
        let conn = self.conn()?;
        timed(limit, "a batch", apply::write_batch(conn, after, batch, wall_ms(), stmt_bytes)).await
    }

    async fn resync(&mut self, replica: &Replica) -> Result<u64, Failure> {
        let (limit, stmt_bytes) = (self.limit() * 10, self.stmt_bytes);
        let conn = self.conn()?;
        timed(limit, "the resync", apply::write_full_state(conn, replica, wall_ms(), stmt_bytes)).await
    }

    async fn resync_flagged(&mut self) -> bool {
        let Ok(opts) = schema::options(self.cfg.url.as_str()) else {
            return false;
        };
        match schema::connect(&opts).await {
            Ok(mut conn) => matches!(apply::read_checkpoint(&mut conn).await, Ok((_, true))),
            Err(_) => false,
        }
    }

    fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Notes the LSN in the data dir, so a restart holds the WAL from
    /// there before MySQL answers.
    fn committed(&mut self, lsn: u64) {
        if let Err(e) = write_private(&self.data_dir.join(HINT_FILE), format!("{lsn}\n").as_bytes()) {
            tracing::debug!(error = %e, "could not write the persister's checkpoint hint");
        }
    }

    fn ahead(&self, lsn: u64, durable: u64) -> String {
        format!(
            "MySQL's checkpoint is LSN {lsn} but this engine's log ends at LSN {durable}: the database holds \
             another data dir's records (or was edited). Point --mysql-url at a fresh database, or rebuild this \
             one from the engine: UPDATE persist_checkpoint SET resync_requested = 1"
        )
    }
}

/// Starts the persister on its own thread (with its own small tokio
/// runtime; the engine needs none). It registers its WAL checkpoint at once
/// (the last LSN this data dir knows MySQL has, else 0), so no record it
/// still needs is deleted, then connects, applies migrations, reads its
/// checkpoint from MySQL and tails from there. Never blocks the caller.
pub fn spawn(
    cfg: PersistConfig,
    data_dir: PathBuf,
    status: Arc<WalStatus>,
    checkpoints: Arc<Checkpoints>,
) -> PersisterHandle {
    let durable = status.durable_lsn.load(std::sync::atomic::Ordering::Acquire);
    let hint = read_hint(&data_dir).filter(|h| *h <= durable).unwrap_or(0);
    let batching = Batching {
        records_max: cfg.batch_records_max,
        open_ms: cfg.batch_ms,
        idle_poll_ms: cfg.idle_poll_ms,
        coalesce_records: 0,
        backoff_max_ms: cfg.backoff_max_ms,
        wal_budget_records: cfg.wal_budget_records,
    };
    let target = MySql { cfg, data_dir: data_dir.clone(), conn: None, stmt_bytes: 0 };
    consumer::spawn(target, batching, Start { applied: Some(hint), given: None }, data_dir, status, checkpoints)
}

fn read_hint(data_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(data_dir.join(HINT_FILE)).ok()?.trim().parse().ok()
}

fn transient(e: impl std::fmt::Display) -> Failure {
    Failure::Transient(format!("{e:#}"))
}

async fn timed<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Transient(format!("MySQL did not finish {what} within {} s", limit.as_secs_f64()))),
    }
}

/// `std::fs::write`, but a new file is 0600 like every file in the data dir.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path)?.write_all(bytes)
}

/// The persister's checkpoint in MySQL: every record up to it is applied.
pub async fn checkpoint(url: &str) -> anyhow::Result<u64> {
    let mut conn = schema::connect(&schema::options(url)?).await?;
    let (lsn, _) = apply::read_checkpoint(&mut conn).await.map_err(|f| anyhow::anyhow!("{f}"))?;
    Ok(lsn)
}

/// Applies `records` (LSNs `after_lsn + 1 ..`, consecutive) as one batch,
/// exactly as the persister does. Changes nothing and fails when MySQL's
/// checkpoint is not `after_lsn` (applied already, or a gap). For tools and
/// tests; a running persister does this itself.
pub async fn apply_records(url: &str, after_lsn: u64, records: &[(u64, Event)]) -> anyhow::Result<u64> {
    for (i, (lsn, _)) in records.iter().enumerate() {
        anyhow::ensure!(*lsn == after_lsn + 1 + i as u64, "records must be LSNs {}.. in order", after_lsn + 1);
    }
    let mut conn = schema::connect(&schema::options(url)?).await?;
    let stmt_bytes = apply::read_statement_bytes(&mut conn).await.map_err(|f| anyhow::anyhow!("{f}"))?;
    apply::write_batch(&mut conn, after_lsn, records, wall_ms(), stmt_bytes).await.map_err(|f| anyhow::anyhow!("{f}"))
}
