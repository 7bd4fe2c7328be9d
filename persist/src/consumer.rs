//! The one WAL-consumer driver: the MySQL persister and the Redis mirror are
//! [`Target`]s it runs. It owns what both do alike: the thread (its own
//! one-thread tokio runtime, a panic contained and reported), tailing and
//! batching, reconnecting with capped backoff, the WAL checkpoint and its
//! budget, lag in milliseconds, halting on data it cannot write, the
//! resync (the engine's state from the newest snapshot plus the WAL,
//! written whole) and stopping. A target only connects, applies a batch,
//! rewrites itself from a replica and says where it is.
//!
//! Stopping is the same for both: `shutdown(drain)` keeps writing what is
//! durable while the target is reachable, for up to `drain`, then the
//! thread ends and gives up its checkpoint (checkpoints live in memory; the
//! next start registers its own). Dropping the handle stops without
//! draining and waits for the thread, so no write outlives the handle.

use seckill_engine::replica::Replica;
use seckill_engine::wal::tail::{TailError, Tailer};
use seckill_engine::wal::{self, Checkpoints, RebuildError, WalStatus};
use seckill_engine::Event;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why writing stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The target is unreachable, slow, or refusing for a reason that may
    /// pass: drop the connection, back off, reconnect.
    Transient(String),
    /// The target's checkpoint is not where this consumer left it (a
    /// resync was requested, or someone else moved it): start over from
    /// the target's.
    Restart(String),
    /// The target no longer holds what was written (or the WAL it lacks is
    /// gone, or it fell past the WAL budget): rewrite it from the engine's
    /// state.
    Lost(String),
    /// Data that cannot be written (the target edited by hand, or a log
    /// that does not replay): halt, say why, wait for a resync request.
    Fatal(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transient(m) | Failure::Restart(m) | Failure::Lost(m) | Failure::Fatal(m) => f.write_str(m),
        }
    }
}

/// A target's names: its thread, log lines, checkpoint and metrics (kept
/// as they were before the two loops became one, for dashboards and
/// alerts).
pub(crate) struct Names {
    pub thread: &'static str,
    /// The subject of log lines and messages ("persister", "Redis mirror").
    pub what: &'static str,
    pub checkpoint: &'static str,
    /// The `kind` of errors from the target itself ("mysql", "redis").
    pub kind: &'static str,
    /// What the operator does to rebuild a halted target.
    pub halt_hint: &'static str,
    pub errors_total: &'static str,
    pub records_total: &'static str,
    pub batches_total: &'static str,
    pub resyncs_total: &'static str,
    pub restarts_total: &'static str,
    pub budget_exceeded_total: &'static str,
    pub lag_records: &'static str,
    pub applied_lsn: &'static str,
    pub halted: &'static str,
    pub connected: &'static str,
    pub batch_seconds: &'static str,
    /// Age of the oldest durable record not written (gauge), if exported.
    pub lag_seconds_gauge: Option<&'static str>,
    /// Durable → written, per record seen (histogram), if exported.
    pub lag_seconds_histogram: Option<&'static str>,
}

/// How records are gathered into batches.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Batching {
    /// A batch closes at this many records…
    pub records_max: usize,
    /// …or this long after its first record arrived (0: at once).
    pub open_ms: u64,
    /// How long to sleep when the WAL has nothing new.
    pub idle_poll_ms: u64,
    /// A batch of fewer records is followed by an `idle_poll_ms` nap, so
    /// under a steady load the next one holds what arrived meanwhile.
    pub coalesce_records: usize,
    /// Retries wait 100 ms, doubling up to this.
    pub backoff_max_ms: u64,
    /// Records the target may fall behind before its WAL is let go (it is
    /// then rebuilt by a resync).
    pub wal_budget_records: u64,
}

/// What a target holds when (re)connected.
pub(crate) struct Opened {
    /// Everything up to this LSN is in the target; `None`: it must be
    /// rewritten (a resync).
    pub lsn: Option<u64>,
    /// The target itself asks for a resync (MySQL's `resync_requested`).
    pub resync_flagged: bool,
    /// The target found that it holds `lsn` of this engine's log although
    /// the driver started without knowing it (the mirror at start): no
    /// resync is pending for it.
    pub resumed: bool,
}

/// A copy of the engine's state the driver writes the WAL into.
#[allow(async_fn_in_trait)] // run on the driver's own one-thread runtime
pub(crate) trait Target {
    const NAMES: Names;

    /// Connects (or checks the connection it has) and says what it holds.
    async fn open(&mut self) -> Result<Opened, Failure>;

    /// Writes `batch` (LSNs `after + 1 ..`, consecutive) and returns the
    /// LSN the target now holds.
    async fn apply(&mut self, after: u64, batch: &[(u64, Event)]) -> Result<u64, Failure>;

    /// Rewrites the target from `replica`; returns the LSN it now holds.
    async fn resync(&mut self, replica: &Replica) -> Result<u64, Failure>;

    /// The WAL has nothing new after `at`: time-driven work.
    async fn idle(&mut self, _at: u64) -> Result<(), Failure> {
        Ok(())
    }

    /// While halted: whether a resync was asked for in the target itself.
    async fn resync_flagged(&mut self) -> bool {
        false
    }

    /// Forgets the connection (after a failure).
    fn disconnect(&mut self);

    /// Everything up to `lsn` is in the target now.
    fn committed(&mut self, _lsn: u64) {}

    /// The message for a target that holds more than this engine's log.
    fn ahead(&self, lsn: u64, durable: u64) -> String {
        format!("the target holds LSN {lsn} but this engine's log ends at LSN {durable}")
    }
}

/// What a consumer reports (`stats`, the admin `stats` command).
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Everything up to this LSN is in the target.
    pub applied_lsn: u64,
    /// Durable records not yet in the target.
    pub lag_records: u64,
    /// Age of the oldest durable record not yet in the target, in ms (0:
    /// caught up).
    pub lag_ms: u64,
    /// p99 of the last 4096 lag samples (one per durable LSN seen, taken
    /// when the target had it), in ms.
    pub lag_p99_ms: u64,
    pub connected: bool,
    /// Stopped on data it cannot write (see `last_error`) until a resync
    /// is requested.
    pub halted: bool,
    /// The target must be rewritten from the engine's state (at start for
    /// the mirror, after data loss, past the WAL budget).
    pub resync_pending: bool,
    /// Fell past the WAL budget: holds no WAL, resyncs when it can.
    pub over_wal_budget: bool,
    pub resyncs: u64,
    /// Batches written since start: records over batches is the batch size.
    pub batches: u64,
    pub records: u64,
    /// Failures so far (each retry counts).
    pub errors: u64,
    pub last_error: Option<String>,
}

impl Stats {
    /// The consumer's object in the admin `stats` command.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "applied_lsn": self.applied_lsn,
            "lag_records": self.lag_records,
            "lag_ms": self.lag_ms,
            "lag_p99_ms": self.lag_p99_ms,
            "connected": self.connected,
            "halted": self.halted,
            "resync_pending": self.resync_pending,
            "over_wal_budget": self.over_wal_budget,
            "resyncs": self.resyncs,
            "batches": self.batches,
            "records": self.records,
            "errors": self.errors,
            "last_error": self.last_error,
        })
    }
}

/// A lock that a panicked holder did not poison for good.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wall-clock Unix milliseconds (lag is measured in real time, whatever
/// clock the engine runs on; also the `now_ms` written to targets).
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Durable LSNs remembered with when they were first seen; more are merged.
const SEEN_MAX: usize = 65_536;
/// Lag samples kept for `lag_p99_ms`.
const LAG_SAMPLES: usize = 4096;
/// How often lag, the budget and the gauges are looked at besides every
/// loop turn (a long write or an outage has no loop turns).
const TICK: Duration = Duration::from_millis(50);
const BACKOFF_MIN: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Lag {
    /// (durable LSN, wall ms when first seen), oldest first.
    seen: VecDeque<(u64, u64)>,
    seen_durable: u64,
    samples_ms: VecDeque<u64>,
}

/// State the consumer thread publishes to its handle.
pub(crate) struct Shared {
    status: Arc<WalStatus>,
    stop: AtomicBool,
    /// When stopping: keep writing until caught up or this moment.
    drain_until: Mutex<Option<Instant>>,
    applied: AtomicU64,
    connected: AtomicBool,
    halted: AtomicBool,
    resync_pending: AtomicBool,
    over_budget: AtomicBool,
    resync_requested: AtomicBool,
    errors: AtomicU64,
    records: AtomicU64,
    batches: AtomicU64,
    resyncs: AtomicU64,
    last_error: Mutex<Option<String>>,
    lag: Mutex<Lag>,
    /// Wall ms when the oldest record not yet written was first seen
    /// durable (0: none).
    oldest_unapplied_ms: AtomicU64,
}

impl Shared {
    /// At `applied` (`None`: a resync first), already past the budget or not.
    fn new(status: Arc<WalStatus>, applied: Option<u64>, over_budget: bool) -> Self {
        let durable = status.durable_lsn.load(Ordering::Acquire);
        Self {
            status,
            stop: AtomicBool::new(false),
            drain_until: Mutex::new(None),
            applied: AtomicU64::new(applied.unwrap_or(0)),
            connected: AtomicBool::new(false),
            halted: AtomicBool::new(false),
            resync_pending: AtomicBool::new(applied.is_none() || over_budget),
            over_budget: AtomicBool::new(over_budget),
            resync_requested: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            records: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            last_error: Mutex::new(None),
            lag: Mutex::new(Lag { seen_durable: durable, ..Lag::default() }),
            oldest_unapplied_ms: AtomicU64::new(0),
        }
    }

    fn durable(&self) -> u64 {
        self.status.durable_lsn.load(Ordering::Acquire)
    }

    fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    fn lag_records(&self) -> u64 {
        self.durable().saturating_sub(self.applied())
    }

    fn flag(&self, f: &AtomicBool) -> bool {
        f.load(Ordering::Acquire)
    }

    /// Stop now: asked to, and caught up, out of drain time, or unable to
    /// write (halted, not connected, or waiting for a resync).
    fn should_exit(&self) -> bool {
        if !self.flag(&self.stop) {
            return false;
        }
        let past = lock(&self.drain_until).is_none_or(|until| Instant::now() >= until);
        past || self.lag_records() == 0
            || self.flag(&self.halted)
            || self.flag(&self.resync_pending)
            || !self.flag(&self.connected)
    }

    /// Notes the durable LSN now, with when it was first seen.
    fn note_durable(&self) {
        let durable = self.durable();
        let mut lag = lock(&self.lag);
        if durable <= lag.seen_durable {
            return;
        }
        lag.seen_durable = durable;
        let now = wall_ms();
        if lag.seen.len() < SEEN_MAX {
            lag.seen.push_back((durable, now));
        } else if let Some(last) = lag.seen.back_mut() {
            last.0 = durable;
        }
        if lag.seen.len() == 1 {
            self.oldest_unapplied_ms.store(now, Ordering::Release);
        }
    }

    /// Everything up to `lsn` is written: one lag sample per durable LSN
    /// seen up to it.
    fn note_applied(&self, lsn: u64, histogram: Option<&'static str>) {
        self.applied.store(lsn, Ordering::Release);
        let now = wall_ms();
        let mut lag = lock(&self.lag);
        while let Some(&(seen, at)) = lag.seen.front() {
            if seen > lsn {
                break;
            }
            lag.seen.pop_front();
            let ms = now.saturating_sub(at);
            if lag.samples_ms.len() == LAG_SAMPLES {
                lag.samples_ms.pop_front();
            }
            lag.samples_ms.push_back(ms);
            if let Some(name) = histogram {
                metrics::histogram!(name).record(ms as f64 / 1000.0);
            }
        }
        let oldest = lag.seen.front().map_or(0, |&(_, at)| at);
        self.oldest_unapplied_ms.store(oldest, Ordering::Release);
    }

    fn lag_ms(&self) -> u64 {
        if self.lag_records() == 0 {
            return 0;
        }
        match self.oldest_unapplied_ms.load(Ordering::Acquire) {
            0 => 0,
            t => wall_ms().saturating_sub(t),
        }
    }

    fn lag_p99_ms(&self) -> u64 {
        let mut v: Vec<u64> = lock(&self.lag).samples_ms.iter().copied().collect();
        if v.is_empty() {
            return 0;
        }
        v.sort_unstable();
        v[((v.len() * 99).div_ceil(100)).saturating_sub(1)]
    }

    fn fail(&self, errors_total: &'static str, kind: &'static str, message: &str) {
        self.errors.fetch_add(1, Ordering::AcqRel);
        metrics::counter!(errors_total, "kind" => kind).increment(1);
        *lock(&self.last_error) = Some(message.to_string());
    }
}

/// A read-only window on a running consumer's figures, cheap to clone and
/// to hand to `stats` and metrics.
#[derive(Clone)]
pub struct View {
    shared: Arc<Shared>,
}

impl View {
    /// The last LSN in the target (for the persister, before MySQL answered:
    /// the one this data dir remembers).
    pub fn applied_lsn(&self) -> u64 {
        self.shared.applied()
    }

    /// Durable records not yet in the target.
    pub fn lag_records(&self) -> u64 {
        self.shared.lag_records()
    }

    /// How long the oldest durable record not yet in the target has
    /// waited, in ms (0 when caught up), measured from when the consumer
    /// first saw it durable (every loop turn, and every 50 ms).
    pub fn lag_ms(&self) -> u64 {
        self.shared.lag_ms()
    }

    /// p99 of the last 4096 lag samples, in ms (see `Stats::lag_p99_ms`).
    pub fn lag_p99_ms(&self) -> u64 {
        self.shared.lag_p99_ms()
    }

    /// The most recent failure, until the target takes writes again (or,
    /// when halted, until a resync).
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.last_error).clone()
    }

    /// Failures so far (each retry counts).
    pub fn errors_total(&self) -> u64 {
        self.shared.errors.load(Ordering::Acquire)
    }

    pub fn connected(&self) -> bool {
        self.shared.flag(&self.shared.connected)
    }

    /// Stopped on data it cannot write (see `last_error`); it resumes after
    /// a resync request (`request_resync`, or for MySQL `UPDATE
    /// persist_checkpoint SET resync_requested = 1`).
    pub fn is_halted(&self) -> bool {
        self.shared.flag(&self.shared.halted)
    }

    /// Fell past the WAL budget: holds no WAL, resyncs when it can.
    pub fn is_over_budget(&self) -> bool {
        self.shared.flag(&self.shared.over_budget)
    }

    /// Full rewrites of the target so far.
    pub fn resyncs(&self) -> u64 {
        self.shared.resyncs.load(Ordering::Acquire)
    }

    /// Rewrite the target from the engine's state (snapshot + WAL) at the
    /// next opportunity, then continue tailing.
    pub fn request_resync(&self) {
        self.shared.resync_requested.store(true, Ordering::Release);
    }

    /// True once the target has every record durable now, waiting up to
    /// `timeout`.
    pub fn wait_caught_up(&self, timeout: Duration) -> bool {
        let target = self.shared.durable();
        let deadline = Instant::now() + timeout;
        while self.shared.applied() < target || self.shared.flag(&self.shared.resync_pending) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        Stats {
            applied_lsn: s.applied(),
            lag_records: s.lag_records(),
            lag_ms: s.lag_ms(),
            lag_p99_ms: s.lag_p99_ms(),
            connected: s.flag(&s.connected),
            halted: s.flag(&s.halted),
            resync_pending: s.flag(&s.resync_pending),
            over_wal_budget: s.flag(&s.over_budget),
            resyncs: s.resyncs.load(Ordering::Acquire),
            batches: s.batches.load(Ordering::Acquire),
            records: s.records.load(Ordering::Acquire),
            errors: s.errors.load(Ordering::Acquire),
            last_error: lock(&s.last_error).clone(),
        }
    }

    /// `stats` as JSON, as a hook for `AdminCtx.extra_stats`; it holds only
    /// the shared figures, so it may outlive the handle.
    pub fn stats_hook(&self) -> seckill_engine::StatsHook {
        let view = self.clone();
        Arc::new(move || view.stats().to_json())
    }
}

/// A running consumer (the persister or the mirror). Its figures are read
/// through [`View`] (it derefs to one). Dropping it stops the thread
/// without draining and waits for it; `shutdown` drains first.
pub struct Handle {
    view: View,
    thread: Option<JoinHandle<()>>,
}

impl std::ops::Deref for Handle {
    type Target = View;
    fn deref(&self) -> &View {
        &self.view
    }
}

impl Handle {
    pub fn view(&self) -> View {
        self.view.clone()
    }

    /// Stops the consumer: it keeps writing what is durable while the
    /// target is reachable, for up to `drain` (until caught up), then gives
    /// up its WAL checkpoint and the thread ends. Waits for the thread.
    /// Call it after the engine stopped (`Node::shutdown`) so the last
    /// records reach the target.
    pub fn shutdown(mut self, drain: Duration) {
        self.stop(Some(drain));
    }

    fn stop(&mut self, drain: Option<Duration>) {
        *lock(&self.view.shared.drain_until) = drain.map(|d| Instant::now() + d);
        self.view.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop(None);
    }
}

/// Where a consumer starts.
pub(crate) struct Start {
    /// The LSN the target is known to hold (the persister's hint), whose
    /// WAL is held at once; `None`: a resync first.
    pub applied: Option<u64>,
    /// A replica for the first resync (else the newest snapshot).
    pub given: Option<Replica>,
}

/// Starts a consumer of `target` on its own thread. Returns at once: the
/// target is connected (and resynced if need be) in the background; a bad
/// URL or an unreachable target shows in `last_error` and it keeps trying
/// (a thread that cannot start shows there too, halted).
pub(crate) fn spawn<T: Target + Send + 'static>(
    target: T,
    batching: Batching,
    start: Start,
    data_dir: PathBuf,
    status: Arc<WalStatus>,
    checkpoints: Arc<Checkpoints>,
) -> Handle {
    let n = &T::NAMES;
    let durable = status.durable_lsn.load(Ordering::Acquire);
    let applied = start.applied;
    // Further behind than the budget: hold nothing and resync.
    let over_budget = applied.is_some_and(|a| durable.saturating_sub(a) > batching.wal_budget_records);
    if let (Some(a), false) = (applied, over_budget) {
        checkpoints.set(n.checkpoint, a);
    }
    let shared = Arc::new(Shared::new(status.clone(), applied, over_budget));
    // Exported at 0 from the start, so dashboards and alerts have a series
    // before the first failure.
    for kind in ["thread", n.kind, "data"] {
        metrics::counter!(n.errors_total, "kind" => kind).absolute(0);
    }
    metrics::counter!(n.records_total).absolute(0);
    let checkpoints_on_failure = checkpoints.clone();
    let mut driver = Driver {
        target,
        batching,
        data_dir,
        checkpoints,
        shared: shared.clone(),
        given: start.given,
        backoff: Duration::ZERO,
        was_down: false,
    };
    let thread = match std::thread::Builder::new().name(n.thread.into()).spawn(move || driver.run()) {
        Ok(t) => Some(t),
        Err(e) => {
            shared.fail(n.errors_total, "thread", &format!("could not start the {} thread: {e}", n.what));
            shared.halted.store(true, Ordering::Release);
            checkpoints_on_failure.remove(n.checkpoint);
            None
        }
    };
    Handle { view: View { shared }, thread }
}

struct Driver<T> {
    target: T,
    batching: Batching,
    data_dir: PathBuf,
    checkpoints: Arc<Checkpoints>,
    shared: Arc<Shared>,
    given: Option<Replica>,
    backoff: Duration,
    was_down: bool,
}

impl<T: Target> Driver<T> {
    fn run(&mut self) {
        let n = &T::NAMES;
        let sh = self.shared.clone();
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                sh.fail(n.errors_total, "thread", &format!("cannot start the {}'s runtime: {e}", n.what));
                sh.halted.store(true, Ordering::Release);
                return;
            }
        };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(async {
                let (ticker_shared, budget, checkpoints) =
                    (sh.clone(), self.batching.wal_budget_records, self.checkpoints.clone());
                let ticker = tokio::spawn(async move {
                    loop {
                        tick(&ticker_shared, budget, &checkpoints, n);
                        tokio::time::sleep(TICK).await;
                    }
                });
                self.drive().await;
                ticker.abort();
            })
        }));
        if ran.is_err() {
            // A bug, not an outage: stop, say so.
            sh.fail(n.errors_total, "thread", &format!("the {} thread panicked (a bug); it is stopped", n.what));
            sh.halted.store(true, Ordering::Release);
            tracing::error!("the {} thread panicked; it is stopped", n.what);
        }
        sh.connected.store(false, Ordering::Release);
        tick(&sh, self.batching.wal_budget_records, &self.checkpoints, n);
        // Checkpoints live in memory: the next start registers its own.
        // Until then this one must not keep the engine's WAL.
        self.checkpoints.remove(n.checkpoint);
        tracing::info!(applied_lsn = sh.applied(), "{} stopped", n.what);
    }

    /// Connects, writes, and on failure backs off, resyncs or halts, until
    /// stopped.
    async fn drive(&mut self) {
        let n = &T::NAMES;
        let sh = self.shared.clone();
        loop {
            if sh.should_exit() {
                return;
            }
            let failure = match self.session().await {
                Ok(()) => return,
                Err(f) => f,
            };
            match failure {
                Failure::Restart(why) => {
                    tracing::warn!(why, "{} restarting from its target's checkpoint", n.what);
                    metrics::counter!(n.restarts_total).increment(1);
                    if !self.nap(Duration::from_millis(10)).await {
                        return;
                    }
                }
                Failure::Lost(why) => {
                    tracing::warn!(reason = %why, "{}: rewriting its target from the engine's state", n.what);
                    self.release();
                    sh.resync_pending.store(true, Ordering::Release);
                }
                Failure::Transient(why) => {
                    self.target.disconnect();
                    sh.connected.store(false, Ordering::Release);
                    let repeated = lock(&sh.last_error).as_deref() == Some(why.as_str());
                    sh.fail(n.errors_total, n.kind, &why);
                    self.backoff = (self.backoff * 2)
                        .clamp(BACKOFF_MIN, Duration::from_millis(self.batching.backoff_max_ms).max(BACKOFF_MIN));
                    if !self.was_down || !repeated {
                        tracing::warn!(error = %why, lag_records = sh.lag_records(), "{}: target unavailable; the engine keeps serving, retrying with backoff", n.what);
                        self.was_down = true;
                    } else {
                        tracing::debug!(error = %why, retry_in_ms = self.backoff.as_millis() as u64, "{} retry", n.what);
                    }
                    if !self.nap(self.backoff).await {
                        return;
                    }
                }
                Failure::Fatal(why) => {
                    tracing::error!(
                        error = %why,
                        "{} halted: its target is no longer a faithful copy and it will not guess. The engine keeps \
                         serving. {}",
                        n.what,
                        n.halt_hint
                    );
                    self.target.disconnect();
                    sh.connected.store(false, Ordering::Release);
                    sh.fail(n.errors_total, "data", &why);
                    sh.halted.store(true, Ordering::Release);
                    // What it held is no longer followed: a resync is next.
                    self.release();
                    tick(&sh, self.batching.wal_budget_records, &self.checkpoints, n);
                    if !self.wait_for_resync().await {
                        return;
                    }
                    sh.halted.store(false, Ordering::Release);
                    sh.resync_pending.store(true, Ordering::Release);
                    self.backoff = Duration::ZERO;
                }
            }
        }
    }

    /// Connect, resync if need be, then tail and write until stopped or
    /// failed.
    async fn session(&mut self) -> Result<(), Failure> {
        let n = &T::NAMES;
        let sh = self.shared.clone();
        let Some(mut cp) = self.connect().await? else {
            return Ok(());
        };
        let max = self.batching.records_max.max(1);
        let mut tailer = Tailer::new(&self.data_dir, sh.status.clone(), cp);
        let mut batch: Vec<(u64, Event)> = Vec::with_capacity(max.min(65_536));
        loop {
            batch.clear();
            if !self.gather(&mut tailer, &mut batch, cp).await? {
                return Ok(());
            }
            let started = Instant::now();
            cp = self.target.apply(cp, &batch).await?;
            metrics::histogram!(n.batch_seconds).record(started.elapsed().as_secs_f64());
            // Healthy again before anyone can see the new LSN.
            self.healthy();
            sh.records.fetch_add(batch.len() as u64, Ordering::AcqRel);
            sh.batches.fetch_add(1, Ordering::AcqRel);
            metrics::counter!(n.records_total).increment(batch.len() as u64);
            metrics::counter!(n.batches_total).increment(1);
            self.committed(cp);
            if batch.len() < self.batching.coalesce_records {
                tokio::time::sleep(Duration::from_millis(self.batching.idle_poll_ms.max(1))).await;
            }
        }
    }

    /// Opens the target and finds the LSN to go on from: its checkpoint,
    /// or what a resync wrote. `None` when the driver is stopping.
    async fn connect(&mut self) -> Result<Option<u64>, Failure> {
        let n = &T::NAMES;
        let sh = self.shared.clone();
        let opened = self.target.open().await?;
        sh.connected.store(true, Ordering::Release);
        let durable = sh.durable();
        let asked = sh.resync_requested.swap(false, Ordering::AcqRel);
        if opened.resumed && !(opened.resync_flagged || asked || sh.flag(&sh.over_budget)) {
            sh.resync_pending.store(false, Ordering::Release);
            self.given = None; // the state a first resync would have written
        }
        let cp = match opened.lsn {
            Some(cp) if !(opened.resync_flagged || asked || sh.flag(&sh.resync_pending)) => {
                if cp > durable {
                    return Err(Failure::Fatal(self.target.ahead(cp, durable)));
                }
                cp
            }
            _ => {
                sh.resync_pending.store(true, Ordering::Release);
                if sh.should_exit() {
                    return Ok(None);
                }
                self.resync().await?
            }
        };
        self.committed(cp);
        *lock(&sh.last_error) = None;
        if std::mem::take(&mut self.was_down) {
            tracing::info!(checkpoint = cp, lag_records = sh.lag_records(), "{}: target is back, catching up", n.what);
        } else {
            tracing::info!(checkpoint = cp, lag_records = sh.lag_records(), "{} connected", n.what);
        }
        Ok(Some(cp))
    }

    /// Fills `batch` from the WAL after `cp` until it holds
    /// `records_max` records or its first record has waited `open_ms`;
    /// the target idles while there is nothing. False when the driver is
    /// stopping.
    async fn gather(&mut self, tailer: &mut Tailer, batch: &mut Vec<(u64, Event)>, cp: u64) -> Result<bool, Failure> {
        let n = &T::NAMES;
        let sh = self.shared.clone();
        let b = self.batching;
        let max = b.records_max.max(1);
        let mut deadline: Option<Instant> = None;
        loop {
            if sh.flag(&sh.resync_requested) {
                return Err(Failure::Restart("a resync was requested".into()));
            }
            if sh.flag(&sh.over_budget) {
                return Err(Failure::Lost("past the WAL budget".into()));
            }
            sh.note_durable();
            match tailer.poll(max - batch.len(), batch) {
                Ok(_) => {}
                Err(TailError::Truncated(lsn)) => {
                    tracing::error!(
                        missing_from = lsn,
                        checkpoint = cp,
                        "the WAL records the {} still needs are gone (deleted below the snapshot while it \
                         was not registered)",
                        n.what
                    );
                    return Err(Failure::Lost(format!("the WAL records from LSN {lsn} on are gone")));
                }
                Err(TailError::Corrupt(lsn, why)) => {
                    return Err(Failure::Fatal(format!(
                        "the WAL is damaged at LSN {lsn} ({why}); the engine's own recovery will refuse it too"
                    )))
                }
                Err(TailError::Io(e)) => return Err(Failure::Transient(format!("reading the WAL: {e}"))),
            }
            if batch.len() >= max {
                return Ok(true);
            }
            if sh.should_exit() {
                return Ok(false);
            }
            if batch.is_empty() {
                self.target.idle(cp).await?;
            } else {
                // An open batch sleeps once, to its deadline, rather than
                // every `idle_poll_ms`: the wake-ups cost the thread more
                // than its writing (docs/PERFORMANCE.md). What arrives past
                // `records_max` meanwhile waits in the WAL and fills the
                // next batch at once, so no record waits longer than before.
                let d = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_millis(b.open_ms));
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(true);
                }
                tokio::time::sleep(left).await;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(b.idle_poll_ms.max(1))).await;
        }
    }

    fn healthy(&mut self) {
        *lock(&self.shared.last_error) = None;
        self.backoff = Duration::ZERO;
    }

    /// The target has everything up to `lsn`: let the WAL go below it
    /// (past the budget it holds none: a resync is coming).
    fn committed(&mut self, lsn: u64) {
        let sh = &self.shared;
        sh.note_applied(lsn, T::NAMES.lag_seconds_histogram);
        if !sh.flag(&sh.over_budget) {
            self.checkpoints.set(T::NAMES.checkpoint, lsn);
        }
        self.target.committed(lsn);
    }

    /// Stops holding WAL: what the target has is not followed any more.
    fn release(&self) {
        self.checkpoints.remove(T::NAMES.checkpoint);
    }

    /// Sleeps `d`, waking early when asked to stop. False if stopping.
    async fn nap(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            if self.shared.should_exit() {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            tokio::time::sleep(left.min(Duration::from_millis(50))).await;
        }
    }

    /// Halted: checks every few seconds whether a resync was requested
    /// (from the handle or in the target). False if stopping instead.
    async fn wait_for_resync(&mut self) -> bool {
        let sh = self.shared.clone();
        loop {
            for _ in 0..50 {
                if sh.flag(&sh.stop) {
                    return false;
                }
                if sh.resync_requested.swap(false, Ordering::AcqRel) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if self.target.resync_flagged().await {
                return true;
            }
        }
    }

    /// Rebuilds the engine's state from the newest snapshot (or the replica
    /// given at start) plus the WAL, and has the target write all of it.
    /// Returns the LSN the target now holds.
    async fn resync(&mut self) -> Result<u64, Failure> {
        let (n, sh) = (&T::NAMES, self.shared.clone());
        let started = Instant::now();
        let replica = build_replica(self.given.take(), &self.data_dir, &sh.status, |lsn| {
            // Hold the WAL from the snapshot on while it is read (past the
            // budget the engine's own "snapshot" checkpoint holds it, and a
            // failed resync must not leave WAL pinned).
            if !sh.flag(&sh.over_budget) {
                self.checkpoints.set(n.checkpoint, lsn);
            }
        })?;
        tracing::info!(
            lsn = replica.lsn,
            orders = replica.orders.len(),
            "{}: rewriting its target from the engine's state",
            n.what
        );
        let lsn = self.target.resync(&replica).await?;
        let (orders, activities) = (replica.orders.len(), replica.activities.len());
        drop(replica);
        // Within budget again: `committed` registers the checkpoint at `lsn`.
        sh.over_budget.store(false, Ordering::Release);
        sh.resync_pending.store(false, Ordering::Release);
        sh.resyncs.fetch_add(1, Ordering::AcqRel);
        metrics::counter!(n.resyncs_total).increment(1);
        self.healthy();
        tracing::info!(
            lsn,
            orders,
            activities,
            took_ms = started.elapsed().as_millis() as u64,
            "{}: target rebuilt from the engine's state",
            n.what
        );
        Ok(lsn)
    }
}

/// Every `TICK` and at exit: lag, the WAL budget, the gauges.
fn tick(sh: &Shared, budget: u64, checkpoints: &Checkpoints, n: &Names) {
    sh.note_durable();
    let lag = sh.lag_records();
    if lag > budget && !sh.over_budget.swap(true, Ordering::AcqRel) {
        sh.resync_pending.store(true, Ordering::Release);
        checkpoints.remove(n.checkpoint);
        metrics::counter!(n.budget_exceeded_total).increment(1);
        tracing::warn!(
            lag_records = lag,
            budget,
            "{} is past its WAL budget: it no longer holds WAL for its target, which will be rebuilt from the \
             engine's state (resync) when it can be written again",
            n.what
        );
    }
    metrics::gauge!(n.lag_records).set(lag as f64);
    metrics::gauge!(n.applied_lsn).set(sh.applied() as f64);
    metrics::gauge!(n.halted).set(if sh.flag(&sh.halted) { 1.0 } else { 0.0 });
    metrics::gauge!(n.connected).set(if sh.flag(&sh.connected) { 1.0 } else { 0.0 });
    if let Some(name) = n.lag_seconds_gauge {
        metrics::gauge!(name).set(sh.lag_ms() as f64 / 1000.0);
    }
}

/// The engine's state at the durable LSN of now: `given` or the newest
/// snapshot, then the WAL after it, read in slices ([`wal::rebuild`], the
/// snapshot thread's own). `hold(lsn)` is told where the WAL is read from.
/// Built for a resync, then dropped.
fn build_replica(
    given: Option<Replica>,
    data_dir: &Path,
    status: &WalStatus,
    hold: impl FnMut(u64),
) -> Result<Replica, Failure> {
    let target_lsn = status.durable_lsn.load(Ordering::Acquire);
    let (wal_dir, snap_dir) = (data_dir.join("wal"), data_dir.join("snapshots"));
    wal::rebuild(&*wal::os_fs(), &wal_dir, &snap_dir, given, target_lsn, hold).map_err(|e| match e {
        RebuildError::Damaged { .. } | RebuildError::Replay(_) => Failure::Fatal(e.to_string()),
        RebuildError::Gone(_) => {
            Failure::Transient(format!("the WAL after the newest snapshot kept vanishing while being read ({e})"))
        }
        RebuildError::Io(_) | RebuildError::Short { .. } => Failure::Transient(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: Names = Names {
        thread: "test",
        what: "test consumer",
        checkpoint: "test",
        kind: "test",
        halt_hint: "",
        errors_total: "test_errors_total",
        records_total: "test_records_total",
        batches_total: "test_batches_total",
        resyncs_total: "test_resyncs_total",
        restarts_total: "test_restarts_total",
        budget_exceeded_total: "test_budget_exceeded_total",
        lag_records: "test_lag_records",
        applied_lsn: "test_applied_lsn",
        halted: "test_halted",
        connected: "test_connected",
        batch_seconds: "test_batch_seconds",
        lag_seconds_gauge: Some("test_lag_seconds"),
        lag_seconds_histogram: Some("test_lag_seconds_hist"),
    };

    fn shared_at(durable: u64, applied: Option<u64>) -> Shared {
        let status = Arc::new(WalStatus::default());
        status.durable_lsn.store(durable, Ordering::Release);
        Shared::new(status, applied, false)
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_record_not_written_and_each_one_is_a_sample() {
        let sh = shared_at(0, Some(0));
        assert_eq!((sh.lag_records(), sh.lag_ms(), sh.lag_p99_ms()), (0, 0, 0));
        sh.status.durable_lsn.store(10, Ordering::Release);
        sh.note_durable();
        std::thread::sleep(Duration::from_millis(30));
        sh.status.durable_lsn.store(20, Ordering::Release);
        sh.note_durable();
        assert_eq!(sh.lag_records(), 20);
        assert!(sh.lag_ms() >= 30, "{}", sh.lag_ms());
        sh.note_applied(10, None);
        assert!(sh.lag_ms() < 30, "the oldest now is LSN 20's: {}", sh.lag_ms());
        assert!(sh.lag_p99_ms() >= 30, "LSN 10 waited: {}", sh.lag_p99_ms());
        sh.note_applied(20, None);
        assert_eq!((sh.lag_records(), sh.lag_ms()), (0, 0));
        assert_eq!(lock(&sh.lag).samples_ms.len(), 2);
    }

    #[test]
    fn seen_lsns_are_bounded_by_merging_into_the_newest() {
        let sh = shared_at(0, Some(0));
        for lsn in 1..=(SEEN_MAX as u64 + 10) {
            sh.status.durable_lsn.store(lsn, Ordering::Release);
            sh.note_durable();
        }
        let lag = lock(&sh.lag);
        assert_eq!(lag.seen.len(), SEEN_MAX);
        assert_eq!(lag.seen.back().map(|s| s.0), Some(SEEN_MAX as u64 + 10));
    }

    #[test]
    fn stopping_drains_only_while_it_can_write() {
        let sh = shared_at(100, Some(50));
        assert!(!sh.should_exit(), "not asked to");
        sh.stop.store(true, Ordering::Release);
        assert!(sh.should_exit(), "no drain time given");
        *lock(&sh.drain_until) = Some(Instant::now() + Duration::from_secs(60));
        assert!(sh.should_exit(), "not connected: nothing to drain into");
        sh.connected.store(true, Ordering::Release);
        assert!(!sh.should_exit(), "connected, behind, within the drain time");
        sh.resync_pending.store(true, Ordering::Release);
        assert!(sh.should_exit(), "no resync is started while stopping");
        sh.resync_pending.store(false, Ordering::Release);
        sh.applied.store(100, Ordering::Release);
        assert!(sh.should_exit(), "caught up");
    }

    #[test]
    fn past_the_budget_the_wal_is_let_go_and_a_resync_is_due() {
        let sh = shared_at(1_000, Some(900));
        let checkpoints = Checkpoints::default();
        checkpoints.set(NAMES.checkpoint, 900);
        tick(&sh, 100, &checkpoints, &NAMES);
        assert!(!sh.flag(&sh.over_budget) && !sh.flag(&sh.resync_pending), "100 behind is within 100");
        assert_eq!(checkpoints.get(NAMES.checkpoint), Some(900));
        sh.status.durable_lsn.store(1_001, Ordering::Release);
        tick(&sh, 100, &checkpoints, &NAMES);
        assert!(sh.flag(&sh.over_budget) && sh.flag(&sh.resync_pending));
        assert_eq!(checkpoints.get(NAMES.checkpoint), None, "holds no WAL past the budget");
    }

    #[test]
    fn a_start_without_a_position_is_a_resync() {
        let (none, some) = (shared_at(10, None), shared_at(10, Some(3)));
        assert!(none.flag(&none.resync_pending));
        assert!(!some.flag(&some.resync_pending));
    }
}
