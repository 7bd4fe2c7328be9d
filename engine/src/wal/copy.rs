//! `wal/` kept as a copy of records made durable elsewhere first: a replica
//! group's committed entries (docs/REPLICATION.md, "`wal/` on every
//! replica"). Every replica, the leader included, appends each entry's
//! record bytes (already encoded, with their LSNs) once the group committed
//! and it applied the entry, so `wal/` holds only committed records, with
//! the same bytes and LSNs on every replica, in the format every reader of
//! `wal/` expects (recovery, `wal::rebuild`, the persister's and the
//! mirror's tailer).
//!
//! No fdatasync on the way: the majority's Raft logs are the durable copy,
//! and a restart re-applies the entries after the last Raft snapshot. So
//! before a Raft snapshot lets the Raft log go, [`WalCopy::snapshot`] syncs
//! every record up to it and writes the engine snapshot into `snapshots/`.
//! A replica that installs a snapshot from the leader and lacks records
//! below it starts over at it ([`WalCopy::install`]): the engine snapshot,
//! then a fresh segment from its LSN + 1.

use super::fs::SharedFs;
use super::segment;
use super::trim::Trimmer;
use super::writer::{OnFailure, Writer, WriterConfig};
use super::{Checkpoints, Durability, RecoveryError, WalConfig, WalStatus};
use crate::replica::Replica;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The writer of a replica's `wal/` (and `snapshots/`).
pub struct WalCopy {
    writer: Writer,
    fs: SharedFs,
    cfg: WalConfig,
    status: Arc<WalStatus>,
    checkpoints: Arc<Checkpoints>,
    /// Every record up to here is on disk (fdatasync).
    synced_lsn: u64,
}

impl WalCopy {
    /// Opens `wal/` and `snapshots/` under `cfg.data_dir` as recovery
    /// would (a torn tail cut, damage refused) and starts a segment after
    /// the last record there. `cfg.durability` is ignored: records are
    /// synced by [`WalCopy::sync`].
    pub fn open(cfg: &WalConfig, fs: SharedFs) -> Result<Self, RecoveryError> {
        let (wal_dir, snap_dir) = (cfg.data_dir.join("wal"), cfg.data_dir.join("snapshots"));
        for d in [&wal_dir, &snap_dir] {
            super::fs::create_dir_durable(&*fs, d).map_err(super::io_err(d))?;
        }
        let mut replica =
            super::snapshot::load_newest_in(&*fs, &snap_dir).map_err(super::io_err(&snap_dir))?.unwrap_or_default();
        let snapshot_lsn = replica.lsn;
        let next_lsn = super::replay(&*fs, &cfg.data_dir, &mut replica)?;
        super::make_durable(&*fs, &wal_dir, snapshot_lsn)?;
        fs.sync_dir(&snap_dir).map_err(super::io_err(&snap_dir))?;
        let status = Arc::new(WalStatus::default());
        let checkpoints = Arc::new(Checkpoints::default());
        let oldest = super::snapshot::oldest_kept_lsn_in(&*fs, &snap_dir).map_err(super::io_err(&snap_dir))?;
        checkpoints.set("snapshot", oldest.unwrap_or(0));
        let writer = open_writer(cfg, &fs, next_lsn, &status, &checkpoints).map_err(super::io_err(&wal_dir))?;
        tracing::info!(snapshot_lsn, last_lsn = next_lsn - 1, "opened the replica's WAL copy");
        Ok(Self { writer, fs, cfg: cfg.clone(), status, checkpoints, synced_lsn: next_lsn - 1 })
    }

    /// The LSN of the last record in `wal/` (0 when none).
    pub fn last_lsn(&self) -> u64 {
        self.writer.next_lsn() - 1
    }

    /// Appends the encoded records of LSNs `last_lsn() + 1 ..= last_lsn`
    /// (the caller checked them: a committed entry it applied).
    pub fn append(&mut self, records: &[u8], last_lsn: u64) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.writer.append_encoded(records, last_lsn)
    }

    /// Makes every record appended so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        let wal_dir = self.cfg.data_dir.join("wal");
        super::make_durable(&*self.fs, &wal_dir, self.synced_lsn).map_err(io::Error::other)?;
        self.synced_lsn = self.last_lsn();
        Ok(())
    }

    /// Before a snapshot of `replica` lets the Raft log go: syncs `wal/`
    /// and writes the engine snapshot; returns its path. Segments below the
    /// oldest snapshot kept (and every consumer's checkpoint) may go.
    pub fn snapshot(&mut self, replica: &Replica) -> io::Result<PathBuf> {
        self.sync()?;
        self.write_snapshot(replica)
    }

    /// After installing `replica` (a snapshot from the leader): writes the
    /// engine snapshot, and when `wal/` does not reach its LSN, retires
    /// every segment and starts a fresh one at its LSN + 1.
    pub fn install(&mut self, replica: &Replica) -> io::Result<PathBuf> {
        let path = self.write_snapshot(replica)?;
        if self.last_lsn() < replica.lsn {
            let wal_dir = self.cfg.data_dir.join("wal");
            let mut trimmer = Trimmer::default();
            for seg in segment::list_in(&*self.fs, &wal_dir)? {
                trimmer.retire(&*self.fs, &seg.path)?;
            }
            self.fs.sync_dir(&wal_dir)?;
            // The new writer adopts the retired files and trims them.
            self.writer = open_writer(&self.cfg, &self.fs, replica.lsn + 1, &self.status, &self.checkpoints)?;
            self.synced_lsn = replica.lsn;
            tracing::info!(lsn = replica.lsn, "the WAL copy starts over after an installed snapshot");
        }
        Ok(path)
    }

    fn write_snapshot(&mut self, replica: &Replica) -> io::Result<PathBuf> {
        let snap_dir = self.cfg.data_dir.join("snapshots");
        let path = super::snapshot::write_in(&*self.fs, &snap_dir, replica)?;
        if let Some(oldest) = super::snapshot::oldest_kept_lsn_in(&*self.fs, &snap_dir)? {
            self.checkpoints.set("snapshot", oldest);
        }
        Ok(path)
    }

    /// What the consumers of `wal/` (persister, mirror) tail by.
    pub fn status(&self) -> Arc<WalStatus> {
        self.status.clone()
    }

    /// Where the consumers register how far they got; segments are retired
    /// only below the smallest checkpoint.
    pub fn checkpoints(&self) -> Arc<Checkpoints> {
        self.checkpoints.clone()
    }

    pub fn data_dir(&self) -> &Path {
        &self.cfg.data_dir
    }
}

fn open_writer(
    cfg: &WalConfig,
    fs: &SharedFs,
    next_lsn: u64,
    status: &Arc<WalStatus>,
    checkpoints: &Arc<Checkpoints>,
) -> io::Result<Writer> {
    let wal_dir = cfg.data_dir.join("wal");
    let writer_cfg = WriterConfig {
        dir: wal_dir.clone(),
        durability: Durability::None,
        segment_bytes_max: cfg.segment_bytes_max,
        on_failure: OnFailure::AnswerBusy,
    };
    let writer = Writer::open(writer_cfg, fs.clone(), next_lsn, status.clone(), checkpoints.clone())?;
    fs.sync_dir(&wal_dir)?;
    Ok(writer)
}
