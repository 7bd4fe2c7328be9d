//! The Redis mirror: Redis as a target of the WAL-consumer driver
//! (`crate::consumer`, which tails, batches, retries with backoff, holds
//! the checkpoint, measures lag and resyncs).
//!
//! One position: Redis's (`synced == Some(w)`: everything up to `w` is in
//! Redis). The mirror keeps no copy of the orders: between batches it holds
//! only the catalog and per-activity counters (`MirrorState`), takes what a
//! batch needs about older orders from the status-change records (which
//! carry quantity, amount and status before), and moves buyers' units by
//! increments. When Redis lost the mirror (or the driver finds
//! the WAL it lacks gone, or past the budget), the driver has it rewrite
//! Redis from the engine's state, built for the occasion from the newest
//! snapshot plus the WAL and dropped afterwards.

use super::keys::{self, id_lsn, KeyKind, Keys};
use super::resp::{self, Item, Link, Resp};
use super::state::{self, MirrorState, Plan};
use super::MirrorConfig;
use crate::consumer::{Failure, Names, Opened, Target};
use hashbrown::HashSet;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, FromRedisValue, Pipeline, Value};
use seckill_engine::replica::Replica;
use seckill_engine::wal::codec::Encoder;
use seckill_engine::wal::tail::{TailError, Tailer};
use seckill_engine::wal::{self, segment, WalStatus};
use seckill_engine::Event;
use seckill_proto::OrderId;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Adds `ARGV` pairs (user, delta) to the buyers' hash `KEYS[1]`, dropping
/// buyers left with nothing: one command per activity and batch for the
/// buyers whose units went down (those whose units went up get a plain
/// `HINCRBY` each, cheaper for Redis than the script's loop).
const PURCHASED_LUA: &str = "for i = 1, #ARGV, 2 do \
     local v = redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) \
     if v <= 0 then redis.call('HDEL', KEYS[1], ARGV[i]) end \
   end \
   return 0";

/// The times after `now_ms` at which `a`'s phase changes (its start and
/// its end): the mirror rewrites its hash then.
fn phase_changes(a: &seckill_engine::Activity, now_ms: u64) -> impl Iterator<Item = u64> {
    [a.terms.starts_at_ms, a.terms.ends_at_ms].into_iter().filter(move |t| *t > now_ms)
}

fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

async fn query<T: FromRedisValue>(
    conn: &mut MultiplexedConnection,
    pipe: &Pipeline,
    timeout: Duration,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, pipe.query_async::<T>(conn)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("Redis: {e}")),
        Err(_) => Err(format!("Redis did not answer within {} ms", timeout.as_millis())),
    }
}

/// Sends plain (non-transaction) commands; any refused one is an error.
async fn send(link: &mut Link, r: &Resp, timeout: Duration) -> Result<(), String> {
    let n = link.exchange(r, timeout).await?;
    for i in 0..n {
        if let Item::Error(e) = link.reply(i)? {
            return Err(format!("Redis refused a mirror write: {}", String::from_utf8_lossy(e)));
        }
    }
    Ok(())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The id of the newest entry of an XREVRANGE … COUNT 1 reply.
fn top_id(v: &Value) -> Option<String> {
    match v {
        Value::Array(entries) => match entries.first()? {
            Value::Array(entry) => text(entry.first()?),
            _ => None,
        },
        _ => None,
    }
}

/// A batch sent whose answer did not come back: it may have landed.
struct InFlight {
    lsn: u64,
    plan: Plan,
}

/// Redis as a target: connections, the catalog state at `synced`, the
/// stream's last id and the activities' phase changes to come.
pub(crate) struct Redis {
    cfg: MirrorConfig,
    keys: Keys,
    data_dir: PathBuf,
    status: Arc<WalStatus>,
    /// Catalog and per-activity counters as Redis has them at `synced`.
    state: MirrorState,
    /// Redis holds everything up to this LSN; `None`: it must be rewritten.
    synced: Option<u64>,
    in_flight: Option<InFlight>,
    run_id: String,
    client: Option<Client>,
    /// For everything but batches (through the redis crate).
    conn: Option<MultiplexedConnection>,
    /// For batches and resync writes: raw RESP (`resp`).
    link: Option<Link>,
    /// The reused buffer batches are written into.
    resp: Resp,
    next_check: Instant,
    /// The newest stream entry id ("" unknown): the next entry's `prev`.
    last_id: String,
    /// (time, activity) at which an activity's phase changes.
    boundaries: BTreeSet<(u64, u64)>,
    phase_due: BTreeSet<u64>,
    /// `mirror:lsn` and `mirror:tip` as the first connection found them:
    /// where this run may go on from without a rewrite (`resume`), once.
    found: Option<(u64, String)>,
    may_resume: bool,
    /// Digests records for `mirror:tip`.
    encoder: Encoder,
    record: Vec<u8>,
}

impl Target for Redis {
    const NAMES: Names = Names {
        thread: "redis-mirror",
        what: "Redis mirror",
        checkpoint: super::CHECKPOINT,
        kind: "redis",
        halt_hint: "Restart the engine (or call request_resync) to rewrite Redis from the engine's state.",
        errors_total: "seckill_mirror_errors_total",
        records_total: "seckill_mirror_records_total",
        batches_total: "seckill_mirror_batches_total",
        resyncs_total: "seckill_mirror_resyncs_total",
        restarts_total: "seckill_mirror_restarts_total",
        budget_exceeded_total: "seckill_mirror_budget_exceeded_total",
        lag_records: "seckill_mirror_lag_records",
        applied_lsn: "seckill_mirror_applied_lsn",
        halted: "seckill_mirror_halted",
        connected: "seckill_mirror_connected",
        batch_seconds: "seckill_mirror_batch_seconds",
        lag_seconds_gauge: None,
        lag_seconds_histogram: Some("seckill_mirror_lag_seconds"),
    };

    async fn open(&mut self) -> Result<Opened, Failure> {
        if self.conn.is_none() || self.link.is_none() {
            self.connect().await.map_err(Failure::Transient)?;
        }
        if self.synced.is_none() && self.may_resume {
            let resumed = self.resume().await.map_err(Failure::Transient)?;
            self.may_resume = false;
            if let Some(lsn) = resumed {
                return Ok(Opened { lsn: Some(lsn), resync_flagged: false, resumed: true });
            }
        }
        Ok(Opened { lsn: self.synced, resync_flagged: false, resumed: false })
    }

    async fn apply(&mut self, after: u64, batch: &[(u64, Event)]) -> Result<u64, Failure> {
        if self.synced != Some(after) {
            return Err(self.lost(format!("the mirror is at {:?}, not {after}", self.synced)));
        }
        self.due_phases();
        self.write_step(after, batch).await
    }

    async fn resync(&mut self, replica: &Replica) -> Result<u64, Failure> {
        self.rewrite(replica).await.map_err(Failure::Transient)
    }

    /// Writes the activities whose phase changed, and every `check_ms`
    /// checks that Redis still has the mirror.
    async fn idle(&mut self, at: u64) -> Result<(), Failure> {
        if self.due_phases() {
            self.apply(at, &[]).await?;
        } else if Instant::now() >= self.next_check {
            self.check(at).await?;
        }
        Ok(())
    }

    fn disconnect(&mut self) {
        self.conn = None;
        self.link = None;
    }
}

impl Redis {
    pub(crate) fn new(cfg: MirrorConfig, data_dir: PathBuf, status: Arc<WalStatus>) -> Self {
        Self {
            keys: Keys::new(&cfg.prefix),
            state: MirrorState::default(),
            cfg,
            data_dir,
            status,
            synced: None,
            in_flight: None,
            run_id: new_run_id(),
            client: None,
            conn: None,
            link: None,
            resp: Resp::default(),
            next_check: Instant::now(),
            last_id: String::new(),
            boundaries: BTreeSet::new(),
            phase_due: BTreeSet::new(),
            found: None,
            may_resume: true,
            encoder: Encoder::default(),
            record: Vec::new(),
        }
    }

    fn op_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.op_timeout_ms.max(1))
    }

    fn max(&self) -> usize {
        self.cfg.batch_records_max.max(1)
    }

    /// Redis no longer holds the mirror: it must be rewritten.
    fn lost(&mut self, why: String) -> Failure {
        self.synced = None;
        self.in_flight = None;
        Failure::Lost(format!("Redis no longer holds the mirror: {why}"))
    }

    /// Moves the activities whose phase changed by now to `phase_due`;
    /// whether any are due.
    fn due_phases(&mut self) -> bool {
        let now_ms = self.cfg.clock.now_ms();
        while let Some(&(t, id)) = self.boundaries.first() {
            if t > now_ms {
                break;
            }
            self.boundaries.pop_first();
            self.phase_due.insert(id);
        }
        !self.phase_due.is_empty()
    }

    async fn connect(&mut self) -> Result<(), String> {
        self.conn = None;
        self.link = None;
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let c =
                    Client::open(self.cfg.url.as_str()).map_err(|e| format!("bad Redis URL {}: {e}", self.cfg.url))?;
                self.client.insert(c).clone()
            }
        };
        let t = self.op_timeout();
        let unreachable = |e: &dyn std::fmt::Display| format!("cannot connect to Redis at {}: {e}", self.cfg.url);
        let timed_out = || format!("connecting to Redis at {} timed out", self.cfg.url);
        let conf = AsyncConnectionConfig::new().set_connection_timeout(Some(t)).set_response_timeout(Some(t));
        let mut conn = match tokio::time::timeout(t, client.get_multiplexed_async_connection_with_config(&conf)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(unreachable(&e)),
            Err(_) => return Err(timed_out()),
        };
        let mut p = redis::pipe();
        p.cmd("MGET").arg(self.keys.lsn()).arg(self.keys.run()).arg(self.keys.tip());
        p.cmd("XREVRANGE").arg(self.keys.events()).arg("+").arg("-").arg("COUNT").arg(1);
        let (marks, top): (Vec<Option<String>>, Value) = query(&mut conn, &p, t).await?;
        let link = match tokio::time::timeout(t, Link::open(client.get_connection_info(), t)).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return Err(unreachable(&e)),
            Err(_) => return Err(timed_out()),
        };
        self.conn = Some(conn);
        self.link = Some(link);
        self.next_check = Instant::now() + Duration::from_millis(self.cfg.check_ms);
        self.last_id = top_id(&top).unwrap_or_default();
        let lsn = marks.first().cloned().flatten().and_then(|s| s.parse::<u64>().ok());
        let ours = marks.get(1).cloned().flatten().as_deref() == Some(self.run_id.as_str());
        tracing::info!(url = %self.cfg.url, redis_lsn = ?lsn, "Redis mirror connected");
        self.found = lsn.zip(marks.get(2).cloned().flatten());
        let in_flight = self.in_flight.take();
        if let Some(w) = self.synced {
            match (lsn, in_flight) {
                (Some(x), _) if ours && x == w => {}
                // The batch whose answer was lost landed: take it.
                (Some(x), Some(f)) if ours && x == f.lsn => {
                    self.state.commit(&f.plan);
                    self.synced = Some(x);
                }
                _ => {
                    let why = format!("Redis has LSN {lsn:?} (run id ours: {ours}), the mirror wrote {w}");
                    tracing::warn!(reason = %why, "Redis no longer holds the mirror; rewriting it from the engine's state");
                    self.synced = None;
                }
            }
        }
        Ok(())
    }

    /// Writes `events` (after `w`) and the due phase changes as one batch.
    async fn write_step(&mut self, w: u64, events: &[(u64, Event)]) -> Result<u64, Failure> {
        let plan = match state::plan(&self.state, events, self.cfg.order_hashes) {
            Ok(p) => p,
            Err(why) => return Err(self.lost(why)),
        };
        let phases = std::mem::take(&mut self.phase_due);
        let new_lsn = events.last().map_or(w, |(l, _)| *l);
        match self.write_batch(w, new_lsn, events, &plan, &phases).await {
            Ok(()) => {
                self.state.commit(&plan);
                self.synced = Some(new_lsn);
                Ok(new_lsn)
            }
            Err(Failure::Lost(why)) => Err(self.lost(why)),
            Err(e) => {
                self.phase_due.extend(phases);
                if new_lsn > w {
                    self.in_flight = Some(InFlight { lsn: new_lsn, plan });
                }
                Err(e)
            }
        }
    }

    /// The changed hashes: products and activities whole, with order
    /// hashes the orders created in the batch whole and older orders only
    /// their `status`, buyers' units by increments (`HINCRBY` for those
    /// that went up, one script call per activity for those that went
    /// down).
    fn add_writes(&mut self, r: &mut Resp, plan: &Plan, phases: &BTreeSet<u64>) {
        let now_ms = self.cfg.clock.now_ms();
        for (id, prod) in &plan.products {
            keys::hset(r, &self.keys.product(*id), &keys::product_fields(prod));
        }
        let mut activities = plan.touched_activities();
        activities.extend(phases.iter().copied());
        for id in &activities {
            let Some(a) = plan.activities.get(id).or_else(|| self.state.activities.get(id)) else { continue };
            let (total, remaining) = a.stock();
            keys::hset(r, &self.keys.activity(*id), &keys::activity_fields(&a.activity, total, remaining, now_ms));
            self.boundaries.extend(phase_changes(&a.activity, now_ms).map(|t| (t, *id)));
        }
        // Empty without order hashes (`state::plan`).
        let mut key = String::with_capacity(64);
        for (id, o) in &plan.created {
            keys::order_hset(r, self.keys.order_in(&mut key, *id), o);
        }
        for (id, status) in &plan.changed {
            r.cmd(4).arg("HSET").arg(self.keys.order_in(&mut key, *id)).arg("status").arg(status.as_str());
        }
        for (activity_id, buyers) in &plan.purchased {
            let key = self.keys.purchased(*activity_id);
            let mut down = 0;
            for (user, delta) in buyers {
                if *delta > 0 {
                    r.cmd(4).arg("HINCRBY").arg(&key).num(*user).num(*delta);
                } else {
                    down += 1;
                }
            }
            if down > 0 {
                r.cmd(4 + 2 * down).arg("EVAL").arg(PURCHASED_LUA).arg("1").arg(&key);
                for (user, delta) in buyers.iter().filter(|(_, d)| **d < 0) {
                    r.num(*user).num(*delta);
                }
            }
        }
    }

    /// Appends XADDs for the order events among `events`, then one
    /// `XTRIM … MAXLEN ~` (once per batch rather than per entry); returns
    /// the id of the last one (or `prev` if none). `order` gives (quantity,
    /// amount_cents) of an order whose change was logged before 2026-12-07;
    /// `create`: whether they may create the stream (`keys::event_xadd`).
    fn add_events(
        &self,
        r: &mut Resp,
        events: &[(u64, Event)],
        mut prev: String,
        order: &dyn Fn(&OrderId) -> Option<(u32, u64)>,
        create: bool,
    ) -> String {
        let key = self.keys.events();
        let mut added = false;
        for (lsn, ev) in events {
            // An order unknown to `order` gets no entry (never happens: only
            // a resync's backfill meets old status changes, and its replica
            // has every order).
            if keys::event_xadd(r, &key, *lsn, ev, &prev, order, create) {
                prev.clear();
                let _ = write!(prev, "{}", keys::EventId(*lsn));
                added = true;
            }
        }
        if added {
            r.cmd(5).arg("XTRIM").arg(&key).arg("MAXLEN").arg("~").num(self.cfg.stream_maxlen);
        }
        prev
    }

    /// One batch as one MULTI/EXEC: check that Redis still has the mirror
    /// at `w`, write the changed keys and the events, move the LSN.
    async fn write_batch(
        &mut self,
        w: u64,
        new_lsn: u64,
        events: &[(u64, Event)],
        plan: &Plan,
        phases: &BTreeSet<u64>,
    ) -> Result<(), Failure> {
        let mut r = std::mem::take(&mut self.resp);
        r.clear();
        r.cmd(1).arg("MULTI");
        r.cmd(2).arg("GET").arg(self.keys.lsn());
        r.cmd(2).arg("GET").arg(self.keys.run());
        self.add_writes(&mut r, plan, phases);
        let last_id = self.add_events(&mut r, events, self.last_id.clone(), &|_| None, false);
        r.cmd(3).arg("SET").arg(self.keys.lsn()).num(new_lsn);
        if let Some((lsn, ev)) = events.last() {
            let tip = self.tip_of(*lsn, ev);
            r.cmd(3).arg("SET").arg(self.keys.tip()).arg(&tip);
        }
        r.cmd(1).arg("EXEC");
        let outcome = self.exec(&r, w).await;
        self.resp = r;
        outcome?;
        self.last_id = last_id;
        Ok(())
    }

    /// Sends a `MULTI … EXEC` whose first two commands are the fence
    /// (`GET mirror:lsn`, `GET mirror:run`) and reads only what matters of
    /// the answer: the fence, and whether Redis refused any command
    /// (`Lost`: Redis is to be rewritten).
    async fn exec(&mut self, r: &Resp, w: u64) -> Result<(), Failure> {
        let mut link = self.link.take().ok_or_else(|| Failure::Transient("not connected".into()))?;
        let n = link.exchange(r, self.op_timeout()).await.map_err(Failure::Transient)?;
        let items = resp::elements(link.raw(n - 1)).map_err(|e| match link.reply(n - 1) {
            Ok(Item::Error(e)) => {
                Failure::Transient(format!("Redis refused the batch: {}", String::from_utf8_lossy(e)))
            }
            _ => Failure::Transient(e),
        })?;
        let (lsn, run) = (items.first().and_then(Item::text), items.get(1).and_then(Item::text));
        let outcome = if lsn != Some(w.to_string().as_bytes()) || run != Some(self.run_id.as_bytes()) {
            Err(Failure::Lost(format!(
                "expected LSN {w} and our run id, found LSN {:?}",
                lsn.map(|l| String::from_utf8_lossy(l).into_owned())
            )))
        } else if let Some(e) = items.iter().find_map(|v| match v {
            Item::Error(e) => Some(String::from_utf8_lossy(e).into_owned()),
            _ => None,
        }) {
            Err(Failure::Lost(format!("Redis refused a mirror write: {e}")))
        } else if items.iter().skip(2).any(|v| *v == Item::Nil) {
            // Only an `XADD … NOMKSTREAM` answers nil: the stream is gone.
            Err(Failure::Lost("the event stream is gone".into()))
        } else {
            Ok(())
        };
        drop(items);
        self.link = Some(link);
        outcome
    }

    /// While idle: is the mirror still there?
    async fn check(&mut self, w: u64) -> Result<(), Failure> {
        self.next_check = Instant::now() + Duration::from_millis(self.cfg.check_ms);
        let Some(mut conn) = self.conn.clone() else { return Ok(()) };
        let mut p = redis::pipe();
        p.cmd("MGET").arg(self.keys.lsn()).arg(self.keys.run());
        let (marks,) =
            query::<(Vec<Option<String>>,)>(&mut conn, &p, self.op_timeout()).await.map_err(Failure::Transient)?;
        let lsn = marks.first().cloned().flatten();
        let run = marks.get(1).cloned().flatten();
        if lsn.as_deref() != Some(w.to_string().as_str()) || run.as_deref() != Some(self.run_id.as_str()) {
            return Err(self.lost(format!("expected LSN {w} and our run id, found LSN {lsn:?}")));
        }
        Ok(())
    }

    /// The digest of the record of `lsn`: its framed bytes' CRC (the
    /// LSN's and the payload's), as `mirror:tip` holds it, with whether
    /// order hashes are written (Redis written with another setting has
    /// other keys: it is rewritten).
    fn tip_of(&mut self, lsn: u64, ev: &Event) -> String {
        self.record.clear();
        self.encoder.append(&mut self.record, lsn, ev);
        let crc = self.record.get(4..8).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        format!("{lsn}:{crc:08x}:h{}", u8::from(self.cfg.order_hashes))
    }

    /// The digest of this engine's record of `lsn`, read from its WAL;
    /// `None` when the WAL does not have it (LSN 0, or deleted).
    fn record_tip(&mut self, lsn: u64) -> Option<String> {
        let mut tail = Tailer::new(&self.data_dir, self.status.clone(), lsn.checked_sub(1)?);
        let mut out = Vec::with_capacity(1);
        match tail.poll(1, &mut out) {
            Ok(1) => {}
            _ => return None,
        }
        let (at, ev) = out.pop()?;
        (at == lsn).then(|| self.tip_of(at, &ev))
    }

    /// Goes on from what Redis has, without a rewrite, when it follows this
    /// engine's log: `mirror:lsn` is durable here, within the WAL budget,
    /// and `mirror:tip` is the digest of this engine's record at that LSN
    /// (the same on every replica of a group: a new leader takes over its
    /// predecessor's Redis). The state at that LSN is rebuilt from the
    /// newest snapshot at or before it and the WAL; Redis becomes this run's
    /// (`mirror:run`) only if `mirror:lsn` and `mirror:tip` did not move
    /// meanwhile. `None`: rewrite Redis (a resync) instead.
    async fn resume(&mut self) -> Result<Option<u64>, String> {
        let Some((x, tip)) = self.found.take() else { return Ok(None) };
        let durable = self.status.durable_lsn.load(std::sync::atomic::Ordering::Acquire);
        let why_not = if x > durable {
            Some("Redis is ahead of this engine's log")
        } else if durable - x > self.cfg.wal_budget_records {
            Some("Redis is further behind than the WAL budget")
        } else if self.record_tip(x).as_deref() != Some(tip.as_str()) {
            Some("Redis follows another log, or was written with other order-hash settings (mirror:tip)")
        } else {
            None
        };
        if let Some(why) = why_not {
            tracing::info!(redis_lsn = x, durable, why, "Redis mirror: rewriting Redis instead of going on");
            return Ok(None);
        }
        let started = Instant::now();
        let (wal_dir, snap_dir) = (self.data_dir.join("wal"), self.data_dir.join("snapshots"));
        let replica = match wal::rebuild(&*wal::os_fs(), &wal_dir, &snap_dir, None, x, |_| {}) {
            Ok(r) if r.lsn == x => r,
            Ok(r) => {
                let why = "the newest snapshot is past Redis's LSN";
                tracing::info!(redis_lsn = x, snapshot_lsn = r.lsn, why, "Redis mirror: rewriting Redis instead");
                return Ok(None);
            }
            Err(e) => {
                tracing::info!(redis_lsn = x, error = %e, "Redis mirror: rewriting Redis instead of going on");
                return Ok(None);
            }
        };
        let t = self.op_timeout();
        let mut conn = self.conn.clone().ok_or("not connected")?;
        // Ours only if nobody wrote since `connect` read the marks.
        let script = "if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then \
                      redis.call('SET', KEYS[3], ARGV[3]) return 1 end return 0";
        let mut p = redis::pipe();
        p.cmd("EVAL").arg(script).arg(3).arg(self.keys.lsn()).arg(self.keys.tip()).arg(self.keys.run());
        p.arg(x).arg(&tip).arg(&self.run_id);
        let (taken,): (i64,) = query(&mut conn, &p, t).await?;
        if taken != 1 {
            tracing::info!(redis_lsn = x, "Redis mirror: Redis moved while it was checked; rewriting it");
            return Ok(None);
        }
        let state = MirrorState::from_replica(&replica);
        let now_ms = self.cfg.clock.now_ms();
        for (id, a) in &state.activities {
            self.boundaries.extend(phase_changes(&a.activity, now_ms).map(|t| (t, *id)));
        }
        self.state = state;
        self.synced = Some(x);
        self.in_flight = None;
        let took_ms = started.elapsed().as_millis() as u64;
        tracing::info!(lsn = x, durable, took_ms, "Redis mirror: Redis follows this engine's log; going on from it");
        Ok(Some(x))
    }

    /// Rewrites Redis from `replica` (the engine's state, built for it
    /// by the driver), at that state's LSN.
    async fn rewrite(&mut self, replica: &Replica) -> Result<u64, String> {
        let started = Instant::now();
        let r = replica.lsn;
        let t = self.op_timeout();
        let mut conn = self.conn.clone().ok_or("not connected")?;
        tracing::info!(lsn = r, orders = replica.orders.len(), "Redis mirror: rewriting Redis from the engine's state");

        // Ours from now on, and not consistent until the LSN is back.
        let mut p = redis::pipe();
        p.cmd("SET").arg(self.keys.run()).arg(&self.run_id).ignore();
        p.cmd("DEL").arg(self.keys.lsn()).ignore();
        p.cmd("XREVRANGE").arg(self.keys.events()).arg("+").arg("-").arg("COUNT").arg(1);
        let (top,): (Value,) = query(&mut conn, &p, t).await?;
        let top = top_id(&top);

        // The stream: add the events it lacks from the WAL (ids are LSNs, so
        // a consumer never sees one twice), as far back as the WAL and the
        // limit go; when that does not reach the stream's end, say so.
        let (stream_end, mut prev) = match top.as_deref().and_then(id_lsn) {
            Some(l) if l > r => {
                tracing::warn!(
                    stream_lsn = l,
                    lsn = r,
                    "the event stream is ahead of this engine's log; starting it anew"
                );
                let mut p = redis::pipe();
                p.cmd("DEL").arg(self.keys.events()).ignore();
                query::<Value>(&mut conn, &p, t).await?;
                (0, String::new())
            }
            Some(l) => (l, top.clone().unwrap_or_default()),
            None => (0, String::new()),
        };
        let limit = self.cfg.stream_maxlen.min(self.cfg.wal_budget_records);
        let oldest_kept = segment::list(&self.data_dir.join("wal"))
            .ok()
            .and_then(|s| s.first().map(|s| s.first_lsn))
            .unwrap_or(r + 1);
        let from = stream_end.max(r.saturating_sub(limit)).max(oldest_kept.saturating_sub(1));
        let mut gap = from > stream_end;
        if gap {
            prev.clear(); // what came before the first added event is unknown
        }
        let mut link = self.link.take().ok_or("not connected")?;
        if from < r && !self.backfill(&mut link, replica, from, r, &mut prev).await? {
            gap = true;
        }

        let state = MirrorState::from_replica(replica);
        self.write_all(&mut link, replica, &state).await?;
        self.link = Some(link);
        self.sweep(&mut conn, replica).await?;

        let mut p = redis::pipe();
        p.atomic();
        p.cmd("XADD")
            .arg(self.keys.events())
            .arg("MAXLEN")
            .arg("~")
            .arg(self.cfg.stream_maxlen)
            .arg(format!("{r}-*"))
            .arg("type")
            .arg("resync")
            .arg("prev")
            .arg(&prev)
            .arg("gap")
            .arg(u8::from(gap));
        p.cmd("SET").arg(self.keys.lsn()).arg(r).ignore();
        p.cmd("SET").arg(self.keys.run()).arg(&self.run_id).ignore();
        match self.record_tip(r) {
            Some(tip) => p.cmd("SET").arg(self.keys.tip()).arg(tip).ignore(),
            None => p.cmd("DEL").arg(self.keys.tip()).ignore(),
        };
        let (id,): (String,) = query(&mut conn, &p, t).await?;
        self.last_id = id;
        self.state = state;
        self.synced = Some(r);
        self.in_flight = None;
        tracing::info!(lsn = r, gap, took_ms = started.elapsed().as_millis() as u64, "Redis mirror: resync done");
        Ok(r)
    }

    /// XADDs the order events of `(from, to]` from the WAL. False if the
    /// WAL no longer has them.
    async fn backfill(
        &self,
        link: &mut Link,
        replica: &Replica,
        from: u64,
        to: u64,
        prev: &mut String,
    ) -> Result<bool, String> {
        let mut tail = Tailer::new(&self.data_dir, self.status.clone(), from);
        let mut out = Vec::new();
        let mut at = from;
        let mut r = Resp::default();
        // Quantity and amount never change after an order is created.
        let order = |id: &OrderId| replica.orders.get(id).map(|o| (o.quantity, o.amount_cents));
        while at < to {
            out.clear();
            match tail.poll(self.max().min((to - at) as usize), &mut out) {
                Ok(0) | Err(TailError::Truncated(_)) => {
                    prev.clear();
                    return Ok(false);
                }
                Ok(_) => {}
                Err(e) => return Err(format!("reading the WAL: {e}")),
            }
            at = out.last().map_or(at, |(l, _)| *l);
            r.clear();
            let next = self.add_events(&mut r, &out, prev.clone(), &order, true);
            if !r.is_empty() {
                send(link, &r, self.op_timeout()).await?;
            }
            *prev = next;
        }
        Ok(true)
    }

    /// Writes every product, activity, order and purchase of `replica`.
    async fn write_all(&mut self, link: &mut Link, replica: &Replica, state: &MirrorState) -> Result<(), String> {
        let chunk = self.cfg.resync_chunk.max(1);
        let t = self.op_timeout();
        let now_ms = self.cfg.clock.now_ms();
        let mut r = Resp::default();
        for (id, prod) in &state.products {
            keys::hset(&mut r, &self.keys.product(*id), &keys::product_fields(prod));
        }
        let mut boundaries = Vec::new();
        for (id, a) in &state.activities {
            let (total, remaining) = a.stock();
            keys::hset(&mut r, &self.keys.activity(*id), &keys::activity_fields(&a.activity, total, remaining, now_ms));
            boundaries.extend(phase_changes(&a.activity, now_ms).map(|t| (t, *id)));
            if r.len() >= chunk {
                send(link, &r, t).await?;
                r.clear();
            }
        }
        let mut key = String::new();
        for o in replica.orders.values().filter(|_| self.cfg.order_hashes) {
            keys::order_hset(&mut r, self.keys.order_in(&mut key, o.id), o);
            if r.len() >= chunk {
                send(link, &r, t).await?;
                r.clear();
            }
        }
        // Purchased hashes are built aside and renamed in place, so a
        // reader never sees one half written.
        let mut by_activity: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
        for o in replica.orders.values().filter(|o| o.status.holds_stock()) {
            *by_activity.entry(o.activity_id).or_default().entry(o.user_id).or_default() += u64::from(o.quantity);
        }
        for id in replica.activities.keys() {
            let key = self.keys.purchased(*id);
            let Some(buyers) = by_activity.get(id) else {
                r.cmd(2).arg("DEL").arg(&key);
                continue;
            };
            let scratch = self.keys.purchased_scratch(*id);
            r.cmd(2).arg("DEL").arg(&scratch);
            let buyers: Vec<(u64, u64)> = buyers.iter().map(|(u, n)| (*u, *n)).collect();
            for part in buyers.chunks(chunk) {
                r.cmd(2 + 2 * part.len()).arg("HSET").arg(&scratch);
                for (u, n) in part {
                    r.num(*u).num(*n);
                }
                send(link, &r, t).await?;
                r.clear();
            }
            r.cmd(3).arg("RENAME").arg(&scratch).arg(&key);
        }
        if !r.is_empty() {
            send(link, &r, t).await?;
        }
        self.boundaries.extend(boundaries);
        Ok(())
    }

    /// Deletes keys under the prefix that the replica does not have (orders
    /// of another history, every order hash when they are off, scratch of
    /// an interrupted resync).
    async fn sweep(&self, conn: &mut MultiplexedConnection, replica: &Replica) -> Result<(), String> {
        let t = self.op_timeout();
        let buyers: HashSet<u64> =
            replica.orders.values().filter(|o| o.status.holds_stock()).map(|o| o.activity_id).collect();
        let pattern = self.keys.pattern();
        let mut cursor: u64 = 0;
        loop {
            let mut p = redis::pipe();
            p.cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
            let ((next, found),): ((u64, Vec<Vec<u8>>),) = query(conn, &p, t).await?;
            let stray: Vec<&Vec<u8>> = found
                .iter()
                .filter(|k| {
                    let Ok(k) = std::str::from_utf8(k) else { return false };
                    match self.keys.classify(k) {
                        KeyKind::Product(id) => !replica.products.contains_key(&id),
                        KeyKind::Activity(id) => !replica.activities.contains_key(&id),
                        KeyKind::Order(id) => !self.cfg.order_hashes || !replica.orders.contains_key(&id),
                        KeyKind::Purchased(id) => !buyers.contains(&id),
                        KeyKind::Scratch => true,
                        KeyKind::Other => false,
                    }
                })
                .collect();
            if !stray.is_empty() {
                let mut p = redis::pipe();
                let c = p.cmd("UNLINK");
                for k in stray {
                    c.arg(k.as_slice());
                }
                query::<Value>(conn, &p, t).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}
