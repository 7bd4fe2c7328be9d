//! Shard owner threads. Each shard owns its users' purchases and orders
//! outright; the only thing shards share is the stock pool's atomic.

pub mod clicks;
pub mod orders;
pub mod state;

use crate::activity::Activity;
use crate::clock::Clock;
use crate::commit::{Batch, Reply, ReplyTx, Sink};
use crate::limits::GATHER_TARGET;
use crate::stock::StockPool;
use crossbeam_channel::{select, Receiver, Sender};
use seckill_proto::Request;
pub use state::ShardState;
use std::sync::Arc;
use std::time::Duration;

/// A request on its way to a shard, with where its answer goes.
pub struct Envelope {
    pub req: Request,
    pub tag: u64,
    pub reply: ReplyTx,
}

/// Configuration pushed to every shard by the control path. These travel on
/// their own unbounded channel so an admin command is never refused as busy.
pub enum Control {
    Install(Arc<Activity>, Arc<StockPool>),
    /// Answers once every control message sent before it is applied.
    Barrier(Sender<()>),
    /// Runs a read-only inspection of the shard state (checks and tests).
    Inspect(Box<dyn FnOnce(&ShardState) + Send>),
    /// Events of the control path to commit with the next batch (when this
    /// shard owns the log); its reply answers once they are durable.
    Log(Batch),
    /// Finish what is queued, hand the last batch on, and exit.
    Stop,
}

/// Most requests one shard decides before handing the batch on: bounds the
/// latency a batch adds and the size of one WAL group.
pub const BATCH_MAX: usize = 256;

/// Longest a shard sleeps while payment deadlines are pending, so expiry is
/// never late by more than this (and a test clock that jumps is noticed).
pub(crate) const DEADLINE_TICK: Duration = Duration::from_millis(50);

pub(crate) fn run(
    mut state: ShardState,
    data: Receiver<Envelope>,
    control: Receiver<Control>,
    mut sink: Sink,
    clock: Arc<dyn Clock>,
    gather: Option<Duration>,
) {
    const { assert!(GATHER_TARGET <= BATCH_MAX) };
    // The end of an fsync releases answers: that wake-up should run at once.
    let prompt_commit = set_policy(Policy::Wait) && sink.owns_fsyncing_log();
    let mut batch = Batch::default();
    let mut pending: Vec<Envelope> = Vec::with_capacity(BATCH_MAX);
    // Registered once: recording is then an append to the handle.
    let batch_size = metrics::histogram!("seckill_shard_batch_size");
    loop {
        let wait = state
            .next_deadline_ms()
            .map(|d| Duration::from_millis(d.saturating_sub(clock.now_ms())).min(DEADLINE_TICK));
        let first = match wait {
            Some(timeout) => select! {
                recv(control) -> msg => Wake::Control(msg.ok()),
                recv(data) -> msg => Wake::Data(msg.ok()),
                default(timeout) => Wake::Tick,
            },
            None => select! {
                recv(control) -> msg => Wake::Control(msg.ok()),
                recv(data) -> msg => Wake::Data(msg.ok()),
            },
        };
        let first = match first {
            Wake::Control(Some(Control::Stop)) | Wake::Control(None) | Wake::Data(None) => {
                drain(&mut state, &data, &mut sink, &clock, &mut batch);
                return;
            }
            Wake::Control(Some(c)) => {
                apply_control(&mut state, c, &mut batch);
                None
            }
            Wake::Data(Some(env)) => Some(env),
            Wake::Tick => None,
        };
        // Configuration first: a buy decided after an admin call returned
        // must see that call's effect.
        let mut stop = false;
        while let Ok(c) = control.try_recv() {
            stop |= matches!(c, Control::Stop);
            apply_control(&mut state, c, &mut batch);
        }
        let now_ms = clock.now_ms();
        state.expire_due(now_ms, &mut batch);
        if let Some(env) = first {
            pending.push(env);
            pending.extend(data.try_iter().take(BATCH_MAX - 1));
            decide_all(&mut state, &mut pending, now_ms, &mut batch);
            if let Some(window) = gather {
                if (2..GATHER_TARGET).contains(&batch.replies.len()) {
                    // Sleeping, not parked on the queue: buyers who queue
                    // meanwhile wake nobody, and the next fsync covers them.
                    std::thread::sleep(window);
                    pending.extend(data.try_iter().take(BATCH_MAX - batch.replies.len()));
                    decide_all(&mut state, &mut pending, clock.now_ms(), &mut batch);
                }
            }
            batch_size.record(batch.replies.len() as f64);
        }
        if !batch.is_empty() {
            if prompt_commit {
                set_policy(Policy::Commit);
            }
            sink.commit(&mut batch);
            if prompt_commit {
                set_policy(Policy::Wait);
            }
        }
        if stop {
            drain(&mut state, &data, &mut sink, &clock, &mut batch);
            return;
        }
    }
}

/// A shard works in batches: the wake-ups that start one (a buy queued
/// while it slept, the end of the group-commit window) need not run it at
/// once, and when they did they preempted the front thread that feeds it
/// (on 2 cores the two share one). So a shard waits under `SCHED_BATCH`,
/// whose wake-ups let the running thread go on, and commits under the
/// normal policy, so that the end of its fsync (answers to release) runs at
/// once. Two syscalls a batch. Measured on the 2-core VM
/// (docs/PERFORMANCE.md): the front's involuntary switches 16–18 → 10–12
/// per 100 buys, 33–38 → 50–55 records per fsync, −14 % CPU per buy.
#[derive(Clone, Copy)]
enum Policy {
    /// `SCHED_BATCH`: waking does not preempt the running thread.
    Wait,
    /// The normal policy (`SCHED_OTHER`).
    Commit,
}

/// Sets the calling shard thread's policy; false where the OS refused
/// (the shard then simply runs under the normal policy).
#[allow(unsafe_code)] // sched_setscheduler: see the SAFETY comment
fn set_policy(policy: Policy) -> bool {
    #[cfg(target_os = "linux")]
    {
        let policy = match policy {
            Policy::Wait => libc::SCHED_BATCH,
            Policy::Commit => libc::SCHED_OTHER,
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a plain syscall on the calling thread (pid 0) with a
        // valid, initialised parameter; SCHED_BATCH and SCHED_OTHER need
        // no privilege.
        let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not set the shard thread's scheduling policy");
        }
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = policy;
        false
    }
}

enum Wake {
    Control(Option<Control>),
    Data(Option<Envelope>),
    Tick,
}

/// Decides whatever is still queued, so a clean stop answers everyone.
fn drain(
    state: &mut ShardState,
    data: &Receiver<Envelope>,
    sink: &mut Sink,
    clock: &Arc<dyn Clock>,
    batch: &mut Batch,
) {
    let now_ms = clock.now_ms();
    for env in data.try_iter() {
        decide(state, env, now_ms, batch);
        if batch.replies.len() >= BATCH_MAX {
            sink.commit(batch);
        }
    }
    if !batch.is_empty() {
        sink.commit(batch);
    }
}

/// Decides `pending` in order, after touching what each request will read:
/// the users' entries sit in tables sized for a whole sale, one cache miss
/// each, and touched together their misses overlap instead of stalling the
/// decisions one by one.
fn decide_all(state: &mut ShardState, pending: &mut Vec<Envelope>, now_ms: u64, batch: &mut Batch) {
    for env in pending.iter() {
        state.warm(&env.req);
    }
    for env in pending.drain(..) {
        decide(state, env, now_ms, batch);
    }
}

#[inline]
fn decide(state: &mut ShardState, env: Envelope, now_ms: u64, batch: &mut Batch) {
    let resp = state.handle(&env.req, now_ms, batch);
    batch.replies.push(Reply { tx: env.reply, tag: env.tag, resp });
}

fn apply_control(state: &mut ShardState, c: Control, batch: &mut Batch) {
    match c {
        Control::Log(mut logged) => {
            batch.events.append(&mut logged.events);
            batch.returns.append(&mut logged.returns);
            batch.replies.append(&mut logged.replies);
        }
        Control::Install(activity, pool) => state.install(activity, pool),
        Control::Barrier(done) => {
            let _ = done.send(());
        }
        Control::Inspect(f) => f(state),
        Control::Stop => {}
    }
}
