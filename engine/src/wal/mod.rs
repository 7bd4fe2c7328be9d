//! The write-ahead log: segments of checked records, one writer thread with
//! group commit, snapshots, and recovery (newest good snapshot + replay).
//!
//! Layout under the data dir: `wal/<first lsn>.wal`, `snapshots/<lsn>.snap`.

pub mod codec;
pub mod segment;
pub mod snapshot;
pub mod tail;
pub mod writer;

use crate::commit::Batch;
use crate::replica::Replica;
use crossbeam_channel::{bounded, Sender};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
pub use writer::{LogFile, OpenSegment, WalStatus};

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
    pub fn get(&self, name: &str) -> Option<u64> {
        self.by_name.lock().get(name).copied()
    }
    pub fn all(&self) -> Vec<(String, u64)> {
        self.by_name.lock().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
    pub fn min(&self) -> u64 {
        self.by_name.lock().values().copied().min().unwrap_or(0)
    }
}

#[derive(Clone, Debug)]
pub struct WalConfig {
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub segment_bytes_max: u64,
    /// A snapshot is written after this many records (and on request).
    pub snapshot_every_records: u64,
}

impl WalConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            durability: Durability::Fsync,
            segment_bytes_max: 64 * 1024 * 1024,
            snapshot_every_records: 1_000_000,
        }
    }
}

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
    #[error("WAL records {from}..{to} are missing (segments deleted by hand?)")]
    Gap { from: u64, to: u64 },
    #[error("the log does not replay: {0}")]
    Replay(#[from] crate::replica::ReplicaError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RecoveryError + '_ {
    move |source| RecoveryError::Io { path: path.to_path_buf(), source }
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

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
    pub fn open(cfg: &WalConfig, open: OpenSegment) -> Result<(Wal, Replica, Sender<Batch>), RecoveryError> {
        let (mut wal, replica, writer) = Self::open_owned(cfg, open)?;
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
    pub fn open_owned(cfg: &WalConfig, open: OpenSegment) -> Result<(Wal, Replica, writer::Writer), RecoveryError> {
        let wal_dir = cfg.data_dir.join("wal");
        let snap_dir = cfg.data_dir.join("snapshots");
        for d in [&wal_dir, &snap_dir] {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let mut replica = snapshot::load_newest(&snap_dir).map_err(io_err(&snap_dir))?.unwrap_or_default();
        let snapshot_lsn = replica.lsn;
        let next_lsn = replay(&wal_dir, &mut replica)?;
        tracing::info!(snapshot_lsn, next_lsn, orders = replica.orders.len(), "recovered");

        let mut open = open;
        let tail_path = segment::segment_path(&wal_dir, next_lsn);
        let mut file = open(&tail_path).map_err(io_err(&tail_path))?;
        file.write_all(segment::MAGIC).map_err(io_err(&tail_path))?;
        file.sync_data().map_err(io_err(&tail_path))?;
        sync_dir(&wal_dir).map_err(io_err(&wal_dir))?;

        let status = Arc::new(WalStatus::default());
        let checkpoints = Arc::new(Checkpoints::default());
        // Recovery needs the log after the oldest snapshot kept, or all of it
        // while there is none: registered before any consumer (persister,
        // mirror) can move the minimum past it.
        let oldest_snapshot = snapshot::oldest_kept_lsn(&snap_dir).map_err(io_err(&snap_dir))?;
        checkpoints.set("snapshot", oldest_snapshot.unwrap_or(0));
        let (tap_tx, tap_rx) = bounded(4096);
        let (cmd_tx, cmd_rx) = bounded(16);
        let writer = writer::Writer::new(
            writer::WriterConfig { dir: wal_dir, durability: cfg.durability, segment_bytes_max: cfg.segment_bytes_max },
            open,
            file,
            segment::MAGIC.len() as u64,
            next_lsn,
            status.clone(),
            checkpoints.clone(),
            Some(tap_tx),
        );
        let (every, cps, snap_replica) = (cfg.snapshot_every_records, checkpoints.clone(), replica.clone());
        let t_snap = std::thread::Builder::new()
            .name("snapshots".into())
            .spawn(move || snapshot::run(snap_dir, snap_replica, tap_rx, cmd_rx, every, cps))
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

#[derive(Clone)]
pub struct Snapshotter(Sender<snapshot::Command>);

impl Snapshotter {
    pub fn snapshot(&self) -> io::Result<u64> {
        let (tx, rx) = bounded(1);
        self.0.send(snapshot::Command::Now(tx)).map_err(|_| io::Error::other("the snapshot thread has stopped"))?;
        rx.recv().map_err(|_| io::Error::other("the snapshot thread has stopped"))?
    }
}

/// Replays every segment after `replica.lsn` into `replica`, cuts a torn
/// tail off the last segment, and returns the next LSN to write.
fn replay(wal_dir: &Path, replica: &mut Replica) -> Result<u64, RecoveryError> {
    let segments = segment::list(wal_dir).map_err(io_err(wal_dir))?;
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
            return Err(RecoveryError::Gap { from: next, to: seg.first_lsn - 1 });
        }
        let end = segment::read(seg, |lsn, ev| {
            if lsn >= next && failure.is_none() {
                match replica.apply(lsn, &ev) {
                    Ok(()) => next = lsn + 1,
                    Err(e) => failure = Some(e),
                }
            }
        })
        .map_err(io_err(&seg.path))?;
        if let Some(e) = failure.take() {
            return Err(e.into());
        }
        if let Some(why) = end.stopped {
            if !is_last {
                return Err(RecoveryError::CorruptMiddle { path: seg.path.clone(), offset: end.valid_bytes, why });
            }
            tracing::warn!(path = %seg.path.display(), offset = end.valid_bytes, why, "cutting the torn tail off the WAL");
            cut_tail(&seg.path, end.valid_bytes).map_err(io_err(&seg.path))?;
        }
        if is_last && end.last_lsn < seg.first_lsn {
            // Nothing good in it: a new segment named after `next` replaces it.
            std::fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
        }
    }
    Ok(next)
}

fn cut_tail(path: &Path, valid_bytes: u64) -> io::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(valid_bytes)?;
    f.sync_all()
}
