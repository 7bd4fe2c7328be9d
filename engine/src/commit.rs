//! The hand-off between a decision and its answer.
//!
//! A shard decides a batch of requests, then passes the batch to its
//! [`Sink`]. Answers and returned stock tokens are released only by
//! [`Batch::release`], which the sink calls once the batch's events are
//! durable. That one function is where "no answer reveals non-durable state"
//! is enforced.

use crate::event::Event;
use crate::stock::StockPool;
use crate::wal::writer::Writer;
use crossbeam_channel::Sender;
use seckill_proto::Response;
use std::sync::Arc;

/// Where an answer goes.
pub enum ReplyTx {
    /// A connection's writer (or a blocking caller) reading `(tag, answer)` pairs.
    Channel(Sender<(u64, Response)>),
    /// An in-process caller waiting on its own answer (the front inside
    /// `seckill up`): no socket and no connection threads between them.
    Callback(Box<dyn FnOnce(Response) + Send>),
}

impl ReplyTx {
    /// Delivers the answer. The asker may have gone away (connection
    /// closed, request timed out); that is fine.
    pub fn send(self, tag: u64, resp: Response) {
        match self {
            ReplyTx::Channel(tx) => {
                let _ = tx.send((tag, resp));
            }
            ReplyTx::Callback(f) => f(resp),
        }
    }
}

impl From<Sender<(u64, Response)>> for ReplyTx {
    fn from(tx: Sender<(u64, Response)>) -> Self {
        ReplyTx::Channel(tx)
    }
}

/// One answer to send once its batch is durable: to `tx`, under the caller's `tag`.
pub struct Reply {
    pub tx: ReplyTx,
    pub tag: u64,
    pub resp: Response,
}

/// Tokens freed by a cancel, expiry or refund, returned once durable.
pub struct StockReturn {
    pub pool: Arc<StockPool>,
    pub quantity: u64,
}

/// What one round of decisions produced: the events to log, the tokens they
/// free and the answers they reveal, released together once durable.
#[derive(Default)]
pub struct Batch {
    pub events: Vec<Event>,
    pub returns: Vec<StockReturn>,
    pub replies: Vec<Reply>,
}

impl Batch {
    /// True when the batch carries nothing.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.returns.is_empty() && self.replies.is_empty()
    }

    /// Runs once the events of this batch are durable: tokens go back to
    /// their pools, then the answers go out. Leaves the batch empty.
    pub fn release(&mut self) {
        self.events.clear();
        for r in self.returns.drain(..) {
            if let Err(e) = r.pool.give_back(r.quantity) {
                // A token returned twice would let the activity oversell.
                panic!("stock invariant broken: {e}");
            }
        }
        for r in self.replies.drain(..) {
            r.tx.send(r.tag, r.resp);
        }
    }
}

/// What a shard does with a decided batch.
pub enum Sink {
    /// No log: release at once. For the in-memory core and its benchmarks.
    Immediate,
    /// Hand the batch to the WAL writer thread, which releases it after fsync.
    Log(Sender<Batch>),
    /// The shard owns the WAL writer and commits on its own thread: write,
    /// fdatasync, release, then decide what queued up meanwhile. The
    /// one-shard layout: a buy crosses no thread between its decision and
    /// its answer, and requests that arrive during an fsync find the shard
    /// busy instead of asleep, so queueing them wakes nobody.
    Own(Box<Writer>),
    /// Hand the batch to a replica group's replicator (`seckill-replica`,
    /// docs/REPLICATION.md), which releases it once a majority has it and
    /// this replica applied it. Shards treat it as `Log`: a channel to
    /// another thread that owns the commit.
    Replicated(Sender<Batch>),
}

impl Sink {
    /// A second handle on the same log for the control path, or `None` for
    /// `Own`, whose log only its shard may write (the control path sends
    /// its events through that shard instead).
    pub fn share(&self) -> Option<Sink> {
        match self {
            Sink::Immediate => Some(Sink::Immediate),
            Sink::Log(tx) => Some(Sink::Log(tx.clone())),
            Sink::Replicated(tx) => Some(Sink::Replicated(tx.clone())),
            Sink::Own(_) => None,
        }
    }

    /// True when committing blocks this thread on an fsync (`Own` with
    /// `Durability::Fsync`): only then is waiting for a larger group worth it.
    pub(crate) fn owns_fsyncing_log(&self) -> bool {
        matches!(self, Sink::Own(w) if w.fsyncs())
    }

    /// Makes `batch` durable and releases it (at once, through the writer
    /// thread, or by writing and syncing here); leaves it empty.
    pub fn commit(&mut self, batch: &mut Batch) {
        match self {
            Sink::Immediate => batch.release(),
            Sink::Log(tx) => {
                if tx.send(std::mem::take(batch)).is_err() {
                    // The writer is gone (shutting down or failed): nothing
                    // may be acknowledged any more.
                    tracing::error!("WAL writer stopped; dropping undurable batch");
                }
            }
            Sink::Own(writer) => writer.commit_one(batch),
            Sink::Replicated(tx) => {
                if tx.send(std::mem::take(batch)).is_err() {
                    // The replicator stopped (stepped down or shutting down).
                    tracing::error!("replicator stopped; dropping unreplicated batch");
                }
            }
        }
    }
}
