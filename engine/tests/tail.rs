//! The WAL tailer returns every durable record once, in order, across
//! segment rotations, and reports truncation instead of skipping records.

use seckill_engine::wal::tail::{TailError, Tailer};
use seckill_engine::wal::{Durability, Wal, WalConfig};
use seckill_engine::Batch;
use seckill_engine::Event;
use std::time::{Duration, Instant};

fn commit(tx: &crossbeam_channel::Sender<Batch>, from: u64, n: u64) {
    let (rtx, rrx) = crossbeam_channel::bounded(1);
    let mut b = Batch::default();
    for i in from..from + n {
        b.events.push(Event::QuotaSet { activity_id: 1, user_id: i, limit: 1 });
    }
    b.replies.push(seckill_engine::Reply { tx: rtx.into(), tag: 0, resp: seckill_proto::Response::Done });
    tx.send(b).expect("writer alive");
    rrx.recv().expect("durable");
}

#[test]
fn tails_across_segments_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = WalConfig::new(dir.path());
    cfg.durability = Durability::None;
    cfg.segment_bytes_max = 4096;
    let (wal, _replica, tx) = Wal::open(&cfg, seckill_engine::wal::fs::os()).expect("open");
    let mut tail = Tailer::new(dir.path(), wal.status.clone(), 0);
    let mut seen = Vec::new();
    let mut next_user = 0;
    for round in 0..20 {
        commit(&tx, next_user, 37);
        next_user += 37;
        if round % 3 == 0 {
            tail.poll(25, &mut seen).expect("poll");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.len() < next_user as usize {
        assert!(Instant::now() < deadline, "tailer stuck at {}", seen.len());
        tail.poll(1000, &mut seen).expect("poll");
    }
    assert!(std::fs::read_dir(dir.path().join("wal")).expect("wal dir").count() > 3, "rotation happened");
    for (i, (lsn, ev)) in seen.iter().enumerate() {
        assert_eq!(*lsn, i as u64 + 1);
        assert_eq!(*ev, Event::QuotaSet { activity_id: 1, user_id: i as u64, limit: 1 });
    }
    assert_eq!(tail.lag_records(), 0);
    assert_eq!(tail.poll(10, &mut seen).expect("poll"), 0, "nothing new");
}

#[test]
fn a_tailer_behind_deleted_segments_is_told_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = WalConfig::new(dir.path());
    cfg.durability = Durability::None;
    cfg.segment_bytes_max = 4096;
    let (wal, _replica, tx) = Wal::open(&cfg, seckill_engine::wal::fs::os()).expect("open");
    wal.checkpoints.set("snapshot", 400);
    for i in 0..20 {
        commit(&tx, i * 37, 37);
    }
    let mut tail = Tailer::new(dir.path(), wal.status.clone(), 0);
    let mut out = Vec::new();
    assert!(matches!(tail.poll(10, &mut out), Err(TailError::Truncated(1))));
}

/// More than one read's worth (1 MB) in one segment: a read ends inside a
/// record, whose start must be kept for the next read. Fails if the bytes
/// left over from one read are dropped or misplaced (e.g. `end = 0` instead
/// of `end -= at` after the shift, or decoding from `buf[at..]` past `end`).
#[test]
fn a_record_split_between_two_reads_is_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = WalConfig::new(dir.path());
    cfg.durability = Durability::None;
    cfg.segment_bytes_max = 64 << 20;
    let (wal, _replica, tx) = Wal::open(&cfg, seckill_engine::wal::fs::os()).expect("open");
    // A first record of another size, so that records do not line up
    // with the 1 MB reads.
    let product = seckill_engine::Product {
        id: 1,
        name: "a name of thirty-one characters".into(),
        description: String::new(),
        image_url: String::new(),
        price_cents: 1,
    };
    let (rtx, rrx) = crossbeam_channel::bounded(1);
    let mut b = Batch::default();
    b.events.push(Event::ProductCreated(product.clone()));
    b.replies.push(seckill_engine::Reply { tx: rtx.into(), tag: 0, resp: seckill_proto::Response::Done });
    tx.send(b).expect("writer alive");
    rrx.recv().expect("durable");
    let total: u64 = 60_000;
    for from in (0..total).step_by(1000) {
        commit(&tx, from, 1000);
    }
    let bytes: u64 = std::fs::read_dir(dir.path().join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    assert!(bytes > 2 << 20, "more than two reads' worth: {bytes} bytes");
    let mut tail = Tailer::new(dir.path(), wal.status.clone(), 0);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < total as usize + 1 {
        assert!(Instant::now() < deadline, "tailer stuck at {}", seen.len());
        tail.poll(777, &mut seen).expect("poll");
    }
    assert_eq!(seen[0], (1, Event::ProductCreated(product)));
    for (i, (lsn, ev)) in seen[1..].iter().enumerate() {
        assert_eq!(*lsn, i as u64 + 2);
        assert_eq!(*ev, Event::QuotaSet { activity_id: 1, user_id: i as u64, limit: 1 });
    }
}
