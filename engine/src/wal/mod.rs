//! The write-ahead log: segments of checked records, one writer thread with
//! group commit, snapshots, and recovery (newest good snapshot + replay).
//!
//! Layout under the data dir: `wal/<first lsn>.wal`, `snapshots/<lsn>.snap`.

pub mod codec;
pub mod copy;
pub(crate) mod fs;
pub(crate) mod rebuild;
pub mod segment;
#[cfg(any(test, feature = "sim"))]
pub mod sim_fs;
pub mod snapshot;
pub mod tail;
pub(crate) mod trim;
pub(crate) mod writer;

use crate::commit::Batch;
use crate::replica::Replica;
pub use copy::WalCopy;
use crossbeam_channel::{bounded, Sender};
pub use fs::{os_fs, Fs, SharedFs};
#[cfg(any(test, feature = "sim"))]
pub use fs::{overlay, LogFile, Override, ReadFile};
use parking_lot::Mutex;
pub use rebuild::{rebuild, RebuildError};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
pub use writer::{OnFailure, WalStatus};

/// Whether answers wait for `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fdatasync` before any answer: nothing acknowledged is ever lost.
    #[default]
    Fsync,
    /// No fsync. For benchmarks only: a power loss loses acknowledged orders.
    None,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fsync" => Ok(Self::Fsync),
            "none" => Ok(Self::None),
            other => Err(format!("durability must be `fsync` or `none`, not `{other}`")),
        }
    }
}

/// How far each consumer of the log has got. Segments are deleted only
/// below the smallest of them; with none registered, nothing is deleted.
#[derive(Debug, Default)]
pub struct Checkpoints {
    by_name: Mutex<BTreeMap<String, u64>>,
}

impl Checkpoints {
    /// Registers or moves `name`'s checkpoint (snapshot, persister, mirror).
    pub fn set(&self, name: &str, lsn: u64) {
        self.by_name.lock().insert(name.to_string(), lsn);
    }
    /// Gives up a checkpoint (a consumer that will resync instead).
    pub fn remove(&self, name: &str) {
        self.by_name.lock().remove(name);
    }
    /// `name`'s checkpoint, if it has one.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.by_name.lock().get(name).copied()
    }
    /// Every checkpoint, by name.
    pub fn all(&self) -> Vec<(String, u64)> {
        self.by_name.lock().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
    /// The smallest checkpoint (0 when none: nothing may be deleted).
    pub fn min(&self) -> u64 {
        self.by_name.lock().values().copied().min().unwrap_or(0)
    }
}

/// Where and how the log is kept.
#[derive(Clone, Debug)]
pub struct WalConfig {
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub segment_bytes_max: u64,
    /// A snapshot is written after this many records (and on request).
    pub snapshot_every_records: u64,
    /// What the writer does when a write or fsync fails.
    pub on_failure: OnFailure,
}

impl WalConfig {
    /// The defaults for `data_dir`: fsync, default segment size and snapshot interval.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            durability: Durability::Fsync,
            segment_bytes_max: crate::limits::SEGMENT_BYTES_DEFAULT,
            snapshot_every_records: crate::limits::SNAPSHOT_EVERY_RECORDS_DEFAULT,
            on_failure: OnFailure::Exit,
        }
    }
}

/// Why recovery stopped instead of starting the engine.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("I/O error in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "WAL segment {path} is damaged at byte {offset} ({why}) and newer segments follow it; \
         refusing to drop acknowledged records. Restore the data dir from a backup, or move \
         the damaged segment and everything after it aside to accept the loss"
    )]
    CorruptMiddle { path: PathBuf, offset: u64, why: &'static str },
    #[error(
        "WAL segment {path} is damaged at byte {offset} ({why}), but a good record (LSN {later_lsn}) follows \
         at byte {later_offset}: this is not a torn tail but damage inside acknowledged records, and \
         nothing was cut. Restore the data dir from a backup, or accept the loss of every record from \
         byte {offset} on with `seckill repair-wal --data-dir <dir> --yes` (it moves those bytes aside to \
         wal-damaged/)"
    )]
    CorruptInLast { path: PathBuf, offset: u64, why: &'static str, later_offset: u64, later_lsn: u64 },
    #[error(
        "WAL records {from}..{to} are missing: the log after LSN {before} is not on disk. Restore the \
         data dir from a backup"
    )]
    Gap { from: u64, to: u64, before: u64 },
    #[error("the log does not replay: {0}")]
    Replay(#[from] crate::replica::ReplicaError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RecoveryError + '_ {
    move |source| RecoveryError::Io { path: path.to_path_buf(), source }
}

/// Where recovery and `repair` put bytes they take out of the log.
pub const DAMAGED_DIR: &str = "wal-damaged";

/// The running log: where shards send batches, and its status.
pub struct Wal {
    pub status: Arc<WalStatus>,
    pub checkpoints: Arc<Checkpoints>,
    snapshots: Sender<snapshot::Command>,
    threads: Vec<JoinHandle<()>>,
}

impl Wal {
    /// Recovers the state in `cfg.data_dir` and starts the writer and the
    /// snapshot thread. Returns the WAL, the recovered state, and the
    /// sender that shards use as their sink.
    ///
    /// Before it returns, everything it replayed is durable (each segment
    /// and the directories are fsynced): a killed process may have left
    /// records in the page cache that were never synced, and the state built
    /// from them is about to be shown to buyers.
    pub fn open(cfg: &WalConfig, fs: SharedFs) -> Result<(Wal, Replica, Sender<Batch>), RecoveryError> {
        let (mut wal, replica, writer) = Self::open_owned(cfg, fs)?;
        let (batch_tx, batch_rx) = bounded::<Batch>(1024);
        let t_writer = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || crate::abort_on_panic("wal-writer", || writer.run(batch_rx)))
            .map_err(io_err(&cfg.data_dir))?;
        wal.threads.push(t_writer);
        Ok((wal, replica, batch_tx))
    }

    /// `open` without the writer thread: the caller owns the writer and
    /// commits through it on its own thread (`Sink::Own`).
    pub(crate) fn open_owned(cfg: &WalConfig, fs: SharedFs) -> Result<(Wal, Replica, writer::Writer), RecoveryError> {
        let wal_dir = cfg.data_dir.join("wal");
        let snap_dir = cfg.data_dir.join("snapshots");
        for d in [&wal_dir, &snap_dir] {
            fs::create_dir_durable(&*fs, d).map_err(io_err(d))?;
        }
        let mut replica = snapshot::load_newest_in(&*fs, &snap_dir).map_err(io_err(&snap_dir))?.unwrap_or_default();
        let snapshot_lsn = replica.lsn;
        let next_lsn = replay(&*fs, &cfg.data_dir, &mut replica)?;
        tracing::info!(snapshot_lsn, next_lsn, orders = replica.orders.len(), "recovered");
        make_durable(&*fs, &wal_dir, snapshot_lsn)?;
        fs.sync_dir(&snap_dir).map_err(io_err(&snap_dir))?;

        let status = Arc::new(WalStatus::default());
        let checkpoints = Arc::new(Checkpoints::default());
        // Recovery needs the log after the oldest snapshot kept, or all of it
        // while there is none: registered before any consumer (persister,
        // mirror) can move the minimum past it.
        let oldest_snapshot = snapshot::oldest_kept_lsn_in(&*fs, &snap_dir).map_err(io_err(&snap_dir))?;
        checkpoints.set("snapshot", oldest_snapshot.unwrap_or(0));
        let (cmd_tx, cmd_rx) = bounded(16);
        let writer_cfg = writer::WriterConfig {
            dir: wal_dir.clone(),
            durability: cfg.durability,
            segment_bytes_max: cfg.segment_bytes_max,
            on_failure: cfg.on_failure,
        };
        let tail_path = segment::segment_path(&wal_dir, next_lsn);
        let writer = writer::Writer::open(writer_cfg, fs.clone(), next_lsn, status.clone(), checkpoints.clone())
            .map_err(io_err(&tail_path))?;
        fs.sync_dir(&wal_dir).map_err(io_err(&wal_dir))?;
        let snapshotting = snapshot::Snapshotting {
            fs,
            wal_dir,
            snap_dir,
            every_records: cfg.snapshot_every_records,
            status: status.clone(),
            checkpoints: checkpoints.clone(),
        };
        let t_snap = std::thread::Builder::new()
            .name("snapshots".into())
            .spawn(move || snapshot::run(snapshotting, snapshot_lsn, cmd_rx))
            .map_err(io_err(&cfg.data_dir))?;
        let wal = Wal { status, checkpoints, snapshots: cmd_tx, threads: vec![t_snap] };
        Ok((wal, replica, writer))
    }

    /// Writes a snapshot of everything durable so far; returns its LSN.
    pub fn snapshot(&self) -> io::Result<u64> {
        self.snapshotter().snapshot()
    }

    /// A handle other threads (the admin socket) use to ask for snapshots.
    pub fn snapshotter(&self) -> Snapshotter {
        Snapshotter(self.snapshots.clone())
    }

    /// Waits for the writer (after every batch sender is dropped: final
    /// flush) and the snapshot thread to finish.
    pub fn join(mut self) {
        drop(self.snapshots);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Asks the snapshot thread for a snapshot (`admin snapshot`).
#[derive(Clone)]
pub struct Snapshotter(Sender<snapshot::Command>);

impl Snapshotter {
    /// A handle with no snapshot thread behind it: every request answers
    /// that the snapshot thread has stopped. For an engine whose snapshots
    /// are not the WAL's (a replica group's, whose snapshots are Raft's).
    pub fn none() -> Self {
        let (tx, _) = bounded(1);
        Snapshotter(tx)
    }

    /// Writes a snapshot now and answers its LSN.
    pub fn snapshot(&self) -> io::Result<u64> {
        let (tx, rx) = bounded(1);
        self.0.send(snapshot::Command::Now(tx)).map_err(|_| io::Error::other("the snapshot thread has stopped"))?;
        rx.recv().map_err(|_| io::Error::other("the snapshot thread has stopped"))?
    }
}

/// Replays every segment after `replica.lsn` into `replica`, takes a torn
/// tail off the last segment (moving its bytes aside), and returns the next
/// LSN to write. Damage that is not a torn tail is refused.
fn replay(fs: &dyn Fs, data_dir: &Path, replica: &mut Replica) -> Result<u64, RecoveryError> {
    let wal_dir = data_dir.join("wal");
    let segments = segment::list_in(fs, &wal_dir).map_err(io_err(&wal_dir))?;
    let mut next = replica.lsn + 1;
    let mut failure: Option<crate::replica::ReplicaError> = None;
    for (i, seg) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        if let Some(following) = segments.get(i + 1) {
            if following.first_lsn <= next {
                continue; // wholly covered by the snapshot
            }
        }
        if seg.first_lsn > next {
            return Err(RecoveryError::Gap { from: next, to: seg.first_lsn - 1, before: next.saturating_sub(1) });
        }
        let bytes = fs.read(&seg.path).map_err(io_err(&seg.path))?;
        let end = segment::scan(&bytes, seg.first_lsn, &mut |lsn, ev| {
            if lsn >= next && failure.is_none() {
                match replica.apply(lsn, &ev) {
                    Ok(()) => next = lsn + 1,
                    Err(e) => failure = Some(e),
                }
            }
        });
        if let Some(e) = failure.take() {
            return Err(e.into());
        }
        if let Some(why) = end.stopped {
            if !is_last {
                return Err(RecoveryError::CorruptMiddle { path: seg.path.clone(), offset: end.valid_bytes, why });
            }
            if let Some((later_offset, later_lsn)) = end.record_after(&bytes, seg.first_lsn) {
                return Err(RecoveryError::CorruptInLast {
                    path: seg.path.clone(),
                    offset: end.valid_bytes,
                    why,
                    later_offset,
                    later_lsn,
                });
            }
            tracing::warn!(path = %seg.path.display(), offset = end.valid_bytes, why, "taking the torn tail off the WAL");
            move_aside(fs, data_dir, seg, &bytes, end.valid_bytes).map_err(io_err(&seg.path))?;
        } else if end.zeros_after {
            // Zeros end the records: the writer's zeros written ahead. A good
            // record after them is no crash (unsynced bytes come back as a
            // prefix of what was written) but synced bytes lost.
            if let Some((later_offset, later_lsn)) = end.record_after(&bytes, seg.first_lsn) {
                let (path, offset, why) = (seg.path.clone(), end.valid_bytes, "zeros before later records");
                return Err(if is_last {
                    RecoveryError::CorruptInLast { path, offset, why, later_offset, later_lsn }
                } else {
                    RecoveryError::CorruptMiddle { path, offset, why }
                });
            }
        }
        if is_last && end.last_lsn < seg.first_lsn {
            // Nothing good in it: a new segment named after `next` replaces it.
            fs.remove_file(&seg.path).map_err(io_err(&seg.path))?;
            fs.sync_dir(&wal_dir).map_err(io_err(&wal_dir))?;
        }
    }
    Ok(next)
}

/// Copies `bytes[from..]` of `seg` to `wal-damaged/` (durably), then cuts
/// the segment at `from`. Nothing leaves the log without a copy.
fn move_aside(fs: &dyn Fs, data_dir: &Path, seg: &segment::Segment, bytes: &[u8], from: u64) -> io::Result<()> {
    let tail = bytes.get(from as usize..).unwrap_or_default();
    // Without the zeros written ahead: they hold nothing.
    let tail = &tail[..tail.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)];
    if !tail.is_empty() {
        let dir = data_dir.join(DAMAGED_DIR);
        fs::create_dir_durable(fs, &dir)?;
        let name = seg.path.file_name().and_then(|n| n.to_str()).unwrap_or("segment");
        let aside = dir.join(format!("{name}.from-{from}"));
        let mut f = fs.create(&aside)?;
        f.write_all(tail)?;
        f.sync_all()?;
        fs.sync_dir(&dir)?;
    }
    fs.truncate(&seg.path, from)
}

/// fsyncs every segment that holds records after `after_lsn`, and the WAL
/// directory: what recovery replayed is durable before anyone sees it.
fn make_durable(fs: &dyn Fs, wal_dir: &Path, after_lsn: u64) -> Result<(), RecoveryError> {
    let segments = segment::list_in(fs, wal_dir).map_err(io_err(wal_dir))?;
    for (i, seg) in segments.iter().enumerate() {
        let ends_before = segments.get(i + 1).is_some_and(|n| n.first_lsn <= after_lsn + 1);
        if !ends_before {
            fs.sync_file(&seg.path).map_err(io_err(&seg.path))?;
        }
    }
    fs.sync_dir(wal_dir).map_err(io_err(wal_dir))
}

/// What `repair` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Files (or their tails) moved to `wal-damaged/`, with the offset cut at.
    pub moved: Vec<(PathBuf, u64)>,
}

/// The operator's way past a refused log (`seckill repair-wal`): from the
/// first damaged record on, every byte of the log is moved aside to
/// `wal-damaged/` (the damaged segment is cut there; later segments are
/// moved whole). The engine then starts from the records before the damage.
/// Acknowledged records after it are lost from the engine (they are kept in
/// `wal-damaged/` for a person to look at), so this is a decision to take.
pub fn repair(fs: &dyn Fs, data_dir: &Path) -> Result<RepairReport, RecoveryError> {
    let wal_dir = data_dir.join("wal");
    let snap_dir = data_dir.join("snapshots");
    let mut replica = snapshot::load_newest_in(fs, &snap_dir).map_err(io_err(&snap_dir))?.unwrap_or_default();
    let segments = segment::list_in(fs, &wal_dir).map_err(io_err(&wal_dir))?;
    let mut report = RepairReport::default();
    let mut next = replica.lsn + 1;
    let mut cut_from: Option<usize> = None;
    for (i, seg) in segments.iter().enumerate() {
        if cut_from.is_some() {
            break;
        }
        if segments.get(i + 1).is_some_and(|f| f.first_lsn <= next) {
            continue;
        }
        if seg.first_lsn > next {
            cut_from = Some(i);
            break;
        }
        let bytes = fs.read(&seg.path).map_err(io_err(&seg.path))?;
        let mut bad = false;
        let end = segment::scan(&bytes, seg.first_lsn, &mut |lsn, ev| {
            if lsn >= next && !bad {
                bad = replica.apply(lsn, &ev).is_err();
                next = lsn + 1;
            }
        });
        let lost_before_later = end.zeros_after && end.record_after(&bytes, seg.first_lsn).is_some();
        if end.stopped.is_some() || lost_before_later {
            move_aside(fs, data_dir, seg, &bytes, end.valid_bytes).map_err(io_err(&seg.path))?;
            report.moved.push((seg.path.clone(), end.valid_bytes));
            cut_from = Some(i + 1);
        }
    }
    if let Some(from) = cut_from {
        let dir = data_dir.join(DAMAGED_DIR);
        fs::create_dir_durable(fs, &dir).map_err(io_err(&dir))?;
        for seg in &segments[from.min(segments.len())..] {
            let name = seg.path.file_name().map(PathBuf::from).unwrap_or_default();
            let to = dir.join(name);
            fs.rename(&seg.path, &to).map_err(io_err(&seg.path))?;
            report.moved.push((seg.path.clone(), 0));
        }
        fs.sync_dir(&dir).map_err(io_err(&dir))?;
        fs.sync_dir(&wal_dir).map_err(io_err(&wal_dir))?;
    }
    Ok(report)
}
