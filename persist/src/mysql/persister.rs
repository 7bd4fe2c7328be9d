//! The persister thread: tail the WAL, batch, write, register the
//! checkpoint; retry forever with backoff when MySQL is away.

use super::apply::{self, Failure};
use super::schema;
use seckill_engine::replica::Replica;
use seckill_engine::wal::snapshot;
use seckill_engine::wal::tail::{TailError, Tailer};
use seckill_engine::wal::{Checkpoints, WalStatus};
use seckill_engine::Event;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The name under which the persister registers its WAL checkpoint.
pub const CHECKPOINT_NAME: &str = "persister";

/// A local note of the last LSN committed to MySQL, so the WAL is held from
/// there at once on start, before MySQL answers (it may be down).
const HINT_FILE: &str = "persister.checkpoint";

#[derive(Clone)]
pub struct PersistConfig {
    /// `mysql://user[:password]@host:port/database`.
    pub url: String,
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

/// Shows the URL without its password.
impl std::fmt::Debug for PersistConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistConfig")
            .field("url", &crate::redact_url(&self.url))
            .field("batch_records_max", &self.batch_records_max)
            .field("batch_ms", &self.batch_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field("idle_poll_ms", &self.idle_poll_ms)
            .field("batch_timeout_ms", &self.batch_timeout_ms)
            .field("wal_budget_records", &self.wal_budget_records)
            .finish()
    }
}

impl PersistConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by the persister thread and its handle.
struct Shared {
    status: Arc<WalStatus>,
    applied: AtomicU64,
    last_error: Mutex<Option<String>>,
    errors: AtomicU64,
    records: AtomicU64,
    batches: AtomicU64,
    resyncs: AtomicU64,
    /// Stopped on data it cannot apply; waits for a resync request.
    halted: AtomicBool,
    connected: AtomicBool,
    stop: AtomicBool,
    /// When stopping: keep applying until caught up or this moment.
    drain_until: Mutex<Option<Instant>>,
    resync_requested: AtomicBool,
    /// Fell more than `wal_budget_records` behind: holds no WAL, and MySQL
    /// is rebuilt by a resync at the next opportunity.
    over_budget: AtomicBool,
    /// (durable LSN, when it was first seen): for `lag_seconds`.
    samples: Mutex<VecDeque<(u64, Instant)>>,
}

const SAMPLE_EVERY: Duration = Duration::from_millis(50);
const SAMPLES_MAX: usize = 200_000;

impl Shared {
    fn durable(&self) -> u64 {
        self.status.durable_lsn.load(Ordering::Acquire)
    }

    fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    fn lag_records(&self) -> u64 {
        self.durable().saturating_sub(self.applied())
    }

    fn lag_seconds(&self) -> f64 {
        let applied = self.applied();
        if self.durable() <= applied {
            return 0.0;
        }
        let samples = lock(&self.samples);
        samples.iter().find(|(lsn, _)| *lsn > applied).map_or(0.0, |(_, seen)| seen.elapsed().as_secs_f64())
    }

    /// Notes the durable LSN now (called every `SAMPLE_EVERY`).
    fn sample(&self) {
        let (applied, durable, now) = (self.applied(), self.durable(), Instant::now());
        let mut s = lock(&self.samples);
        while s.front().is_some_and(|(lsn, _)| *lsn <= applied) {
            s.pop_front();
        }
        if durable > applied {
            match s.back_mut() {
                Some((lsn, _)) if *lsn >= durable => {}
                Some((lsn, seen)) if now.duration_since(*seen) < SAMPLE_EVERY => *lsn = durable,
                _ => s.push_back((durable, now)),
            }
            if s.len() > SAMPLES_MAX {
                s.remove(1);
            }
        }
    }

    /// Past the WAL budget: let the WAL go and resync later.
    fn check_budget(&self, budget: u64, checkpoints: &Checkpoints) {
        if self.over_budget.load(Ordering::Acquire) {
            return;
        }
        let lag = self.lag_records();
        if lag > budget {
            self.over_budget.store(true, Ordering::Release);
            checkpoints.remove(CHECKPOINT_NAME);
            metrics::counter!("seckill_persister_budget_exceeded_total").increment(1);
            tracing::warn!(
                lag_records = lag,
                budget = budget,
                "persister is past its WAL budget: it no longer holds WAL for MySQL; MySQL will be rebuilt from \
                 the engine's state (resync) when it can be written again"
            );
        }
    }

    fn publish(&self) {
        metrics::gauge!("seckill_persister_lag_records").set(self.lag_records() as f64);
        metrics::gauge!("seckill_persister_lag_seconds").set(self.lag_seconds());
        metrics::gauge!("seckill_persister_applied_lsn").set(self.applied() as f64);
        metrics::gauge!("seckill_persister_halted").set(if self.halted.load(Ordering::Acquire) { 1.0 } else { 0.0 });
    }

    fn fail(&self, kind: &'static str, message: &str) {
        self.errors.fetch_add(1, Ordering::AcqRel);
        metrics::counter!("seckill_persister_errors_total", "kind" => kind).increment(1);
        *lock(&self.last_error) = Some(message.to_string());
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Stop now: asked to, and caught up or out of drain time.
    fn should_exit(&self) -> bool {
        if !self.stop_requested() {
            return false;
        }
        let past = match *lock(&self.drain_until) {
            Some(until) => Instant::now() >= until,
            None => true,
        };
        past || self.lag_records() == 0 || self.halted.load(Ordering::Acquire)
    }
}

fn stats_of(s: &Shared) -> Value {
    json!({
        "applied_lsn": s.applied(),
        "lag_records": s.lag_records(),
        "lag_seconds": (s.lag_seconds() * 1000.0).round() / 1000.0,
        "connected": s.connected.load(Ordering::Acquire),
        "halted": s.halted.load(Ordering::Acquire),
        "last_error": lock(&s.last_error).clone(),
        "errors": s.errors.load(Ordering::Acquire),
        "records": s.records.load(Ordering::Acquire),
        "batches": s.batches.load(Ordering::Acquire),
        "resyncs": s.resyncs.load(Ordering::Acquire),
        "over_wal_budget": s.over_budget.load(Ordering::Acquire),
    })
}

/// The running persister. Dropping it asks the thread to stop (without
/// draining) and does not wait; `shutdown` waits.
pub struct PersisterHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl PersisterHandle {
    /// The last LSN committed to MySQL (or, before MySQL answered, the one
    /// this data dir remembers).
    pub fn applied_lsn(&self) -> u64 {
        self.shared.applied()
    }

    /// Durable WAL records not in MySQL yet.
    pub fn lag_records(&self) -> u64 {
        self.shared.lag_records()
    }

    /// How long the oldest durable record not in MySQL has been waiting
    /// (0 when caught up), to ~50 ms.
    pub fn lag_seconds(&self) -> f64 {
        self.shared.lag_seconds()
    }

    /// The most recent failure, until MySQL answers again (or, when
    /// halted, until a resync).
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.last_error).clone()
    }

    /// Failures so far (each retry counts).
    pub fn errors_total(&self) -> u64 {
        self.shared.errors.load(Ordering::Acquire)
    }

    /// Stopped on data it cannot apply (see `last_error`); it resumes after
    /// a resync request (`request_resync` or `UPDATE persist_checkpoint SET
    /// resync_requested = 1`).
    pub fn is_halted(&self) -> bool {
        self.shared.halted.load(Ordering::Acquire)
    }

    /// Rebuild MySQL from the engine's state (snapshot + WAL) at the next
    /// opportunity, then continue tailing.
    pub fn request_resync(&self) {
        self.shared.resync_requested.store(true, Ordering::Release);
    }

    /// Fell past `wal_budget_records`: holds no WAL, resyncs when it can.
    pub fn is_over_budget(&self) -> bool {
        self.shared.over_budget.load(Ordering::Acquire)
    }

    /// True once MySQL has every record durable now, waiting up to `timeout`.
    pub fn wait_caught_up(&self, timeout: Duration) -> bool {
        let target = self.shared.durable();
        let deadline = Instant::now() + timeout;
        while self.shared.applied() < target {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// For the admin `stats` command.
    pub fn stats(&self) -> Value {
        stats_of(&self.shared)
    }

    /// `stats` as a hook for `AdminCtx.extra_stats`; it holds only the
    /// shared figures, so it may outlive the handle.
    pub fn stats_hook(&self) -> seckill_engine::StatsHook {
        let shared = self.shared.clone();
        Arc::new(move || stats_of(&shared))
    }

    /// Stops the persister: it keeps applying for up to `drain` (until
    /// caught up), then finishes its batch and exits. Waits for the thread.
    pub fn shutdown(mut self, drain: Duration) {
        *lock(&self.shared.drain_until) = Some(Instant::now() + drain);
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PersisterHandle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
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
    let durable = status.durable_lsn.load(Ordering::Acquire);
    let hint = read_hint(&data_dir).filter(|h| *h <= durable).unwrap_or(0);
    // Further behind than the budget: hold nothing and resync.
    let over_budget = durable.saturating_sub(hint) > cfg.wal_budget_records;
    if !over_budget {
        checkpoints.set(CHECKPOINT_NAME, hint);
    }
    let shared = Arc::new(Shared {
        status,
        applied: AtomicU64::new(hint),
        last_error: Mutex::new(None),
        errors: AtomicU64::new(0),
        records: AtomicU64::new(0),
        batches: AtomicU64::new(0),
        resyncs: AtomicU64::new(0),
        halted: AtomicBool::new(false),
        connected: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        drain_until: Mutex::new(None),
        resync_requested: AtomicBool::new(false),
        over_budget: AtomicBool::new(over_budget),
        samples: Mutex::new(VecDeque::new()),
    });
    // Exported at 0 from the start, so dashboards and alerts have a series
    // before the first failure.
    for kind in ["thread", "mysql", "data"] {
        metrics::counter!("seckill_persister_errors_total", "kind" => kind).absolute(0);
    }
    let ctx = Ctx { cfg, data_dir, shared: shared.clone(), checkpoints };
    let thread = std::thread::Builder::new().name("persister".into()).spawn(move || run(ctx));
    let thread = match thread {
        Ok(t) => Some(t),
        Err(e) => {
            shared.fail("thread", &format!("could not start the persister thread: {e}"));
            shared.halted.store(true, Ordering::Release);
            None
        }
    };
    PersisterHandle { shared, thread }
}

struct Ctx {
    cfg: PersistConfig,
    data_dir: PathBuf,
    shared: Arc<Shared>,
    checkpoints: Arc<Checkpoints>,
}

fn read_hint(data_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(data_dir.join(HINT_FILE)).ok()?.trim().parse().ok()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn run(ctx: Ctx) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            ctx.shared.fail("thread", &format!("could not start the persister's runtime: {e}"));
            ctx.shared.halted.store(true, Ordering::Release);
            return;
        }
    };
    rt.block_on(async {
        let shared = ctx.shared.clone();
        let (budget, checkpoints) = (ctx.cfg.wal_budget_records, ctx.checkpoints.clone());
        let sampler = tokio::spawn(async move {
            loop {
                shared.sample();
                shared.check_budget(budget, &checkpoints);
                shared.publish();
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        });
        main_loop(&ctx).await;
        sampler.abort();
        ctx.shared.sample();
        ctx.shared.publish();
    });
    tracing::info!(applied_lsn = ctx.shared.applied(), "persister stopped");
}

/// Sleeps `d`, waking early when asked to stop. False if stopping.
async fn nap(shared: &Shared, d: Duration) -> bool {
    let until = Instant::now() + d;
    loop {
        if shared.should_exit() {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        tokio::time::sleep(left.min(Duration::from_millis(50))).await;
    }
}

async fn main_loop(ctx: &Ctx) {
    let shared = &ctx.shared;
    let mut backoff = Duration::ZERO;
    let mut force_resync = false;
    let mut was_down = false;
    loop {
        if shared.should_exit() {
            return;
        }
        let result = session(ctx, &mut force_resync, &mut backoff, &mut was_down).await;
        shared.connected.store(false, Ordering::Release);
        match result {
            Ok(()) => return,
            Err(Failure::Restart(why)) => {
                tracing::warn!(why, "persister restarting from MySQL's checkpoint");
                metrics::counter!("seckill_persister_restarts_total").increment(1);
                if !nap(shared, Duration::from_millis(10)).await {
                    return;
                }
            }
            Err(Failure::Transient(why)) => {
                shared.fail("mysql", &why);
                backoff = (backoff * 2)
                    .clamp(Duration::from_millis(100), Duration::from_millis(ctx.cfg.backoff_max_ms.max(100)));
                if !was_down {
                    tracing::warn!(error = %why, lag_records = shared.lag_records(), "persister: MySQL unavailable; the engine keeps serving, retrying with backoff");
                    was_down = true;
                } else {
                    tracing::debug!(error = %why, retry_in_ms = backoff.as_millis() as u64, "persister retry");
                }
                if !nap(shared, backoff).await {
                    return;
                }
            }
            Err(Failure::Fatal(why)) => {
                tracing::error!(
                    error = %why,
                    "persister halted: MySQL is no longer a faithful copy and it will not guess. The engine keeps \
                     serving. To rebuild MySQL from the engine's state run: \
                     UPDATE persist_checkpoint SET resync_requested = 1"
                );
                shared.fail("data", &why);
                shared.halted.store(true, Ordering::Release);
                shared.publish();
                if !wait_for_resync(ctx).await {
                    return;
                }
                shared.halted.store(false, Ordering::Release);
                force_resync = true;
                backoff = Duration::ZERO;
            }
        }
    }
}

/// Halted: checks every few seconds whether a resync was requested (from
/// the handle or in MySQL). False if stopping instead.
async fn wait_for_resync(ctx: &Ctx) -> bool {
    let shared = &ctx.shared;
    loop {
        for _ in 0..50 {
            if shared.stop_requested() {
                return false;
            }
            if shared.resync_requested.swap(false, Ordering::AcqRel) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let Ok(opts) = schema::options(&ctx.cfg.url) else {
            continue;
        };
        if let Ok(mut conn) = schema::connect(&opts).await {
            if let Ok((_, true)) = apply::read_checkpoint(&mut conn).await {
                return true;
            }
        }
    }
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

/// Connect, read the checkpoint, tail and apply until stopped or failed.
async fn session(
    ctx: &Ctx,
    force_resync: &mut bool,
    backoff: &mut Duration,
    was_down: &mut bool,
) -> Result<(), Failure> {
    let (cfg, shared) = (&ctx.cfg, &ctx.shared);
    let limit = Duration::from_millis(cfg.batch_timeout_ms.max(1000));
    timed(limit, "the migrations", async { schema::migrate(&cfg.url).await.map_err(transient) }).await?;
    let opts = schema::options(&cfg.url).map_err(|e| Failure::Fatal(format!("{e:#}")))?;
    let mut conn = schema::connect(&opts).await.map_err(transient)?;
    shared.connected.store(true, Ordering::Release);
    let (mut cp, flagged) = timed(limit, "reading the checkpoint", apply::read_checkpoint(&mut conn)).await?;
    let stmt_bytes = timed(limit, "reading max_allowed_packet", apply::read_statement_bytes(&mut conn)).await?;
    let durable = shared.durable();
    let over_budget = shared.over_budget.load(Ordering::Acquire);
    if over_budget || flagged || *force_resync || shared.resync_requested.swap(false, Ordering::AcqRel) {
        if over_budget {
            tracing::warn!(
                checkpoint = cp,
                durable,
                "persister past its WAL budget: rebuilding MySQL from the engine's state"
            );
        }
        cp = resync(ctx, &mut conn, stmt_bytes).await?;
        *force_resync = false;
    } else if cp > durable {
        return Err(Failure::Fatal(format!(
            "MySQL's checkpoint is LSN {cp} but this engine's log ends at LSN {durable}: the database holds \
             another data dir's records (or was edited). Point --mysql-url at a fresh database, or rebuild this \
             one from the engine: UPDATE persist_checkpoint SET resync_requested = 1"
        )));
    }
    *lock(&shared.last_error) = None;
    committed(ctx, cp);
    if *was_down {
        tracing::info!(checkpoint = cp, lag_records = shared.lag_records(), "persister: MySQL is back, catching up");
        *was_down = false;
    } else {
        tracing::info!(checkpoint = cp, lag_records = shared.lag_records(), "persister connected");
    }
    let mut tailer = Tailer::new(&ctx.data_dir, shared.status.clone(), cp);
    let max = cfg.batch_records_max.max(1);
    let mut batch: Vec<(u64, Event)> = Vec::with_capacity(max.min(65_536));
    loop {
        batch.clear();
        let mut deadline: Option<Instant> = None;
        loop {
            if shared.resync_requested.load(Ordering::Acquire) {
                return Err(Failure::Restart("a resync was requested".into()));
            }
            if shared.over_budget.load(Ordering::Acquire) {
                return Err(Failure::Restart("past the WAL budget".into()));
            }
            match tailer.poll(max - batch.len(), &mut batch) {
                Ok(_) => {}
                Err(TailError::Truncated(lsn)) => {
                    tracing::error!(
                        missing_from = lsn,
                        checkpoint = cp,
                        "the WAL records MySQL still needs are gone (deleted below the snapshot while the \
                         persister was not registered, e.g. run with --mysql-url none). Rebuilding MySQL from \
                         the engine's state (newest snapshot + WAL); stock_log keeps a `resync` row per \
                         corrected activity"
                    );
                    if lsn <= cp + 1 && tailer.next_lsn() == cp + 1 {
                        cp = resync(ctx, &mut conn, stmt_bytes).await?;
                        committed(ctx, cp);
                        tailer = Tailer::new(&ctx.data_dir, shared.status.clone(), cp);
                        batch.clear();
                        deadline = None;
                        continue;
                    }
                    return Err(Failure::Restart(format!("WAL record {lsn} vanished while being read")));
                }
                Err(TailError::Corrupt(lsn, why)) => {
                    return Err(Failure::Fatal(format!(
                        "the WAL is damaged at LSN {lsn} ({why}); the engine's own recovery will refuse it too"
                    )))
                }
                Err(TailError::Io(e)) => return Err(Failure::Transient(format!("reading the WAL: {e}"))),
            }
            if batch.len() >= max {
                break;
            }
            if shared.should_exit() {
                return Ok(());
            }
            if !batch.is_empty() {
                let d = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_millis(cfg.batch_ms));
                if Instant::now() >= d {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(cfg.idle_poll_ms.max(1))).await;
        }
        let started = Instant::now();
        let new_cp = timed(limit, "a batch", apply::write_batch(&mut conn, cp, &batch, now_ms(), stmt_bytes)).await?;
        metrics::histogram!("seckill_persister_batch_seconds").record(started.elapsed().as_secs_f64());
        cp = new_cp;
        // Healthy again before anyone can see the new LSN.
        *lock(&shared.last_error) = None;
        *backoff = Duration::ZERO;
        shared.records.fetch_add(batch.len() as u64, Ordering::AcqRel);
        shared.batches.fetch_add(1, Ordering::AcqRel);
        committed(ctx, cp);
        metrics::counter!("seckill_persister_records_total").increment(batch.len() as u64);
        metrics::counter!("seckill_persister_batches_total").increment(1);
    }
}

/// MySQL has everything up to `lsn`: let the WAL go below it (past the
/// budget it holds none: a resync is coming).
fn committed(ctx: &Ctx, lsn: u64) {
    ctx.shared.applied.store(lsn, Ordering::Release);
    if !ctx.shared.over_budget.load(Ordering::Acquire) {
        ctx.checkpoints.set(CHECKPOINT_NAME, lsn);
    }
    if let Err(e) = write_private(&ctx.data_dir.join(HINT_FILE), format!("{lsn}\n").as_bytes()) {
        tracing::debug!(error = %e, "could not write the persister's checkpoint hint");
    }
}

/// `std::fs::write`, but a new file is 0600 like every file in the data dir.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path)?.write_all(bytes)
}

/// Rebuilds the engine's state from the newest snapshot plus the WAL, and
/// writes all of it to MySQL. Returns the LSN MySQL now holds.
async fn resync(ctx: &Ctx, conn: &mut sqlx::MySqlConnection, stmt_bytes: usize) -> Result<u64, Failure> {
    let shared = &ctx.shared;
    let started = Instant::now();
    let snap_dir = ctx.data_dir.join("snapshots");
    let mut replica: Replica = snapshot::load_newest(&snap_dir)
        .map_err(|e| Failure::Transient(format!("reading snapshots in {}: {e}", snap_dir.display())))?
        .unwrap_or_default();
    // Hold the WAL from the snapshot on while we read it (past the budget
    // the engine's own "snapshot" checkpoint holds it, and a failed resync
    // must not leave WAL pinned).
    if !shared.over_budget.load(Ordering::Acquire) {
        ctx.checkpoints.set(CHECKPOINT_NAME, replica.lsn);
    }
    let mut tailer = Tailer::new(&ctx.data_dir, shared.status.clone(), replica.lsn);
    let target = shared.durable();
    let mut buf = Vec::with_capacity(10_000);
    while tailer.next_lsn() <= target {
        buf.clear();
        let n = match tailer.poll(10_000, &mut buf) {
            Ok(n) => n,
            Err(TailError::Truncated(lsn)) => {
                return Err(Failure::Fatal(format!(
                    "cannot rebuild MySQL: the WAL after the newest snapshot (LSN {}) is gone from LSN {lsn}",
                    replica.lsn
                )))
            }
            Err(TailError::Corrupt(lsn, why)) => {
                return Err(Failure::Fatal(format!("the WAL is damaged at LSN {lsn} ({why})")))
            }
            Err(TailError::Io(e)) => return Err(Failure::Transient(format!("reading the WAL: {e}"))),
        };
        for (lsn, ev) in &buf {
            replica.apply(*lsn, ev).map_err(|e| Failure::Fatal(format!("the WAL does not replay: {e}")))?;
        }
        if n == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let limit = Duration::from_millis(ctx.cfg.batch_timeout_ms.max(1000)) * 10;
    let lsn = timed(limit, "the resync", apply::write_full_state(conn, &replica, now_ms(), stmt_bytes)).await?;
    // Within budget again: `committed` registers the checkpoint at `lsn`.
    shared.over_budget.store(false, Ordering::Release);
    shared.resyncs.fetch_add(1, Ordering::AcqRel);
    metrics::counter!("seckill_persister_resyncs_total").increment(1);
    tracing::warn!(
        lsn,
        orders = replica.orders.len(),
        activities = replica.activities.len(),
        took_ms = started.elapsed().as_millis() as u64,
        "MySQL rebuilt from the engine's state"
    );
    Ok(lsn)
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
    apply::write_batch(&mut conn, after_lsn, records, now_ms(), stmt_bytes).await.map_err(|f| anyhow::anyhow!("{f}"))
}
