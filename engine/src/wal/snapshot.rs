//! Snapshots: the whole state at one LSN, as the events that rebuild it.
//! The snapshot thread builds each one from the previous snapshot and the
//! durable WAL on disk, so it never slows the writer or keeps a copy of
//! every order in memory between snapshots.
//!
//! File: `snapshots/<lsn, 20 digits>.snap` = magic | lsn u64 | count u64 |
//! crc32c(lsn, count) u32 | `count` records numbered 1..=count. Written to a `.tmp`, fsynced, renamed,
//! and the directory fsynced, so a crash leaves the old snapshot or the new
//! one, never half of one. A snapshot that does not check out is skipped and
//! the one before it is used (its WAL is kept until a newer one is durable).

use super::codec::Encoder;
use super::fs::{Fs, InMemory, OsFs, ReadFile, SharedFs};
use super::rebuild::{rebuild, RebuildError};
use super::segment::{self, READ_SLICE_BYTES};
use super::trim::Trimmer;
use super::{Checkpoints, WalStatus};
use crate::replica::Replica;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first bytes of every snapshot (format version in the last byte).
pub const MAGIC: &[u8; 8] = b"SKSNAP\0\x01";
const HEADER_BYTES: usize = 28;
/// Snapshot bytes encoded, written and sent to the disk per step, so a
/// snapshot never holds its whole encoding in memory and never leaves more
/// than this much of its data queued ahead of a WAL fdatasync.
const WRITE_CHUNK_BYTES: usize = 1 << 20;
/// Pause between two slices of an old snapshot being deleted.
const TRIM_PAUSE: Duration = Duration::from_millis(5);
/// Snapshots kept on disk; older ones are deleted after a new one is durable.
pub(crate) const KEEP: usize = 2;

fn path_for(dir: &Path, lsn: u64, ext: &str) -> PathBuf {
    dir.join(format!("{lsn:020}.{ext}"))
}

/// Writes `replica` as a snapshot in `dir` (temp file, fsync, rename).
pub fn write(dir: &Path, replica: &Replica) -> io::Result<PathBuf> {
    write_in(&OsFs, dir, replica)
}

/// `write` through a file-system seam.
pub(crate) fn write_in(fs: &dyn Fs, dir: &Path, replica: &Replica) -> io::Result<PathBuf> {
    let tmp = path_for(dir, replica.lsn, "tmp");
    let mut f = fs.create(&tmp)?;
    // The count goes into the header once known; until then the header is zeros.
    f.write_all(&[0u8; HEADER_BYTES])?;
    let mut chunk = Vec::with_capacity(WRITE_CHUNK_BYTES + 4096);
    let mut enc = Encoder::default();
    let mut count = 0u64;
    let mut written = HEADER_BYTES as u64;
    for ev in replica.to_events() {
        count += 1;
        enc.append(&mut chunk, count, &ev);
        if chunk.len() >= WRITE_CHUNK_BYTES {
            f.write_all(&chunk)?;
            f.write_back(written, chunk.len() as u64)?;
            written += chunk.len() as u64;
            chunk.clear();
        }
    }
    f.write_all(&chunk)?;
    let mut header = [0u8; 16];
    header[..8].copy_from_slice(&replica.lsn.to_le_bytes());
    header[8..].copy_from_slice(&count.to_le_bytes());
    let mut head = Vec::with_capacity(HEADER_BYTES);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&header);
    head.extend_from_slice(&crc32c::crc32c(&header).to_le_bytes());
    assert_eq!(head.len(), HEADER_BYTES);
    f.write_all_at(&head, 0)?;
    f.sync_all()?;
    drop(f);
    let done = path_for(dir, replica.lsn, "snap");
    fs.rename(&tmp, &done)?;
    fs.sync_dir(dir)?;
    // Old snapshots go in slices (`trim.rs`): one discard of a 100 MB file
    // would hold up the WAL's fdatasyncs for tens of ms.
    let mut trimmer = Trimmer::default();
    trimmer.adopt_leftovers(fs, dir)?;
    for old in list_in(fs, dir)?.into_iter().rev().skip(KEEP) {
        if let Err(e) = trimmer.retire(fs, &old.1) {
            tracing::warn!(path = %old.1.display(), error = %e, "could not retire an old snapshot");
        }
    }
    if !trimmer.is_idle() {
        // A cut must never meet a rename undone by a crash: a shortened
        // `.snap` would look like a damaged snapshot.
        fs.sync_dir(dir)?;
        trimmer.drain(fs, TRIM_PAUSE);
    }
    Ok(done)
}

/// The LSN the WAL must be kept after: that of the oldest snapshot kept,
/// so falling back to it (if the newest is damaged) still finds its log.
pub(crate) fn oldest_kept_lsn_in(fs: &dyn Fs, dir: &Path) -> io::Result<Option<u64>> {
    Ok(list_in(fs, dir)?.first().map(|(lsn, _)| *lsn))
}

/// Snapshot files, oldest first, with their LSN.
fn list_in(fs: &dyn Fs, dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for path in fs.list(dir)? {
        let lsn = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".snap"))
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(lsn) = lsn {
            out.push((lsn, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Parses one snapshot's bytes. `None` if anything is off. (The same
/// reader as `load_newest_in`'s, over bytes in memory: what the fuzz tests drive.)
pub fn parse(bytes: &[u8]) -> Option<Replica> {
    read_from(&mut InMemory(bytes)).ok().flatten()
}

/// Reads one snapshot file in slices of [`READ_SLICE_BYTES`] (never the whole
/// encoding in memory, only the state it rebuilds). `None` if anything is off.
pub(crate) fn read_from(file: &mut dyn ReadFile) -> io::Result<Option<Replica>> {
    let mut head = [0u8; HEADER_BYTES];
    if segment::read_full(file, &mut head, 0)? < HEADER_BYTES || head[..8] != MAGIC[..] {
        return Ok(None);
    }
    let word = |at: usize| u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7].map(|i| head[at + i]));
    let (lsn, count) = (word(8), word(16));
    let crc = u32::from_le_bytes([head[24], head[25], head[26], head[27]]);
    if crc32c::crc32c(&head[8..24]) != crc {
        return Ok(None);
    }
    let mut replica = Replica::default();
    let mut bad = false;
    let end = segment::read_records(file, HEADER_BYTES as u64, 1, READ_SLICE_BYTES, &mut |i, ev| {
        bad = replica.apply(i, &ev).is_err();
        if bad {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    if bad || end.stopped.is_some() || end.zeros_after || end.last_lsn != count {
        return Ok(None);
    }
    replica.lsn = lsn;
    Ok(Some(replica))
}

/// The newest snapshot that checks out, if any.
#[cfg(test)]
pub(crate) fn load_newest(dir: &Path) -> io::Result<Option<Replica>> {
    load_newest_in(&OsFs, dir)
}

pub(crate) fn load_newest_in(fs: &dyn Fs, dir: &Path) -> io::Result<Option<Replica>> {
    for (lsn, path) in list_in(fs, dir)?.into_iter().rev() {
        match read_from(&mut *fs.open_read(&path)?)? {
            Some(r) if r.lsn == lsn => return Ok(Some(r)),
            _ => tracing::warn!(path = %path.display(), "snapshot does not check out; trying an older one"),
        }
    }
    Ok(None)
}

/// A request to the snapshot thread.
pub(crate) enum Command {
    /// Write a snapshot now; answers with its LSN.
    Now(Sender<io::Result<u64>>),
}

/// How often the snapshot thread looks at the durable LSN.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What the snapshot thread works from. It never sees the writer's batches:
/// it reads what is already durable on disk.
pub(crate) struct Snapshotting {
    pub fs: SharedFs,
    pub wal_dir: PathBuf,
    pub snap_dir: PathBuf,
    /// A snapshot is written once this many records became durable after the
    /// last one (`u64::MAX`: only when asked).
    pub every_records: u64,
    pub status: Arc<WalStatus>,
    pub checkpoints: Arc<Checkpoints>,
}

impl Snapshotting {
    /// Builds the state at the durable LSN off the hot path, like log
    /// compaction: the newest snapshot plus the WAL records after it, read
    /// from the segments on disk. Writes it and drops it; returns its LSN.
    pub fn take(&self) -> io::Result<u64> {
        if self.status.failed.load(Ordering::Acquire) {
            return Err(io::Error::other("the WAL has failed; no snapshot of an unknown state"));
        }
        let target = self.status.durable_lsn.load(Ordering::Acquire);
        let mut from_lsn = 0;
        let replica = rebuild(&*self.fs, &self.wal_dir, &self.snap_dir, None, target, |lsn| from_lsn = lsn).map_err(
            |e| match e {
                RebuildError::Io(e) => e,
                other => io::Error::other(format!("{other}; no snapshot written")),
            },
        )?;
        if from_lsn >= target {
            return Ok(from_lsn); // the newest snapshot is the state at `target`
        }
        let started = Instant::now();
        write_in(&*self.fs, &self.snap_dir, &replica)?;
        if let Some(lsn) = oldest_kept_lsn_in(&*self.fs, &self.snap_dir)? {
            self.checkpoints.set("snapshot", lsn);
        }
        metrics::histogram!("seckill_snapshot_write_seconds").record(started.elapsed().as_secs_f64());
        tracing::info!(lsn = replica.lsn, orders = replica.orders.len(), "snapshot written");
        Ok(replica.lsn)
    }
}

/// Building a snapshot is CPU work (decode, encode) that may share the cores
/// with the shards and the WAL writer: this thread runs 10 nice levels below
/// the process (at most 19), so it takes the time they leave, not theirs.
#[allow(unsafe_code)] // getpriority/setpriority: see the SAFETY comment
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread's own id.
        let rc = unsafe {
            let tid = libc::gettid() as libc::id_t;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, (now + 10).min(19))
        };
        if rc != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "could not lower the snapshot thread's priority");
        }
    }
}

/// The snapshot thread: every `every_records` durable records (it polls the
/// durable LSN) or when asked, [`Snapshotting::take`]. Its LSN is the WAL's
/// truncation checkpoint. `last_lsn`: the LSN of the newest snapshot.
pub(crate) fn run(s: Snapshotting, mut last_lsn: u64, commands: Receiver<Command>) {
    lower_priority();
    loop {
        match commands.recv_timeout(POLL_INTERVAL) {
            Ok(Command::Now(reply)) => {
                let result = s.take();
                if let Ok(lsn) = result {
                    last_lsn = lsn;
                }
                let _ = reply.send(result);
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                let durable = s.status.durable_lsn.load(Ordering::Acquire);
                if durable.saturating_sub(last_lsn) >= s.every_records && !s.status.failed.load(Ordering::Acquire) {
                    match s.take() {
                        Ok(lsn) => last_lsn = lsn,
                        Err(e) => {
                            // Tried again after another `every_records`.
                            last_lsn = durable;
                            tracing::error!(error = %e, "writing a snapshot failed; the WAL is kept");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use proptest::prelude::*;

    fn sample() -> Replica {
        let mut r = Replica::default();
        r.apply(1, &Event::StockAdded { activity_id: 1, amount: 1 }).unwrap_err();
        let a = crate::event::fixtures::activity("t");
        r.apply(1, &Event::ActivityUpserted(a)).unwrap();
        r.apply(2, &Event::StockAdded { activity_id: 1, amount: 10 }).unwrap();
        r.apply(3, &Event::QuotaSet { activity_id: 1, user_id: 9, limit: 3 }).unwrap();
        r
    }

    /// `OsFs`, except that one file is listed but gone when read: a WAL
    /// segment the writer deleted after the snapshot thread listed them.
    struct GoneAfterListing {
        gone: std::path::PathBuf,
    }

    impl crate::wal::fs::Override for GoneAfterListing {
        fn open_read(&self, base: &dyn Fs, path: &Path) -> io::Result<Box<dyn ReadFile>> {
            if path == self.gone {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            base.open_read(path)
        }
    }

    /// Found by `cli/tests/backup.rs` under load: a snapshot read every
    /// listed segment, so one deleted after the listing (below every
    /// checkpoint, wholly covered by the newest snapshot) failed it with
    /// ENOENT. Segments the snapshot covers are not read any more.
    #[test]
    fn a_covered_segment_deleted_after_the_listing_does_not_fail_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (wal_dir, snap_dir) = (dir.path().join("wal"), dir.path().join("snapshots"));
        std::fs::create_dir_all(&wal_dir).unwrap();
        std::fs::create_dir_all(&snap_dir).unwrap();
        // Records 1..=3 in the first segment, 4..=5 in the second.
        let full = sample();
        let mut events: Vec<Event> = full.to_events().collect();
        events.push(Event::QuotaSet { activity_id: 1, user_id: 10, limit: 2 });
        events.push(Event::QuotaSet { activity_id: 1, user_id: 11, limit: 2 });
        assert_eq!(events.len(), 5);
        let mut enc = crate::wal::codec::Encoder::default();
        for (first, range) in [(1u64, 0..3), (4, 3..5)] {
            let mut bytes = crate::wal::segment::MAGIC.to_vec();
            for (i, ev) in events[range].iter().enumerate() {
                enc.append(&mut bytes, first + i as u64, ev);
            }
            std::fs::write(crate::wal::segment::segment_path(&wal_dir, first), bytes).unwrap();
        }
        // The newest snapshot covers the first segment.
        let mut at3 = Replica::default();
        for (i, ev) in events[..3].iter().enumerate() {
            at3.apply(i as u64 + 1, ev).unwrap();
        }
        write(&snap_dir, &at3).unwrap();
        let status = Arc::new(WalStatus::default());
        status.durable_lsn.store(5, Ordering::Release);
        let snapshotting = Snapshotting {
            fs: crate::wal::fs::overlay(
                crate::wal::fs::os_fs(),
                GoneAfterListing { gone: crate::wal::segment::segment_path(&wal_dir, 1) },
            ),
            wal_dir,
            snap_dir: snap_dir.clone(),
            every_records: u64::MAX,
            status,
            checkpoints: Arc::default(),
        };
        assert_eq!(snapshotting.take().expect("snapshot despite the deleted segment"), 5);
        assert_eq!(load_newest(&snap_dir).unwrap().map(|r| r.lsn), Some(5));
    }

    #[test]
    fn a_snapshot_of_many_chunks_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = sample();
        let users = 100_000u64;
        for user_id in 0..users {
            r.apply(4 + user_id, &Event::QuotaSet { activity_id: 1, user_id, limit: 2 }).unwrap();
        }
        let path = write(dir.path(), &r).unwrap();
        let size_bytes = std::fs::metadata(&path).unwrap().len();
        assert!(size_bytes > 3 * WRITE_CHUNK_BYTES as u64, "only {size_bytes} bytes: not several chunks");
        assert_eq!(load_newest(dir.path()).unwrap(), Some(r));
    }

    #[test]
    fn snapshots_round_trip_and_keep_the_newest_two() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = sample();
        for lsn in [3, 10, 20] {
            r.lsn = lsn;
            write(dir.path(), &r).unwrap();
        }
        assert_eq!(list_in(&OsFs, dir.path()).unwrap().len(), KEEP);
        assert_eq!(load_newest(dir.path()).unwrap(), Some(r));
    }

    #[test]
    fn a_damaged_newest_snapshot_falls_back_to_the_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = sample();
        r.lsn = 3;
        write(dir.path(), &r).unwrap();
        let older = r.clone();
        r.lsn = 9;
        let newest = write(dir.path(), &r).unwrap();
        let mut bytes = std::fs::read(&newest).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 1;
        std::fs::write(&newest, bytes).unwrap();
        assert_eq!(load_newest(dir.path()).unwrap(), Some(older));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn damaged_snapshots_are_refused_or_exact(cut in 0usize..400, flip in 0usize..400) {
            let mut r = sample();
            r.lsn = 3;
            let dir = tempfile::tempdir().unwrap();
            let path = write(dir.path(), &r).unwrap();
            let mut bytes = std::fs::read(path).unwrap();
            if flip < bytes.len() { bytes[flip] ^= 0x08; }
            bytes.truncate(cut.min(bytes.len()));
            if let Some(got) = parse(&bytes) { prop_assert_eq!(got, r); }
        }
    }
}
