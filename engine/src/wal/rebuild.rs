//! The whole state at an LSN, rebuilt from disk: the newest snapshot (or a
//! state the caller has) plus the WAL records after it. The snapshot thread
//! builds each snapshot with it, and the MySQL persister and the Redis mirror
//! resync their targets from it.
//!
//! Files are read in slices of [`READ_SLICE_BYTES`] through the [`Fs`] seam:
//! besides the state being built, a rebuild holds about one slice of the
//! snapshot or of one segment in memory, never a whole 64 MiB segment or a
//! whole snapshot.

use super::fs::Fs;
use super::segment::{self, READ_SLICE_BYTES};
use super::snapshot;
use crate::replica::{Replica, ReplicaError};
use std::io;
use std::ops::ControlFlow;
use std::path::Path;

/// Starts from a newer snapshot when the WAL after the one read vanished
/// meanwhile (a newer snapshot let it go), at most this many times.
const ATTEMPTS: usize = 5;

/// Why the state could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("I/O error reading snapshots or the WAL: {0}")]
    Io(#[from] io::Error),
    /// The WAL from this LSN on is not on disk any more (deleted below every
    /// checkpoint once a newer snapshot covered it), after every attempt.
    #[error("WAL records from LSN {0} on are gone (deleted once a newer snapshot covered them)")]
    Gone(u64),
    /// A segment's records stop (torn, corrupt, out of sequence) before
    /// the LSN asked for, and no segment goes on from there.
    #[error("the WAL is damaged at LSN {lsn} ({why})")]
    Damaged { lsn: u64, why: &'static str },
    /// The WAL on disk ends cleanly before the LSN asked for.
    #[error("the WAL on disk ends at LSN {ends_at} but {target_lsn} is durable")]
    Short { ends_at: u64, target_lsn: u64 },
    #[error("the log does not replay onto the snapshot: {0}")]
    Replay(#[from] ReplicaError),
}

/// The state at `target_lsn`: `start` (or, without one, the newest snapshot in
/// `snap_dir` that checks out; none is the empty state), then the records of
/// the segments in `wal_dir` after it, up to `target_lsn` (which must be
/// durable). Before the WAL is read, `hold(lsn)` is told the LSN it is read
/// after, so a consumer can hold it with a checkpoint. Segments the start
/// covers are not read (the writer may delete them at any moment). If the
/// WAL after the start is gone, starts again from the newest snapshot.
///
/// A state already at or past `target_lsn` is returned as it is.
pub fn rebuild(
    fs: &dyn Fs,
    wal_dir: &Path,
    snap_dir: &Path,
    start: Option<Replica>,
    target_lsn: u64,
    mut hold: impl FnMut(u64),
) -> Result<Replica, RebuildError> {
    let mut start = start;
    let mut gone_from = 0;
    for _ in 0..ATTEMPTS {
        let mut replica = match start.take() {
            Some(r) => r,
            None => match snapshot::load_newest_in(fs, snap_dir) {
                Ok(r) => r.unwrap_or_default(),
                // No snapshots dir yet, or the snapshot listed was deleted
                // (a newer one replaced it): from the empty state, which
                // finds its WAL gone if it was (then again, from the newer one).
                Err(e) if e.kind() == io::ErrorKind::NotFound => Replica::default(),
                Err(e) => return Err(e.into()),
            },
        };
        hold(replica.lsn);
        match replay_onto(fs, wal_dir, &mut replica, target_lsn) {
            Ok(()) => return Ok(replica),
            Err(RebuildError::Gone(lsn)) => gone_from = lsn,
            Err(e) => return Err(e),
        }
    }
    Err(RebuildError::Gone(gone_from))
}

/// Applies the WAL records after `replica.lsn` up to `target_lsn`, segment by
/// segment, each read in slices.
fn replay_onto(fs: &dyn Fs, wal_dir: &Path, replica: &mut Replica, target_lsn: u64) -> Result<(), RebuildError> {
    if replica.lsn >= target_lsn {
        return Ok(());
    }
    let segments = segment::list_in(fs, wal_dir)?;
    // Why the segment read last stopped before its end, if it did.
    let mut stopped: Option<&'static str> = None;
    for (i, seg) in segments.iter().enumerate() {
        let next = replica.lsn + 1;
        if segments.get(i + 1).is_some_and(|following| following.first_lsn <= next) {
            continue; // wholly covered by what is applied
        }
        if seg.first_lsn > next {
            return Err(match stopped {
                Some(why) => RebuildError::Damaged { lsn: next, why },
                None => RebuildError::Gone(next),
            });
        }
        let mut file = match fs.open_read(&seg.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(RebuildError::Gone(next)),
            file => file?,
        };
        let mut failure = None;
        let end = segment::read_segment(&mut *file, seg.first_lsn, READ_SLICE_BYTES, &mut |lsn, ev| {
            if lsn <= replica.lsn {
                return ControlFlow::Continue(()); // before the start
            }
            if let Err(e) = replica.apply(lsn, &ev) {
                failure = Some(e);
                return ControlFlow::Break(());
            }
            if lsn >= target_lsn {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        if let Some(e) = failure {
            return Err(e.into());
        }
        if replica.lsn >= target_lsn {
            return Ok(());
        }
        stopped = end.stopped;
    }
    Err(match stopped {
        Some(why) => RebuildError::Damaged { lsn: replica.lsn + 1, why },
        None => RebuildError::Short { ends_at: replica.lsn, target_lsn },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{fixtures, Event};
    use crate::wal::codec::Encoder;
    use crate::wal::fs::{os_fs, overlay, Override, ReadFile};
    use crate::wal::segment::{segment_path, MAGIC};
    use seckill_proto::OrderStatus;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// The `n`-th event of the test log: an activity, stock, then orders,
    /// some paid later, and every fifth record the activity renamed (records
    /// of many sizes, so that slice boundaries cut records).
    fn event(n: u64) -> Event {
        match n {
            1 => Event::ActivityUpserted(fixtures::activity("t")),
            2 => Event::StockAdded { activity_id: 1, amount: 1 << 40 },
            n if n % 5 == 0 => Event::ActivityUpserted(fixtures::activity(&"t".repeat((n % 41) as usize))),
            // Both forms of a status change: logs written before 2026-12-07
            // hold the first.
            n if n % 6 == 0 && (n - 1) % 5 != 0 => Event::OrderStatusChangedV1 {
                order_id: fixtures::order(n - 1).id,
                user_id: n - 1,
                activity_id: 1,
                status: OrderStatus::Paid,
                txn: n,
                at_ms: n,
            },
            n if n % 3 == 0 && n > 3 && (n - 1) % 5 != 0 => Event::OrderStatusChanged {
                order_id: fixtures::order(n - 1).id,
                user_id: n - 1,
                activity_id: 1,
                from: OrderStatus::PendingPayment,
                status: OrderStatus::Paid,
                quantity: 1,
                amount_cents: 100,
                txn: n,
                at_ms: n,
            },
            n => Event::OrderCreated(fixtures::order(n)),
        }
    }

    /// The state after events `1..=lsn`, built in memory (what a rebuild must give).
    fn expected(lsn: u64) -> Replica {
        let mut r = Replica::default();
        for n in 1..=lsn {
            r.apply(n, &event(n)).unwrap();
        }
        r
    }

    /// Writes segments of records `firsts[i]..firsts[i + 1]` (the last one up
    /// to `last`), each followed by `zeros` zero bytes (zeros written ahead).
    fn write_segments(wal_dir: &Path, firsts: &[u64], last: u64, zeros: usize) -> Vec<PathBuf> {
        std::fs::create_dir_all(wal_dir).unwrap();
        let mut enc = Encoder::default();
        let mut paths = Vec::new();
        for (i, &first) in firsts.iter().enumerate() {
            let end = firsts.get(i + 1).map_or(last, |next| next - 1);
            let mut bytes = MAGIC.to_vec();
            for lsn in first..=end {
                enc.append(&mut bytes, lsn, &event(lsn));
            }
            bytes.resize(bytes.len() + zeros, 0);
            let path = segment_path(wal_dir, first);
            std::fs::write(&path, bytes).unwrap();
            paths.push(path);
        }
        paths
    }

    /// The OS file system, except that reading a whole file fails and every
    /// slice read is measured: a rebuild must read in slices.
    #[derive(Clone, Default)]
    struct SlicesOnly {
        largest_read_bytes: Arc<AtomicUsize>,
        bytes_read: Arc<AtomicUsize>,
    }

    struct Measured {
        file: Box<dyn ReadFile>,
        seen: SlicesOnly,
    }

    impl ReadFile for Measured {
        fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.seen.largest_read_bytes.fetch_max(buf.len(), Ordering::Relaxed);
            let n = self.file.read_at(buf, offset)?;
            self.seen.bytes_read.fetch_add(n, Ordering::Relaxed);
            Ok(n)
        }
    }

    impl Override for SlicesOnly {
        fn read(&self, _base: &dyn Fs, path: &Path) -> io::Result<Vec<u8>> {
            Err(io::Error::other(format!("{} read whole", path.display())))
        }
        fn open_read(&self, base: &dyn Fs, path: &Path) -> io::Result<Box<dyn ReadFile>> {
            Ok(Box::new(Measured { file: base.open_read(path)?, seen: self.clone() }))
        }
    }

    /// Mutation caught: a record cut by the end of a slice read as a torn
    /// tail (`Decoded::Incomplete if !eof` in `scan_window` taken out): the
    /// rebuild stops at the first slice boundary. Also: the snapshot or a
    /// segment read whole again (`fs.read`) fails it.
    #[test]
    fn a_rebuild_over_a_snapshot_and_segments_of_many_slices_gives_the_state_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (wal_dir, snap_dir) = (dir.path().join("wal"), dir.path().join("snapshots"));
        std::fs::create_dir_all(&snap_dir).unwrap();
        // A snapshot at 60,000 (several slices), then two segments of several
        // slices each; the first also holds records the snapshot covers.
        let (at_snapshot, last) = (60_000, 150_000);
        let snap = snapshot::write(&snap_dir, &expected(at_snapshot)).unwrap();
        let paths = write_segments(&wal_dir, &[40_001, 100_001], last + 5, 64 * 1024);
        for path in [&snap, &paths[0], &paths[1]] {
            let size_bytes = std::fs::metadata(path).unwrap().len();
            assert!(size_bytes > 3 * READ_SLICE_BYTES as u64, "{} is {size_bytes} bytes", path.display());
        }
        let seen = SlicesOnly::default();
        let fs = overlay(os_fs(), seen.clone());
        let mut held = Vec::new();
        let got = rebuild(&*fs, &wal_dir, &snap_dir, None, last, |lsn| held.push(lsn)).unwrap();
        assert_eq!(held, vec![at_snapshot]);
        assert_eq!(got.lsn, last);
        assert!(got == expected(last), "the rebuilt state differs from the log's");
        assert!(seen.largest_read_bytes.load(Ordering::Relaxed) <= READ_SLICE_BYTES);
        // Each file read once, no more.
        let on_disk: u64 = [&snap, &paths[0], &paths[1]].iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
        assert!(seen.bytes_read.load(Ordering::Relaxed) as u64 <= on_disk);
        // From a state the caller has, past the snapshot: the same.
        let given = expected(120_000);
        assert!(rebuild(&*fs, &wal_dir, &snap_dir, Some(given), last, |_| {}).unwrap() == expected(last));
    }

    /// Mutation caught: the file ending inside a record read as a clean end
    /// (`Decoded::Incomplete` at the end of the file giving no `stopped`):
    /// the short log then reads as `Short`, not as damage at the torn record.
    #[test]
    fn a_torn_tail_across_a_slice_boundary_ends_the_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (wal_dir, snap_dir) = (dir.path().join("wal"), dir.path().join("snapshots"));
        let last = 30_000;
        let paths = write_segments(&wal_dir, &[1], last, 0);
        // Cut the file inside the record that the first slice boundary cuts
        // (the first slice is the one after the magic).
        let boundary = MAGIC.len() + READ_SLICE_BYTES;
        let bytes = std::fs::read(&paths[0]).unwrap();
        let mut whole = Vec::new();
        segment::scan(&bytes, 1, &mut |lsn, _| whole.push(lsn));
        assert_eq!(whole.len() as u64, last);
        let mut cut_lsn = 0;
        let mut at = MAGIC.len();
        for lsn in 1..=last {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize + 16;
            if at + len > boundary {
                assert!(at + len > boundary + 7, "the record ends too close to the boundary");
                cut_lsn = lsn;
                break;
            }
            at += len;
        }
        assert!(cut_lsn > 0, "no record crosses the first slice boundary");
        let torn_at = at;
        std::fs::write(&paths[0], &bytes[..boundary + 7]).unwrap();
        let torn = std::fs::read(&paths[0]).unwrap();
        let whole_end = segment::scan(&torn, 1, &mut |_, _| {});
        let seg = segment::Segment { first_lsn: 1, path: paths[0].clone() };
        let sliced_end = segment::read_in(&*os_fs(), &seg, |_, _| {}).unwrap();
        assert_eq!(sliced_end, whole_end);
        assert_eq!(sliced_end.last_lsn, cut_lsn - 1);
        assert_eq!(sliced_end.valid_bytes, torn_at as u64);
        assert_eq!(sliced_end.stopped, Some("torn record"));
        // Up to the record before the tear, the state is whole; past it the
        // log is damaged, and said to be.
        let got = rebuild(&*os_fs(), &wal_dir, &snap_dir, None, cut_lsn - 1, |_| {}).unwrap();
        assert!(got == expected(cut_lsn - 1));
        match rebuild(&*os_fs(), &wal_dir, &snap_dir, None, cut_lsn, |_| {}) {
            Err(RebuildError::Damaged { lsn, why: "torn record" }) => assert_eq!(lsn, cut_lsn),
            other => panic!("expected damage at LSN {cut_lsn}, got {other:?}"),
        }
    }

    /// Mutation caught: `Gone` not retried from the newest snapshot (the
    /// loop in `rebuild` returning the first error).
    #[test]
    fn wal_gone_after_the_start_is_read_again_from_the_newest_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (wal_dir, snap_dir) = (dir.path().join("wal"), dir.path().join("snapshots"));
        std::fs::create_dir_all(&snap_dir).unwrap();
        snapshot::write(&snap_dir, &expected(50)).unwrap();
        write_segments(&wal_dir, &[41], 80, 0);
        // A given state older than the oldest segment: its WAL is gone.
        let mut held = Vec::new();
        let got = rebuild(&*os_fs(), &wal_dir, &snap_dir, Some(expected(10)), 80, |lsn| held.push(lsn)).unwrap();
        assert_eq!(held, vec![10, 50]);
        assert!(got == expected(80));
        // With no snapshot to fall back on, it says so.
        std::fs::remove_dir_all(&snap_dir).unwrap();
        assert!(matches!(rebuild(&*os_fs(), &wal_dir, &snap_dir, None, 80, |_| {}), Err(RebuildError::Gone(1))));
    }
}
