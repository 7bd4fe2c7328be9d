//! Power loss and disk damage, one scenario each, on the simulated disk
//! (`wal::sim_fs::SimFs`): the bugs of issue 16, each as a test that failed
//! before its fix. The random search over the same ground is
//! `simulation.rs`.

mod common;
use common::{spec, T0};

use seckill_engine::node::{Node, NodeConfig, NodeError};
use seckill_engine::wal::sim_fs::{Fault, SimFs};
use seckill_engine::wal::{self, OnFailure, RecoveryError};
use seckill_engine::wal::{overlay, Fs, LogFile, Override};
use seckill_engine::{EngineConfig, ManualClock};
use seckill_proto::{ErrorCode, OrderView, Request, Response};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const DATA: &str = "/sim/data";

fn cfg() -> NodeConfig {
    let mut c = NodeConfig::new(PathBuf::from(DATA));
    c.engine = EngineConfig { shards: 2, queue_capacity: 1024, ..EngineConfig::default() };
    c.segment_bytes_max = 4096;
    c.snapshot_every_records = u64::MAX;
    c.on_failure = OnFailure::AnswerBusy;
    c
}

fn open(fs: &SimFs, cfg: NodeConfig) -> Result<Node, NodeError> {
    fs.restart();
    Node::open_with(cfg, Arc::new(ManualClock::new(T0)), Arc::new(fs.clone()))
}

fn crash(fs: &SimFs, node: Node) {
    fs.kill();
    let Node { engine, wal, .. } = node;
    drop(engine);
    wal.join();
}

/// How many of `acked` the engine can show.
fn present(node: &Node, acked: &[OrderView]) -> usize {
    acked
        .iter()
        .filter(|o| {
            matches!(
                node.engine.call(Request::GetOrder { user_id: Some(o.user_id), order_id: o.order_id }),
                Response::Order(_)
            )
        })
        .count()
}

/// A simulated disk with twenty acknowledged buys in one segment (of a
/// node run with `c`), then a kill.
struct Killed {
    fs: SimFs,
    c: NodeConfig,
    acked: Vec<OrderView>,
    /// The segment.
    path: PathBuf,
    /// Where its records end (the zeros written ahead begin).
    written: usize,
}

/// A node (run with `c` on a fresh simulated disk) selling `stock` units,
/// and the orders of users `1..=buyers`, one unit each: the disk, the node,
/// the activity and the orders.
fn bought(c: NodeConfig, stock: u64, buyers: u64) -> (SimFs, Node, u64, Vec<OrderView>) {
    let fs = SimFs::new();
    let node = open(&fs, c).expect("open");
    let a = node.engine.create_activity(spec(stock)).expect("activity").id;
    let acked = (1..=buyers).map(|u| order(buy(&node, a, u))).collect();
    (fs, node, a, acked)
}

fn twenty_acked_then_killed() -> Killed {
    let mut c = cfg();
    c.segment_bytes_max = 1 << 20;
    let (fs, node, _, acked) = bought(c.clone(), 100, 20);
    crash(&fs, node);
    fs.restart();
    let (path, _, _) = segments(&fs).into_iter().max_by_key(|(_, len, _)| *len).expect("a segment");
    let written = fs.read(&path).expect("segment").iter().rposition(|b| *b != 0).expect("records") + 1;
    Killed { fs, c, acked, path, written }
}

fn buy(node: &Node, activity_id: u64, user_id: u64) -> Response {
    node.engine.call(Request::Buy { user_id, activity_id, quantity: 1, idempotency_key: 0, buy_token_ok: false })
}

fn order(r: Response) -> OrderView {
    match r {
        Response::Order(o) => o,
        other => panic!("expected an order, got {other:?}"),
    }
}

fn assert_present(node: &Node, acked: &[OrderView]) {
    for o in acked {
        let got = node.engine.call(Request::GetOrder { user_id: Some(o.user_id), order_id: o.order_id });
        assert!(
            matches!(got, Response::Order(ref v) if v.order_id == o.order_id),
            "acknowledged {o:?} is gone: {got:?}"
        );
    }
}

/// Kills `node`, cuts the power (every byte not synced is lost), and checks
/// that a restart (`recovery` says what failed if it does not) shows every
/// order in `acked`.
fn survives_a_power_cut(fs: &SimFs, node: Node, acked: &[OrderView], recovery: &str) {
    crash(fs, node);
    fs.power_cut(|_| (0, 0));
    let node = open(fs, cfg()).expect(recovery);
    assert_present(&node, acked);
    crash(fs, node);
}

fn segments(fs: &SimFs) -> Vec<(PathBuf, usize, usize)> {
    fs.files().into_iter().filter(|(p, _, _)| p.extension().is_some_and(|e| e == "wal")).collect()
}

/// The files in `wal-damaged/` (path, length, synced length): what recovery
/// or `repair-wal` moved aside.
fn moved_aside(fs: &SimFs) -> Vec<(PathBuf, usize, usize)> {
    fs.files().into_iter().filter(|(p, _, _)| p.starts_with(Path::new(DATA).join("wal-damaged"))).collect()
}

/// The operator accepts the loss after recovery refused the log:
/// `repair-wal` moves one segment's damaged records aside.
fn repair(fs: &SimFs) -> wal::RepairReport {
    fs.restart();
    let report = wal::repair(fs, Path::new(DATA)).expect("repair");
    assert_eq!(report.moved.len(), 1, "{report:?}");
    report
}

/// After a repair the engine starts, with the orders acknowledged before the
/// damage and without those after it.
fn starts_without_what_follows_the_damage(fs: &SimFs, c: NodeConfig, acked: &[OrderView]) {
    let node = open(fs, c).expect("starts after repair");
    let present = present(&node, acked);
    assert!(present > 0 && present < acked.len(), "orders before the damage stay, after it are gone: {present}");
    crash(fs, node);
}

/// The reproduction of the issue: a kill -9 between a group's write and
/// its fdatasync leaves records in the page cache only; recovery replayed
/// them and went on writing newer segments without syncing them, so a power
/// cut then left the old segment shorter than what follows it, and the
/// engine refused to start ("WAL records … are missing").
#[test]
fn records_replayed_after_a_kill_are_made_durable_before_new_writes() {
    let (fs, node, a, mut acked) = bought(cfg(), 1000, 5);
    let next = node.wal.status.written_lsn.load(Ordering::Acquire) + 1;
    fs.arm(Fault::AtWalSync { lsn: next });
    assert_eq!(buy(&node, a, 6), Response::Error(ErrorCode::Busy), "the buy whose fsync never happened");
    assert!(fs.fired().is_some());
    crash(&fs, node);

    // Restart: the unsynced buy comes back from the page cache.
    let node = open(&fs, cfg()).expect("recovery after kill -9");
    // Enough buys to rotate into new segments.
    for u in 100..160 {
        acked.push(order(buy(&node, a, u)));
    }
    survives_a_power_cut(&fs, node, &acked, "recovery after a power cut refused a log that lost only unsynced bytes");
}

/// `wal/`, `snapshots/` and the data dir itself were created without an
/// fsync of their parent: a power cut could take the whole log with it.
#[test]
fn new_directories_survive_a_power_cut() {
    let (fs, node, _, acked) = bought(cfg(), 10, 3);
    survives_a_power_cut(&fs, node, &acked, "recovery");
}

/// A bit flip in the middle of the last segment used to be cut off like a
/// torn tail, silently dropping every acknowledged record after it.
#[test]
fn damage_inside_the_last_segment_is_refused_and_repair_moves_it_aside() {
    let Killed { fs, c, acked, path, written } = twenty_acked_then_killed();
    let len = fs.read(&path).expect("segment").len();
    assert!(fs.corrupt(&path, written / 2), "flip a byte in the middle of the records");

    let err = open(&fs, c.clone()).err().expect("recovery must refuse");
    match &err {
        NodeError::Recovery(RecoveryError::CorruptInLast { path: p, offset, later_lsn, .. }) => {
            assert_eq!(p, &path);
            assert!(*offset > 8 && *offset <= written as u64 / 2, "offset {offset} of {written}");
            assert!(*later_lsn > 1);
        }
        other => panic!("expected CorruptInLast, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()) && msg.contains("seckill repair-wal"), "{msg}");
    // Nothing was cut.
    let after: Vec<_> = segments(&fs).into_iter().filter(|(p, _, _)| *p == path).collect();
    assert_eq!(after[0].1, len, "recovery changed the damaged segment");

    // The operator accepts the loss: the bytes move aside, the engine starts.
    let report = repair(&fs);
    let aside = moved_aside(&fs);
    assert_eq!(aside.len(), 1);
    assert_eq!(aside[0].1 as u64, written as u64 - report.moved[0].1, "every damaged byte is kept (not the zeros)");
    starts_without_what_follows_the_damage(&fs, c, &acked);
}

/// Zeros are where a segment's records end (the writer writes them ahead);
/// zeros in the middle of synced records, with good records after them, are
/// a disk that lost data, not a crash, and must not silently end the log.
#[test]
fn zeros_inside_the_records_are_refused_not_taken_for_the_end() {
    let Killed { fs, c, acked, path, written } = twenty_acked_then_killed();
    assert!(fs.zero(&path, written / 2, 64), "zero 64 bytes in the middle of the records");

    match open(&fs, c.clone()).err().expect("recovery must refuse") {
        NodeError::Recovery(RecoveryError::CorruptInLast { path: p, why, later_lsn, .. }) => {
            assert_eq!((p, why), (path.clone(), "zeros before later records"));
            assert!(later_lsn > 1);
        }
        other => panic!("expected CorruptInLast, got {other}"),
    }
    // `repair-wal` moves the records after the hole aside; the engine starts.
    repair(&fs);
    starts_without_what_follows_the_damage(&fs, c, &acked);
}

/// A damaged segment header used to cut the whole segment to 0 bytes.
#[test]
fn a_bad_segment_header_with_good_records_after_it_is_refused() {
    let Killed { fs, c, path, .. } = twenty_acked_then_killed();
    assert!(fs.corrupt(&path, 2));
    match open(&fs, c) {
        Err(NodeError::Recovery(RecoveryError::CorruptInLast { offset: 0, .. })) => {}
        Err(other) => panic!("expected CorruptInLast at 0, got {other}"),
        Ok(_) => panic!("recovery accepted a segment whose header is damaged"),
    }
}

/// A torn tail (the only damage a crash makes) is still taken off, but its
/// bytes are kept in `wal-damaged/` instead of being thrown away.
#[test]
fn a_torn_tail_is_cut_and_kept_aside() {
    let (fs, node, a, acked) = bought(cfg(), 100, 5);
    let next = node.wal.status.written_lsn.load(Ordering::Acquire) + 1;
    fs.arm(Fault::AtWalWrite { lsn: next, torn_bytes: Some(7) });
    assert_eq!(buy(&node, a, 6), Response::Error(ErrorCode::Busy));
    crash(&fs, node);
    let node = open(&fs, cfg()).expect("recovery cuts a torn tail");
    assert_present(&node, &acked);
    let aside = moved_aside(&fs);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(aside[0].1, 7);
    crash(&fs, node);
}

/// A failed fsync used to leave the node up, answering `busy` forever while
/// `readyz` said 200. It now exits (crash-only). Run in a child process.
#[test]
fn a_failed_fsync_exits_the_process() {
    if std::env::var_os("SECKILL_POWER_LOSS_CHILD").is_some() {
        let fs = SimFs::new();
        let mut c = cfg();
        c.on_failure = OnFailure::Exit;
        let node = open(&fs, c).expect("open");
        let a = node.engine.create_activity(spec(10)).expect("activity").id;
        fs.arm(Fault::AtWalSync { lsn: node.wal.status.written_lsn.load(Ordering::Acquire) + 1 });
        let r = buy(&node, a, 1);
        // Not reached: the writer exits the process before anyone answers.
        panic!("the process went on after a failed fsync and answered {r:?}");
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args(["--exact", "a_failed_fsync_exits_the_process", "--nocapture"])
        .env("SECKILL_POWER_LOSS_CHILD", "1")
        .output()
        .expect("run the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "child: {stderr}");
    assert!(stderr.contains("exiting so that a restart recovers"), "{stderr}");
}

/// Holds every snapshot temp file's creation until released (over a
/// `SimFs`): a snapshot that takes as long as we like.
struct SlowSnapshots {
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Override for SlowSnapshots {
    fn create(&self, base: &dyn Fs, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let in_snapshots = path.parent().and_then(|d| d.file_name()).is_some_and(|n| n == "snapshots");
        if in_snapshots && path.extension().is_some_and(|e| e == "tmp") {
            let (open, cv) = &*self.gate;
            let mut g = open.lock().expect("gate");
            while !*g {
                g = cv.wait(g).expect("gate");
            }
        }
        base.create(path)
    }
}

/// The writer used to hand every durable batch to the snapshot thread with
/// a blocking send into a 4096-slot channel, and that thread wrote whole
/// snapshots inline: a slow snapshot stopped every answer. Now a snapshot
/// that never finishes does not slow a single buy.
#[test]
fn a_stuck_snapshot_does_not_block_answers() {
    let sim = SimFs::new();
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let fs = overlay(Arc::new(sim.clone()), SlowSnapshots { gate: gate.clone() });
    let mut c = cfg();
    c.segment_bytes_max = 64 << 20;
    let node = Arc::new(Node::open_with(c, Arc::new(ManualClock::new(T0)), fs).expect("open"));
    let a = node.engine.create_activity(spec(100_000)).expect("activity").id;
    let snapper = node.wal.snapshotter();
    let snap = std::thread::spawn(move || snapper.snapshot());
    // One batch per call: more batches than the old channel held.
    let (tx, rx) = std::sync::mpsc::channel();
    let buyer = {
        let node = node.clone();
        std::thread::spawn(move || {
            for u in 1..=5000 {
                order(buy(&node, a, u));
            }
            let _ = tx.send(());
        })
    };
    let started = Instant::now();
    let done = rx.recv_timeout(Duration::from_secs(120));
    assert!(done.is_ok(), "buys stopped while a snapshot was being written ({:?})", started.elapsed());
    buyer.join().expect("buyer");
    {
        let (open, cv) = &*gate;
        *open.lock().expect("gate") = true;
        cv.notify_all();
    }
    let lsn = snap.join().expect("snapshot thread").expect("snapshot");
    assert!(lsn >= 2, "the snapshot covers what was durable when it was asked for");
    drop(sim);
}

/// Snapshots follow the durable LSN by themselves (`--snapshot-every`).
#[test]
fn snapshots_are_written_every_n_durable_records() {
    let fs = SimFs::new();
    let mut c = cfg();
    c.snapshot_every_records = 50;
    let node = open(&fs, c).expect("open");
    let a = node.engine.create_activity(spec(1000)).expect("activity").id;
    for u in 1..=120 {
        order(buy(&node, a, u));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let snaps = || fs.files().into_iter().filter(|(p, _, _)| p.extension().is_some_and(|e| e == "snap")).count();
    while snaps() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(snaps() > 0, "no snapshot after 120 records with --snapshot-every 50");
    crash(&fs, node);
}
