//! What a replica does with committed entries: the [`Apply`] boundary the
//! engine implements, and [`StateMachine`], the openraft state machine
//! around it (applied log id, membership, the snapshot kept on disk).
//!
//! The state behind [`Apply`] may live in memory only: on a restart the
//! state machine installs its last snapshot (`raft.snap`) and openraft
//! applies the log entries after it again, which the log store keeps until
//! a snapshot covers them.

use crate::log_store::{create_dir_private, replace_file};
use crate::{Applied, NodeId, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use parking_lot::Mutex;
use seckill_engine::replica::Replica;
use seckill_engine::wal::codec::{self, Decoded};
use seckill_engine::wal::{WalConfig, WalCopy};
use serde::{Deserialize, Serialize};
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The state a replica group agrees on, as the engine will implement it.
///
/// `apply` must be deterministic: the same batch on the same state gives
/// the same result and the same next state on every replica, whatever the
/// machine. A batch that does not follow the state is not an error: it is
/// answered [`Applied::Rejected`] and changes nothing, on every replica
/// alike. An `Err` is a broken invariant (a log that does not replay) and
/// stops the replica, as a WAL that does not replay stops the engine.
pub trait Apply: Send + 'static {
    /// The LSN of the last record applied (0 before any).
    fn last_lsn(&self) -> u64;
    /// Applies one committed batch of WAL records.
    fn apply(&mut self, batch: &[u8]) -> Result<Applied, ApplyError>;
    /// The whole state as bytes (the engine's snapshot file).
    fn snapshot(&mut self) -> Result<Vec<u8>, ApplyError>;
    /// Replaces the state with the one `bytes` (from `snapshot`) describes:
    /// a snapshot from the leader.
    fn install(&mut self, bytes: &[u8]) -> Result<(), ApplyError>;
    /// Restores the state from this replica's own last snapshot, at start
    /// (what applying wrote besides the state is still on disk).
    fn restore(&mut self, bytes: &[u8]) -> Result<(), ApplyError> {
        self.install(bytes)
    }
}

/// Why a state could not apply, snapshot or install.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("the state does not replay: {0}")]
    Replay(String),
    #[error("the snapshot is damaged")]
    DamagedSnapshot,
    #[error("the WAL copy: {0}")]
    Wal(String),
}

const SNAP_MAGIC: &[u8; 8] = b"SKRSNAP\x01";
const SNAP_FILE: &str = "raft.snap";

/// A snapshot as kept in `raft.snap`: openraft's metadata and the state's bytes.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

struct Inner<A> {
    dir: PathBuf,
    state: A,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshot: Option<Arc<StoredSnapshot>>,
    /// Snapshots built by this process, for unique snapshot ids.
    built: u64,
}

/// The openraft state machine around an [`Apply`]. Clones share it (the
/// snapshot builder is a clone).
pub struct StateMachine<A> {
    inner: Arc<Mutex<Inner<A>>>,
    last_lsn: Arc<AtomicU64>,
    /// Snapshots installed from a leader since it opened.
    installed: Arc<AtomicU64>,
}

impl<A> Clone for StateMachine<A> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), last_lsn: self.last_lsn.clone(), installed: self.installed.clone() }
    }
}

fn write_snapshot_file(dir: &Path, snap: &StoredSnapshot) -> io::Result<()> {
    let body = postcard::to_stdvec(snap).map_err(io::Error::other)?;
    let mut bytes = SNAP_MAGIC.to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    replace_file(dir, SNAP_FILE, &bytes)
}

fn read_snapshot_file(dir: &Path) -> Result<Option<StoredSnapshot>, ApplyError> {
    let bytes = match std::fs::read(dir.join(SNAP_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some((magic, rest)) = bytes.split_at_checked(SNAP_MAGIC.len()) else { return Err(ApplyError::DamagedSnapshot) };
    let Some((crc, body)) = rest.split_at_checked(4) else { return Err(ApplyError::DamagedSnapshot) };
    if magic != SNAP_MAGIC || crc32c::crc32c(body).to_le_bytes() != crc {
        return Err(ApplyError::DamagedSnapshot);
    }
    postcard::from_bytes(body).map(Some).map_err(|_| ApplyError::DamagedSnapshot)
}

impl<A: Apply> StateMachine<A> {
    /// Opens the state machine kept in `dir`: installs the last snapshot
    /// into `state`, if there is one.
    pub fn open(dir: impl Into<PathBuf>, mut state: A) -> Result<Self, ApplyError> {
        let dir = dir.into();
        create_dir_private(&dir)?;
        let snapshot = read_snapshot_file(&dir)?;
        let (last_applied, membership) = match &snapshot {
            Some(s) => {
                state.restore(&s.data)?;
                (s.meta.last_log_id, s.meta.last_membership.clone())
            }
            None => (None, StoredMembership::default()),
        };
        let last_lsn = Arc::new(AtomicU64::new(state.last_lsn()));
        let inner = Inner { dir, state, last_applied, membership, snapshot: snapshot.map(Arc::new), built: 0 };
        Ok(Self { inner: Arc::new(Mutex::new(inner)), last_lsn, installed: Arc::new(AtomicU64::new(0)) })
    }

    /// Runs `f` on the state (tests, and the engine's reads).
    pub fn with_state<R>(&self, f: impl FnOnce(&A) -> R) -> R {
        f(&self.inner.lock().state)
    }

    /// The LSN of the last record applied here, without taking the lock.
    pub fn last_lsn(&self) -> Arc<AtomicU64> {
        self.last_lsn.clone()
    }

    /// The count of snapshots installed from a leader since it opened.
    pub fn snapshots_installed(&self) -> Arc<AtomicU64> {
        self.installed.clone()
    }
}

fn to_snapshot(s: &StoredSnapshot) -> Snapshot<TypeConfig> {
    Snapshot { meta: s.meta.clone(), snapshot: Box::new(Cursor::new(s.data.clone())) }
}

impl<A: Apply> RaftSnapshotBuilder<TypeConfig> for StateMachine<A> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let mut inner = self.inner.lock();
        let data = inner.state.snapshot().map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        inner.built += 1;
        let snapshot_id = match inner.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, inner.built),
            None => format!("0-0-{}", inner.built),
        };
        let meta =
            SnapshotMeta { last_log_id: inner.last_applied, last_membership: inner.membership.clone(), snapshot_id };
        let stored = StoredSnapshot { meta, data };
        write_snapshot_file(&inner.dir, &stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(stored.meta.signature()), &e))?;
        let snapshot = to_snapshot(&stored);
        inner.snapshot = Some(Arc::new(stored));
        Ok(snapshot)
    }
}

impl<A: Apply> RaftStateMachine<TypeConfig> for StateMachine<A> {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>> {
        let inner = self.inner.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock();
        let mut out = Vec::new();
        for entry in entries {
            let applied = match entry.payload {
                EntryPayload::Blank => Applied::Nothing,
                EntryPayload::Normal(batch) => {
                    inner.state.apply(&batch.0).map_err(|e| StorageIOError::apply(entry.log_id, &e))?
                }
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    Applied::Nothing
                }
            };
            inner.last_applied = Some(entry.log_id);
            out.push(applied);
        }
        self.last_lsn.store(inner.state.last_lsn(), Ordering::Release);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock();
        let stored = StoredSnapshot { meta: meta.clone(), data: snapshot.into_inner() };
        let sig = || Some(stored.meta.signature());
        inner.state.install(&stored.data).map_err(|e| StorageIOError::read_snapshot(sig(), &e))?;
        // Kept before it counts as applied: after a restart the state starts
        // from it, and the log before it may already be purged.
        write_snapshot_file(&inner.dir, &stored).map_err(|e| StorageIOError::write_snapshot(sig(), &e))?;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some(Arc::new(stored));
        self.last_lsn.store(inner.state.last_lsn(), Ordering::Release);
        self.installed.fetch_add(1, Ordering::AcqRel);
        metrics::counter!("seckill_replica_snapshots_installed_total").increment(1);
        tracing::info!(snapshot = %meta, "installed a snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.inner.lock().snapshot.as_deref().map(to_snapshot))
    }
}

/// The reference [`Apply`]: WAL records applied to the engine's
/// [`Replica`] (what recovery replays into), snapshots in the engine's
/// snapshot format, written to `dir` by `seckill_engine::wal::snapshot`.
/// With [`RecordsState::with_wal`] every applied record is also appended to
/// the data dir's `wal/` (`seckill_engine::wal::WalCopy`), the same bytes
/// at the same LSNs on every replica, and its snapshots are the engine's in
/// `snapshots/`: what the persister and the mirror read.
pub struct RecordsState {
    dir: PathBuf,
    replica: Replica,
    wal: Option<WalCopy>,
}

impl RecordsState {
    /// An empty state whose snapshot files go to `dir`; no `wal/`.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        create_dir_private(&dir)?;
        Ok(Self { dir, replica: Replica::default(), wal: None })
    }

    /// An empty state that keeps `wal/` and `snapshots/` in
    /// `cfg.data_dir` (opened as recovery would: a torn tail cut).
    pub fn with_wal(cfg: &WalConfig) -> Result<Self, ApplyError> {
        let wal = WalCopy::open(cfg, seckill_engine::wal::os_fs()).map_err(|e| ApplyError::Wal(e.to_string()))?;
        Ok(Self { dir: cfg.data_dir.join("snapshots"), replica: Replica::default(), wal: Some(wal) })
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The `wal/` copy, with [`RecordsState::with_wal`].
    pub fn wal(&self) -> Option<&WalCopy> {
        self.wal.as_ref()
    }
}

/// The records of a batch, checked to follow LSN `after` one by one, with
/// the offset in `batch` where each ends, or `None` when they do not (or do
/// not decode, or there are none).
fn decode_batch(batch: &[u8], after: u64) -> Option<Vec<(u64, seckill_engine::Event, usize)>> {
    // The decoder's scratch (an aligned buffer); its type is inferred.
    let mut aligned = Default::default();
    let mut out = Vec::new();
    let mut at = 0;
    let mut next = after + 1;
    while at < batch.len() {
        match codec::decode(&batch[at..], &mut aligned) {
            Decoded::Record { lsn, event, bytes } if lsn == next => {
                at += bytes;
                out.push((lsn, *event, at));
                next += 1;
            }
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

impl Apply for RecordsState {
    fn last_lsn(&self) -> u64 {
        self.replica.lsn
    }

    fn apply(&mut self, batch: &[u8]) -> Result<Applied, ApplyError> {
        let expected_lsn = self.replica.lsn + 1;
        let Some(records) = decode_batch(batch, self.replica.lsn) else {
            return Ok(Applied::Rejected { expected_lsn });
        };
        for (lsn, event, _) in &records {
            self.replica.apply(*lsn, event).map_err(|e| ApplyError::Replay(e.to_string()))?;
        }
        if let Some(wal) = &mut self.wal {
            // After a restart the Raft log re-applies entries `wal/`
            // already has: only the records after its last are written.
            let have = wal.last_lsn();
            if have + 1 < expected_lsn {
                return Err(ApplyError::Wal(format!(
                    "wal/ ends at LSN {have} but the entry starts at LSN {expected_lsn}"
                )));
            }
            let from = records.iter().take_while(|(lsn, ..)| *lsn <= have).last().map_or(0, |r| r.2);
            if from < batch.len() {
                wal.append(&batch[from..], self.replica.lsn)?;
            }
        }
        Ok(Applied::Records { first_lsn: expected_lsn, last_lsn: self.replica.lsn })
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, ApplyError> {
        let path = match &mut self.wal {
            // `wal/` durable up to the snapshot before Raft lets its log go.
            Some(wal) => wal.snapshot(&self.replica)?,
            None => seckill_engine::wal::snapshot::write(&self.dir, &self.replica)?,
        };
        Ok(std::fs::read(path)?)
    }

    fn install(&mut self, bytes: &[u8]) -> Result<(), ApplyError> {
        self.replica = seckill_engine::wal::snapshot::parse(bytes).ok_or(ApplyError::DamagedSnapshot)?;
        if let Some(wal) = &mut self.wal {
            wal.install(&self.replica)?;
        }
        Ok(())
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), ApplyError> {
        self.replica = seckill_engine::wal::snapshot::parse(bytes).ok_or(ApplyError::DamagedSnapshot)?;
        match &mut self.wal {
            // `wal/` was synced up to the snapshot when it was taken; if it
            // was lost anyway, it starts over at the snapshot.
            Some(wal) if wal.last_lsn() < self.replica.lsn => {
                tracing::warn!(wal = wal.last_lsn(), snapshot = self.replica.lsn, "wal/ ends before the Raft snapshot");
                wal.install(&self.replica)?;
            }
            _ => {}
        }
        Ok(())
    }
}
