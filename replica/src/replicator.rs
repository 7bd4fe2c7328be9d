//! The leader's commit path: the engine's group-commit batches as Raft
//! entries (docs/REPLICATION.md, "One group-commit batch = one Raft entry").
//!
//! Shards hand decided batches to `Sink::Replicated`, a channel to the
//! **replicator** thread, which does what the WAL writer does except the
//! durable write: it gathers the batches that queued meanwhile into one
//! group, encodes their events as WAL records with the next LSNs, and
//! submits the bytes as one Raft entry. The **releaser** thread waits for
//! each entry, in log order, until a majority has it on disk and this
//! replica applied it, and only then calls `Batch::release` (tokens back,
//! answers out). Several groups are in flight at once (at most
//! [`IN_FLIGHT_MAX`]), so shards keep deciding while one is replicated.
//!
//! If a proposal fails or the group applied something else than the
//! records proposed (`Applied::Rejected`), the outcome of that group and of
//! every later one is unknown: their replies get `busy`, their tokens stay
//! taken, and the replica **steps down** (the callback the caller gives:
//! the binary exits, crash-only, and is restarted as a follower).
//!
//! [`lead`] waits until this replica leads with the group's whole log
//! applied, turns the applied state into shards (`Engine::from_replica`)
//! and starts the replicator; it also watches Raft and steps down when the
//! replica stops leading.

use crate::node::{Pending, ProposeError, Proposer, ReplicaNode};
use crate::state_machine::RecordsState;
use crate::Applied;
use crossbeam_channel::{bounded, Receiver, Sender};
use seckill_engine::wal::codec::Encoder;
use seckill_engine::{Batch, Clock, Engine, EngineConfig, Event, Sink};
use seckill_proto::{ErrorCode, Response};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// Batches waiting for the replicator before shards block on the channel
/// (the WAL writer's queue has the same size).
pub const QUEUE_BATCHES_MAX: usize = 1024;
/// Bytes of records gathered into one entry; at most one batch more is
/// added after it, far below `BATCH_BYTES_MAX` (a shard's batch is at most
/// `BATCH_MAX` decisions).
pub const GROUP_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Shard batches gathered into one entry at most.
pub const GROUP_BATCHES_MAX: usize = 1024;
/// Entries submitted and not yet released; the replicator waits beyond.
pub const IN_FLIGHT_MAX: usize = 8;
/// Longest an entry may take from its submission to its commit and apply
/// here. openraft 0.9 keeps a leader that lost its majority leading until it
/// hears of a newer term, so without this a cut-off leader's buyers would
/// wait forever; after it, the replica steps down and they get `busy`.
pub const COMMIT_TIMEOUT_MS: u64 = 5_000;

/// What a replica does when it must step down (the binary: exit).
pub type StepDown = Arc<dyn Fn(&str) + Send + Sync>;

/// Set once the replica stepped down: nothing is acknowledged after it.
struct Down {
    flag: AtomicBool,
    then: StepDown,
}

impl Down {
    fn is_down(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    fn trigger(&self, why: &str) {
        if !self.flag.swap(true, Ordering::AcqRel) {
            tracing::error!(why, "stepping down: this replica acknowledges nothing more");
            metrics::counter!("seckill_replica_step_downs_total").increment(1);
            (self.then)(why);
        }
    }
}

/// One group on its way through Raft.
struct InFlight {
    /// `None` for a group without events (reads, a `sync`): it is released
    /// after the groups before it, with nothing to replicate.
    pending: Option<Pending>,
    first_lsn: u64,
    last_lsn: u64,
    group: Vec<Batch>,
    submitted: Instant,
}

/// The replicator and releaser threads of a leading replica.
pub struct Replicator {
    down: Arc<Down>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Replicator {
    /// Starts the threads; the engine's first record gets `first_lsn`.
    /// Returns the shards' sink. `rt`: the runtime Raft runs on.
    pub fn start(
        proposer: Proposer,
        rt: Handle,
        first_lsn: u64,
        on_step_down: StepDown,
    ) -> std::io::Result<(Sink, Replicator)> {
        let down = Arc::new(Down { flag: AtomicBool::new(false), then: on_step_down });
        let (batch_tx, batch_rx) = bounded::<Batch>(QUEUE_BATCHES_MAX);
        let (flight_tx, flight_rx) = bounded::<InFlight>(IN_FLIGHT_MAX);
        let replicate = {
            let (rt, down) = (rt.clone(), down.clone());
            std::thread::Builder::new().name("replicator".into()).spawn(move || {
                seckill_engine::abort_on_panic("replicator", || {
                    replicate(batch_rx, flight_tx, proposer, rt, first_lsn, down)
                })
            })?
        };
        let release = {
            let down = down.clone();
            // `Batch::release` runs here: a broken stock invariant must stop
            // the process, as on a shard thread, not leave answers waiting.
            std::thread::Builder::new()
                .name("releaser".into())
                .spawn(move || seckill_engine::abort_on_panic("releaser", || release(flight_rx, rt, down)))?
        };
        Ok((Sink::Replicated(batch_tx), Replicator { down, threads: vec![replicate, release] }))
    }

    /// True once this replica stepped down.
    pub fn stepped_down(&self) -> bool {
        self.down.is_down()
    }

    /// Steps down now (Raft says another replica leads).
    pub fn step_down(&self, why: &str) {
        self.down.trigger(why);
    }

    /// Waits for both threads: they end once every sender of the sink is
    /// gone (the engine dropped) and every group in flight was answered.
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn encode(enc: &mut Encoder, buf: &mut Vec<u8>, next_lsn: &mut u64, events: &[Event]) {
    for ev in events {
        enc.append(buf, *next_lsn, ev);
        *next_lsn += 1;
    }
}

/// Answers `busy` to everyone in `group` and keeps their tokens taken: the
/// group may still be committed by the next leader (the same rule as a
/// failed fsync, `wal/writer.rs`).
fn fail(group: Vec<Batch>) {
    for b in group {
        for r in b.replies {
            r.tx.send(r.tag, Response::Error(ErrorCode::Busy));
        }
    }
}

fn replicate(
    rx: Receiver<Batch>,
    tx: Sender<InFlight>,
    proposer: Proposer,
    rt: Handle,
    mut next_lsn: u64,
    down: Arc<Down>,
) {
    let mut enc = Encoder::default();
    let entry_bytes = metrics::histogram!("seckill_replica_entry_bytes");
    while let Ok(first) = rx.recv() {
        let first_lsn = next_lsn;
        let mut buf = Vec::new();
        encode(&mut enc, &mut buf, &mut next_lsn, &first.events);
        let mut group = vec![first];
        while buf.len() < GROUP_BYTES_MAX && group.len() < GROUP_BATCHES_MAX {
            let Ok(b) = rx.try_recv() else { break };
            encode(&mut enc, &mut buf, &mut next_lsn, &b.events);
            group.push(b);
        }
        if down.is_down() {
            fail(group);
            continue;
        }
        let submitted = Instant::now();
        let pending = if buf.is_empty() {
            None
        } else {
            entry_bytes.record(buf.len() as f64);
            match rt.block_on(proposer.submit(bytes::Bytes::from(buf))) {
                Ok(p) => Some(p),
                Err(e) => {
                    down.trigger(&format!("proposing LSNs {first_lsn}..{next_lsn} failed: {e}"));
                    fail(group);
                    continue;
                }
            }
        };
        let flight = InFlight { pending, first_lsn, last_lsn: next_lsn - 1, group, submitted };
        if let Err(e) = tx.send(flight) {
            fail(e.into_inner().group);
            break;
        }
    }
    tracing::info!(next_lsn, "replicator stopped");
}

fn release(rx: Receiver<InFlight>, rt: Handle, down: Arc<Down>) {
    let commit_seconds = metrics::histogram!("seckill_replica_commit_seconds");
    let records = metrics::counter!("seckill_replica_records_total");
    while let Ok(f) = rx.recv() {
        let committed = match f.pending {
            _ if down.is_down() => false,
            None => true,
            Some(p) => match rt.block_on(applied_within(p, f.submitted)) {
                Ok(Applied::Records { first_lsn, last_lsn }) if (first_lsn, last_lsn) == (f.first_lsn, f.last_lsn) => {
                    commit_seconds.record(f.submitted.elapsed().as_secs_f64());
                    records.increment(last_lsn + 1 - first_lsn);
                    true
                }
                Ok(other) => {
                    down.trigger(&format!(
                        "the group applied {other:?} for the entry of LSNs {}..={}",
                        f.first_lsn, f.last_lsn
                    ));
                    false
                }
                Err(e) => {
                    down.trigger(&format!("the entry of LSNs {}..={}: {e}", f.first_lsn, f.last_lsn));
                    false
                }
            },
        };
        if committed {
            for mut b in f.group {
                b.release();
            }
        } else {
            fail(f.group);
        }
    }
}

/// `p.applied()`, or `Stopped` once `COMMIT_TIMEOUT_MS` after `submitted` passed.
async fn applied_within(p: Pending, submitted: Instant) -> Result<Applied, ProposeError> {
    let left = Duration::from_millis(COMMIT_TIMEOUT_MS).saturating_sub(submitted.elapsed());
    match tokio::time::timeout(left, p.applied()).await {
        Ok(r) => r,
        Err(_) => Err(ProposeError::Stopped(format!("not committed within {COMMIT_TIMEOUT_MS} ms"))),
    }
}

/// Why a replica did not take the lead.
#[derive(Debug, thiserror::Error)]
pub enum LeadError {
    #[error(transparent)]
    NotReady(#[from] ProposeError),
    #[error("the group's state does not start an engine: {0}")]
    State(String),
    #[error("starting the replicator: {0}")]
    Io(#[from] std::io::Error),
}

/// The engine of a leading replica.
pub struct Leading {
    pub engine: Arc<Engine>,
    /// The LSN of the state the engine started from (its first record is the next).
    pub lsn: u64,
    replicator: Replicator,
    watch: tokio::task::JoinHandle<()>,
}

impl Leading {
    /// True once this replica stepped down (it acknowledges nothing more).
    pub fn stepped_down(&self) -> bool {
        self.replicator.stepped_down()
    }

    /// Stops the shards after what is queued and waits until every batch in
    /// flight was answered (released or `busy`).
    pub fn stop(self) {
        self.watch.abort();
        self.engine.close();
        let _ = self.engine.sync();
        drop(self.engine);
        // The wire server may still hold the engine; the threads then end
        // with the process.
    }

    /// Steps down now.
    pub fn step_down(&self, why: &str) {
        self.replicator.step_down(why);
    }
}

/// Waits (at most `within`) until `node` leads with the group's whole log
/// applied, then starts the engine on that state with a replicator, and a
/// watch that steps down (`on_step_down`) once the replica stops leading.
/// Call it inside the runtime Raft runs on.
pub async fn lead(
    node: &ReplicaNode<RecordsState>,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    within: Duration,
    on_step_down: StepDown,
) -> Result<Leading, LeadError> {
    let lsn = node.ready_to_lead(within).await?;
    let replica = node.state().with_state(|s| s.replica().clone());
    if replica.lsn != lsn {
        return Err(LeadError::State(format!("applied LSN {} moved past {lsn} while taking the lead", replica.lsn)));
    }
    let (sink, replicator) = Replicator::start(node.proposer(), Handle::current(), lsn + 1, on_step_down)?;
    let engine = Engine::from_replica(config, clock, sink, &replica).map_err(LeadError::State)?;
    let (id, down) = (node.id, replicator.down.clone());
    let mut metrics = node.raft().metrics();
    let watch = tokio::spawn(async move {
        loop {
            let m = metrics.borrow_and_update().clone();
            if m.current_leader != Some(id) || !m.state.is_leader() {
                down.trigger(&format!(
                    "another replica leads (term {}, leader {:?})",
                    m.current_term, m.current_leader
                ));
                return;
            }
            if metrics.changed().await.is_err() {
                down.trigger("Raft stopped");
                return;
            }
        }
    });
    tracing::info!(id, lsn, "leading: the engine serves from the group's state");
    Ok(Leading { engine: Arc::new(engine), lsn, replicator, watch })
}
