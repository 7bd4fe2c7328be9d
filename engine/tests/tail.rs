//! The WAL tailer returns every durable record once, in order, across
//! segment rotations, and reports truncation instead of skipping records.

use seckill_engine::wal::tail::{TailError, Tailer};
use seckill_engine::wal::{Durability, Wal, WalConfig};
use seckill_engine::Batch;
use seckill_engine::Event;
use std::time::{Duration, Instant};

/// A WAL in `dir` (no fsync) whose segments rotate at `segment_bytes_max`,
/// and the sender of its writer.
fn open_wal(dir: &std::path::Path, segment_bytes_max: u64) -> (Wal, crossbeam_channel::Sender<Batch>) {
    let mut cfg = WalConfig::new(dir);
    cfg.durability = Durability::None;
    cfg.segment_bytes_max = segment_bytes_max;
    let (wal, _replica, tx) = Wal::open(&cfg, seckill_engine::wal::os_fs()).expect("open");
    (wal, tx)
}

/// Logs `events` as one batch and waits until they are durable.
fn log(tx: &crossbeam_channel::Sender<Batch>, events: impl IntoIterator<Item = Event>) {
    let (rtx, rrx) = crossbeam_channel::bounded(1);
    let mut b = Batch::default();
    b.events.extend(events);
    b.replies.push(seckill_engine::Reply { tx: rtx.into(), tag: 0, resp: seckill_proto::Response::Done });
    tx.send(b).expect("writer alive");
    rrx.recv().expect("durable");
}

/// Logs a quota for users `from..from + n`.
fn commit(tx: &crossbeam_channel::Sender<Batch>, from: u64, n: u64) {
    log(tx, (from..from + n).map(|i| Event::QuotaSet { activity_id: 1, user_id: i, limit: 1 }));
}

/// Polls `tail` (`max` records a poll) until `seen` holds `want` records; 10 s at most.
fn poll_until(tail: &mut Tailer, max: usize, seen: &mut Vec<(u64, Event)>, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < want {
        assert!(Instant::now() < deadline, "tailer stuck at {}", seen.len());
        tail.poll(max, seen).expect("poll");
    }
}

#[test]
fn tails_across_segments_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, tx) = open_wal(dir.path(), 4096);
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
    poll_until(&mut tail, 1000, &mut seen, next_user as usize);
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
    let (wal, tx) = open_wal(dir.path(), 4096);
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
    let (wal, tx) = open_wal(dir.path(), 64 << 20);
    // A first record of another size, so that records do not line up
    // with the 1 MB reads.
    let product = seckill_engine::Product {
        id: 1,
        name: "a name of thirty-one characters".into(),
        description: String::new(),
        image_url: String::new(),
        price_cents: 1,
    };
    log(&tx, [Event::ProductCreated(product.clone())]);
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
    poll_until(&mut tail, 777, &mut seen, total as usize + 1);
    assert_eq!(seen[0], (1, Event::ProductCreated(product)));
    for (i, (lsn, ev)) in seen[1..].iter().enumerate() {
        assert_eq!(*lsn, i as u64 + 2);
        assert_eq!(*ev, Event::QuotaSet { activity_id: 1, user_id: i as u64, limit: 1 });
    }
}

/// A record read while the writer was still writing it (its bytes half
/// there, half the zeros written ahead) is read again once it is durable,
/// not reported as damage. Fails if the tailer trusts the bytes it read first.
#[test]
fn a_record_read_half_written_is_read_again_once_durable() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, tx) = open_wal(dir.path(), 1 << 20);
    let segment = || {
        let mut paths: Vec<_> =
            std::fs::read_dir(dir.path().join("wal")).expect("wal dir").map(|e| e.expect("entry").path()).collect();
        paths.sort();
        paths.pop().expect("a segment")
    };
    commit(&tx, 1, 2);
    let before = std::fs::read(segment()).expect("read");
    commit(&tx, 3, 1);
    let after = std::fs::read(segment()).expect("read");
    // Record 3 is where the file changed; tear it: its second half still zeros.
    let first = (0..after.len()).find(|i| before.get(*i) != after.get(*i)).expect("record 3 was written");
    let last = (0..after.len()).rev().find(|i| before.get(*i) != after.get(*i)).expect("record 3 was written");
    let torn_from = first + (last - first) / 2;
    let file = std::fs::OpenOptions::new().write(true).open(segment()).expect("open");
    file.write_all_at(&before[torn_from..=last], torn_from as u64).expect("tear");
    wal.status.durable_lsn.store(2, std::sync::atomic::Ordering::Release);
    let mut tail = Tailer::new(dir.path(), wal.status.clone(), 0);
    let mut seen = Vec::new();
    assert_eq!(tail.poll(100, &mut seen).expect("records 1 and 2"), 2);
    // The writer finishes record 3 and syncs it.
    file.write_all_at(&after[torn_from..=last], torn_from as u64).expect("finish");
    wal.status.durable_lsn.store(3, std::sync::atomic::Ordering::Release);
    assert_eq!(tail.poll(100, &mut seen).expect("record 3 read again, not damage"), 1);
    assert_eq!(seen[2], (3, Event::QuotaSet { activity_id: 1, user_id: 3, limit: 1 }));
}

/// A replica's `wal/` (`WalCopy`) that starts over at an installed snapshot:
/// a tailer that was reading the old segments is told the records between
/// are gone (its consumer then resyncs) instead of waiting for them forever.
/// Mutation caught: `advance_segment` answering "nothing new yet" when a
/// later segment starts past the next LSN (the poll returns 0 for ever).
#[test]
fn a_tailer_before_a_wal_copy_that_started_over_is_told_so() {
    use seckill_engine::wal::codec::Encoder;
    use seckill_engine::wal::WalCopy;
    let dir = tempfile::tempdir().expect("tempdir");
    let records = |from: u64, to: u64| {
        let (mut out, mut enc) = (Vec::new(), Encoder::default());
        for lsn in from..=to {
            enc.append(&mut out, lsn, &Event::QuotaSet { activity_id: 1, user_id: lsn, limit: 1 });
        }
        out
    };
    let mut copy = WalCopy::open(&WalConfig::new(dir.path()), seckill_engine::wal::os_fs()).expect("open");
    copy.append(&records(1, 3), 3).expect("append");
    let mut tail = Tailer::new(dir.path(), copy.status(), 0);
    let mut seen = Vec::new();
    poll_until(&mut tail, 100, &mut seen, 3);
    assert_eq!(seen.iter().map(|(lsn, _)| *lsn).collect::<Vec<_>>(), vec![1, 2, 3]);

    // A snapshot at LSN 10 from the leader: `wal/` starts over at 11.
    let snapshot = seckill_engine::replica::Replica { lsn: 10, ..Default::default() };
    copy.install(&snapshot).expect("install");
    assert_eq!(copy.last_lsn(), 10);
    copy.append(&records(11, 12), 12).expect("append");
    assert!(matches!(tail.poll(10, &mut seen), Err(TailError::Truncated(4))), "the tailer waits for LSN 4");

    // Reopened, the copy goes on after its last record; a new tailer reads
    // from the snapshot's LSN on.
    drop(copy);
    let copy = WalCopy::open(&WalConfig::new(dir.path()), seckill_engine::wal::os_fs()).expect("reopen");
    assert_eq!(copy.last_lsn(), 12);
    let mut tail = Tailer::new(dir.path(), copy.status(), 10);
    let mut seen = Vec::new();
    poll_until(&mut tail, 100, &mut seen, 2);
    assert_eq!(seen.iter().map(|(lsn, _)| *lsn).collect::<Vec<_>>(), vec![11, 12]);
}
