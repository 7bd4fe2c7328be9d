//! The disk failing under a running engine (DURABILITY.md, "Failure of the
//! disk"): a fault-injecting `LogFile` over a real file fails the next write
//! (ENOSPC, EIO), writes only part of the buffer then fails, or fails
//! `sync_data` (EIO). For each fault, through a real `Node` on a temp dir:
//!
//! * buys acknowledged before the fault survive a restart;
//! * the request whose batch hit the fault, and every later one, is answered
//!   `busy`, never a success; `WalStatus.failed` is set;
//! * tokens taken by unacknowledged decisions stay taken, and tokens freed by
//!   an unacknowledged cancel are not returned (no oversell);
//! * nothing is written or fsynced after the failure (no fsync retry);
//! * after a restart on a healthy file layer, recovery succeeds, every
//!   acknowledged order is there, held + remaining == total, and the engine
//!   takes buys again.

mod common;
use common::{spec, T0};

use seckill_engine::node::{Node, NodeConfig};
use seckill_engine::wal::{overlay, Override};
use seckill_engine::wal::{Fs, LogFile, OnFailure};
use seckill_engine::{EngineConfig, ManualClock};
use seckill_proto::{ErrorCode, OrderStatus, OrderView, Request, Response};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

const TOTAL: u64 = 6;
const BUSY: Response = Response::Error(ErrorCode::Busy);

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The next `write_all` fails with this errno, writing nothing.
    Write(i32),
    /// The next `write_all` writes half the buffer, then fails (ENOSPC).
    ShortWrite,
    /// The next `sync_data` fails with EIO (the write before it succeeded).
    Sync,
    /// Opening the next segment fails (ENOSPC): the fault hits a rotation.
    Open,
}

#[derive(Default, Debug)]
struct State {
    armed: Option<Fault>,
    /// `Open` fires only for the segment of this name: the one the faulted
    /// group's rotation creates, not one an earlier group's rotation (which
    /// runs after that group's answers) is still about to create.
    open_name: Option<String>,
    /// Set once a fault fired; the counters below count calls after it.
    fired: bool,
    writes_after: u64,
    syncs_after: u64,
    opens_after: u64,
}

/// Shared between the test and every file the faulty layer opens.
#[derive(Default)]
struct Ctl(Mutex<State>);

impl Ctl {
    fn arm(&self, f: Fault) {
        self.0.lock().expect("fault control lock").armed = Some(f);
    }
    fn fire(st: &mut State, want: fn(Fault) -> bool) -> Option<Fault> {
        match st.armed {
            Some(f) if want(f) => {
                st.armed = None;
                st.fired = true;
                Some(f)
            }
            _ => None,
        }
    }
}

struct FaultyFile {
    file: File,
    ctl: Arc<Ctl>,
}

impl FaultyFile {
    /// A write through `write`, unless an armed write fault fires first.
    fn faulted(&mut self, buf: &[u8], write: impl Fn(&mut File, &[u8]) -> io::Result<()>) -> io::Result<()> {
        let mut st = self.ctl.0.lock().expect("fault control lock");
        if st.fired {
            st.writes_after += 1;
        }
        match Ctl::fire(&mut st, |f| matches!(f, Fault::Write(_) | Fault::ShortWrite)) {
            Some(Fault::Write(errno)) => Err(io::Error::from_raw_os_error(errno)),
            Some(_) => {
                assert!(buf.len() >= 2, "a short write needs a buffer to cut");
                write(&mut self.file, &buf[..buf.len() / 2])?;
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            None => write(&mut self.file, buf),
        }
    }
}

impl LogFile for FaultyFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.faulted(buf, Write::write_all)
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.faulted(buf, |f, b| std::os::unix::fs::FileExt::write_all_at(f, b, offset))
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut st = self.ctl.0.lock().expect("fault control lock");
        if st.fired {
            st.syncs_after += 1;
        }
        match Ctl::fire(&mut st, |f| matches!(f, Fault::Sync)) {
            Some(_) => Err(io::Error::from_raw_os_error(libc::EIO)),
            None => self.file.sync_data(),
        }
    }
}

/// WAL segments are opened through the fault-injecting layer.
struct FaultySegments(Arc<Ctl>);

impl Override for FaultySegments {
    fn open_segment(&self, _os: &dyn Fs, path: &Path) -> io::Result<Box<dyn LogFile>> {
        {
            let mut st = self.0 .0.lock().expect("fault control lock");
            if st.fired {
                st.opens_after += 1;
            }
            let named = st.open_name.as_deref().is_none_or(|n| path.file_name().is_some_and(|f| f == n));
            if named && Ctl::fire(&mut st, |f| matches!(f, Fault::Open)).is_some() {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        Ok(Box::new(FaultyFile { file, ctl: self.0.clone() }) as Box<dyn LogFile>)
    }
}

/// The OS file system, except that WAL segments are opened through the
/// fault-injecting layer.
fn faulty(ctl: Arc<Ctl>) -> Arc<dyn Fs> {
    overlay(seckill_engine::wal::os_fs(), FaultySegments(ctl))
}

fn cfg(dir: &Path, segment_bytes_max: u64, shards: usize) -> NodeConfig {
    let mut c = NodeConfig::new(dir);
    c.engine = EngineConfig { shards, queue_capacity: 64, ..EngineConfig::default() };
    c.segment_bytes_max = segment_bytes_max;
    // Stay up after the fault so the test can look at the failed node.
    c.on_failure = OnFailure::AnswerBusy;
    c
}

fn buy(activity_id: u64, user_id: u64) -> Request {
    Request::Buy { user_id, activity_id, quantity: 1, idempotency_key: 0, buy_token_ok: false }
}

fn order(r: Response) -> OrderView {
    match r {
        Response::Order(o) => o,
        other => panic!("expected an order, got {other:?}"),
    }
}

/// Units held by orders of `activity_id`, over all shards.
fn held(node: &Node, activity_id: u64) -> u64 {
    node.engine.inspect(move |s| s.held_by_activity().get(&activity_id).copied().unwrap_or(0)).iter().sum()
}

/// Stops a node the way a crash would leave the files (no final snapshot),
/// and waits for its WAL threads so the next open sees a quiet dir.
fn stop(node: Node) {
    let Node { engine, wal, .. } = node;
    drop(engine);
    wal.join();
}

/// The scenario for one fault, in both thread layouts: one shard that owns
/// the WAL writer (`Sink::Own`) and two shards sharing the writer thread.
fn run(fault: Fault) {
    for shards in [1, 2] {
        run_layout(fault, shards);
    }
}

/// The scenario for one fault; `acked_before` buys succeed first.
fn run_layout(fault: Fault, shards: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let ctl = Arc::new(Ctl::default());
    // A rotation fault needs segments small enough to rotate on the next group.
    let segment_bytes_max = if matches!(fault, Fault::Open) { 1 } else { 64 << 20 };

    let (activity_id, acked) = {
        let node =
            Node::open_with(cfg(dir.path(), segment_bytes_max, shards), Arc::new(clock.clone()), faulty(ctl.clone()))
                .expect("open");
        let e = &node.engine;
        let a = e.create_activity(spec(TOTAL)).expect("activity");
        let mut acked: Vec<OrderView> = Vec::new();
        for u in 1..=3 {
            acked.push(order(e.call(buy(a.id, u))));
        }
        assert!(!node.wal.status.failed.load(Ordering::Acquire));
        assert_eq!(e.activity(a.id).expect("activity exists").remaining, TOTAL - 3);

        if matches!(fault, Fault::Open) {
            // The next record (the buy below) rotates into this segment.
            let next = node.wal.status.written_lsn.load(Ordering::Acquire) + 2;
            ctl.0.lock().expect("fault control lock").open_name = Some(format!("{next:020}.wal"));
        }
        ctl.arm(fault);
        let hit = e.call(buy(a.id, 4));
        if matches!(fault, Fault::Open) {
            // The group was durable before the rotation failed: its answer
            // stands, and the failure stops everything after it. The
            // rotation runs after the answers: wait for it.
            acked.push(order(hit));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !node.wal.status.failed.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        } else {
            assert_eq!(hit, BUSY, "{fault:?}: the buy whose batch hit the fault");
        }
        assert!(ctl.0.lock().expect("fault control lock").fired, "{fault:?}: the fault fired");
        assert!(node.wal.status.failed.load(Ordering::Acquire), "{fault:?}: WAL marked failed");

        // Every later request is `busy`, whatever the shard decided: buys
        // that take the last tokens, one that finds the pool empty, a
        // cancel, a read.
        for u in 5..=7 {
            assert_eq!(e.call(buy(a.id, u)), BUSY, "{fault:?}: buy of user {u} after the fault");
        }
        let first = &acked[0];
        let cancel = Request::Cancel { user_id: first.user_id, order_id: first.order_id };
        assert_eq!(e.call(cancel), BUSY, "{fault:?}: cancel after the fault");
        let read = Request::GetOrder { user_id: Some(first.user_id), order_id: first.order_id };
        assert_eq!(e.call(read), BUSY, "{fault:?}: read after the fault");
        // The control path says so too: no operator is told a change stuck.
        assert!(e.sync().is_err(), "{fault:?}: sync after the fault");
        assert!(e.add_stock(a.id, 5).is_err(), "{fault:?}: stock.add after the fault");

        // Users 4..=6 took the last tokens; user 7 found none; the cancel's
        // token is not returned because its record is not durable.
        assert_eq!(
            e.activity(a.id).expect("activity exists").remaining,
            0,
            "{fault:?}: unacknowledged tokens stay taken"
        );

        let st = ctl.0.lock().expect("fault control lock");
        assert_eq!(st.syncs_after, 0, "{fault:?}: fsync retried after the failure");
        assert_eq!(st.writes_after, 0, "{fault:?}: wrote after the failure");
        assert_eq!(st.opens_after, 0, "{fault:?}: opened a segment after the failure");
        drop(st);
        stop(node);
        (a.id, acked)
    };

    // Restart on a healthy file layer.
    let node =
        Node::open(cfg(dir.path(), 64 << 20, shards), Arc::new(clock.clone())).expect("recovery after the fault");
    for o in &acked {
        let got = order(node.engine.call(Request::GetOrder { user_id: Some(o.user_id), order_id: o.order_id }));
        assert_eq!(got.status, OrderStatus::PendingPayment, "{fault:?}: acknowledged order {o:?}");
        assert_eq!((got.user_id, got.activity_id, got.quantity), (o.user_id, o.activity_id, o.quantity));
    }
    let view = node.engine.activity(activity_id).expect("activity recovered");
    let h = held(&node, activity_id);
    assert_eq!(view.total_stock, TOTAL);
    assert_eq!(h + view.remaining, TOTAL, "{fault:?}: held + remaining == total");
    // What reached the file: nothing of a failed write (a short write's torn
    // record is cut), the record whose fsync failed (it is in the page cache
    // of a healthy disk), everything before a failed rotation.
    let expect_held = match fault {
        Fault::Write(_) | Fault::ShortWrite => 3,
        Fault::Sync | Fault::Open => 4,
    };
    assert_eq!(h, expect_held, "{fault:?}: orders held after recovery");

    // The engine takes buys again, and they are durable.
    let fresh = order(node.engine.call(buy(activity_id, 100)));
    node.engine.sync().expect("sync");
    assert!(!node.wal.status.failed.load(Ordering::Acquire));
    assert_eq!(node.engine.activity(activity_id).expect("activity exists").remaining, TOTAL - expect_held - 1);
    stop(node);
    let node = Node::open(cfg(dir.path(), 64 << 20, shards), Arc::new(clock)).expect("second recovery");
    let got = order(node.engine.call(Request::GetOrder { user_id: Some(100), order_id: fresh.order_id }));
    assert_eq!(got.order_id, fresh.order_id);
    assert_eq!(held(&node, activity_id) + node.engine.activity(activity_id).expect("activity exists").remaining, TOTAL);
    stop(node);
}

#[test]
fn enospc_on_write() {
    run(Fault::Write(libc::ENOSPC));
}

#[test]
fn eio_on_write() {
    run(Fault::Write(libc::EIO));
}

#[test]
fn short_write_then_error() {
    run(Fault::ShortWrite);
}

#[test]
fn eio_on_fsync_is_not_retried() {
    run(Fault::Sync);
}

#[test]
fn failed_segment_rotation() {
    run(Fault::Open);
}
